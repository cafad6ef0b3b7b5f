"""Where one ranker call spends its time: torch.profiler over ``arank`` on DL19 windows.

Loads an engine (a pack, or a folder such as a random-weight one from
``random_model.py``), warms the ranker up on the first query, then profiles it on the
next ``--queries`` queries and prints the operators by self CPU time and (on a GPU) by
self device time, plus wall seconds per query next to one bare forward of the same
length: what of a query is model arithmetic and what is the SDK around it.

    python benchmarks/profile_ranker.py --model /tmp/q15 --device cuda --ranker icr --queries 3
    python benchmarks/profile_ranker.py --model smollm2-135m --ranker first --queries 1 --depth 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import bare_forward, load_dl19  # noqa: E402


async def run(args: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity, profile

    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.rankers import make_ranker

    engine = TransformersEngine(
        args.model,
        device=args.device,
        threads=args.threads,
        sdpa_backends=args.sdpa_backends,
        length_buckets=args.length_buckets,
    )
    ranker = make_ranker(args.ranker, engine)
    items = load_dl19(args.queries + 1, args.depth)
    await ranker.arank(items[0][1], items[0][2])  # warm-up, not profiled
    cuda = str(engine.device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    walls = []
    # the engine runs its model work on one worker thread: the profiler starts there
    prof = profile(activities=activities)
    engine.worker.call(prof.start)
    try:
        for _, query, docs in items[1:]:
            t0 = time.perf_counter()
            ranking = await ranker.arank(query, docs)
            walls.append(time.perf_counter() - t0)
    finally:
        engine.worker.call(prof.stop)
    tokens = ranking.usage.prompt_tokens // max(1, ranking.usage.llm_calls)
    ids = engine._encode_prompt("The quick brown fox jumps over the lazy dog. " * (tokens // 10 + 1))[:tokens]
    bare = min(bare_forward(engine, ids).wall for _ in range(3))
    print(
        f"{args.ranker}: {sum(walls) / len(walls):.4f} s/query over {len(walls)} queries; "
        f"bare forward of {len(ids)} tokens {bare:.4f} s; usage of the last: {ranking.usage}"
    )
    table = prof.key_averages()
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if cuda:
        print(table.table(sort_by="self_device_time_total", row_limit=args.rows))
    if args.trace:
        prof.export_chrome_trace(str(args.trace))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--ranker", default="icr")
    ap.add_argument("--queries", type=int, default=2)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--sdpa-backends", default=None, help="e.g. flash,efficient,math")
    ap.add_argument("--length-buckets", default=None, help="pow2 or e.g. 1024,1536,2048")
    ap.add_argument("--trace", type=Path, default=None, help="write a Chrome trace here")
    args = ap.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
