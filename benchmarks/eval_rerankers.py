"""Rerankers side by side on one dataset, through the evals runner (resumable + cached).

Each system is one run folder under ``--out`` (rerun the same command to resume a killed
benchmark; LLM calls are cached in ``$HOPRANK_CACHE/llm-calls``), then ``compare`` writes
``comparison.md/json`` and plots with paired permutation tests against the first system
(``identity`` = the first stage).

    .venv/bin/python benchmarks/eval_rerankers.py --dataset trec-dl-2019-passage \\
        --model qwen2.5-coder-1.5b --rankers identity,pointwise,first,rankgpt --depth 20
    .venv/bin/python benchmarks/eval_rerankers.py --limit 3 --model smollm2-135m   # smoke slice

``--dataset`` is a folder of ../shared/datasets, any dataset path, or a shipped sample.
Per-ranker parameters: ``--param first.window=10`` (repeatable).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from hoprank.evals import ExperimentConfig, compare, run_experiment, write_comparison

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"


def _dataset(name: str) -> str:
    return str(SHARED / name) if (SHARED / name).is_dir() else name


def _params(pairs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        ranker, _, param = key.partition(".")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(ranker, {})[param] = value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="trec-dl-2019-passage")
    ap.add_argument("--first-stage", default=None)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--rankers", default="identity,pointwise,first,rankgpt")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--param", action="append", default=[])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    ap.add_argument("--no-cache", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    params = _params(args.param)
    engine = None
    dirs: list[Path] = []
    for ranker in [r.strip() for r in args.rankers.split(",") if r.strip()]:
        model = None if ranker == "identity" else args.model
        cfg = ExperimentConfig(
            dataset=_dataset(args.dataset),
            first_stage=args.first_stage,
            depth=args.depth,
            ranker=ranker,
            ranker_params=params.get(ranker, {}),
            model=model,
            engine_params={"threads": args.threads} if model and ":" not in model else {},
            limit=args.limit,
            concurrency=args.concurrency,
        )
        if model is not None and engine is None:  # one engine shared by every LLM ranker
            from hoprank.llm import load_engine

            engine = load_engine(model, **cfg.engine_params)
        out = (
            args.out
            / f"{Path(args.dataset).name}-d{args.depth}-n{args.limit or 'all'}"
            / cfg.label.replace("/", "_")
        )
        t0 = time.perf_counter()
        res = run_experiment(
            cfg, out, engine=engine if model else None, cache=not args.no_cache, progress=None
        )
        head = {
            k: round(v, 4) for k, v in res.metrics.items() if k in ("ndcg@10", "support_recall@5", "mrr@10")
        }
        print(f"{cfg.label}: {head} ({time.perf_counter() - t0:.1f} s, resumed {res.resumed})", flush=True)
        dirs.append(out)
    if len(dirs) >= 2:
        comp = compare(dirs)
        write_comparison(comp, dirs[0].parent)
        print(comp.to_markdown())
        print(f"written: {dirs[0].parent}")


if __name__ == "__main__":
    main()
