"""Shape bucketing (``TransformersEngine(length_buckets=...)``): padded forwards give the
unpadded logits, at the shapes the buckets say. SmolLM2-135M in fp32 on real DL19 FIRST
windows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rank_data import dl19_query

from hoprank.errors import ConfigError
from hoprank.llm.runtime._buckets import LengthBuckets, length_buckets
from hoprank.rankers import FIRST


def test_bucket_lengths() -> None:
    pow2 = length_buckets("pow2")
    assert pow2 == LengthBuckets()
    assert [pow2.length(n, 32768) for n in (1, 16, 17, 1000, 1024, 1025, 1640)] == [
        16, 16, 32, 1024, 1024, 2048, 2048,
    ]  # fmt: skip
    assert pow2.length(1640, 1800) == 1800  # never past the context window...
    assert pow2.length(1900, 1800) == 1900  # ...nor below the tokens themselves
    listed = length_buckets([2048, 512, 1024])
    assert listed is not None and listed.lengths == (512, 1024, 2048)
    assert [listed.length(n, 32768) for n in (3, 512, 513, 2048, 3000)] == [512, 512, 1024, 2048, 3000]
    assert listed.describe() == [512, 1024, 2048] and pow2.describe() == "pow2"
    assert length_buckets(None) is None
    assert length_buckets("1024, 512") == LengthBuckets((512, 1024))
    for bad in ("pow3", "", "512,x", [], [0, 512], [512.5], [True]):
        with pytest.raises(ConfigError):
            length_buckets(bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fp32_engine() -> Any:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    return TransformersEngine("smollm2-135m", dtype="float32", threads=2)


class _Shapes:
    """The ``input_ids`` shapes of every forward of ``model`` while active."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seen: list[tuple[int, ...]] = []

    def __enter__(self) -> _Shapes:
        def hook(_m: Any, args: Any, kwargs: dict[str, Any]) -> None:
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.seen.append(tuple(ids.shape))

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@pytest.fixture
def engine(fp32_engine: Any) -> Iterator[Any]:
    yield fp32_engine
    fp32_engine.length_buckets = None


def _first_requests(datasets_dir: Path, engine: Any, indices: tuple[int, ...]) -> list[Any]:
    """FIRST's first window (5 passages) of the given DL19 queries, as logprob requests."""
    from hoprank.llm.base import LogprobRequest

    first = FIRST(engine, window=5)
    requests = []
    for i in indices:
        query, docs = dl19_query(datasets_dir, k=5, index=i)
        labels = first.labels_for(len(docs))
        wp = first.build_prompt(query, docs, labels, max_new_tokens=1, prefill=first.prefill)
        requests.append(LogprobRequest(messages=wp.messages, candidates=labels, prefill=first.prefill))
    return requests


async def test_first_label_logprobs_are_the_same_with_buckets(engine: Any, datasets_dir: Path) -> None:
    requests = _first_requests(datasets_dir, engine, (0, 1))
    query, docs = dl19_query(datasets_dir, k=5, index=0)
    ranking = await FIRST(engine, window=5).arank(query, docs)
    with _Shapes(engine.model) as plain:
        reference = [
            await engine.next_token_logprobs(r.messages, candidates=r.candidates, prefill=r.prefill)
            for r in requests
        ]
    lengths = [s[1] for s in plain.seen]
    assert len(lengths) == 2 and all(200 < n < 1024 for n in lengths)
    for spec, expected in (
        ([256, 1024, 2048], [1024, 1024]),
        ("pow2", [1 << (n - 1).bit_length() for n in lengths]),
    ):
        engine.length_buckets = length_buckets(spec)
        with _Shapes(engine.model) as padded:
            scores = [
                await engine.next_token_logprobs(r.messages, candidates=r.candidates, prefill=r.prefill)
                for r in requests
            ]
        assert padded.seen == [(1, n) for n in expected]
        assert all(e > n for e, n in zip(expected, lengths, strict=True))  # padding really happened
        for mine, ref in zip(scores, reference, strict=True):
            assert mine.logprobs.keys() == ref.logprobs.keys() and len(ref.logprobs) == 5
            assert max(abs(mine.logprobs[k] - ref.logprobs[k]) for k in ref.logprobs) < 1e-4, (
                spec,
                mine,
                ref,
            )
        assert (await FIRST(engine, window=5).arank(query, docs)).ids == ranking.ids


async def test_batched_and_left_padded_forwards_are_padded_to_the_bucket(
    engine: Any, datasets_dir: Path
) -> None:
    import torch

    requests = _first_requests(datasets_dir, engine, (2, 3))
    reference = await engine.next_token_logprobs_batch(requests)
    engine.length_buckets = length_buckets([1024])
    with _Shapes(engine.model) as batched:
        padded = await engine.next_token_logprobs_batch(requests)
    assert batched.seen == [(2, 1024)]  # one right-padded forward, widened to the bucket
    for mine, ref in zip(padded, reference, strict=True):
        assert max(abs(mine.logprobs[k] - ref.logprobs[k]) for k in ref.logprobs) < 1e-4

    ids = engine._encode_prompt(engine.render(requests[0].messages, requests[0].prefill))
    engine.length_buckets = None
    plain = engine.forward_last_logits(torch.tensor([ids]))
    engine.length_buckets = length_buckets("pow2")
    with _Shapes(engine.model) as left:
        bucketed = engine.forward_last_logits(torch.tensor([ids]))
    assert left.seen == [(1, 1 << (len(ids) - 1).bit_length())]
    assert float((torch.log_softmax(bucketed, -1) - torch.log_softmax(plain, -1)).abs().max()) < 1e-4
    assert engine.describe()["length_buckets"] == "pow2"


def test_a_bad_bucket_spec_fails_before_the_model_loads() -> None:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    with pytest.raises(ConfigError, match="length_buckets"):
        TransformersEngine("no-such-model", length_buckets="pow3")
