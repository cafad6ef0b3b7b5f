"""The ranker contract and the shared driver every ranker builds on.

``BaseRanker`` validates input, guarantees that the output is a permutation of the
input (same ids, each once), applies ``top_k``, times the work and gives the sync facade
and bounded-concurrency batch ranking. Subclasses implement ``_rank``.

It also says what identifies a ranker's outputs, once for every ranker:
:meth:`BaseRanker.describe` gives the name, the prompt (``name@version#hash``), the
validated parameters (the subclass's ``config``, a
:class:`~hoprank.rankers.config.ComponentConfig`) and the engine's identity; a wrapper
(:class:`~hoprank.rankers.fusion.PriorFusion`) describes its inner ranker too. Manifests,
traces, the service and the CLI read it instead of looking for attributes.

:class:`RankerSpec` is what a ranker module declares next to its class (a module-level
``RANKER_SPECS`` tuple) so that :mod:`hoprank.rankers.registry` finds it by name.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from hoprank._sync import gather_bounded, run_sync
from hoprank.errors import HoprankError, InvalidInput
from hoprank.llm.base import EngineLike
from hoprank.prompts import PromptTemplate
from hoprank.rankers.config import ComponentConfig
from hoprank.types import Document, Ranking, Step, Usage

__all__ = ["BaseRanker", "Ranker", "RankerOutput", "RankerSpec", "check_permutation", "prompt_summary"]


@runtime_checkable
class Ranker(Protocol):
    name: str

    async def arank(self, query: str, docs: Sequence[Document], *, top_k: int | None = None) -> Ranking: ...

    def rank(self, query: str, docs: Sequence[Document], *, top_k: int | None = None) -> Ranking: ...

    async def arank_many(
        self,
        items: Sequence[tuple[str, Sequence[Document]]],
        *,
        top_k: int | None = None,
        concurrency: int = 4,
    ) -> list[Ranking]: ...


class RankerOutput:
    """What ``_rank`` returns: the full ordering (a permutation of the input), the
    usage and the trace steps."""

    __slots__ = ("documents", "trace", "usage")

    def __init__(
        self, documents: list[Document], usage: Usage | None = None, trace: list[Step] | None = None
    ):
        self.documents = documents
        self.usage = usage or Usage()
        self.trace = trace or []


def check_permutation(inputs: Sequence[Document], outputs: Sequence[Document]) -> None:
    """Raise ``HoprankError`` unless ``outputs`` holds exactly the ids of ``inputs``, each once.

    This is an internal invariant: failing it is a bug in hoprank, not a model error.
    """
    a = [d.id for d in inputs]
    b = [d.id for d in outputs]
    if len(a) != len(b) or sorted(a) != sorted(b):
        lost = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        raise HoprankError(
            f"ranker broke the permutation invariant: lost={lost} extra={extra} n_in={len(a)} n_out={len(b)}"
        )


@runtime_checkable
class _Describes(Protocol):
    def describe(self) -> dict[str, Any]: ...


def prompt_summary(tpl: PromptTemplate) -> dict[str, Any]:
    """name, version, hash and ref (``name@version#hash``) of a prompt, as manifests record it."""
    return {"name": tpl.name, "version": tpl.version, "hash": tpl.content_hash, "ref": tpl.ref}


class BaseRanker(ABC):
    """Shared driver. Subclasses set ``name``, implement :meth:`_rank` and declare their
    parameters: ``config_class`` (a :class:`ComponentConfig`) and ``self.config`` (the
    validated values); a prompted ranker sets ``self.prompt``, an engine-backed one
    ``self.engine``."""

    name: str = "ranker"
    #: the class of this ranker's parameters (None: it takes none)
    config_class: ClassVar[type[ComponentConfig] | None] = None
    #: the validated parameters
    config: ComponentConfig | None = None
    #: the versioned prompt this ranker renders, if any
    prompt: PromptTemplate | None = None
    #: the engine this ranker calls, if any
    engine: EngineLike | None = None

    # -------------------------------------------------------------- identity

    def wrapped(self) -> BaseRanker | None:
        """The ranker this one wraps (a wrapper overrides this), else None."""
        return None

    def prompt_template(self) -> PromptTemplate | None:
        """The prompt that shapes this ranker's outputs: its own, else its inner ranker's."""
        if self.prompt is not None:
            return self.prompt
        inner = self.wrapped()
        return inner.prompt_template() if inner is not None else None

    def engine_identity(self) -> dict[str, Any] | None:
        """The engine's ``describe()`` (its name alone when it has none), else the inner
        ranker's, else None."""
        if self.engine is not None:
            if isinstance(self.engine, _Describes):
                return dict(self.engine.describe())
            return {"name": self.engine.name}
        inner = self.wrapped()
        return inner.engine_identity() if inner is not None else None

    def params(self) -> dict[str, Any]:
        """The validated parameters as JSON-friendly data (the prompt is reported apart)."""
        return self.config.public() if self.config is not None else {}

    def describe(self) -> dict[str, Any]:
        """What identifies this ranker's outputs: ``name``, ``class``, ``prompt``
        (``name@version#hash`` or None), ``params``, ``engine`` (its identity or None) and,
        for a wrapper, ``inner`` (the wrapped ranker's own description)."""
        tpl = self.prompt_template()
        out: dict[str, Any] = {
            "name": self.name,
            "class": type(self).__qualname__,
            "prompt": tpl.ref if tpl is not None else None,
            "params": self.params(),
            "engine": self.engine_identity(),
        }
        inner = self.wrapped()
        if inner is not None:
            out["inner"] = inner.describe()
        return out

    # -------------------------------------------------------------- ranking

    @abstractmethod
    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        """Order ``docs`` (at least 2, unique ids) for ``query``; return every document."""

    async def arank(self, query: str, docs: Sequence[Document], *, top_k: int | None = None) -> Ranking:
        if not isinstance(query, str):
            raise InvalidInput(f"query must be a string, got {type(query).__name__}")
        if top_k is not None and top_k < 1:
            raise InvalidInput(f"top_k must be >= 1 or None, got {top_k}")
        docs = list(docs)
        for d in docs:
            if not isinstance(d, Document):
                raise InvalidInput(f"documents must be hoprank.Document objects, got {type(d).__name__}")
        seen: set[str] = set()
        dups = sorted({d.id for d in docs if d.id in seen or seen.add(d.id)})  # type: ignore[func-returns-value]
        if dups:
            raise InvalidInput(f"duplicate document ids: {dups[:10]}{' ...' if len(dups) > 10 else ''}")
        t0 = time.perf_counter()
        if len(docs) < 2:
            out = RankerOutput(list(docs))
        else:
            out = await self._rank(query, docs, top_k=top_k)
        check_permutation(docs, out.documents)
        usage = out.usage.model_copy(update={"seconds": time.perf_counter() - t0})
        ranked = out.documents[:top_k] if top_k is not None else out.documents
        return Ranking(query=query, documents=ranked, usage=usage, trace=out.trace)

    def rank(self, query: str, docs: Sequence[Document], *, top_k: int | None = None) -> Ranking:
        """Sync facade of :meth:`arank`."""
        return run_sync(self.arank(query, docs, top_k=top_k))

    async def arank_many(
        self,
        items: Sequence[tuple[str, Sequence[Document]]],
        *,
        top_k: int | None = None,
        concurrency: int = 4,
    ) -> list[Ranking]:
        """Rank several (query, documents) pairs with at most ``concurrency`` in flight.

        Results keep the order of ``items``. The first failure cancels the rest and is raised.
        """
        return await gather_bounded((self.arank(q, ds, top_k=top_k) for q, ds in items), concurrency)

    def rank_many(
        self,
        items: Sequence[tuple[str, Sequence[Document]]],
        *,
        top_k: int | None = None,
        concurrency: int = 4,
    ) -> list[Ranking]:
        """Sync facade of :meth:`arank_many`."""
        return run_sync(self.arank_many(items, top_k=top_k, concurrency=concurrency))


@dataclass(frozen=True)
class RankerSpec:
    """One registered ranker, declared by its module in a module-level ``RANKER_SPECS``
    tuple (:mod:`hoprank.rankers.registry` collects them)."""

    name: str
    summary: str
    load: Callable[[], type[BaseRanker]]
    #: whether the constructor takes an engine as its first argument
    needs_engine: bool = True
    #: the prompt it renders when none is given (manifests record it), if any
    default_prompt: str | None = None
    aliases: tuple[str, ...] = ()
    #: enabled by default in the HTTP service (needs no parameter, a bounded number of calls)
    served: bool = True
    #: where it stands in listings (``ranker_names()``, the docs): lower first, then by name
    order: int = 1000

    @property
    def cls(self) -> type[BaseRanker]:
        return self.load()

    @property
    def config_class(self) -> type[ComponentConfig] | None:
        """The class of the ranker's parameters (None: it takes none)."""
        return self.load().config_class
