"""Shared pieces of the reliability suite: a programmable "model" behind the fault server.

:class:`ModelBehindFaults` is a script for :class:`servers.fault_server.FaultServer`. It
answers every request the way a well-behaved model would (a reversed permutation for
RankGPT, label log-probabilities favouring the last passage for FIRST, a yes/no margin
that depends on the passage for pointwise), except that each *logical call* (requests
with the same JSON body are retries of one call) can first receive ``k`` scripted faults.
It records attempts per body, so tests can check retry budgets per call.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from servers.fault_server import (
    MISSING,
    RecordedRequest,
    Reply,
    chat_body,
    drop,
    empty_choices,
    hang,
    logprobs_block,
    rate_limited,
    status,
    text,
    truncated_json,
)

from hoprank.errors import EngineError, EngineTimeout, RateLimited
from hoprank.llm.engines.openai_engine import OpenAIEngine
from hoprank.llm.engines.scripted import WhitespaceTokenizer
from hoprank.llm.transport.retry import RetryPolicy
from hoprank.rankers import FIRST, PointwiseLLM, RankGPT
from hoprank.rankers.base import BaseRanker
from hoprank.types import Document

MAX_ATTEMPTS = 3
CLIENT_TIMEOUT = 10.0  # generous: only hang faults should ever time out, even on a busy machine
#: Client timeout where a fault hangs (the hang lasts 3 s): well under the hang, so the matrix
#: stays fast, and long enough that 25 concurrent good replies arrive in time on a loaded
#: 2-core machine (0.5 s timed out one under the full suite, 2026-12-03).
HANG_TIMEOUT = 1.5
POLICY = RetryPolicy(max_attempts=MAX_ATTEMPTS, initial=0.002, max_wait=0.01, total_budget_s=10, jitter=False)

_NUM_LABEL = re.compile(r"(?m)^\[(\d+)\] ")
_LETTER_LABEL = re.compile(r"(?m)^\[([A-Z])\] ")


def request_kind(body: dict[str, Any]) -> str:
    """``generate`` (RankGPT), ``first`` (label logprobs) or ``pointwise`` (yes/no logprobs)."""
    if not body.get("logprobs"):
        return "generate"
    user = " ".join(m["content"] for m in body["messages"] if m["role"] == "user")
    return "pointwise" if user.startswith("Passage:") else "first"


def _user(body: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")


def good_content(body: dict[str, Any]) -> str:
    """The permutation a well-behaved model writes: the window reversed."""
    labels = _NUM_LABEL.findall(_user(body)) or _LETTER_LABEL.findall(_user(body))
    return " > ".join(f"[{lab}]" for lab in reversed(labels)) or "[1]"


def good_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """Next-token log-probabilities of a well-behaved model (mixed ``X``/``[X``/`` X`` forms)."""
    user = _user(body)
    if request_kind(body) == "pointwise":
        passage = user.split("\n\nQuery:")[0]
        yes = -0.01 - (zlib.crc32(passage.encode("utf-8", "surrogatepass")) % 997) / 200.0
        return logprobs_block([("Yes", yes), ("No", -2.5), (" maybe", -6.0)])
    labels = _LETTER_LABEL.findall(user)
    n = len(labels)
    forms = ("[{}", "{}", " {}")
    top = [(forms[i % 3].format(lab), -0.05 - 0.1 * (n - 1 - i)) for i, lab in enumerate(labels)]
    top.sort(key=lambda t: -t[1])
    return logprobs_block(top[:20])


def good_reply(body: dict[str, Any]) -> Reply:
    if request_kind(body) == "generate":
        return Reply(body=chat_body(good_content(body)))
    return Reply(body=chat_body("[", logprobs=good_logprobs(body)))


# ----------------------------------------------------------------------------- faults

FaultFn = Callable[[dict[str, Any]], Reply]

#: Transient faults: retried; ``(builder, typed error raised once the budget is spent)``.
TRANSIENT: dict[str, tuple[FaultFn, type[EngineError]]] = {
    "429+retry-after": (lambda b: rate_limited("0.01"), RateLimited),
    "500": (lambda b: status(500, "internal"), EngineError),
    "502": (lambda b: status(502, "bad gateway"), EngineError),
    "503": (lambda b: status(503, "unavailable"), EngineError),
    "hang": (lambda b: hang(3.0, then=good_reply(b)), EngineTimeout),
    "drop": (lambda b: drop(), EngineError),
    "truncated-json": (lambda b: truncated_json(0.5), EngineError),
    "cut-connection": (lambda b: truncated_json(0.5, honest_length=False), EngineError),
}

#: Malformed answers that are not retried: one attempt, then a typed EngineError.
FATAL: dict[str, FaultFn] = {
    "empty-choices": lambda b: empty_choices(),
    "non-json": lambda b: text("<html><body>502 Bad Gateway</body></html>"),
}


def _with_logprobs(body: dict[str, Any], logprobs: Any) -> Reply:
    """A reply with the right content for RankGPT but the given ``logprobs`` block."""
    return Reply(body=chat_body(good_content(body), logprobs=logprobs))


def _bad_entry(value: float) -> dict[str, Any]:
    entry = {"token": "[A", "logprob": value, "top_logprobs": [{"token": "[A", "logprob": value}]}
    return {"content": [entry]}


#: Broken ``logprobs`` blocks: FIRST/pointwise get a typed, non-retried EngineError;
#: RankGPT (which asks for no logprobs) ignores them and ranks normally.
LOGPROB_FAULTS: dict[str, FaultFn] = {
    "logprobs-missing": lambda b: _with_logprobs(b, MISSING),
    "logprobs-null": lambda b: _with_logprobs(b, None),
    "logprobs-malformed": lambda b: _with_logprobs(b, {"content": "garbage"}),
    "logprobs-no-top": lambda b: _with_logprobs(b, {"content": [{"token": "A", "logprob": -0.1}]}),
    "logprobs-nan": lambda b: _with_logprobs(b, _bad_entry(float("nan"))),
    "logprobs-positive": lambda b: _with_logprobs(b, _bad_entry(3.0)),
}


def _garbage(content: str, top: Sequence[tuple[str, float]]) -> FaultFn:
    return lambda b: Reply(body=chat_body(content, logprobs=logprobs_block(list(top))))


#: Answers that parse but carry no usable ranking: every step falls back to the prior order.
UNUSABLE: dict[str, FaultFn] = {
    "no-permutation": _garbage("Sorry, these passages cannot be ranked.", [("Sorry", -0.1), ("the", -1.0)]),
    "out-of-range-ids": _garbage("[99] > [0] > [100]", [("[Z", -0.1), ("Y", -0.4), ("maybe", -0.6)]),
    "all-minus-inf": _garbage("", [("[A", float("-inf")), ("Yes", float("-inf")), ("No", float("-inf"))]),
}


def _partial(body: dict[str, Any]) -> Reply:
    """Duplicates and out-of-range ids mixed with a few good ones."""
    if request_kind(body) == "generate":
        return Reply(body=chat_body("[2] > [2] > [99] > [1] > [2] > [0]"))
    if request_kind(body) == "pointwise":
        return Reply(
            body=chat_body("Yes", logprobs=logprobs_block([("Yes", -0.2), (" Yes", -0.3), ("No", -1.9)]))
        )
    top = [("[B", -0.1), ("B", -0.2), (" B", -0.3), ("[Z", -0.4), ("A", -1.0)]
    return Reply(body=chat_body("[", logprobs=logprobs_block(top)))


PARTIAL: dict[str, FaultFn] = {"duplicates+out-of-range": _partial}


# ----------------------------------------------------------------------------- the script


def body_key(req: RecordedRequest) -> str:
    return hashlib.sha256(req.body).hexdigest()


@dataclass
class ModelBehindFaults:
    """A fault-server script: ``plan(call_index, body) -> [fault replies]`` served before
    the good answer of each logical call (``call_index`` counts distinct bodies in order
    of first arrival). ``always`` replaces the good answer entirely (every attempt)."""

    plan: Callable[[int, dict[str, Any]], Sequence[Reply]] = lambda i, b: ()
    always: FaultFn | None = None
    attempts: Counter[str] = field(default_factory=Counter)
    successes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    _calls: dict[str, int] = field(default_factory=dict)
    _queues: dict[str, list[Reply]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: requests whose body never arrived whole (a client cancelled mid-send: the server
    #: read fewer bytes than Content-Length); not attempts of any logical call
    torn: int = 0

    def __call__(self, req: RecordedRequest) -> Reply:
        body = req.json
        if not isinstance(body, dict):
            with self._lock:
                self.torn += 1
            return status(400, "torn request body")
        key = body_key(req)
        with self._lock:
            self.attempts[key] += 1
            if key not in self._calls:
                self._calls[key] = len(self._calls)
                self.kinds[request_kind(body)] += 1
                self._queues[key] = list(self.plan(self._calls[key], body))
            queue = self._queues[key]
            if queue:
                return queue.pop(0)
            if self.always is not None:
                return self.always(body)
            self.successes[key] += 1
            return good_reply(body)

    @property
    def calls(self) -> int:
        return len(self._calls)

    def max_attempts_per_call(self) -> int:
        """The most attempts any logical call needed (identical bodies that succeeded
        several times are divided by their successes)."""
        return max(
            (-(-n // max(1, self.successes[k])) for k, n in self.attempts.items()),
            default=0,
        )


def faults_first(k: int, fault: FaultFn) -> Callable[[int, dict[str, Any]], list[Reply]]:
    """A plan serving ``k`` copies of ``fault`` before each call's good answer."""
    return lambda i, body: [fault(body) for _ in range(k)]


# ----------------------------------------------------------------------------- rankers

RANKERS = ("rankgpt", "first", "pointwise")
#: (n documents, window, step): sliding windows with overlap, a partial head window, one window.
WINDOWS = ((7, 4, 2), (25, 20, 10), (3, 20, 10))


def make_engine(base_url: str, *, timeout: float = CLIENT_TIMEOUT, **kw: Any) -> OpenAIEngine:
    kw.setdefault("retry", POLICY)
    kw.setdefault("tokenizer", WhitespaceTokenizer())
    return OpenAIEngine(
        "fault-model", base_url=base_url, api_key="sk-test-fault-key", server="vllm", timeout=timeout, **kw
    )


def make_ranker(name: str, engine: OpenAIEngine, window: int, step: int) -> BaseRanker:
    if name == "rankgpt":
        return RankGPT(engine, window=window, step=step)
    if name == "first":
        return FIRST(engine, window=window, step=step)
    return PointwiseLLM(engine, batch_size=10)


def make_docs(n: int, seed: str = "d") -> list[Document]:
    words = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
    return [
        Document(id=f"{seed}{i}", text=f"passage {i} about {words[i % len(words)]} and {words[(i * 3) % 8]}")
        for i in range(n)
    ]


def model_steps(ranking: Any) -> list[Any]:
    """The trace steps that carry a model answer (windows or pointwise batches)."""
    return [s for s in ranking.trace if s.kind in ("window", "batch")]


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)
