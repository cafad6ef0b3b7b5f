"""OpenAIEngine takes its options as keywords or as one OpenAIEngineConfig."""

from __future__ import annotations

import pytest

from hoprank.errors import ConfigError
from hoprank.llm.base import Capability
from hoprank.llm.engines.openai_engine import OpenAIEngine, OpenAIEngineConfig
from hoprank.llm.transport.retry import RetryPolicy


def test_config_and_keywords_build_the_same_engine() -> None:
    kw = {"base_url": "http://127.0.0.1:9/v1", "server": "vllm", "timeout": 5.0, "top_logprobs": 50}
    a = OpenAIEngine("m", **kw)
    b = OpenAIEngine("m", config=OpenAIEngineConfig(**kw))
    assert a.describe() == b.describe()
    assert a.top_logprobs == b.top_logprobs == 20 and a.timeout == b.timeout == 5.0
    assert Capability.PREFILL in a.capabilities and a.capabilities == b.capabilities
    c = OpenAIEngine("m", config=OpenAIEngineConfig(**kw), server="openai", name="other")
    assert c.server == "openai" and c.name == "other" and Capability.PREFILL not in c.capabilities
    policy = RetryPolicy(max_attempts=2)
    assert OpenAIEngine("m", base_url="http://127.0.0.1:9/v1", retry=policy).retry_policy is policy


@pytest.mark.parametrize(
    "bad",
    [
        {"server": "tgi"},
        {"timeout": 0},
        {"balance": "random"},
        {"unknown": 1},
        {"retry": 3},
        {"base_url": []},
    ],
)
def test_bad_options_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        OpenAIEngine("m", **{"base_url": "http://127.0.0.1:9/v1", **bad})
