"""The ``Tokenizer`` protocol over a Hugging Face tokenizer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hoprank.errors import InvalidInput

if TYPE_CHECKING:
    from hoprank.llm.base import Message

__all__ = ["HFTokenizer"]

_REMEMBER_CHARS = 2048  # texts at least this long (prompts) are remembered by encode
_REMEMBER_TEXTS = 64  # a micro-batch of window prompts is built before any is encoded


class HFTokenizer:
    """Counts, encodes and truncates text in a transformers model's own tokens.

    ``encode`` never adds special tokens (BOS/EOS): counts are of the text itself.
    ``truncate`` cuts at a token boundary using the fast tokenizer's character offsets,
    so the result is a prefix of the input (never a re-decoded approximation of it).
    """

    def __init__(self, tokenizer: Any, name: str = "") -> None:
        self.hf = tokenizer
        self.name = name or str(getattr(tokenizer, "name_or_path", "hf"))
        # A ranker counts a window's rendered prompt to fit it, then the engine encodes
        # the very same text: long texts are remembered (a few, by content).
        self._recent: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._single_ids: dict[str, list[int]] = {}  # label candidates recur in every request

    def encode(self, text: str) -> list[int]:
        if len(text) < _REMEMBER_CHARS:
            ids: list[int] = self.hf.encode(text, add_special_tokens=False)
            return ids
        with self._recent_lock:
            hit = self._recent.get(text)
            if hit is not None:
                self._recent.move_to_end(text)
                return list(hit)
        ids = self.hf.encode(text, add_special_tokens=False)
        with self._recent_lock:
            self._recent[text] = tuple(ids)
            while len(self._recent) > _REMEMBER_TEXTS:
                self._recent.popitem(last=False)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        text: str = self.hf.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)
        return text

    def render_chat(self, messages: Sequence[Message], prefill: str = "") -> str:
        """The chat-templated prompt (generation prompt added), with ``prefill`` appended."""
        if not messages:
            raise InvalidInput("messages must not be empty")
        text: str = self.hf.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return text + prefill

    def single_token_ids(self, candidates: Sequence[str]) -> list[int]:
        """One token id per candidate label; ``InvalidInput`` for a multi-token one."""
        if not candidates:
            raise InvalidInput("candidates must not be empty")
        ids = []
        for c in candidates:
            enc = self._single_ids.get(c) or self.encode(c)
            if len(enc) != 1:
                raise InvalidInput(
                    f"candidate {c!r} is {len(enc)} tokens for {self.name}; next-token "
                    "log-probabilities need single-token candidates"
                )
            if len(self._single_ids) < 4096:
                self._single_ids[c] = enc
            ids.append(enc[0])
        return ids

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def truncate_many(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """:meth:`truncate` of each text, tokenized in one batch call (a window's passages);
        cuts at the fast tokenizer's character offsets, so each result is a prefix of its text."""
        if max_tokens <= 0:
            return ["" for _ in texts]
        if not getattr(self.hf, "is_fast", False):
            return [self.truncate(t, max_tokens) for t in texts]
        live = [i for i, t in enumerate(texts) if t]
        out = list(texts)
        if live:
            enc = self.hf([texts[i] for i in live], add_special_tokens=False, return_offsets_mapping=True)
            for i, offsets in zip(live, enc["offset_mapping"], strict=True):
                if len(offsets) > max_tokens:
                    out[i] = self._fit(texts[i][: offsets[max_tokens - 1][1]], max_tokens)
        return out

    def _fit(self, cut: str, max_tokens: int) -> str:
        # Re-tokenising a prefix can merge differently; shrink until it fits.
        while cut and len(self.hf.encode(cut, add_special_tokens=False)) > max_tokens:
            cut = cut[:-1]
        return cut

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0 or not text:
            return ""
        if getattr(self.hf, "is_fast", False):
            return self.truncate_many([text], max_tokens)[0]
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        cut = self.decode(ids[:max_tokens]).rstrip("\ufffd")
        if not text.startswith(cut):
            cut = text[: len(cut)]
        return self._fit(cut, max_tokens)
