"""The engine's prefix KV cache: the lookup rules on a stand-in cache object, and on
SmolLM2-135M that reused prefixes give the greedy texts of a full prefill."""

from __future__ import annotations

from typing import Any

import pytest

from hoprank.errors import InvalidInput
from hoprank.llm import Message, load_engine
from hoprank.llm.runtime.prefix_cache import PrefixCache, common_prefix


class _Cache:
    """Stands in for a transformers ``DynamicCache``: a length, ``crop(-n)`` removes n."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_seq_length(self) -> int:
        return self.n

    def crop(self, tokens: int) -> None:
        assert tokens < 0, "the cache removes with a negative count"
        self.n += tokens


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


def test_lookup_picks_the_longest_prefix_and_leaves_one_token() -> None:
    pc = PrefixCache(2, min_tokens=3)
    pc.store(list(range(10)), _Cache(10))
    pc.store([0, 1, 2, 3, 99, 98], _Cache(6))
    cache, n = pc.lookup(list(range(20)))
    assert n == 10 and cache.n == 10
    cache, n = pc.lookup(list(range(10)))  # the whole prompt is cached: one token left to compute
    assert n == 9 and cache.n == 9
    cache, n = pc.lookup([0, 1, 2, 3, 99, 7])
    assert n == 5 and cache.n == 5
    # copies: the stored entries keep their length
    assert sorted(e.cache.n for e in pc._entries) == [6, 10]
    assert (pc.hits, pc.misses, pc.reused_tokens) == (3, 0, 24)


def test_short_prefixes_miss_and_capacity_evicts_the_least_recent() -> None:
    pc = PrefixCache(2, min_tokens=4)
    assert pc.lookup([0, 1, 2, 3, 4]) == (None, 0)
    pc.store([0, 1, 2], _Cache(3))  # shorter than min_tokens: not kept
    assert len(pc) == 0
    pc.store([1] * 8, _Cache(8))
    pc.store([2] * 8, _Cache(8))
    assert pc.lookup([1] * 9)[1] == 8  # touches [1]*8
    pc.store([3] * 8, _Cache(8))  # evicts [2]*8
    assert pc.lookup([2] * 9) == (None, 0)
    assert pc.lookup([1] * 9)[1] == 8 and pc.lookup([3] * 9)[1] == 8


def test_an_extension_replaces_its_prefix_and_the_key_is_cut_to_the_cache() -> None:
    pc = PrefixCache(4, min_tokens=2)
    pc.store([5, 6, 7], _Cache(3))
    pc.store([5, 6, 7, 8, 9], _Cache(4))  # the cache covers 4 of the 5 tokens
    assert len(pc) == 1 and pc._entries[0].ids == (5, 6, 7, 8)
    off = PrefixCache(0)
    off.store([1] * 50, _Cache(50))
    assert len(off) == 0 and off.lookup([1] * 60) == (None, 0)
    with pytest.raises(ValueError):
        PrefixCache(-1)


def test_engine_option_is_validated() -> None:
    with pytest.raises(InvalidInput, match="prefix_cache"):
        load_engine("smollm2-135m", prefix_cache=-1)


SYSTEM: Message = {
    "role": "system",
    "content": "You answer questions about documents in one short sentence. " * 12,
}


def test_real_model_reuses_the_prefix_with_the_same_greedy_text(smollm2_engine: Any) -> None:
    e = smollm2_engine
    saved = e.prefix_cache
    try:
        texts: dict[int, list[str]] = {}
        reused: dict[int, list[int]] = {}
        for capacity in (0, 4):
            e.prefix_cache = PrefixCache(capacity)
            texts[capacity], reused[capacity] = [], []
            for q in ("Who wrote Hamlet?", "Where is Paris?", "Who wrote Hamlet? Name the year too."):
                msgs: list[Message] = [SYSTEM, {"role": "user", "content": q}]
                c = e.generate_sync(msgs, max_tokens=12)
                texts[capacity].append(c.text)
                reused[capacity].append(c.usage.cached_tokens)
                assert c.usage.prompt_tokens > c.usage.cached_tokens
        assert texts[4] == texts[0]
        assert reused[0] == [0, 0, 0]
        assert reused[4][0] == 0 and min(reused[4][1:]) >= 100  # the system message and more
        assert e.prefix_cache.hits == 2
    finally:
        e.prefix_cache = saved


def test_prefix_cache_and_threads_do_not_change_a_run_folder_key() -> None:
    """Performance knobs may change between a run and its resume: same fingerprint."""
    from hoprank.agents import resolve_systems
    from hoprank.evals.config import ExperimentConfig
    from hoprank.evals.qa_runner import QAExperimentConfig

    base = ExperimentConfig(dataset="sample-dl19", ranker="first", model="smollm2-135m")
    tuned = base.model_copy(update={"engine_params": {"prefix_cache": 0, "threads": 1}})
    assert tuned.fingerprint == base.fingerprint
    other = base.model_copy(update={"engine_params": {"fp32_head": False}})
    assert other.fingerprint != base.fingerprint
    qa = QAExperimentConfig(dataset="sample-hotpotqa", system=resolve_systems("d")[0], model="smollm2-135m")
    assert qa.model_copy(update={"engine_params": {"prefix_cache": 2}}).fingerprint == qa.fingerprint
