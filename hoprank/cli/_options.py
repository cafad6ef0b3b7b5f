"""Option groups: command-line options declared once, as the fields of a dataclass, and
taken by a command as one parameter.

A group is a dataclass that subclasses :class:`OptionGroup`; each field is annotated
``Annotated[T, typer.Option("--flag", help=...)]`` and its default is the option's default
(a field without one is a required option). A command wrapped by
:func:`with_option_groups` that has a parameter annotated with a group shows the
group's fields as its own options, in field order, where that parameter stands, and is
called with the group object built from them::

    @dataclass(frozen=True, kw_only=True)
    class EngineOptions(OptionGroup):
        model: Annotated[str | None, typer.Option("--model", "-m", help="...")] = None
        threads: Annotated[int | None, typer.Option("--threads", min=1, help="...")] = None

    @with_option_groups
    def rerank_cmd(engine: EngineOptions, verbose: bool = VERBOSE_OPTION) -> None:
        engine.model  # --model

Commands sharing a group share its flags, defaults and help texts, and the code behind
them (the group's methods). A field name must not clash with another parameter of the
command or with another group's field (:class:`TypeError` when the command is wrapped).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["OptionGroup", "with_option_groups"]

R = TypeVar("R")


class OptionGroup:
    """Base of the option-group dataclasses (see :mod:`hoprank.cli._options`)."""


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, OptionGroup)


def _fields(group: type[OptionGroup]) -> list[inspect.Parameter]:
    """The group's fields as keyword parameters (with their ``Annotated`` options)."""
    if not dataclasses.is_dataclass(group):
        raise TypeError(f"option group {group.__name__} is not a dataclass")
    hints = typing.get_type_hints(group, include_extras=True)
    params = []
    for f in dataclasses.fields(group):
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{group.__name__}.{f.name}: an option default cannot be a factory")
        default = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        params.append(
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hints[f.name]
            )
        )
    return params


def with_option_groups(command: Callable[..., R]) -> Callable[..., R]:
    """``command`` with each :class:`OptionGroup` parameter shown to typer as the group's
    options and passed to ``command`` as the built group."""
    hints = typing.get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, tuple[type[OptionGroup], list[str]]] = {}
    for p in inspect.signature(command).parameters.values():
        annotation = hints.get(p.name, p.annotation)
        if _is_group(annotation):
            fields = _fields(annotation)
            groups[p.name] = (annotation, [f.name for f in fields])
            params += fields
        else:
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=annotation))
    names = [p.name for p in params]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise TypeError(f"{command.__name__}: option names used twice: {clashes}")

    @functools.wraps(command)
    def run(**values: Any) -> R:
        for name, (group, fields) in groups.items():
            values[name] = group(**{f: values.pop(f) for f in fields})
        return command(**values)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]  # what typer reads
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run
