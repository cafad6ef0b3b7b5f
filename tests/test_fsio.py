"""The shared atomic-write helper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hoprank._fsio import atomic_write, write_bytes_atomic, write_json_atomic


def test_writes_replace_whole_files_and_leave_no_temporaries(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    write_json_atomic(p, {"b": 1, "a": "é"}, sort_keys=True, sync_dir=True)
    assert p.read_text(encoding="utf-8") == '{\n  "a": "é",\n  "b": 1\n}\n'
    write_json_atomic(p, {"when": object()}, default=lambda o: "obj")
    assert json.loads(p.read_text(encoding="utf-8")) == {"when": "obj"}
    write_bytes_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["b.bin", "m.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "run.trec"
    p.write_text("old\n", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_write(p) as f:
        f.write("half")
        raise KeyboardInterrupt
    assert p.read_text(encoding="utf-8") == "old\n"
    assert [x.name for x in tmp_path.iterdir()] == ["run.trec"]
