"""Option groups (``hoprank.cli._options``): a dataclass of options taken as one parameter
shows its fields as the command's own options, in place, and arrives built."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from hoprank.cli._common import EngineOptions
from hoprank.cli._options import OptionGroup, with_option_groups


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes(OptionGroup):
    name: Annotated[str, typer.Option("--name", help="Required name.")]
    width: Annotated[int, typer.Option("--width", "-w", min=1, help="Width.")] = 3


def _app(command: typer.models.CommandFunctionType) -> typer.Typer:
    app = typer.Typer()
    app.command()(command)
    return app


def test_group_fields_become_options_and_arrive_built() -> None:
    seen: list[object] = []

    @with_option_groups
    def cmd(
        word: str = typer.Argument(...),
        *,
        sizes: Sizes,
        engine: EngineOptions,
        loud: bool = typer.Option(False, "--loud"),
    ) -> None:
        seen.extend([word, sizes, engine, loud])

    app = _app(cmd)
    res = CliRunner().invoke(app, ["hi", "--name", "n", "-w", "5", "-m", "smollm2-135m", "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert seen == ["hi", Sizes(name="n", width=5), EngineOptions(model="smollm2-135m", threads=2), False]

    missing = CliRunner().invoke(app, ["hi"])
    assert missing.exit_code == 2 and "--name" in missing.output  # a field without default is required
    help_text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    flags = ["--name", "--width", "--model", "--base-url", "--api-key-env", "--threads", "--loud"]
    assert all(f in help_text for f in flags)
    assert [help_text.index(f) for f in flags] == sorted(
        help_text.index(f) for f in flags
    )  # in place, in order


def test_clashing_option_names_are_refused() -> None:
    def cmd(*, sizes: Sizes, width: int = typer.Option(1, "--other")) -> None:
        pass

    with pytest.raises(TypeError, match="width"):
        with_option_groups(cmd)
