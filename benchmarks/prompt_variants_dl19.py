"""Prompt experiment: RankGPT with two prompt variants on TREC DL19, BM25 top-20.

Starts a real llama.cpp server (``LlamaCppServer.from_pack``, 127.0.0.1 only) for
Qwen2.5-Coder-1.5B-Instruct, then, for each prompt variant, runs the resumable evals
runner (``ExperimentConfig`` + ``run_experiment``, what ``hoprank eval`` runs; the
equivalent CLI command is printed) with ranker ``rankgpt`` and ``prompt=<variant>`` over
the same queries, each into its own run folder, and finally the ``hoprank compare`` CLI
on the run folders: nDCG@10 means, the per-query deltas, wins/losses/ties and paired p-values
(permutation, Wilcoxon, t-test; scipy). The first variant is the baseline.

    .venv/bin/python benchmarks/prompt_variants_dl19.py --limit 2     # smoke slice
    .venv/bin/python benchmarks/prompt_variants_dl19.py               # all 43 queries

``--base-url`` reuses a running server instead of starting one. LLM calls are
not cached by default, so the reported seconds per query are real model time
(``--cache`` turns the evals LLM-call cache on; a rerun of the same command resumes from
``results.jsonl`` either way).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DL19 = ROOT.parent / "shared" / "datasets" / "trec-dl-2019-passage"


def _run(cmd: list[str]) -> str:
    print("$ " + shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"command failed with exit code {proc.returncode}")
    return proc.stdout


def _config(args: argparse.Namespace, base_url: str, prompt: str) -> Any:
    from hoprank.evals import ExperimentConfig

    return ExperimentConfig(
        dataset=str(args.dataset),
        first_stage="bm25",
        depth=args.depth,
        ranker="rankgpt",
        prompt=prompt,
        model=f"openai:{args.model}",
        engine_params={"base_url": base_url, "server": "llamacpp", "context_window": args.n_ctx},
        metrics=["ndcg@10"],
        limit=args.limit,
        name=prompt,
    )


def _cli_equivalent(cfg: Any, out: Path, cache: bool) -> str:
    cmd = [
        "hoprank", "eval", "--dataset", cfg.dataset, "--first-stage", "bm25", "--depth", str(cfg.depth),
        "--ranker", "rankgpt", "--prompt", cfg.prompt, "--model", cfg.model,
        "--base-url", cfg.engine_params["base_url"], "--engine-param", "server=llamacpp",
        "--engine-param", f"context_window={cfg.engine_params['context_window']}",
        "--metric", "ndcg@10", "--name", cfg.name, "--out", str(out),
    ]  # fmt: skip
    if cfg.limit:
        cmd += ["--limit", str(cfg.limit)]
    if not cache:
        cmd.append("--no-cache")
    return shlex.join(cmd)


def _per_query(run_dir: Path) -> dict[str, float]:
    m = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {q: row["ndcg@10"] for q, row in m["per_query"].items() if "ndcg@10" in row}


def _trace_stats(run_dir: Path, prompt: str) -> str:
    """How the model answered: windows whose order it left unchanged, unparseable outputs
    (fallbacks), outputs matching the prompt's ``output_pattern``, the prompt refs seen."""
    from hoprank.prompts import load_prompt

    tpl = load_prompt(prompt)
    n = same = fallback = conform = 0
    refs: set[str] = set()
    for line in (run_dir / "traces.jsonl").read_text(encoding="utf-8").splitlines():
        for step in json.loads(line)["trace"]:
            if step.get("kind") != "window":
                continue
            n += 1
            same += step["output"].get("order") == step["input"].get("ids")
            fallback += bool(step.get("fallback"))
            conform += tpl.check_output(step.get("raw") or "")
            refs.add(step.get("prompt"))
    return (
        f"{n} windows: {same} kept the input order, {fallback} unparseable, "
        f"{conform} match output_pattern; prompt {', '.join(sorted(map(str, refs)))}"
    )


