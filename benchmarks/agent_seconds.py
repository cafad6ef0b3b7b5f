"""Where a QA system's seconds go, and what the engine's prefix KV cache saves.

For each question the system (default: preset ``d``, the MultiHopAgent) runs twice on
one loaded model, interleaved so that both see the same machine load: once with the
engine's prefix cache off (``prefix_cache=0``: every call prefills its whole prompt) and
once on (the default, ``prefix_cache=8``). It prints, per setting, the seconds per
question by step name (``hoprank.evals.qa_steps``), the prompt tokens served from the
cache, the ratio of the two settings' seconds and how many questions gave the same answer
and the same evidence (the cache must not change what the system does)::

    .venv/bin/python benchmarks/agent_seconds.py --model qwen2.5-coder-0.5b --limit 5
    .venv/bin/python benchmarks/agent_seconds.py --system c0 --limit 5 --model qwen2.5-coder-0.5b

No LLM cache: every call is computed. Questions are the dataset's first ``--limit``
(HotpotQA dev distractor-500, BM25 over its 4,858 paragraphs, by default).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hoprank.agents import resolve_systems  # noqa: E402
from hoprank.agents.systems import build_retriever, build_system  # noqa: E402
from hoprank.evals.formats import load_dataset  # noqa: E402
from hoprank.evals.qa_runner import qa_record  # noqa: E402
from hoprank.evals.qa_steps import render_step_costs, step_costs  # noqa: E402
from hoprank.llm import load_engine  # noqa: E402
from hoprank.llm.runtime.prefix_cache import PrefixCache  # noqa: E402

DATA = ROOT.parent / "shared" / "datasets" / "hotpotqa-dev-distractor-500"


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    ds = load_dataset(str(args.data))
    system = resolve_systems(args.system)[0]
    engine = load_engine(args.model, threads=args.threads)
    retriever = build_retriever(system, list(ds.corpus.values()))
    runner = build_system(system, retriever, engine)
    caches = {"off": PrefixCache(0), "on": PrefixCache(args.capacity)}
    records: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    qids = [q for q in ds.queries if ds.gold(q)][: args.limit]
    for i, qid in enumerate(qids, 1):
        for setting in ("off", "on"):
            engine.prefix_cache = caches[setting]  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            out = await runner.arun(ds.queries[qid].text)
            records[setting].append(qa_record(qid, out, seconds=time.perf_counter() - t0))
        off, on = records["off"][-1], records["on"][-1]
        print(f"[{i}/{len(qids)}] {qid}: off {off['seconds']:.1f} s, on {on['seconds']:.1f} s", flush=True)
    same_answer = sum(a["answer"] == b["answer"] for a, b in zip(records["off"], records["on"], strict=True))
    same_ranked = sum(
        [d for d, _ in a["ranked"]] == [d for d, _ in b["ranked"]]
        for a, b in zip(records["off"], records["on"], strict=True)
    )
    costs = {s: step_costs(r) for s, r in records.items()}
    return {
        "system": system.name,
        "model": engine.name,
        "questions": len(qids),
        "costs": costs,
        "seconds_ratio_on_off": costs["on"]["wall_s"] / max(costs["off"]["wall_s"], 1e-9),
        "same_answer": same_answer,
        "same_ranked": same_ranked,
        "cache": {
            "hits": caches["on"].hits,
            "misses": caches["on"].misses,
            "reused_tokens": caches["on"].reused_tokens,
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="a QA dataset folder")
    ap.add_argument("--system", default="d", help="a preset or system file (default d, the agent)")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--capacity", type=int, default=8, help="prefix cache entries for the 'on' setting")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args()
    res = asyncio.run(_main(args))
    for setting in ("off", "on"):
        c = res["costs"][setting]
        print(f"\nprefix cache {setting}: {c['wall_s']:.1f} s/question")
        print("\n".join(render_step_costs(c)))
    print(
        f"on/off seconds: {res['seconds_ratio_on_off']:.2f}; same answer {res['same_answer']}/{res['questions']}, "
        f"same evidence order {res['same_ranked']}/{res['questions']}; cache {res['cache']}"
    )
    if args.out is not None:
        args.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
