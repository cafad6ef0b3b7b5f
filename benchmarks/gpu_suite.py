"""One prepared GPU benchmark (issue 22): FIRST, ICR and RankGPT at the device's pace.

For each random-weight shape (``random_model.py``: Qwen2.5-1.5B and 7B, real tokenizer)
on DL19 BM25 windows (``--window`` passages, one window per query), in one run and one
JSON (``OUT/gpu_suite.json``, rewritten after every section so a run cut short still
leaves its figures):

- ``new_query``: FIRST vs a bare ``model(ids, logits_to_keep=1)`` of the same token ids,
  each on a sequence length nothing has run yet (queries alternate which of the two meets
  the length first) and repeated, for four engine settings: ``default``, ``buckets``
  (``length_buckets``), ``sdpa`` (``sdpa_backends=flash,efficient,math``) and both. Each
  setting gets its own fresh queries; bucket settings first warm every bucket once, as a
  service would at start-up. The forward shapes seen are counted with a forward hook.
- ``icr``: a whole ICR query (new lengths) vs a bare forward of the query's FIRST window
  (new length, then repeated), for ``default`` and ``sdpa``.
- ``batched_first``: FIRST windows/s through the micro-batcher at ``--batch-sizes``
  (``perf_rankers.batching``) as useful TFLOP/s (no padding counted) and as a fraction of
  a bf16 matmul peak measured at the start of the run.
- ``rankers``: RankGPT / FIRST and RankGPT / ICR per query (``perf_rankers.per_query``,
  ``perf_rankers.ratios``) with the ``buckets+sdpa`` setting.

Staging (on the CPU machine; the tokenizer folder is ~11 MB, DL19 ~2 MB)::

    python benchmarks/gpu_suite.py --prepare .gpu --tokenizer ~/.cache/hoprank/hf/qwen2.5-coder-1.5b

then on the GPU machine (``carry: [".gpu"]``; target <= 8 minutes on an H100/H200)::

    HOPRANK_SHARED=$PWD/.gpu PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py --tokenizer .gpu/tokenizer --out $OUT

CPU rehearsal (a 2-layer Qwen2-shaped model, every code path; tests/test_gpu_suite.py)::

    python benchmarks/gpu_suite.py --shapes tiny --tokenizer .gpu/tokenizer --out /tmp/gs --rehearsal
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import perf_rankers  # noqa: E402
import random_model  # noqa: E402
from _timing import DL19, Clock, bare_forward, load_dl19, on_engine_thread, vars_of  # noqa: E402
from _timing import _sync as sync  # noqa: E402

SHAPES = {"1.5b": "qwen2.5-1.5b", "7b": "qwen2.5-7b", "tiny": "qwen2.5-tiny"}
BACKENDS = ["flash", "efficient", "math"]
TARGETS = {"first_new_over_bare_new": 1.15, "icr_over_bare": 1.6, "batched_first_peak_fraction_7b": 0.5}
log = logging.getLogger("gpu_suite")


def prepare(folder: Path, tokenizer: Path) -> None:
    """Copy the tokenizer files and DL19 into ``folder`` (an ignored folder that travels)."""
    tok = folder / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for name in random_model.TOKENIZER_FILES:
        if (tokenizer / name).exists():
            shutil.copy(tokenizer / name, tok / name)
    dl19 = folder / "datasets" / DL19.name
    shutil.copytree(DL19, dl19, dirs_exist_ok=True)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"staged {folder}: {size / 1e6:.1f} MB (tokenizer + {DL19.name})")


def settings(buckets: Any) -> dict[str, tuple[Any, list[str] | None]]:
    return {
        "default": (None, None),
        "buckets": (buckets, None),
        "sdpa": (None, BACKENDS),
        "buckets+sdpa": (buckets, BACKENDS),
    }


def configure(engine: Any, buckets: Any, backends: list[str] | None) -> None:
    from hoprank.llm.runtime._buckets import length_buckets
    from hoprank.llm.runtime._device import sdpa_backends

    engine.length_buckets = length_buckets(buckets)
    engine.sdpa_backends = sdpa_backends(backends)


def matmul_peak(device: str, n: int, iters: int) -> dict[str, Any]:
    """bf16 ``n x n`` matmul TFLOP/s: the peak batched FIRST is measured against."""
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    s = time.perf_counter() - t0
    return {"n": n, "iters": iters, "seconds": s, "tflops": 2 * n**3 * iters / s / 1e12}


class Shapes:
    """Sequence lengths of every forward of ``model`` while active (a forward pre-hook)."""

    def __init__(self, model: Any) -> None:
        self.model, self.seen = model, []  # type: ignore[var-annotated]

    def __enter__(self) -> Shapes:
        def hook(_m: Any, args: Any, kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is not None:
                self.seen.append(tuple(ids.shape))

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def flops_per_window(engine: Any, tokens: int) -> float:
    """Useful FLOPs of one FIRST forward: the decoder layers' matmuls (2 x params x
    tokens), causal attention (2 x layers x q-width x tokens^2) and one LM-head row."""
    cfg = engine.model.config
    layers = engine.model.get_decoder().layers
    body = sum(p.numel() for p in layers.parameters())
    q_width = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    return (
        2.0 * body * tokens
        + 2.0 * cfg.num_hidden_layers * q_width * tokens**2
        + 2.0 * cfg.hidden_size * cfg.vocab_size
    )


def first_ids(engine: Any, first: Any, query: str, docs: list[Any]) -> list[int]:
    labels = first.labels_for(len(docs))
    wp = first.build_prompt(query, docs, labels, max_new_tokens=1, prefill=first.prefill)
    ids: list[int] = engine._encode_prompt(engine.render(wp.messages, first.prefill))
    return ids


def prewarm(engine: Any, buckets: Any, up_to: int) -> list[int]:
    """One forward at each bucket length up to ``up_to`` (what a service does at start-up)."""
    lengths = sorted({engine._bucket(n) for n in range(64, up_to + 1, 64)})
    for n in lengths:
        on_engine_thread(engine, engine._locked, engine._forward_rows, [[engine._pad_id] * n])
    sync(engine)
    return lengths


async def new_query(args: argparse.Namespace, engine: Any, items: list[Any], name: str) -> dict[str, Any]:
    from hoprank.rankers import FIRST

    first = FIRST(engine, window=args.window)
    rows = []
    with Shapes(engine.model.get_decoder()) as shapes:  # bare forwards and FIRST (fp32 head) both pass here
        for j, (qid, query, docs) in enumerate(items):
            ids = first_ids(engine, first, query, docs)
            row: dict[str, Any] = {"qid": qid, "tokens": len(ids), "padded_to": engine._bucket(len(ids))}
            order = ("first", "bare") if j % 2 == 0 else ("bare", "first")
            for k, what in enumerate(order):
                label = f"{what}_{'new' if k == 0 else 'after'}"
                if what == "first":
                    with Clock() as c:
                        await first.arank(query, docs)
                    row[label] = vars_of(c)
                else:
                    row[label] = vars_of(bare_forward(engine, ids))
            bare_rep, first_rep = [], []
            for _ in range(args.repeats):
                bare_rep.append(bare_forward(engine, ids).wall)
                with Clock() as c:
                    await first.arank(query, docs)
                first_rep.append(c.wall)
            row["bare_repeat"], row["first_repeat"] = min(bare_rep), min(first_rep)
            rows.append(row)
    described = engine.describe()
    out: dict[str, Any] = {
        "engine": {k: described[k] for k in ("length_buckets", "sdpa_backends")},
        "per_query": rows,
        "forward_lengths_seen": sorted({s[-1] for s in shapes.seen}),
    }

    def per_token(key: str) -> float | None:
        sel = [r for r in rows if key in r]
        return sum(r[key]["wall"] for r in sel) / sum(r["tokens"] for r in sel) if sel else None

    f_new, b_new = per_token("first_new"), per_token("bare_new")
    out["first_new_s_per_1k_tokens"] = f_new * 1000 if f_new else None
    out["bare_new_s_per_1k_tokens"] = b_new * 1000 if b_new else None
    out["first_new_over_bare_new"] = f_new / b_new if f_new and b_new else None
    out["first_repeat_over_bare_repeat"] = sum(r["first_repeat"] for r in rows) / sum(
        r["bare_repeat"] for r in rows
    )
    log.info("%s new_query: %s", name, {k: v for k, v in out.items() if k != "per_query"})
    return out


async def icr_vs_bare(args: argparse.Namespace, engine: Any, items: list[Any], name: str) -> dict[str, Any]:
    from hoprank.rankers import FIRST
    from hoprank.rankers.icr import ICRRanker

    icr, first = ICRRanker(engine), FIRST(engine, window=args.window)
    rows = []
    for qid, query, docs in items:
        with Clock() as c:
            ranking = await icr.arank(query, docs)
        sync(engine)
        ids = first_ids(engine, first, query, docs)
        bare_new = bare_forward(engine, ids)
        bare_rep = min(bare_forward(engine, ids).wall for _ in range(args.repeats))
        rows.append(
            {
                "qid": qid,
                "icr": vars_of(c),
                "icr_prefix_tokens": sum(s.input["prefix_tokens"] for s in ranking.trace),
                "bare_tokens": len(ids),
                "bare_new": vars_of(bare_new),
                "bare_repeat": bare_rep,
            }
        )
    icr_s = sum(r["icr"]["wall"] for r in rows)
    out = {
        "per_query": rows,
        "icr_s_per_query": icr_s / len(rows),
        "icr_over_bare_new": icr_s / sum(r["bare_new"]["wall"] for r in rows),
        "icr_over_bare_repeat": icr_s / sum(r["bare_repeat"] for r in rows),
    }
    log.info("%s icr: %s", name, {k: v for k, v in out.items() if k != "per_query"})
    return out


async def batched(args: argparse.Namespace, engine: Any, items: list[Any], peak: float) -> dict[str, Any]:
    ns = argparse.Namespace(batch_sizes=args.batch_sizes, max_wait_ms=args.max_wait_ms, window=args.window)
    rows = await perf_rankers.batching(ns, engine, items)
    for r in rows:
        flops = sum(flops_per_window(engine, t) for t in r["prompt_tokens"])
        r["useful_tflops"] = flops / r["wall"] / 1e12
        r["peak_fraction"] = r["useful_tflops"] / peak
    return {str(r["batch_size"]): r for r in rows}


async def rankers(args: argparse.Namespace, engine: Any, items: list[Any]) -> dict[str, Any]:
    ns = argparse.Namespace(window=args.window, repeats=args.repeats)
    rows = await perf_rankers.per_query(ns, engine, items)
    summary = perf_rankers.ratios(rows, [])
    return {"summary": summary, "per_query": rows}


class Run:
    """The JSON being built, rewritten after each section; sections past the budget are skipped."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.t0 = args, time.monotonic()
        self.data: dict[str, Any] = {"command": " ".join(sys.argv), "shapes": {}, "skipped": []}
        self.path = args.out / "gpu_suite.json"

    def save(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.t0, 1)
        self.path.write_text(json.dumps(self.data, indent=1, default=str))

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    async def section(self, where: dict[str, Any], key: str, label: str, coro: Any) -> None:
        """Await ``coro`` into ``where[key]`` and save, unless the budget is spent."""
        if self.left() <= 0:
            coro.close()
            self.data["skipped"].append(label)
            return
        t = time.monotonic()
        result = await coro
        result["section_s"] = round(time.monotonic() - t, 2)
        where[key] = result
        self.save()


