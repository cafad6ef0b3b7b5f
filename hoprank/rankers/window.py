"""The sliding-window driver shared by the listwise rankers (RankGPT, FIRST).

A listwise model can only see ``window`` passages at once. The driver ranks a longer
list the way RankGPT and rank_llm do: start with the window at the *end* of the list and
move it toward the head by ``step`` positions at a time, re-ordering each window in
place. The best ``window - step`` passages of every window are carried into the next
window, so strong passages bubble up to the head.

Spans (half-open ``(start, end)``) for ``n`` items, window ``w`` and step ``s``::

    ends   = n, n - s, n - 2s, ...          (while the previous window did not start at 0)
    start  = max(0, end - w)

The pass stops right after the window that starts at 0. Unlike the loop of the original
RankGPT code (``while start >= 0``), which skips the head of the list whenever
``(n - w)`` is not a multiple of ``s`` (e.g. n=25, w=20, s=10 ranks only [5, 25)), this
always ends with a window at position 0, covers every position, and never emits an
empty or duplicate window (rank_llm's fix can emit an extra tiny window at the head).
For ``n <= w`` there is exactly one window, ``(0, n)``.

Several passes (``passes > 1``) repeat this. Early stops, defined precisely:

* **no change** — a pass that leaves the order unchanged ends the loop (with a
  deterministic model every further pass would see the same windows and change nothing).
* **top-k focus** — when the caller needs only the first ``top_k`` documents and
  ``focus_top_k`` is on, passes after the first re-rank only the head
  ``[0, min(n, top_k + w - s))``: documents placed below that by the first full pass are
  treated as settled. The first pass always covers the whole list, because in a
  back-to-front pass any document can still climb to the head.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from hoprank.errors import ConfigError, HoprankError
from hoprank.rankers.config import WindowConfig, check_window_params

__all__ = [
    "SlideResult",
    "WindowConfig",
    "WindowSpan",
    "check_window_params",
    "pass_spans",
    "slide",
    "window_spans",
]

T = TypeVar("T")


@dataclass(frozen=True)
class WindowSpan:
    """One window of one pass: items ``[start, end)`` of the list as it is at that time."""

    start: int
    end: int
    pass_index: int = 0
    index: int = 0  # position of this window within its pass (0 = the tail window)

    @property
    def size(self) -> int:
        return self.end - self.start


def window_spans(n: int, window: int = 20, step: int = 10) -> Iterator[tuple[int, int]]:
    """Yield the ``(start, end)`` spans of one back-to-front pass over ``n`` items.

    Every span lies within ``[0, n)``, has size ``<= window`` (and ``>= 1``), consecutive
    spans overlap by ``window - step`` (except possibly the last, which is shorter), the
    union is ``[0, n)`` and the last span starts at 0. Nothing is yielded for ``n == 0``.
    """
    check_window_params(window, step)
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    end = n
    while end > 0:
        start = max(0, end - window)
        yield start, end
        if start == 0:
            return
        end -= step


def pass_spans(
    n: int, cfg: WindowConfig, *, pass_index: int = 0, top_k: int | None = None
) -> list[WindowSpan]:
    """The spans of pass ``pass_index`` (0-based), applying the top-k focus rule."""
    limit = n
    if pass_index > 0 and cfg.focus_top_k and top_k is not None:
        limit = min(n, top_k + cfg.window - cfg.step)
    return [
        WindowSpan(start=s, end=e, pass_index=pass_index, index=i)
        for i, (s, e) in enumerate(window_spans(limit, cfg.window, cfg.step))
    ]


@dataclass
class SlideResult(Generic[T]):
    """The final order and what the driver did."""

    items: list[T]
    spans: list[WindowSpan]
    passes_run: int
    stopped_early: bool


Reorder = Callable[[list[T], WindowSpan], Awaitable[Sequence[int]]]


def _check_local_permutation(order: Sequence[int], size: int, span: WindowSpan) -> list[int]:
    out = [int(i) for i in order]
    if sorted(out) != list(range(size)):
        raise HoprankError(
            f"window reorder for span [{span.start}, {span.end}) returned {out}, "
            f"which is not a permutation of range({size}) (a bug in the ranker)"
        )
    return out


async def slide(
    items: Sequence[T],
    reorder: Reorder[T],
    cfg: WindowConfig | None = None,
    *,
    top_k: int | None = None,
) -> SlideResult[T]:
    """Re-order ``items`` with back-to-front sliding windows.

    ``reorder(window_items, span)`` returns the new order of the window as local indices
    (``order[0]`` is the index of the item that goes first). The driver checks that every
    answer is a permutation of ``range(len(window_items))`` (a violation is a bug and
    raises :class:`HoprankError`), so the result is always a permutation of ``items``.
    Windows of one pass depend on each other and run one after another.
    """
    cfg = cfg or WindowConfig()
    current = list(items)
    done: list[WindowSpan] = []
    stopped_early = False
    passes_run = 0
    for p in range(cfg.passes):
        before = list(current)
        for span in pass_spans(len(current), cfg, pass_index=p, top_k=top_k):
            chunk = current[span.start : span.end]
            order = _check_local_permutation(await reorder(list(chunk), span), len(chunk), span)
            current[span.start : span.end] = [chunk[i] for i in order]
            done.append(span)
        passes_run += 1
        if p + 1 < cfg.passes and all(a is b for a, b in zip(before, current, strict=True)):
            stopped_early = True
            break
    return SlideResult(items=current, spans=done, passes_run=passes_run, stopped_early=stopped_early)
