"""The sliding-window driver: span properties (hypothesis) and the async driver."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoprank.errors import ConfigError, HoprankError
from hoprank.rankers.window import WindowConfig, WindowSpan, pass_spans, slide, window_spans


@st.composite
def params(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(min_value=0, max_value=300))
    window = draw(st.integers(min_value=2, max_value=40))
    step = draw(st.integers(min_value=1, max_value=window - 1))
    return n, window, step


@given(params())
@settings(max_examples=500, deadline=None)
def test_spans_properties(p: tuple[int, int, int]) -> None:
    n, window, step = p
    spans = list(window_spans(n, window, step))
    if n == 0:
        assert spans == []
        return
    covered: set[int] = set()
    for s, e in spans:
        assert 0 <= s < e <= n
        assert e - s <= window
        covered.update(range(s, e))
    assert covered == set(range(n))
    assert spans[-1][0] == 0
    assert spans[0][1] == n  # starts at the tail
    assert len(set(spans)) == len(spans)  # no duplicate window
    # back to front: starts strictly decrease; consecutive windows overlap by window - step
    for (s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s2 < s1
        assert e2 == e1 - step
        assert e2 - s1 == window - step
    # only the head window may be shorter than the window
    assert all(e - s == min(window, n) for s, e in spans[:-1])


@pytest.mark.parametrize(
    ("n", "window", "step", "expected"),
    [
        (5, 20, 10, [(0, 5)]),
        (20, 20, 10, [(0, 20)]),
        (25, 20, 10, [(5, 25), (0, 15)]),  # the original RankGPT loop never ranks [0, 5) here
        (
            100,
            20,
            10,
            [(80, 100), (70, 90), (60, 80), (50, 70), (40, 60), (30, 50), (20, 40), (10, 30), (0, 20)],
        ),
        (7, 4, 3, [(3, 7), (0, 4)]),
        (1, 2, 1, [(0, 1)]),
    ],
)
def test_spans_examples(n: int, window: int, step: int, expected: list[tuple[int, int]]) -> None:
    assert list(window_spans(n, window, step)) == expected


@pytest.mark.parametrize(("window", "step"), [(1, 1), (5, 5), (5, 0), (5, 7), (0, 1)])
def test_bad_params(window: int, step: int) -> None:
    with pytest.raises(ConfigError):
        list(window_spans(10, window, step))
    with pytest.raises(ConfigError):
        WindowConfig(window=window, step=step)


def test_top_k_focus_limits_later_passes() -> None:
    cfg = WindowConfig(window=4, step=2, passes=3)
    assert [(s.start, s.end) for s in pass_spans(12, cfg, pass_index=0, top_k=2)] == list(
        window_spans(12, 4, 2)
    )
    later = pass_spans(12, cfg, pass_index=1, top_k=2)
    assert [(s.start, s.end) for s in later] == [(0, 4)]  # head [0, top_k + window - step)
    unfocused = WindowConfig(window=4, step=2, passes=3, focus_top_k=False)
    assert len(pass_spans(12, unfocused, pass_index=1, top_k=2)) == len(list(window_spans(12, 4, 2)))


async def test_slide_sorts_with_a_perfect_window_oracle() -> None:
    """With an oracle that sorts each window, one pass brings the best window - step
    items to the head in order (the bubble-up property of back-to-front windows)."""
    rng = random.Random(7)
    for n in [1, 3, 9, 20, 25, 37, 100]:
        items = list(range(n))
        rng.shuffle(items)

        async def oracle(chunk: list[int], span: WindowSpan) -> list[int]:
            return sorted(range(len(chunk)), key=lambda i: chunk[i])

        res = await slide(items, oracle, WindowConfig(window=6, step=3))
        assert sorted(res.items) == list(range(n))
        head = min(n, 3)
        assert res.items[:head] == list(range(head))


async def test_slide_passes_and_no_change_stop() -> None:
    calls: list[WindowSpan] = []

    async def identity(chunk: list[str], span: WindowSpan) -> list[int]:
        calls.append(span)
        return list(range(len(chunk)))

    res = await slide(list("abcdefghij"), identity, WindowConfig(window=4, step=2, passes=3))
    assert res.items == list("abcdefghij")
    assert res.passes_run == 1 and res.stopped_early
    assert len(calls) == len(list(window_spans(10, 4, 2)))

    seen: list[WindowSpan] = []

    async def reverse(chunk: list[str], span: WindowSpan) -> list[int]:
        seen.append(span)
        return list(reversed(range(len(chunk))))

    res = await slide(list("abcdefghij"), reverse, WindowConfig(window=4, step=2, passes=2))
    assert res.passes_run == 2 and not res.stopped_early
    assert [s.pass_index for s in seen] == [0] * 4 + [1] * 4
    assert sorted(res.items) == list("abcdefghij")

    seen.clear()
    res = await slide(list("abcdefghij"), reverse, WindowConfig(window=4, step=2, passes=2), top_k=1)
    assert [(s.pass_index, s.start, s.end) for s in seen][-1] == (1, 0, 3)  # focus: [0, 1 + 4 - 2)
    assert len(seen) == 5


async def test_slide_rejects_a_broken_reorder() -> None:
    async def broken(chunk: list[int], span: WindowSpan) -> list[int]:
        return [0] * len(chunk)

    with pytest.raises(HoprankError, match="not a permutation"):
        await slide(list(range(5)), broken, WindowConfig(window=3, step=1))


@given(
    st.lists(st.integers(), min_size=0, max_size=60, unique=True),
    st.integers(min_value=2, max_value=10),
    st.data(),
)
@settings(max_examples=100, deadline=None)
def test_slide_always_permutes(items: list[int], window: int, data: st.DataObject) -> None:
    step = data.draw(st.integers(min_value=1, max_value=window - 1))
    passes = data.draw(st.integers(min_value=1, max_value=3))
    seed = data.draw(st.integers(min_value=0, max_value=2**16))
    rng = random.Random(seed)

    async def shuffle(chunk: list[int], span: WindowSpan) -> list[int]:
        order = list(range(len(chunk)))
        rng.shuffle(order)
        return order

    res = asyncio.run(slide(items, shuffle, WindowConfig(window=window, step=step, passes=passes)))
    assert sorted(res.items) == sorted(items)
    if items:
        assert res.spans[len(list(window_spans(len(items), window, step))) - 1].start == 0
