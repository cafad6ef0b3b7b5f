"""A scripted engine for unit tests of parsing and control flow (no model involved).

``ScriptedEngine(outputs=[...])`` returns the given completions in order (or calls a
function of the messages); ``logprobs_fn`` answers next-token log-probability requests.
Every call is recorded in ``calls`` so tests can assert what was asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from typing_extensions import Unpack

from hoprank.errors import EngineError
from hoprank.llm.base import Capability, Completion, GenerateOptions, LogprobRequest, Message, TokenLogprobs
from hoprank.types import Usage

__all__ = ["ScriptedEngine", "WhitespaceTokenizer"]


class WhitespaceTokenizer:
    """A tokenizer that counts whitespace-separated words (for tests)."""

    name = "whitespace"

    def encode(self, text: str) -> list[int]:
        return [hash(w) & 0xFFFF for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        raise NotImplementedError("WhitespaceTokenizer cannot decode")

    def count(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        return " ".join(text.split()[: max(0, max_tokens)])


Output = str | BaseException
OutputFn = Callable[[Sequence[Message]], Output]
LogprobFn = Callable[[Sequence[Message], Sequence[str], str], dict[str, float]]


class ScriptedEngine:
    """An engine that replays scripted outputs. Exceptions in the script are raised."""

    def __init__(
        self,
        outputs: Sequence[Output] | OutputFn | None = None,
        *,
        logprobs_fn: LogprobFn | None = None,
        capabilities: frozenset[Capability] | None = None,
        context_window: int = 32768,
        name: str = "scripted",
    ) -> None:
        self.name = name
        self._outputs: list[Output] | None = list(outputs) if isinstance(outputs, Sequence) else None
        self._output_fn: OutputFn | None = outputs if callable(outputs) else None
        self._logprobs_fn = logprobs_fn
        caps = {Capability.GENERATE, Capability.PREFILL}
        if logprobs_fn is not None:
            caps.add(Capability.TOKEN_LOGPROBS)
        self.capabilities = capabilities if capabilities is not None else frozenset(caps)
        self.context_window = context_window
        self.tokenizer = WhitespaceTokenizer()
        self.calls: list[dict[str, Any]] = []

    def _prompt_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.tokenizer.count(m["content"]) for m in messages)

    async def generate(
        self, messages: Sequence[Message], *, max_tokens: int, **options: Unpack[GenerateOptions]
    ) -> Completion:
        prefill = options.get("prefill", "")
        self.calls.append(
            {"method": "generate", "messages": list(messages), "prefill": prefill, "max_tokens": max_tokens}
        )
        if self._output_fn is not None:
            out = self._output_fn(messages)
        elif self._outputs:
            out = self._outputs.pop(0)
        else:
            raise EngineError("ScriptedEngine: script exhausted")
        if isinstance(out, BaseException):
            raise out
        usage = Usage(
            prompt_tokens=self._prompt_tokens(messages),
            completion_tokens=self.tokenizer.count(out),
            llm_calls=1,
        )
        return Completion(text=out, finish_reason="stop", usage=usage, model=self.name)

    async def next_token_logprobs(
        self, messages: Sequence[Message], *, candidates: Sequence[str], prefill: str = ""
    ) -> TokenLogprobs:
        self.calls.append(
            {
                "method": "next_token_logprobs",
                "messages": list(messages),
                "candidates": list(candidates),
                "prefill": prefill,
            }
        )
        if self._logprobs_fn is None:
            raise EngineError("ScriptedEngine: no logprobs_fn given")
        scores = self._logprobs_fn(messages, candidates, prefill)
        present = {c: float(scores[c]) for c in candidates if c in scores and math.isfinite(scores[c])}
        usage = Usage(prompt_tokens=self._prompt_tokens(messages), completion_tokens=0, llm_calls=1)
        return TokenLogprobs(
            logprobs=present, missing=[c for c in candidates if c not in present], usage=usage
        )

    async def next_token_logprobs_batch(self, requests: Sequence[LogprobRequest]) -> list[TokenLogprobs]:
        return [
            await self.next_token_logprobs(r.messages, candidates=r.candidates, prefill=r.prefill)
            for r in requests
        ]

    def describe(self) -> dict[str, Any]:
        return {"engine": "scripted", "name": self.name}
