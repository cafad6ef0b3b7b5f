"""``hoprank serve`` as a real process on 127.0.0.1: auth from an env var, limits from
flags, JSON logs on stderr that never contain the token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cli-token-5b1e0c9d7a3f42e8"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_subprocess() -> None:
    port = _free_port()
    env = {**os.environ, "MY_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "hoprank", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += [
        "--token-env",
        "MY_TOKEN",
        "--max-documents",
        "3",
        "--max-concurrency",
        "1",
        "--ranker",
        "identity",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        body = {"query": "q", "documents": ["a", "b", "c"]}
        assert httpx.post(f"{url}/v1/rerank", json=body, timeout=10).status_code == 401
        r = httpx.post(f"{url}/v1/rerank", json=body, headers=auth, timeout=10)
        assert r.status_code == 200 and [x["index"] for x in r.json()["results"]] == [0, 1, 2]
        r = httpx.post(f"{url}/v1/rerank", json={**body, "documents": ["a"] * 4}, headers=auth, timeout=10)
        assert r.status_code == 422 and r.json()["error"]["details"]["limit"] == "max_documents"
        assert "hoprank_http_requests_total" in httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert lines, "structured logs on stderr"
    assert any(x.get("message") == "request" and x.get("status") == 401 for x in lines)
    assert any(x.get("message") == "starting" and x.get("auth") is True for x in lines)
    assert TOKEN not in err


def test_serve_refuses_empty_token_env() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOT_SET_TOKEN_VAR"}
    proc = subprocess.run(
        [sys.executable, "-m", "hoprank", "serve", "--token-env", "NOT_SET_TOKEN_VAR"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "NOT_SET_TOKEN_VAR" in proc.stderr


def _serve_exit(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hoprank", "serve", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_an_empty_default_token_and_a_missing_model() -> None:
    env = {k: v for k, v in os.environ.items() if k != "HOPRANK_API_TOKEN"}
    proc = _serve_exit(["--ranker", "identity"], {**env, "HOPRANK_API_TOKEN": ""})
    assert proc.returncode == 2 and "HOPRANK_API_TOKEN is set but empty" in proc.stderr
    proc = _serve_exit([], env)  # no --model: would answer with the identity ranker
    assert proc.returncode == 2 and "no --model" in proc.stderr


def test_settings_from_env_refuse_an_empty_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from hoprank.errors import ConfigError
    from hoprank.server import ServerSettings

    monkeypatch.setenv("HOPRANK_API_TOKEN", " ")
    with pytest.raises(ConfigError, match="set but empty"):
        ServerSettings.from_env()
    monkeypatch.delenv("HOPRANK_API_TOKEN")
    assert ServerSettings.from_env().token_value() is None
