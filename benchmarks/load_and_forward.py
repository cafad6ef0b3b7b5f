"""Pull, load and forward timings of the offline model packs on this machine.

For each pack, in its own subprocess (so peak memory is per pack):

1. first ``pull`` (assemble + sha256-verify + convert GGUF → bf16 safetensors) into a
   fresh temporary cache (``--cache DIR`` to use/keep another one);
2. cached load of :class:`TransformersEngine` from that cache;
3. one forward of a ~2,000-token prompt built from real TREC DL passages: the engine's
   ``forward_last_logits`` (fp32 LM head) and a bare ``model(...)`` call with
   ``logits_to_keep=1`` for comparison (after one short warm-up forward).

Wall seconds (``*_s``) and process CPU seconds (``*_cpu_s``, all threads) are both
printed: on a shared machine the CPU figure divided by ``--threads`` approximates the
uncontended wall time; ``loadavg_*`` shows how busy the machine was.

Usage::

    .venv/bin/python benchmarks/load_and_forward.py smollm2-135m qwen2.5-coder-0.5b \
        qwen2.5-coder-1.5b --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DL19 = Path(os.environ.get("HOPRANK_SHARED", ROOT.parent / "shared")) / "datasets" / "trec-dl-2019-passage"


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _prompt_ids(engine: object, target: int) -> list[int]:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    assert isinstance(engine, TransformersEngine)
    passages = [json.loads(line)["text"] for line in (DL19 / "corpus.jsonl").open(encoding="utf-8")]
    body, i = [], 0
    while engine.tokenizer.count("\n".join(body)) < target - 120:
        body.append(f"[{i + 1}] {passages[i]}")
        i += 1
    msgs = [{"role": "user", "content": "Rank these passages:\n" + "\n".join(body)}]
    ids = engine._encode_prompt(engine.render(msgs, "["))  # type: ignore[arg-type]
    return ids[-target:] if len(ids) > target else ids


def run_one(pack: str, threads: int, tokens: int, repeats: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(threads)
    from hoprank.llm.engines.transformers_engine import TransformersEngine
    from hoprank.llm.models import packs

    out: dict[str, object] = {"pack": pack, "threads": threads, "loadavg_start": os.getloadavg()[0]}
    t0, c0 = time.perf_counter(), time.process_time()
    packs.gguf_path(pack)
    out["assemble_s"] = round(time.perf_counter() - t0, 2)
    packs.pull(pack)
    out["first_pull_s"] = round(time.perf_counter() - t0, 2)
    out["first_pull_cpu_s"] = round(time.process_time() - c0, 2)
    out["peak_rss_after_pull_gb"] = round(_peak_gb(), 2)

    t0, c0 = time.perf_counter(), time.process_time()
    engine = TransformersEngine(pack, threads=threads)
    out["cached_load_s"] = round(time.perf_counter() - t0, 2)
    out["cached_load_cpu_s"] = round(time.process_time() - c0, 2)
    out["dtype"] = str(engine.dtype)
    out["attn"] = engine.attn_implementation

    ids = torch.tensor([_prompt_ids(engine, tokens)])
    out["prompt_tokens"] = ids.shape[1]
    engine.forward_last_logits(ids[:, :64])  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        logits = engine.forward_last_logits(ids)
        times.append(round(time.perf_counter() - t0, 2))
        cpu.append(round(time.process_time() - c0, 2))
    out["forward_engine_s"] = times
    out["forward_engine_cpu_s"] = cpu
    with torch.inference_mode():
        t0 = time.perf_counter()
        bare = engine.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
        out["forward_bare_s"] = round(time.perf_counter() - t0, 2)
    out["same_argmax"] = int(bare.argmax()) == int(logits[0].argmax())
    out["max_abs_logit_diff"] = round(float((bare - logits[0]).abs().max()), 3)
    out["peak_rss_gb"] = round(_peak_gb(), 2)
    out["loadavg_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("packs", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cache", help="cache dir to use and keep (default: a fresh temp dir per pack)")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.packs[0], args.threads, args.tokens, args.repeats)), flush=True)
        return
    for pack in args.packs:
        cache = args.cache or tempfile.mkdtemp(prefix="hoprank-bench-")
        env = {**os.environ, "HOPRANK_CACHE": cache, "HF_HUB_OFFLINE": "1"}
        cmd = [sys.executable, __file__, pack, "--one", "--threads", str(args.threads)]
        cmd += ["--tokens", str(args.tokens), "--repeats", str(args.repeats)]
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        finally:
            if not args.cache:
                shutil.rmtree(cache, ignore_errors=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode or not lines:
            print(f"{pack}: FAILED (rc={res.returncode})\n{res.stderr[-3000:]}", file=sys.stderr)
            continue
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
