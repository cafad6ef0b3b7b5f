"""The engine-spec loader and the CLI's shared exit-code table."""

from __future__ import annotations

import pytest

from hoprank.cli._common import EXIT_RUNTIME, EXIT_USAGE, exit_code, parse_params
from hoprank.errors import ConfigError, EngineError, InvalidInput, MissingExtra
from hoprank.llm.spec import EngineSpec


def test_base_url_implies_openai_and_reads_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", " sk-123 ")
    spec = EngineSpec.resolve("qwen", base_url="http://h/v1", api_key_env="MY_KEY", threads=4)
    assert spec.model == "openai:qwen" and spec.is_remote
    assert spec.engine_kwargs() == {"base_url": "http://h/v1", "api_key": "sk-123"}  # no threads
    assert spec.engine_kwargs(secrets=False) == {"base_url": "http://h/v1"}
    assert "sk-123" not in repr(spec)


def test_local_spec_takes_threads_and_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-123")
    spec = EngineSpec.resolve(None, api_key_env="MY_KEY", threads=2, default_model="smollm2-135m")
    assert spec.model == "smollm2-135m" and not spec.is_remote
    assert spec.engine_kwargs() == {"threads": 2}
    blank = EngineSpec.resolve("openai:m", api_key_env="UNSET_HOPRANK_KEY_VAR")
    assert blank.api_key is None and blank.engine_kwargs() == {}


def test_several_base_urls_and_no_model() -> None:
    many = EngineSpec.resolve("m", base_url=["http://a/v1", "http://b/v1"])
    assert many.model == "openai:m" and many.base_url == ["http://a/v1", "http://b/v1"]
    assert EngineSpec.resolve("m", base_url=["http://a/v1"]).base_url == "http://a/v1"
    none = EngineSpec.resolve(None, base_url=["http://a/v1"])
    assert none.model is None and none.engine_kwargs() == {"base_url": "http://a/v1"}
    with pytest.raises(ConfigError, match="no model"):
        none.load()


def test_exit_code_table_and_params() -> None:
    assert exit_code(InvalidInput("x")) == exit_code(MissingExtra("x", "y")) == EXIT_USAGE
    assert exit_code(FileNotFoundError("x")) == EXIT_USAGE
    assert exit_code(EngineError("x")) == exit_code(RuntimeError("x")) == EXIT_RUNTIME
    assert parse_params(["a=1", "b=x", "c=[1, 2]"]) == {"a": 1, "b": "x", "c": [1, 2]}
    with pytest.raises(InvalidInput, match="--engine-param expects key=value"):
        parse_params(["oops"], "--engine-param")


def test_identity_names_the_engine_without_loading_it() -> None:
    assert EngineSpec("openai:m", base_url="http://h/v1").identity() == {"engine": "openai", "model": "m"}
    ident = EngineSpec("smollm2-135m").identity()  # resolves the pack; loads no weights
    assert ident["engine"] == "transformers" and len(ident["gguf_sha256"]) == 64
