"""Client-side load balancing over one or more OpenAI-compatible endpoints.

An :class:`EndpointPool` owns one ``openai.AsyncOpenAI`` client per endpoint *per event
loop* (httpx connection pools are bound to the loop that created them, and the sync
facade runs each call on a fresh loop) and one concurrency semaphore per loop.
:meth:`EndpointPool.lease` takes a semaphore slot and picks an endpoint: the one with the
fewest requests in flight (ties in turn) or strictly round-robin.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["Balance", "EndpointPool"]

Balance = Literal["least_in_flight", "round_robin"]


@dataclass
class _Endpoint:
    url: str
    in_flight: int = 0
    requests: int = 0
    last_pick: int = -1


class _LoopState:
    def __init__(self, clients: list[Any], max_concurrency: int) -> None:
        self.clients = clients
        self.semaphore = asyncio.Semaphore(max_concurrency)


class EndpointPool:
    """Endpoints, their per-loop clients, and the choice of endpoint for each request."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str,
        timeout: float,
        max_concurrency: int,
        balance: Balance = "least_in_flight",
    ) -> None:
        self.endpoints = [_Endpoint(u.rstrip("/")) for u in urls]
        self.balance = balance
        self.max_concurrency = max_concurrency
        self._api_key = api_key
        self._timeout = timeout
        self._turn = itertools.count()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"EndpointPool({self.hosts()!r}, balance={self.balance!r})"

    def hosts(self) -> list[str]:
        """``host[:port]`` of each endpoint: no scheme, path, user or password."""
        out = []
        for e in self.endpoints:
            parts = urlsplit(e.url)
            out.append(f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname))
        return out

    def requests(self) -> dict[str, int]:
        """Requests sent to each endpoint so far."""
        return {e.url: e.requests for e in self.endpoints}

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            import openai

            clients = [
                openai.AsyncOpenAI(
                    api_key=self._api_key, base_url=e.url, max_retries=0, timeout=self._timeout
                )
                for e in self.endpoints
            ]
            state = _LoopState(clients, self.max_concurrency)
            self._loops[loop] = state
        return state

    def _pick(self) -> int:
        turn = next(self._turn)
        if self.balance == "round_robin" or len(self.endpoints) == 1:
            return turn % len(self.endpoints)
        i = min(
            range(len(self.endpoints)),
            key=lambda j: (self.endpoints[j].in_flight, self.endpoints[j].last_pick),
        )
        self.endpoints[i].last_pick = turn
        return i

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[Any]:
        """A client for one request, holding a concurrency slot while it runs."""
        state = self._state()
        async with state.semaphore:
            i = self._pick()
            ep = self.endpoints[i]
            ep.in_flight += 1
            ep.requests += 1
            try:
                yield state.clients[i]
            finally:
                ep.in_flight -= 1

    async def aclose(self) -> None:
        """Close the clients that belong to the running loop."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is not None:
            for client in state.clients:
                await client.close()
