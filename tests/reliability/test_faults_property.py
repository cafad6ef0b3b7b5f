"""Property-based fault tests: generated document lists (sizes, ids, texts) and generated
per-call fault sequences, through a real OpenAIEngine and the fault server on 127.0.0.1.

Invariant: the ranking equals the fault-free one (a permutation of the input) whenever
every logical call met fewer than ``max_attempts`` faults; otherwise a typed EngineError
is raised. No call is ever attempted more than ``max_attempts`` times.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _faultkit import MAX_ATTEMPTS, RANKERS, TRANSIENT, ModelBehindFaults, make_engine, make_ranker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.fault_server import FaultServer, RecordedRequest, Reply

from hoprank.errors import EngineError, HoprankError
from hoprank.types import Document, Ranking

pytestmark = pytest.mark.timeout(180)


class Switch:
    def __init__(self) -> None:
        self.model = ModelBehindFaults()

    def __call__(self, req: RecordedRequest) -> Reply:
        return self.model(req)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[FaultServer, Switch]]:
    switch = Switch()
    with FaultServer(switch) as fs:
        yield fs, switch


def assert_permutation(ranking: Ranking, docs: list[Document]) -> None:
    assert len(ranking.ids) == len(docs) == len(set(ranking.ids))
    assert sorted(ranking.ids) == sorted(d.id for d in docs)


_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
_FAULT_NAMES = sorted(k for k in TRANSIENT if k != "hang")  # hangs cost real time: see test_faults


@st.composite
def documents(draw: st.DrawFn) -> list[Document]:
    n = draw(st.integers(min_value=0, max_value=30))
    ids = draw(st.lists(st.text(_ALPHABET, min_size=1, max_size=8), min_size=n, max_size=n, unique=True))
    texts = draw(st.lists(st.text(_ALPHABET, max_size=60), min_size=n, max_size=n))
    return [Document(id=i, text=t) for i, t in zip(ids, texts, strict=True)]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=documents(),
    ranker_name=st.sampled_from(RANKERS),
    window=st.sampled_from([(2, 1), (4, 2), (5, 3), (20, 10)]),
    faults=st.lists(
        st.tuples(st.integers(min_value=0, max_value=MAX_ATTEMPTS), st.sampled_from(_FAULT_NAMES)),
        min_size=1,
        max_size=6,
    ),
)
def test_property_permutation_or_typed_error(
    server: tuple[FaultServer, Switch],
    docs: list[Document],
    ranker_name: str,
    window: tuple[int, int],
    faults: list[tuple[int, str]],
) -> None:
    fs, switch = server

    def plan(i: int, body: dict[str, Any]) -> list[Reply]:  # call i gets faults[i % len] faults
        k, name = faults[i % len(faults)]
        return [TRANSIENT[name][0](body) for _ in range(k)]

    switch.model = ModelBehindFaults()
    engine = make_engine(fs.base_url)
    ranker = make_ranker(ranker_name, engine, *window)
    clean = ranker.rank("a query", docs)
    assert_permutation(clean, docs)
    model = ModelBehindFaults(plan=plan)
    switch.model = model
    got: Ranking | None
    try:
        got = ranker.rank("a query", docs)
    except HoprankError as e:
        assert isinstance(e, EngineError), repr(e)
        got = None
    if got is None:  # some call met MAX_ATTEMPTS faults in a row
        assert any(k >= MAX_ATTEMPTS for k, _ in faults)
    else:
        assert_permutation(got, docs)
        assert got.ids == clean.ids and got.fallbacks == clean.fallbacks
        # Every call succeeded, so attempts per identical body / its successes is a true bound.
        # (After an exhausted call it is not: a concurrent call with the same body, e.g. two
        # documents with the same text under pointwise, shares the attempt counter.)
        assert model.max_attempts_per_call() <= MAX_ATTEMPTS
