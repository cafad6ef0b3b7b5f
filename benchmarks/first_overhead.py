"""FIRST's SDK overhead per window: whole ``arank`` minus one bare forward of the same ids.

Interleaved, minimum of ``--repeats`` per query, DL19 BM25 top-20 (one window). Run it
from two checkouts (``git worktree add /tmp/old <rev>``) to compare versions of the SDK
on the same model; a tiny random-weight model (``random_model.py --shape qwen2.5-tiny``)
makes the overhead visible on a CPU, where a real model's forward hides it.

    python benchmarks/first_overhead.py --model /tmp/qtiny --threads 1
    python /tmp/old/benchmarks/first_overhead.py --model /tmp/qtiny --threads 1 --root /tmp/old
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


async def run(args: argparse.Namespace) -> dict[str, float | str]:
    sys.path.insert(0, str(args.root))
    sys.path.insert(0, str(HERE))
    from _timing import bare_forward, load_dl19

    import hoprank
    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.rankers import FIRST

    engine = TransformersEngine(args.model, threads=args.threads, device=args.device)
    items = load_dl19(args.queries, 20)
    first = FIRST(engine, window=20)
    await first.arank(items[0][1], items[0][2])  # warm-up
    firsts, bares = [], []
    for _, query, docs in items:
        wp = first.build_prompt(query, docs, first.labels_for(20), max_new_tokens=1, prefill=first.prefill)
        ids = engine._encode_prompt(engine.render(wp.messages, first.prefill))
        f_s, b_s = [], []
        for _ in range(args.repeats):
            b_s.append(bare_forward(engine, ids).wall)
            t0 = time.perf_counter()
            await first.arank(query, docs)
            f_s.append(time.perf_counter() - t0)
        firsts.append(min(f_s))
        bares.append(min(b_s))
    f, b = sum(firsts) / len(firsts), sum(bares) / len(bares)
    return {
        "hoprank": str(Path(hoprank.__file__).parent),
        "first_s": round(f, 4),
        "bare_s": round(b, 4),
        "overhead_ms": round((f - b) * 1000, 1),
        "first_over_bare": round(f / b, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--root", type=Path, default=HERE.parent, help="checkout whose hoprank is timed")
    ap.add_argument("--queries", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="auto")
    print(json.dumps(asyncio.run(run(ap.parse_args()))))


if __name__ == "__main__":
    main()
