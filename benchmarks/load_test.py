"""Bounded load test of the hoprank HTTP service (127.0.0.1 only).

Sends a fixed number of ``POST /v1/rerank`` requests built from real DL19 queries and
their BM25 passages, with at most ``--concurrency`` in flight, and stops at
``--time-limit`` seconds whatever happens. Reports throughput, p50/p90/p99 latency and
status counts (JSON on stdout with ``--json``).

Against a running server::

    python benchmarks/load_test.py --url http://127.0.0.1:8000 --requests 200 --concurrency 8

Or let the script start ``hoprank serve`` on a free port and stop it afterwards::

    python benchmarks/load_test.py --start-server --ranker identity --requests 500 --concurrency 16
    python benchmarks/load_test.py --start-server --model smollm2-135m --ranker first \\
        --requests 12 --concurrency 2 --docs 10 --time-limit 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "trec-dl-2019-passage"


def load_payloads(data: Path, docs_per_query: int) -> list[tuple[str, list[str]]]:
    queries = [json.loads(line) for line in (data / "queries.jsonl").open(encoding="utf-8")]
    run: dict[str, list[str]] = {}
    for line in (data / "run.bm25.tsv").open():
        qid, docid = line.split("\t")[:2]
        if len(run.setdefault(qid, [])) < docs_per_query:
            run[qid].append(docid)
    wanted = {d for ids in run.values() for d in ids}
    corpus: dict[str, str] = {}
    for line in (data / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in wanted:
            corpus[r["id"]] = r["text"]
    return [(q["text"], [corpus[d] for d in run[q["id"]]]) for q in queries if q["id"] in run]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


async def run_load(
    url: str,
    payloads: list[tuple[str, list[str]]],
    *,
    requests: int,
    concurrency: int,
    time_limit: float,
    ranker: str | None,
    token: str | None,
    request_timeout: float,
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies: list[float] = []
    rejected: list[float] = []
    statuses: Counter[str] = Counter()
    next_index = 0
    t_start = time.perf_counter()
    deadline = t_start + time_limit

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < requests and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            query, docs = payloads[i % len(payloads)]
            body: dict[str, Any] = {"query": query, "documents": docs, "top_n": 5}
            if ranker:
                body["ranker"] = ranker
            t0 = time.perf_counter()
            try:
                left = max(0.1, deadline - t0)
                r = await client.post("/v1/rerank", json=body, timeout=min(request_timeout, left))
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    rejected.append(time.perf_counter() - t0)
            except httpx.TimeoutException:
                statuses["client_timeout"] += 1
            except httpx.TransportError as exc:
                statuses[f"transport:{type(exc).__name__}"] += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t_start
    done = sum(statuses.values())
    return {
        "url": url,
        "ranker": ranker or "(server default)",
        "requests_planned": requests,
        "requests_sent": done,
        "concurrency": concurrency,
        "docs_per_request": len(payloads[0][1]) if payloads else 0,
        "wall_s": round(wall, 3),
        "throughput_rps": round(done / wall, 3) if wall else 0.0,
        "ok_rps": round(len(latencies) / wall, 3) if wall else 0.0,
        "latency_ok_s": {
            "p50": round(percentile(latencies, 50), 4),
            "p90": round(percentile(latencies, 90), 4),
            "p99": round(percentile(latencies, 99), 4),
            "mean": round(statistics.fmean(latencies), 4) if latencies else None,
            "max": round(max(latencies), 4) if latencies else None,
        },
        "latency_non_200_s": {
            "p50": round(percentile(rejected, 50), 4),
            "max": round(max(rejected), 4) if rejected else None,
        },
        "status_counts": dict(sorted(statuses.items())),
        "stopped_by_time_limit": done < requests,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "hoprank", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-concurrency", str(args.server_concurrency), "--max-queue", str(args.server_queue)]
    cmd += ["--timeout", str(args.server_timeout), "--log-level", "warning", "--max-documents", "200"]
    if args.model:
        cmd += ["--model", args.model, "--threads", str(args.threads)]
    if args.ranker:
        cmd += ["--ranker", args.ranker]
    env = {k: v for k, v in os.environ.items() if k != "HOPRANK_API_TOKEN"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited during startup (code {proc.returncode})")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit("server did not start in time")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="running server (127.0.0.1 / localhost only)")
    ap.add_argument("--start-server", action="store_true", help="start `hoprank serve` on a free port")
    ap.add_argument("--model", help="with --start-server: engine spec (e.g. smollm2-135m)")
    ap.add_argument("--ranker", help="ranker to request (default: the server's)")
    ap.add_argument("--requests", type=int, default=100, help="fixed number of requests")
    ap.add_argument("--concurrency", type=int, default=8, help="client requests in flight")
    ap.add_argument("--time-limit", type=float, default=120.0, help="stop sending after this many seconds")
    ap.add_argument("--request-timeout", type=float, default=120.0)
    ap.add_argument("--docs", type=int, default=20, help="passages per request (DL19 BM25 top-n)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="DL19 folder")
    ap.add_argument("--token-env", default="HOPRANK_API_TOKEN", help="env var with the bearer token (--url)")
    ap.add_argument("--server-concurrency", type=int, default=2)
    ap.add_argument("--server-queue", type=int, default=4)
    ap.add_argument("--server-timeout", type=float, default=120.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--startup-timeout", type=float, default=180.0)
    ap.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.time_limit <= 0:
        ap.error("--requests, --concurrency and --time-limit must be positive")
    if bool(args.url) == bool(args.start_server):
        ap.error("give exactly one of --url or --start-server")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        ap.error("this load test only targets 127.0.0.1 / localhost")

    payloads = load_payloads(args.data, args.docs)
    proc = None
    url = args.url
    if args.start_server:
        t0 = time.perf_counter()
        proc, url = start_server(args)
        startup = time.perf_counter() - t0
    try:
        report = asyncio.run(
            run_load(
                url,
                payloads,
                requests=args.requests,
                concurrency=args.concurrency,
                time_limit=args.time_limit,
                ranker=args.ranker,
                token=None if args.start_server else os.environ.get(args.token_env),
                request_timeout=args.request_timeout,
            )
        )
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.start_server:
        report["server"] = {
            "model": args.model,
            "max_concurrency": args.server_concurrency,
            "max_queue": args.server_queue,
            "startup_s": round(startup, 2),
        }
    if args.json:
        print(json.dumps(report))
    else:
        lat = report["latency_ok_s"]
        print(
            f"{report['requests_sent']}/{report['requests_planned']} requests in {report['wall_s']} s "
            f"(concurrency {report['concurrency']}, {report['docs_per_request']} docs each)"
        )
        print(f"throughput {report['throughput_rps']} req/s, ok {report['ok_rps']} req/s")
        print(
            f"latency (200s) p50 {lat['p50']} s  p90 {lat['p90']} s  p99 {lat['p99']} s  max {lat['max']} s"
        )
        bad = report["latency_non_200_s"]
        print(f"latency (non-200) p50 {bad['p50']} s  max {bad['max']} s")
        print(f"status counts {report['status_counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