def _summary(dirs: list[Path], labels: list[str], comp: dict[str, Any]) -> None:
    base = _per_query(dirs[0])
    runs = {r["label"]: r for r in comp["runs"]}
    mc = next(m for m in comp["metrics"] if m["metric"] == "ndcg@10")
    print(f"\nnDCG@10 on {mc['n']} queries (baseline {labels[0]}):")
    print(
        f"{'prompt':<22}{'nDCG@10':>9}{'delta':>9}{'W/L/T':>10}{'p perm':>9}{'p wilc':>9}{'p t':>9}{'s/query':>9}"
    )
    for lab in labels:
        d = mc["delta"].get(lab)
        wlt = f"{mc['wins'][lab]}/{mc['losses'][lab]}/{mc['ties'][lab]}" if d is not None else ""

        def p(key: str, lab: str = lab) -> str:
            v = mc[key].get(lab)
            return "" if v is None else f"{v:.3g}"

        print(
            f"{lab:<22}{mc['means'][lab]:>9.4f}{'' if d is None else f'{d:+.4f}':>9}{wlt:>10}"
            f"{p('p_permutation'):>9}{p('p_wilcoxon'):>9}{p('p_ttest'):>9}{runs[lab]['latency_mean_s']:>9.2f}"
        )
    fs = runs[labels[0]]["first_stage"].get("ndcg@10")
    if fs is not None:
        print(f"{'(BM25 first stage)':<22}{fs:>9.4f}")
    for lab, run_dir in zip(labels, dirs, strict=True):
        print(f"{lab}: {_trace_stats(run_dir, lab)}")
    for lab, run_dir in zip(labels[1:], dirs[1:], strict=True):
        other = _per_query(run_dir)
        deltas = sorted(((other[q] - base[q], q) for q in base if q in other), reverse=True)
        print(f"\nper-query nDCG@10 delta, {lab} - {labels[0]} (largest first):")
        print("  " + "  ".join(f"{q}:{d:+.3f}" for d, q in deltas))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=DL19)
    ap.add_argument(
        "--prompts", default="rankgpt@1,rankgpt-short@1", help="comma-separated; first = baseline"
    )
    ap.add_argument("--model", default="qwen2.5-coder-1.5b", help="model pack name")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="only the first N queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per HTTP request")
    ap.add_argument("--base-url", default=None, help="use this running server instead of starting one")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "prompt-variants-dl19")
    ap.add_argument("--cache", action="store_true", help="use the evals LLM-call cache")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    if len(prompts) < 2:
        raise SystemExit("--prompts needs at least two variants")
    root = args.out / f"d{args.depth}-n{args.limit or 'all'}"
    dirs = [root / p.replace("@", "_v") for p in prompts]
    with ExitStack() as stack:
        base_url = args.base_url
        if base_url is None:
            from hoprank.llm.models.llamacpp_server import LlamaCppServer

            t0 = time.perf_counter()
            server = LlamaCppServer.from_pack(args.model, threads=args.threads, n_ctx=args.n_ctx)
            stack.enter_context(server)
            base_url = server.base_url
            print(f"llama.cpp server for {args.model} at {base_url} ({time.perf_counter() - t0:.1f} s)")
        from hoprank.evals import run_experiment
        from hoprank.llm.engines.openai_engine import OpenAIEngine
        from hoprank.llm.transport.retry import RetryPolicy

        # The CLI's engine keeps the default retry budget (60 s per call); a 20-passage
        # window of a 1.5B model on 2 shared cores can take minutes, so the engine is
        # built here with a budget of --timeout seconds and handed to the runner.
        engine = OpenAIEngine(
            args.model,
            base_url=base_url,
            server="llamacpp",
            context_window=args.n_ctx,
            timeout=args.timeout,
            retry=RetryPolicy(max_attempts=2, total_budget_s=2 * args.timeout),
        )
        for prompt, run_dir in zip(prompts, dirs, strict=True):
            cfg = _config(args, base_url, prompt)
            print(f"# {prompt}; equivalent CLI run: {_cli_equivalent(cfg, run_dir, args.cache)}", flush=True)
            t0 = time.perf_counter()
            res = run_experiment(cfg, run_dir, engine=engine, cache=args.cache, progress=None)
            print(
                f"{prompt}: nDCG@10 {res.metrics.get('ndcg@10', float('nan')):.4f} over "
                f"{res.n_queries} queries (resumed {res.resumed}; {time.perf_counter() - t0:.0f} s wall)",
                flush=True,
            )
    compare = [
        sys.executable,
        "-m",
        "hoprank",
        "compare",
        *map(str, dirs),
        "--metric",
        "ndcg@10",
        "--out",
        str(root),
    ]
    print(_run(compare))
    comp = json.loads((root / "comparison.json").read_text(encoding="utf-8"))
    _summary(dirs, prompts, comp)
    print(f"\nrun folders: {', '.join(map(str, dirs))}; comparison: {root / 'comparison.md'}")


if __name__ == "__main__":
    main()
