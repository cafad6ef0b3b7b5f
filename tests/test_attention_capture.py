"""The attention capture is an object scoped to one pass; transformers internals are gated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from hoprank.errors import EngineError  # noqa: E402
from hoprank.llm.runtime import attention as attn  # noqa: E402
from hoprank.llm.runtime import attention_capture as cap  # noqa: E402


@pytest.fixture(scope="module")
def engine() -> Any:
    from hoprank.llm.engines.transformers_engine import TransformersEngine

    return TransformersEngine("smollm2-135m", dtype="float32", threads=2)


def _impl(model: Any) -> str:
    return str(model.config._attn_implementation_internal)


def test_capture_is_scoped_to_its_block(engine: Any) -> None:
    model = engine.model
    before = _impl(model)
    assert cap._ACTIVE.get() is None
    with cap.AttentionCapture(model, [0, 1]) as c:
        assert cap._ACTIVE.get() is c and _impl(model) == cap.CAPTURE_IMPLEMENTATION
        with cap.AttentionCapture(model, [1]) as inner:  # nested: the inner one is active
            assert cap._ACTIVE.get() is inner
        assert cap._ACTIVE.get() is c and _impl(model) == cap.CAPTURE_IMPLEMENTATION
    assert cap._ACTIVE.get() is None and _impl(model) == before
    with pytest.raises(RuntimeError), cap.AttentionCapture(model, [0]):
        raise RuntimeError("boom")
    assert cap._ACTIVE.get() is None and _impl(model) == before


def test_old_transformers_gets_eager_or_a_clear_error(
    engine: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cap, "_transformers_version", lambda: (4, 46))
    assert "transformers >= 4.53" in (cap.capture_supported() or "")
    with pytest.raises(EngineError, match=r"transformers >= 4\.53"):
        attn.attention_rows(engine, "some prefix text", ["a query"], layers=[0], method="capture")
    rows = attn.attention_rows(engine, "some prefix text", ["a query"], layers=[0])
    assert rows.method == "eager"


class _NoSwitch:
    """A config without transformers' private ``_attn_implementation_internal``."""


class _Model:
    config = _NoSwitch()

    def modules(self) -> list[Any]:
        return []


def test_missing_private_switch_is_a_clear_error() -> None:
    with (
        pytest.raises(EngineError, match="_attn_implementation_internal"),
        cap.attn_implementation(_Model(), "eager"),
    ):
        pass
