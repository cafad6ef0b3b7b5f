"""Start a real llama.cpp server (the one embedded in ``xllamacpp``) on 127.0.0.1.

For tests, benchmarks and CPU users who want an OpenAI-compatible endpoint over a GGUF
file without building anything::

    with LlamaCppServer.from_pack("smollm2-135m") as srv:
        engine = OpenAIEngine("smollm2", base_url=srv.base_url, server="llamacpp")

The server runs in this process (its HTTP and compute threads are native and release
the GIL), binds the loopback interface only, and is stopped by deleting the native
object, which waits for its main loop to exit.

Log-probabilities: the xllamacpp server answers ``logprobs``/``top_logprobs`` on
``/v1/chat/completions`` with its defaults (verified with xllamacpp 2026.10.11549); no
option has to be enabled, unlike ``llama-cpp-python``'s server, which needs
``--logits_all true``. It also continues a trailing assistant message by default
(``prefill_assistant``), and echoes that prefix at the start of the returned content.
"""

from __future__ import annotations

import gc
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hoprank.errors import ConfigError, EngineError, MissingExtra

__all__ = ["LlamaCppServer"]

logger = logging.getLogger(__name__)


class LlamaCppServer:
    """A llama.cpp HTTP server on ``127.0.0.1`` serving one GGUF model (context manager).

    ``port=0`` lets the server pick a free port; ``n_parallel`` is the number of request
    slots (each gets ``n_ctx / n_parallel`` tokens of context); ``threads`` the CPU
    threads for generation and prompt processing; ``verbosity`` llama.cpp's log level
    (0 keeps it quiet).
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        port: int = 0,
        n_ctx: int = 4096,
        threads: int = 2,
        n_parallel: int = 1,
        alias: str | None = None,
        verbosity: int = 0,
        startup_timeout: float = 120.0,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise ConfigError(f"GGUF file not found: {self.model_path}")
        if n_ctx < 16 or threads < 1 or n_parallel < 1 or not 0 <= port < 65536:
            raise ConfigError("n_ctx >= 16, threads >= 1, n_parallel >= 1 and 0 <= port < 65536 required")
        self.requested_port = port
        self.n_ctx = n_ctx
        self.threads = threads
        self.n_parallel = n_parallel
        self.alias = alias or self.model_path.stem
        self.verbosity = verbosity
        self.startup_timeout = startup_timeout
        self._server: Any = None
        self._url: str | None = None

    @classmethod
    def from_pack(cls, name: str = "smollm2-135m", **kwargs: Any) -> LlamaCppServer:
        """A server for an offline model pack's verified GGUF (see :mod:`hoprank.llm.models.packs`)."""
        from hoprank.llm.models.packs import gguf_path

        kwargs.setdefault("alias", name)
        return cls(gguf_path(name), **kwargs)

    def __repr__(self) -> str:
        state = self._url or "stopped"
        return f"LlamaCppServer({self.model_path.name!r}, {state})"

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (raises when the server is not running)."""
        if self._url is None:
            raise EngineError("llama.cpp server is not running")
        return self._url

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def start(self) -> LlamaCppServer:
        """Load the model, start serving and wait until ``/health`` answers ok."""
        if self._server is not None:
            return self
        try:
            import xllamacpp
        except ImportError as e:
            raise MissingExtra("llamacpp", "xllamacpp") from e
        params = xllamacpp.CommonParams()
        params.model.path = str(self.model_path)
        params.model_alias = {self.alias}
        params.n_ctx = self.n_ctx
        params.n_parallel = self.n_parallel
        params.hostnames = ["127.0.0.1"]
        params.port = self.requested_port
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = self.verbosity
        params.ui = False
        t0 = time.perf_counter()
        try:
            self._server = xllamacpp.Server(params)
        except Exception as e:
            raise EngineError(f"llama.cpp server failed to start on {self.model_path.name}: {e}") from e
        address = str(self._server.listening_address).rstrip("/")
        if not address.startswith("http://127.0.0.1:"):
            self.stop()
            raise EngineError(f"llama.cpp server listens on {address!r}, expected 127.0.0.1")
        self._url = address
        try:
            self._wait_healthy(t0)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "llama.cpp server for %s up at %s in %.1f s", self.alias, self._url, time.perf_counter() - t0
        )
        return self

    def _wait_healthy(self, t0: float) -> None:
        last: Exception | None = None
        while time.perf_counter() - t0 < self.startup_timeout:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError) as e:  # 503 while loading, refused before bind
                last = e
            time.sleep(0.05)
        raise EngineError(
            f"llama.cpp server at {self._url} not healthy after {self.startup_timeout} s: {last}"
        )

    def stop(self) -> None:
        """Shut the server down (waits for its main loop to exit)."""
        server, self._server, self._url = self._server, None, None
        if server is not None:
            del server
            gc.collect()
            logger.info("llama.cpp server for %s stopped", self.alias)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
