"""Ranker modules declare their own ``RANKER_SPECS``; the registry discovers them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import hoprank.rankers
from hoprank.errors import ConfigError
from hoprank.rankers import make_ranker
from hoprank.rankers.registry import REGISTRY, discover_specs, ranker_names, ranker_spec
from hoprank.types import Document

_RANKER = """
from hoprank.rankers.base import BaseRanker, RankerOutput, RankerSpec


class Echo(BaseRanker):
    name = "echo"

    async def _rank(self, query, docs, *, top_k):
        return RankerOutput(list(reversed(docs)))


RANKER_SPECS = (RankerSpec({name!r}, "echoes its input", lambda: Echo, needs_engine=False, order=15),)
"""


def _write(folder: Path, module: str, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(_RANKER.format(name=name)), encoding="utf-8")


@pytest.fixture
def extra_path(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``hoprank.rankers.__path__``; the registry is rediscovered after."""
    folder = tmp_path / "extra"
    folder.mkdir()
    hoprank.rankers.__path__.append(str(folder))
    REGISTRY.refresh()
    try:
        yield folder
    finally:
        hoprank.rankers.__path__.remove(str(folder))
        for key in [k for k in sys.modules if k.startswith("hoprank.rankers._probe_")]:
            del sys.modules[key]
        REGISTRY.refresh()


def test_builtin_order_and_fields() -> None:
    assert ranker_names() == ("identity", "rankgpt", "first", "setwise", "pointwise", "icr", "cross-encoder")
    assert ranker_spec("crossencoder").name == "cross-encoder"
    assert not REGISTRY["identity"].needs_engine and REGISTRY["first"].default_prompt == "first"
    assert "consistency" not in REGISTRY and "fusion" not in REGISTRY  # wrappers are not rankers


def test_module_placed_in_the_package_is_discovered(extra_path: Path) -> None:
    _write(extra_path, "_probe_echo", "echo")
    assert ranker_names()[:3] == ("identity", "echo", "rankgpt")  # order=15
    docs = [Document(id="a", text="x"), Document(id="b", text="y")]
    assert [d.id for d in make_ranker("echo").rank("q", docs).documents] == ["b", "a"]


def test_duplicate_name_raises(extra_path: Path) -> None:
    _write(extra_path, "_probe_dup", "first")
    with pytest.raises(ConfigError, match="duplicate ranker name 'first'"):
        ranker_names()


def test_discover_specs_on_a_given_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec re-exported by a second module (the same object) counts once; a name that
    clashes with another spec's alias is a duplicate."""
    reexport = "from hoprank.rankers.baselines import RANKER_SPECS\n"  # identity, cross-encoder
    for package, modules in {"okpkg": ("b", "c"), "duppkg": ("b",)}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("", encoding="utf-8")
        for module in modules:
            (tmp_path / package / f"{module}.py").write_text(reexport, encoding="utf-8")
    _write(tmp_path / "duppkg", "a", "crossencoder")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        specs = discover_specs([str(tmp_path / "okpkg")], "okpkg")
        assert tuple(specs) == ("identity", "cross-encoder")
        with pytest.raises(ConfigError, match="duplicate ranker name 'crossencoder'"):
            discover_specs([str(tmp_path / "duppkg")], "duppkg")
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] in ("okpkg", "duppkg")]:
            del sys.modules[key]


def test_discovery_imports_no_torch() -> None:
    code = (
        "import sys, hoprank; from hoprank.rankers import ranker_names; ranker_names(); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
