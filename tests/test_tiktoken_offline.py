"""Offline tiktoken: BPE files rebuilt from quicktok, verified, and no network touched."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
import tiktoken
import tiktoken.load
import tiktoken.registry

from hoprank.errors import ConfigError, MissingExtra
from hoprank.llm.base import Tokenizer
from hoprank.llm.tokenizers import tiktoken_offline as tko


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiktoken-cache")


@pytest.fixture
def offline(module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An initially empty cache dir (shared by this module's tests, so each file is built
    once), tiktoken's in-process cache emptied, and every network path cut."""
    cache = module_cache
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return cache


URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"


@pytest.mark.parametrize(
    ("name", "hello_world"),
    # tiktoken's documented examples: cl100k "hello world" -> [15339, 1917]
    [("cl100k_base", [15339, 1917]), ("o200k_base", [24912, 2375])],
)
def test_encodings_offline_with_known_ids(offline: Path, name: str, hello_world: list[int]) -> None:
    enc = tko.get_encoding(name)
    assert enc.name == name
    assert enc.encode("hello world") == hello_world
    assert enc.decode(hello_world) == "hello world"
    # the seeded file is tiktoken's own, byte for byte
    path = offline / hashlib.sha1(URL.format(name).encode()).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tko.ENCODING_SHA256[name]
    # tiktoken itself now loads it too (its own sha256 check included)
    tiktoken.registry.ENCODINGS.clear()
    assert tiktoken.get_encoding(name).encode("hello world") == hello_world


def test_known_counts_and_vocab_sizes(offline: Path) -> None:
    cl = tko.get_encoding("cl100k_base")
    o2 = tko.get_encoding("o200k_base")
    assert cl.n_vocab == 100277 and o2.n_vocab == 200019
    assert cl.encode("tiktoken is great!") == [83, 1609, 5963, 374, 2294, 0]
    assert len(o2.encode("The quick brown fox jumps over the lazy dog.")) == 10
    assert tko.get_encoding("o200k_harmony").encode("hello world") == [24912, 2375]


def test_encoding_for_model(offline: Path) -> None:
    assert tko.encoding_for_model("gpt-4o").name == "o200k_base"
    assert tko.encoding_for_model("gpt-4").name == "cl100k_base"
    with pytest.raises(KeyError):
        tko.encoding_for_model("smollm2-135m")


def test_unknown_encoding_is_a_config_error(offline: Path) -> None:
    with pytest.raises(ConfigError, match="not available offline"):
        tko.get_encoding("p50k_base")


def test_corrupt_cache_file_is_rebuilt(offline: Path) -> None:
    path = tko.ensure_cached("cl100k_base")
    path.write_bytes(b"garbage")
    assert tko.ensure_cached("cl100k_base") == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == tko.ENCODING_SHA256["cl100k_base"]
    assert not list(offline.glob(".*tmp*"))  # no temporary files left behind


def test_default_cache_dir_under_hoprank_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR", raising=False)
    monkeypatch.delenv("DATA_GYM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOPRANK_CACHE", str(tmp_path))
    assert tko.tiktoken_cache_dir() == tmp_path / "tiktoken"
    import os

    assert os.environ["TIKTOKEN_CACHE_DIR"] == str(tmp_path / "tiktoken")


def test_tokenizer_protocol(offline: Path) -> None:
    tok = tko.TiktokenTokenizer("cl100k_base")
    assert isinstance(tok, Tokenizer) and tok.name == "tiktoken:cl100k_base"
    assert tok.count("hello world") == 2
    # special-token text in a document is plain text, not an error
    assert tok.count("a <|endoftext|> b") > 3
    text = "Paris is the capital of France, and Lyon is a large city."
    cut = tok.truncate(text, 4)
    assert text.startswith(cut) and tok.count(cut) == 4
    assert tok.truncate(text, 1000) == text and tok.truncate(text, 0) == ""
    assert tok.decode(tok.encode(text)) == text
    party = "🎉🎉 party"  # the emoji spans several byte-level tokens
    for n in range(1, 6):
        cut = tok.truncate(party, n)
        assert party.startswith(cut) and "\ufffd" not in cut
    assert tko.TiktokenTokenizer.for_model("gpt-4o").name == "tiktoken:o200k_base"


def test_without_quicktok_offline_is_a_missing_extra(
    tmp_path: Path, offline: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    real = tko.importlib.util.find_spec
    monkeypatch.setattr(
        tko.importlib.util, "find_spec", lambda n, *a: None if n == "quicktok" else real(n, *a)
    )
    with pytest.raises(MissingExtra, match=r"hoprank\[tokenizers\]"):
        tko.get_encoding("cl100k_base")
