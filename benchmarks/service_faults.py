"""Fault benchmark of the hoprank HTTP service: abandoning clients vs small requests.

Starts the service in process on 127.0.0.1 with a real model (default SmolLM2-135M),
then, in ONE run, times small well-behaved requests (2-document FIRST) in two phases:

1. **quiet**: the small client alone;
2. **faults**: the same small client while abandoning clients send heavy requests
   (20-document RankGPT, which generates ~100 tokens) and give up: half by a client
   timeout, half by closing the socket right after sending the request.

It reports p50/p99 (and max) of the small requests of each phase, their statuses, how
many heavy requests were abandoned, and the service's cancellation metrics. Bounded in
count and time: each phase stops at ``--phase-seconds`` or ``--max-small`` requests.

    python benchmarks/service_faults.py                       # ~2 min, smollm2-135m
    python benchmarks/service_faults.py --phase-seconds 30 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "trec-dl-2019-passage"


def load_query(data: Path, n: int) -> tuple[str, list[str]]:
    q = json.loads((data / "queries.jsonl").open(encoding="utf-8").readline())
    ids = [ln.split("\t")[1] for ln in (data / "run.bm25.tsv").open() if ln.startswith(q["id"] + "\t")][:n]
    texts: dict[str, str] = {}
    for line in (data / "corpus.jsonl").open(encoding="utf-8"):
        r = json.loads(line)
        if r["id"] in ids:
            texts[r["id"]] = r["text"]
    return q["text"], [texts[i] for i in ids]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


async def small_client(
    url: str, body: dict[str, Any], *, seconds: float, max_n: int, timeout: float
) -> tuple[list[float], Counter[str]]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    end = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as c:
        while time.monotonic() < end and len(latencies) < max_n:
            t0 = time.perf_counter()
            try:
                r = await c.post("/v1/rerank", json=body)
                statuses[str(r.status_code)] += 1
            except httpx.TimeoutException:
                statuses["client-timeout"] += 1
            latencies.append(time.perf_counter() - t0)
    return latencies, statuses


async def abandon_by_timeout(url: str, body: dict[str, Any], after: float) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=after) as c:
        try:
            await c.post("/v1/rerank", json=body)
        except httpx.TimeoutException:
            return


async def abandon_by_disconnect(url: str, body: dict[str, Any], after: float) -> None:
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST /v1/rerank HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head + payload)
    await writer.drain()
    await asyncio.sleep(after)
    writer.close()
    await writer.wait_closed()
    del reader


async def abandoning_clients(
    url: str, body: dict[str, Any], *, stop: asyncio.Event, after: float, pause: float
) -> int:
    n = 0
    while not stop.is_set():
        if n % 2 == 0:
            await abandon_by_timeout(url, body, after)
        else:
            await abandon_by_disconnect(url, body, after)
        n += 1
        try:
            await asyncio.wait_for(stop.wait(), timeout=pause)
        except asyncio.TimeoutError:
            continue
    return n


async def faults_phase(
    url: str, small: dict[str, Any], heavy: dict[str, Any], args: argparse.Namespace
) -> tuple[list[float], Counter[str], int]:
    stop = asyncio.Event()
    abandoner = asyncio.ensure_future(
        abandoning_clients(url, heavy, stop=stop, after=args.abandon_after, pause=args.pause)
    )
    await asyncio.sleep(args.abandon_after / 2)  # the first heavy request is running
    lat, st = await small_client(
        url, small, seconds=args.phase_seconds, max_n=args.max_small, timeout=args.small_timeout
    )
    stop.set()
    n = await abandoner
    return lat, st, n


def metric_lines(text: str) -> dict[str, float]:
    wanted = (
        "hoprank_requests_cancelled_total",
        "hoprank_requests_abandoned_seconds_total",
        "hoprank_engine_jobs_dropped_total",
        "hoprank_engine_jobs_stopped_total",
        "hoprank_engine_abandoned_seconds_total",
        "hoprank_requests_rejected_total",
    )
    out: dict[str, float] = {}
    for m in re.finditer(r"^(hoprank_\S+) (\S+)$", text, re.M):
        if m.group(1).startswith(wanted):
            out[m.group(1)] = float(m.group(2))
    return out


def row(name: str, lat: list[float], st: Counter[str]) -> dict[str, Any]:
    return {
        "phase": name,
        "n": len(lat),
        "p50_s": round(percentile(lat, 50), 3),
        "p99_s": round(percentile(lat, 99), 3),
        "max_s": round(max(lat), 3) if lat else float("nan"),
        "statuses": dict(st),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--phase-seconds", type=float, default=55.0, help="length of each phase")
    p.add_argument("--max-small", type=int, default=200, help="small requests per phase at most")
    p.add_argument("--small-timeout", type=float, default=300.0)
    p.add_argument("--abandon-after", type=float, default=1.5, help="seconds before a heavy client gives up")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between abandoned heavy requests")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from hoprank.server import ServerSettings, create_app

    logging.getLogger("hoprank.server").setLevel(logging.ERROR)  # 499s of the abandoning clients

    query, docs = load_query(args.data, 20)
    params = {"first": {"max_passage_tokens": 60}, "rankgpt": {"max_passage_tokens": 60}}
    settings = ServerSettings(
        model=args.model,
        engine_options={"threads": args.threads},
        ranker_params=params,
        request_timeout_s=600,
    )
    small = {"ranker": "first", "query": query, "documents": docs[:2]}
    heavy = {"ranker": "rankgpt", "query": query, "documents": docs}
    t_start = time.monotonic()
    with serve(create_app(settings)) as url:
        httpx.post(f"{url}/v1/rerank", json=small, timeout=300).raise_for_status()  # warm-up
        quiet = asyncio.run(
            small_client(
                url, small, seconds=args.phase_seconds, max_n=args.max_small, timeout=args.small_timeout
            )
        )
        lat, st, abandoned = asyncio.run(faults_phase(url, small, heavy, args))
        time.sleep(1.0)  # let the last abandoned request be noticed
        metrics = metric_lines(httpx.get(f"{url}/metrics", timeout=30).text)
    result = {
        "model": args.model,
        "rows": [row("quiet (small client alone)", *quiet), row("faults (with abandoning clients)", lat, st)],
        "abandoned_heavy_requests": abandoned,
        "metrics": metrics,
        "seconds": round(time.monotonic() - t_start, 1),
    }
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    sys.stdout.write("| phase | n | p50 s | p99 s | max s | statuses |\n|---|---|---|---|---|---|\n")
    for r in result["rows"]:
        sys.stdout.write(
            f"| {r['phase']} | {r['n']} | {r['p50_s']} | {r['p99_s']} | {r['max_s']} | {r['statuses']} |\n"
        )
    sys.stdout.write(f"\nabandoned heavy requests: {abandoned}; run took {result['seconds']} s\n")
    for k, v in metrics.items():
        sys.stdout.write(f"{k} {v:g}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
