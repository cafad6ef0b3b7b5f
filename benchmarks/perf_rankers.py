"""Ranker performance on one engine: four ratios measured in ONE run (DL19 BM25 top-20).

1. **per window / per query**: RankGPT (generation, ``max_new_tokens = 5 n + 8``) vs FIRST
   (one forward, last-position logits) vs ICR (prefix pass + query and "N/A" passes on
   the prefix's KV cache), same engine, same queries and passages. Target: FIRST and
   ICR >= 5x faster per query than RankGPT. RankGPT's cost depends on how much the model
   writes (a weak model may stop after a few labels), so the same window is also timed
   at RankGPT's cap: one greedy generation forced to ``max_new_tokens`` (``RankGPT@cap``,
   what a model that writes the whole permutation costs).
2. **SDK overhead**: FIRST's whole ``arank`` of one window (prompt building,
   tokenization, thread hop, forward with fp32 LM head, scoring) vs one bare
   ``model(input_ids, logits_to_keep=1)`` of the identical token ids (interleaved,
   min over ``--repeats``). Target: <= 1.1x.
3. **batching**: windows/second of ``FIRST(BatchingEngine(engine, max_batch_size=b))
   .arank_many(items, concurrency=b)`` for each ``b`` in ``--batch-sizes``: windows of
   *different* queries coalesced into one left-padded forward by the micro-batcher;
   rankings are checked against batch 1.
4. **ICR calibration**: time of the "N/A" calibration pass over the first pass
   (prefix + query pass). Target: <= 0.2.

Absolute seconds are printed only as context; on a shared machine compare the ratios
(each is taken within this one run, interleaved where it matters). CPU seconds of the
process (all threads) are printed next to wall seconds. ``--wait-load L`` waits (up to
``--wait-max`` seconds, checking each minute) for the 1-minute load average to drop
below ``L`` before the model is loaded.

    .venv/bin/python benchmarks/perf_rankers.py --model qwen2.5-coder-0.5b --queries 4 \\
        --batch-sizes 1,4,16 --wait-load 4 --json runs/perf_rankers.json
    .venv/bin/python benchmarks/perf_rankers.py --model smollm2-135m --queries 1 \\
        --batch-sizes 1,2 --depth 10     # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from _timing import Clock, bare_forward, forced_generate, load_dl19, vars_of  # noqa: E402

TARGETS = {
    "rankgpt_over_first": 5.0,
    "rankgpt_over_icr": 5.0,
    "first_over_bare": 1.1,
    "calib_over_first": 0.2,
}


def wait_for_load(limit: float, max_s: float) -> float:
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    while load >= limit and time.monotonic() - t0 < max_s:
        logging.warning(
            "load average %.2f >= %.1f; waiting (%.0f s so far)", load, limit, time.monotonic() - t0
        )
        time.sleep(60)
        load = os.getloadavg()[0]
    return time.monotonic() - t0


async def per_query(args: argparse.Namespace, engine: Any, items: list[Any]) -> list[dict[str, Any]]:
    """Sections 1, 2 and 4: every ranker on every query, interleaved."""
    from hoprank.rankers import FIRST, RankGPT
    from hoprank.rankers.icr import ICRRanker
    from hoprank.rankers.passages import make_labels

    first = FIRST(engine, window=args.window)
    rankgpt = RankGPT(engine, window=args.window)
    icr = ICRRanker(engine)
    rows = []
    for qid, query, docs in items:
        window_docs = docs[-args.window :]  # the first window FIRST sees (back to front)
        labels = first.labels_for(len(window_docs))
        wp = first.build_prompt(query, window_docs, labels, max_new_tokens=1, prefill=first.prefill)
        ids = engine._encode_prompt(engine.render(wp.messages, first.prefill))
        row: dict[str, Any] = {"qid": qid, "first_prompt_tokens": len(ids), "bare": [], "first": []}
        # FIRST once on a sequence length nothing has run yet, as a new query meets it (on a
        # GPU the attention kernels' per-shape setup is paid here); ICR and RankGPT below are
        # timed the same way. The repeats then compare FIRST with a bare forward of the same ids.
        with Clock() as c:
            await first.arank(query, docs)
        row["first_cold"] = vars_of(c)
        for _ in range(args.repeats):
            row["bare"].append(vars_of(bare_forward(engine, ids)))
            with Clock() as c:
                ranking = await first.arank(query, docs)
            row["first"].append({**vars_of(c), "windows": len(ranking.trace)})
            assert ranking.trace[0].input["prompt_tokens"] == len(ids), "FIRST saw other token ids"
        with Clock() as c:
            ranking = await icr.arank(query, docs)
        row["icr"] = {
            **vars_of(c),
            "windows": len(ranking.trace),
            "prefix_tokens": sum(s.input["prefix_tokens"] for s in ranking.trace),
            "suffix_tokens": [s.input["suffix_tokens_encoded"] for s in ranking.trace],
            "prefix_s": sum(s.output["prefix_seconds"] for s in ranking.trace),
            "query_s": sum(s.output["suffix_seconds"][0] for s in ranking.trace),
            "calib_s": sum(s.output["suffix_seconds"][1] for s in ranking.trace),
            "method": ranking.trace[0].input["method"],
        }
        with Clock() as c:
            ranking = await rankgpt.arank(query, docs)
        row["rankgpt"] = {
            **vars_of(c),
            "windows": len(ranking.trace),
            "prompt_tokens": ranking.usage.prompt_tokens,
            "completion_tokens": ranking.usage.completion_tokens,
            "max_new_tokens": [s.input["max_new_tokens"] for s in ranking.trace],
            "fallbacks": ranking.fallbacks,
            "raw": [s.raw for s in ranking.trace],
            "parsed": [s.output.get("parsed") for s in ranking.trace],
        }
        # The same window at RankGPT's generation cap (what a model that writes the
        # whole permutation costs): one forced generation of max_new_tokens.
        max_new = rankgpt.new_tokens_for(len(window_docs))
        rl = make_labels(len(window_docs), rankgpt.label_style)
        rp = rankgpt.build_prompt(query, window_docs, rl, max_new_tokens=max_new)
        rids = engine._encode_prompt(engine.render(rp.messages))
        row["rankgpt_full"] = {**vars_of(forced_generate(engine, rids, max_new)), "tokens": max_new}
        logging.info("query %s: %s", qid, json.dumps(summary_of(row)))
        rows.append(row)
    return rows


async def warm_up(engine: Any, item: Any, window: int) -> None:
    """One untimed pass of every timed path on the first query: the first call of each
    (CUDA kernels picked and loaded, attention capture set up, caches filled) costs far
    more than the next ones on a GPU (ICR's first queries took 1-3 s, later ones 0.3 s)."""
    from hoprank.rankers import FIRST, RankGPT
    from hoprank.rankers.icr import ICRRanker

    _, query, docs = item
    for ranker in (FIRST(engine, window=window), ICRRanker(engine), RankGPT(engine, window=window)):
        await ranker.arank(query, docs)
    forced_generate(engine, engine._encode_prompt("warm up " * 32), 4)


def summary_of(row: dict[str, Any]) -> dict[str, float]:
    return {
        "bare_s": min(r["wall"] for r in row["bare"]),
        "first_s": min(r["wall"] for r in row["first"]),
        "first_cold_s": row["first_cold"]["wall"],
        "icr_s": row["icr"]["wall"],
        "rankgpt_s": row["rankgpt"]["wall"],
        "rankgpt_full_s": row["rankgpt_full"]["wall"],
        "rankgpt_completion_tokens": row["rankgpt"]["completion_tokens"],
    }


async def batching(args: argparse.Namespace, engine: Any, items: list[Any]) -> list[dict[str, Any]]:
    """Section 3: windows/second at each batch size, windows of different queries."""
    from hoprank.llm.engines.batching import BatchingEngine
    from hoprank.rankers import FIRST

    pairs = [(q, d) for _, q, d in items]
    out: list[dict[str, Any]] = []
    reference: list[Any] | None = None
    saved = engine.max_batch_size
    try:
        for b in args.batch_sizes:
            engine.max_batch_size = max(saved, b)
            wrapped = BatchingEngine(engine, max_batch_size=b, max_wait_ms=args.max_wait_ms)
            ranker = FIRST(wrapped, window=args.window)
            with Clock() as c:
                rankings = await ranker.arank_many(pairs, concurrency=b)
            windows = sum(len(r.trace) for r in rankings)
            row: dict[str, Any] = {
                "batch_size": b,
                **vars_of(c),
                "windows": windows,
                "windows_per_s": windows / c.wall,
                "windows_per_cpu_s": windows / c.cpu if c.cpu else float("nan"),
                "forwards": wrapped.stats.calls,
                "batch_sizes_seen": wrapped.stats.sizes,
                "prompt_tokens": [r.usage.prompt_tokens for r in rankings],
            }
            if reference is None:
                reference = rankings
            else:
                diffs = [
                    abs(a.trace[i].output["scores"][k] - x.trace[i].output["scores"][k])
                    for a, x in zip(rankings, reference, strict=True)
                    for i in range(len(a.trace))
                    for k in a.trace[i].output["scores"]
                ]
                row["same_ranking_as_batch1"] = sum(
                    a.ids == x.ids for a, x in zip(rankings, reference, strict=True)
                )
                row["max_label_score_diff"] = max(diffs) if diffs else 0.0
            logging.info(
                "batch %d: %s", b, json.dumps({k: v for k, v in row.items() if k != "prompt_tokens"})
            )
            out.append(row)
    finally:
        engine.max_batch_size = saved
    return out


def ratios(rows: list[dict[str, Any]], batch: list[dict[str, Any]]) -> dict[str, Any]:
    tot = {
        k: sum(summary_of(r)[f"{k}_s"] for r in rows)
        for k in ("bare", "first", "first_cold", "icr", "rankgpt", "rankgpt_full")
    }
    cpu = {
        "bare": sum(min(x["cpu"] for x in r["bare"]) for r in rows),
        "first": sum(min(x["cpu"] for x in r["first"]) for r in rows),
        "icr": sum(r["icr"]["cpu"] for r in rows),
        "rankgpt": sum(r["rankgpt"]["cpu"] for r in rows),
        "rankgpt_full": sum(r["rankgpt_full"]["cpu"] for r in rows),
    }
    windows = {
        "first": sum(r["first"][0]["windows"] for r in rows),
        "icr": sum(r["icr"]["windows"] for r in rows),
        "rankgpt": sum(r["rankgpt"]["windows"] for r in rows),
    }
    first_pass = sum(r["icr"]["prefix_s"] + r["icr"]["query_s"] for r in rows)
    calib = sum(r["icr"]["calib_s"] for r in rows)
    n = len(rows)
    out: dict[str, Any] = {
        "queries": n,
        "seconds_per_query": {k: v / n for k, v in tot.items()},
        "cpu_seconds_per_query": {k: v / n for k, v in cpu.items()},
        "seconds_per_window": {k: tot[k] / windows[k] for k in windows},
        "rankgpt_at_cap_tokens": rows[0]["rankgpt_full"]["tokens"],
        "windows_per_query": {k: v / n for k, v in windows.items()},
        "rankgpt_completion_tokens_per_query": statistics.fmean(
            r["rankgpt"]["completion_tokens"] for r in rows
        ),
        # what bounds ratio (1): RankGPT = prefill + n_generated * decode step
        "decode_s_per_token": (tot["rankgpt_full"] - tot["bare"])
        / sum(r["rankgpt_full"]["tokens"] for r in rows),
        "first_prompt_tokens_per_query": statistics.fmean(r["first_prompt_tokens"] for r in rows),
        "icr_prefix_tokens_per_query": statistics.fmean(r["icr"]["prefix_tokens"] for r in rows),
        "ratio": {
            # per query: FIRST as a new query pays it (cold), like ICR and RankGPT
            "rankgpt_over_first": tot["rankgpt"] / tot["first_cold"],
            "rankgpt_over_first_warm": tot["rankgpt"] / tot["first"],
            "rankgpt_over_icr": tot["rankgpt"] / tot["icr"],
            "rankgpt_at_cap_over_first": tot["rankgpt_full"] / tot["first_cold"],
            "rankgpt_at_cap_over_icr": tot["rankgpt_full"] / tot["icr"],
            # per window: the bare forward is one window's forward
            "first_over_bare": (tot["first"] / windows["first"]) / (tot["bare"] / n),
            "first_over_bare_cpu": (cpu["first"] / windows["first"]) / (cpu["bare"] / n),
            "calib_over_first": calib / first_pass,
        },
        "icr_pass_seconds_per_query": {
            "prefix": sum(r["icr"]["prefix_s"] for r in rows) / n,
            "query": sum(r["icr"]["query_s"] for r in rows) / n,
            "calibration": calib / n,
        },
    }
    if batch:
        base = batch[0]["windows_per_s"]
        out["batching"] = {
            str(b["batch_size"]): {
                "windows_per_s": b["windows_per_s"],
                "speedup_vs_first": b["windows_per_s"] / base,
                "forwards": b["forwards"],
                "mean_batch": b["windows"] / b["forwards"] if b["forwards"] else 0.0,
                "same_ranking_as_first": b.get("same_ranking_as_batch1"),
                "max_label_score_diff": b.get("max_label_score_diff"),
            }
            for b in batch
        }
    return out


def report(summary: dict[str, Any], batch_sizes: list[int]) -> str:
    r = summary["ratio"]
    lines = [
        f"queries: {summary['queries']}  (seconds are context only; ratios are what this run measured)",
        f"per query  s: bare {summary['seconds_per_query']['bare']:.3f}  FIRST {summary['seconds_per_query']['first_cold']:.3f}"
        f" (repeat on the same shape {summary['seconds_per_query']['first']:.3f})"
        f"  ICR {summary['seconds_per_query']['icr']:.2f}  RankGPT {summary['seconds_per_query']['rankgpt']:.2f}"
        f"  (RankGPT generated {summary['rankgpt_completion_tokens_per_query']:.0f} tokens/query)"
        f"  RankGPT@cap {summary['seconds_per_query']['rankgpt_full']:.2f}"
        f"  (decode {summary['decode_s_per_token'] * 1000:.0f} ms/token)",
    ]

    def check(name: str, value: float, target: float, higher: bool) -> str:
        ok = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        return f"{name:<40} {value:8.3f}   target {sign} {target:<4}  {'MET' if ok else 'MISSED'}"

    lines.append(
        check("(1) RankGPT / FIRST per query", r["rankgpt_over_first"], TARGETS["rankgpt_over_first"], True)
    )
    lines.append(
        check("(1) RankGPT / ICR per query", r["rankgpt_over_icr"], TARGETS["rankgpt_over_icr"], True)
    )
    cap = summary["rankgpt_at_cap_tokens"]
    for other in ("first", "icr"):
        name = f"(1) RankGPT@{cap} tokens / {other.upper()}"
        lines.append(check(name, r[f"rankgpt_at_cap_over_{other}"], TARGETS[f"rankgpt_over_{other}"], True))
    lines.append(
        check(
            "(2) FIRST window / bare forward (wall)", r["first_over_bare"], TARGETS["first_over_bare"], False
        )
    )
    lines.append(f"{'(2) FIRST window / bare forward (CPU s)':<40} {r['first_over_bare_cpu']:8.3f}")
    for b, v in summary.get("batching", {}).items():
        lines.append(
            f"(3) batch {b:>2}: {v['windows_per_s']:.3f} windows/s = {v['speedup_vs_first']:.2f}x batch "
            f"{batch_sizes[0]}  ({v['forwards']} forwards, mean batch {v['mean_batch']:.1f}"
            + (
                f", same ranking {v['same_ranking_as_first']}"
                if v["same_ranking_as_first"] is not None
                else ""
            )
            + ")"
        )
    lines.append(
        check("(4) ICR calibration / first pass", r["calib_over_first"], TARGETS["calib_over_first"], False)
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    waited = wait_for_load(args.wait_load, args.wait_max) if args.wait_load else 0.0
    load_start = os.getloadavg()
    engine = TransformersEngine(
        args.model,
        threads=args.threads,
        device=args.device,
        dtype=args.dtype,
        sdpa_backends=args.sdpa_backends,
        length_buckets=args.length_buckets,
    )
    n_batch = max(args.batch_sizes) if args.batch_sizes else 0
    items = load_dl19(max(args.queries, n_batch), args.depth)
    bare_forward(engine, engine._encode_prompt("warm up " * 32))
    await warm_up(engine, items[0], args.window)
    rows = await per_query(args, engine, items[: args.queries])
    batch = await batching(args, engine, items[:n_batch]) if args.batch_sizes else []
    summary = ratios(rows, batch)
    summary.update(
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "engine": engine.describe(),
            "threads": args.threads,
            "depth": args.depth,
            "window": args.window,
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "waited_for_load_s": round(waited),
            "cpu_count": os.cpu_count(),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "targets": TARGETS,
            "gpu": "not measured" if not str(engine.device).startswith("cuda") else engine.device,
        }
    )
    print(report(summary, args.batch_sizes))
    print(
        f"load average start {load_start[0]:.2f}, end {summary['loadavg_end'][0]:.2f}; device {engine.device}; "
        f"peak RSS {summary['peak_rss_gb']} GB; GPU: {summary['gpu']}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"summary": summary, "per_query": rows, "batching": batch}, indent=2))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--queries", type=int, default=4, help="queries for sections 1, 2 and 4")
    ap.add_argument(
        "--batch-sizes",
        type=lambda s: [int(x) for x in s.split(",") if x.strip()],
        default=[1, 4, 16],
        help="section 3; uses max(batch sizes) queries (one window each at depth = window)",
    )
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved FIRST/bare repeats (min taken)")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="micro-batcher wait")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument(
        "--sdpa-backends", default=None, help="e.g. flash,efficient,math (leave cuDNN attention out on a GPU)"
    )
    ap.add_argument(
        "--length-buckets",
        default=None,
        help="pow2 or e.g. 1024,1536,2048 (pad logit forwards to these lengths)",
    )
    ap.add_argument("--wait-load", type=float, default=0.0, help="wait for the 1-min load average below this")
    ap.add_argument("--wait-max", type=float, default=900.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s"
    )
    logging.getLogger("hoprank").setLevel(logging.WARNING)
    if args.repeats < 1 or args.queries < 1:
        raise SystemExit("--repeats and --queries must be >= 1")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