async def run_shape(run: Run, shape: str, items: list[Any], peak: float) -> None:
    import torch

    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.rankers import FIRST
    from hoprank.rankers.icr import ICRRanker

    args = run.args
    folder = args.models / shape
    meta = folder / "random-weights.json"
    t0 = time.monotonic()
    if meta.exists() and json.loads(meta.read_text())["shape"] == SHAPES[shape]:
        info = json.loads(meta.read_text())
    else:
        info = random_model.build(SHAPES[shape], args.tokenizer, folder, args.build_device, 0)
    built = time.monotonic() - t0
    gc.collect()
    engine = TransformersEngine(str(folder), device=args.device, dtype=args.dtype, threads=args.threads)
    res: dict[str, Any] = {
        "model": info,
        "build_s": round(built, 1),
        "load_s": round(time.monotonic() - t0 - built, 1),
        "engine": engine.describe(),
    }
    run.data["shapes"][shape] = res
    run.save()
    sets = settings(args.buckets)
    configure(engine, *sets["buckets+sdpa"])
    await perf_rankers.warm_up(engine, items[0], args.window)
    n_new, n_icr = args.queries_new, args.queries_icr
    fresh = iter(range(1, len(items)))

    def take(n: int) -> list[Any]:
        return [items[next(fresh)] for _ in range(n)]

    res["new_query"], res["icr"], res["batched_first"] = {}, {}, {}
    for name, (buckets, backends) in sets.items():
        configure(engine, buckets, backends)
        warmed = prewarm(engine, buckets, args.prewarm_up_to) if buckets else []
        await FIRST(engine, window=args.window).arank(items[0][1], items[0][2])  # this setting's kernels
        where = res["new_query"]
        await run.section(
            where, name, f"{shape}/new_query/{name}", new_query(args, engine, take(n_new), name)
        )
        if name in where:
            where[name]["prewarmed_lengths"] = warmed
    for name in ("default", "sdpa"):
        configure(engine, *sets[name])
        await ICRRanker(engine).arank(items[0][1], items[0][2])
        await run.section(
            res["icr"], name, f"{shape}/icr/{name}", icr_vs_bare(args, engine, take(n_icr), name)
        )
    for name in ("default", "buckets+sdpa"):
        configure(engine, *sets[name])
        if sets[name][0]:
            prewarm(engine, sets[name][0], args.prewarm_up_to)
        batch_items = items[1 : 1 + args.batch_queries]
        await run.section(
            res["batched_first"],
            name,
            f"{shape}/batched_first/{name}",
            batched(args, engine, batch_items, peak),
        )
    configure(engine, *sets["buckets+sdpa"])
    await run.section(res, "rankers", f"{shape}/rankers", rankers(args, engine, take(args.rankgpt_queries)))
    res["targets"] = targets(res, shape)
    run.save()
    del engine
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def targets(res: dict[str, Any], shape: str) -> dict[str, Any]:
    """Each issue-22 target next to what this run measured (the best setting where several ran)."""
    out: dict[str, Any] = {}
    new = {
        k: v["first_new_over_bare_new"]
        for k, v in res.get("new_query", {}).items()
        if v.get("first_new_over_bare_new")
    }
    if new:
        best = min(new, key=lambda k: new[k])
        out["first_new_over_bare_new"] = {
            "value": new[best],
            "setting": best,
            "target": f"<= {TARGETS['first_new_over_bare_new']}",
        }
    icr = {k: v["icr_over_bare_new"] for k, v in res.get("icr", {}).items()}
    if icr:
        best = min(icr, key=lambda k: icr[k])
        out["icr_over_bare_new"] = {
            "value": icr[best],
            "setting": best,
            "target": f"<= {TARGETS['icr_over_bare']}",
        }
    peaks = [
        (b["peak_fraction"], f"{k}@{b['batch_size']}")
        for k, v in res.get("batched_first", {}).items()
        for b in v.values()
        if isinstance(b, dict)
    ]
    if peaks:
        value, setting = max(peaks)
        target = f">= {TARGETS['batched_first_peak_fraction_7b']}" if shape == "7b" else "context"
        out["batched_first_peak_fraction"] = {"value": value, "setting": setting, "target": target}
    if "rankers" in res:
        r = res["rankers"]["summary"]["ratio"]
        out["rankgpt_over_first"] = r["rankgpt_over_first"]
        out["rankgpt_over_icr"] = r["rankgpt_over_icr"]
    return out


def buckets_arg(text: str) -> Any:
    return "pow2" if text == "pow2" else [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--prepare", type=Path, default=None, help="stage tokenizer + DL19 into this folder and stop"
    )
    ap.add_argument("--tokenizer", type=Path, required=True, help="folder with the Qwen2.5 tokenizer.json")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_suite.json")
    ap.add_argument("--shapes", default="1.5b,7b", help="comma list of 1.5b, 7b, tiny")
    ap.add_argument(
        "--models", type=Path, default=Path("/tmp/gpu_suite_models"), help="random-weight folders"
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--build-device", default=None, help="where random weights are drawn (default: cuda if any)"
    )
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument(
        "--buckets", type=buckets_arg, default=buckets_arg("1024,1280,1536,1792,2048,2560,3072,4096")
    )
    ap.add_argument("--prewarm-up-to", type=int, default=2560, help="bucket lengths warmed before timing")
    ap.add_argument("--queries-new", type=int, default=6, help="fresh queries per setting (new_query)")
    ap.add_argument("--queries-icr", type=int, default=4, help="fresh queries per setting (icr)")
    ap.add_argument("--rankgpt-queries", type=int, default=2)
    ap.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 16])
    ap.add_argument("--batch-queries", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peak-n", type=int, default=8192)
    ap.add_argument("--budget-s", type=float, default=450.0, help="sections starting later are skipped")
    ap.add_argument("--rehearsal", action="store_true", help="tiny sizes for a CPU run of every path")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("hoprank").setLevel(logging.WARNING)
    if args.prepare:
        prepare(args.prepare, args.tokenizer)
        return
    if args.out is None:
        raise SystemExit("--out is required")
    if args.rehearsal:
        args.queries_icr = args.rankgpt_queries = args.repeats = 1
        args.queries_new = 2  # both orders: FIRST first, then bare first
        args.batch_sizes, args.batch_queries, args.depth, args.window = [1, 2], 2, 5, 5
        args.peak_n, args.threads, args.prewarm_up_to = 256, 1, 1024
        args.buckets = buckets_arg("512,1024")
    asyncio.run(amain(args))


async def amain(args: argparse.Namespace) -> None:
    import torch
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    cuda = (torch.cuda.is_available() and args.device in ("auto", "cuda")) or args.device.startswith("cuda")
    args.build_device = args.build_device or ("cuda" if cuda else "cpu")
    run = Run(args)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise SystemExit(f"unknown shape {s!r}; known: {', '.join(SHAPES)}")
    run.data.update(
        {
            "gpu": torch.cuda.get_device_name() if cuda else None,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "targets": TARGETS,
            "settings": {
                k: {"length_buckets": b, "sdpa_backends": s} for k, (b, s) in settings(args.buckets).items()
            },
            "window": args.window,
        }
    )
    peak = matmul_peak("cuda" if cuda else "cpu", args.peak_n, 50 if cuda else 3)
    run.data["matmul_peak_bf16"] = peak
    run.save()
    n = 1 + 4 * args.queries_new + 2 * args.queries_icr + args.rankgpt_queries
    items = load_dl19(max(n, 1 + args.batch_queries), args.depth)
    if len(items) < n:
        raise SystemExit(f"{n} DL19 queries needed (1 warm-up + fresh ones per section), {len(items)} exist")
    for shape in shapes:
        if run.left() <= 0:
            run.data["skipped"].append(shape)
            continue
        await run_shape(run, shape, items, peak["tflops"])
    run.save()
    print(json.dumps({s: v.get("targets") for s, v in run.data["shapes"].items()}, indent=1))
    print(f"wrote {run.path} in {run.data['seconds']} s; skipped: {run.data['skipped'] or 'nothing'}")


if __name__ == "__main__":
    main()
