"""hoprank.train without a model: the losses on tensors, the windows, adapter files and
specs, and the CLI's input errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hoprank.cli import app
from hoprank.errors import AdapterMismatch, ConfigError, DatasetError
from hoprank.llm import read_adapter_info, save_adapter, split_adapter
from hoprank.llm.models.lora import merge_adapter
from hoprank.train import TeacherList, make_windows, qrels_teacher, run_teacher
from hoprank.train.losses import listnet_loss, ranknet_loss, teacher_ranks
from hoprank.types import Document

ROOT = Path(__file__).resolve().parent.parent


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


# ----------------------------------------------------------------------------- losses


def test_teacher_ranks_break_ties_by_index() -> None:
    assert teacher_ranks([0.5, 2.0, 0.5, 1.0]) == [3, 1, 4, 2]


def test_ranknet_weights_pairs_by_one_over_rank_sum() -> None:
    scores = torch.tensor([2.0, 1.0, 0.0])
    teacher = torch.tensor([1.0, 3.0, 2.0])  # teacher order: 1, 2, 0 (ranks 3, 1, 2)
    # pairs (better, worse): (1,0) ranks 1+3, (1,2) ranks 1+2, (2,0) ranks 2+3
    want = (sp(2.0 - 1.0) / 4 + sp(0.0 - 1.0) / 3 + sp(2.0 - 0.0) / 5) / 3
    assert float(ranknet_loss(scores, teacher)) == pytest.approx(want, rel=1e-6)
    plain = (sp(1.0) + sp(-1.0) + sp(2.0)) / 3
    assert float(ranknet_loss(scores, teacher, weighted=False)) == pytest.approx(plain, rel=1e-6)
    # explicit ranks replace the ones derived from the scores
    ranks = torch.tensor([3, 1, 2])
    assert float(ranknet_loss(scores, teacher, ranks)) == pytest.approx(want, rel=1e-6)


def test_ranknet_ignores_tied_pairs_and_pushes_the_better_up() -> None:
    scores = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    teacher = torch.tensor([1.0, 0.0, 0.0])  # qrels: one relevant, two tied
    loss = ranknet_loss(scores, teacher)
    # two pairs, ranks (1,2) and (1,3); softplus(0) = log 2
    assert float(loss.detach()) == pytest.approx((math.log(2) / 3 + math.log(2) / 4) / 2, rel=1e-6)
    loss.backward()
    assert scores.grad is not None
    assert scores.grad[0] < 0 < scores.grad[1] and scores.grad[2] > 0
    flat = torch.zeros(3, requires_grad=True)
    none = ranknet_loss(flat, torch.tensor([1.0, 1.0, 1.0]))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_listnet_is_cross_entropy_to_the_teacher_softmax() -> None:
    scores = torch.tensor([0.5, -1.0, 2.0])
    teacher = torch.tensor([3.0, 1.0, 0.0])
    p = torch.softmax(teacher / 2.0, dim=0)
    want = -(p * torch.log_softmax(scores, dim=0)).sum()
    assert float(listnet_loss(scores, teacher, temperature=2.0)) == pytest.approx(float(want), rel=1e-6)
    # minimal (zero gradient) where the student's distribution is the teacher's
    at = (teacher + 7.0).clone().requires_grad_(True)
    listnet_loss(at, teacher).backward()
    assert at.grad is not None and float(at.grad.abs().max()) < 1e-6


# ----------------------------------------------------------------------------- windows


def _docs(n: int) -> list[Document]:
    return [Document(id=f"d{i}", text=f"passage {i}") for i in range(n)]


def test_qrels_and_run_teachers() -> None:
    docs = _docs(4)
    tl = qrels_teacher("q", "query", docs, {"d2": 2, "d0": 1})
    assert [d.id for d in tl.docs] == ["d2", "d0", "d1", "d3"] and tl.scores == (2.0, 1.0, 0.0, 0.0)
    corpus = {d.id: d for d in docs}
    run = run_teacher("q", "query", [("d3", 0.9), ("d1", 0.4), ("d0", -2.0)], corpus, depth=2)
    assert [d.id for d in run.docs] == ["d3", "d1"] and run.scores == (0.9, 0.4)
    no_scores = run_teacher("q", "query", [("d3", None), ("d1", 5.0)], corpus)
    assert [d.id for d in no_scores.docs] == ["d3", "d1"]  # the run's order decides
    with pytest.raises(DatasetError):
        run_teacher("q", "query", [("nope", 1.0)], corpus)


def test_windows_are_seeded_shuffles_with_teacher_ranks() -> None:
    docs = _docs(8)
    tl = TeacherList("q1", "query", tuple(docs), tuple(float(8 - i) for i in range(8)))
    a = make_windows([tl], window=4, windows_per_query=3, seed=7)
    b = make_windows([tl], window=4, windows_per_query=3, seed=7)
    assert a == b and len(a) == 3
    first = a[0]
    assert {d.id for d in first.docs} == {"d0", "d1", "d2", "d3"}  # the teacher's top window
    for w in a:
        # rank 1 is the shown passage the teacher scores highest, and so on
        by_rank = sorted(zip(w.ranks, w.teacher, strict=True))
        assert [t for _, t in by_rank] == sorted(w.teacher, reverse=True)
        assert sorted(w.ranks) == [1, 2, 3, 4]
    assert make_windows([tl], window=4, windows_per_query=3, seed=8) != a


def test_uninformative_windows_are_dropped() -> None:
    docs = _docs(3)
    flat = TeacherList("q", "query", tuple(docs), (0.0, 0.0, 0.0))
    single = TeacherList("q2", "query", tuple(docs[:1]), (1.0,))
    assert make_windows([flat, single], window=4) == []
    with pytest.raises(ConfigError):
        make_windows([flat], window=1)


# ----------------------------------------------------------------------------- adapter files


def _fake_adapter(path: Path, base_sha: str = "a" * 64) -> None:
    tensors = {"layer.lora_A": torch.ones(2, 3), "layer.lora_B": torch.full((4, 2), 0.5)}
    save_adapter(path, tensors, base_model="tiny", base_sha256=base_sha, r=2, alpha=4, targets=["layer"])


def test_adapter_file_roundtrip_and_merge(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    _fake_adapter(path)
    info = read_adapter_info(path)
    assert (info.base_model, info.r, info.alpha, info.targets) == ("tiny", 2, 4.0, ("layer",))
    assert info.meta["format"] == "hoprank-lora" and "hoprank_version" in info.meta
    assert info.engine_name("tiny") == f"tiny+tiny@{info.sha256[:12]}"
    model = torch.nn.Module()
    model.layer = torch.nn.Linear(3, 4, bias=False)
    torch.nn.init.zeros_(model.layer.weight)
    with pytest.raises(AdapterMismatch) as e:
        merge_adapter(model, path, base_sha256="b" * 64)
    assert e.value.expected == "a" * 64 and float(model.layer.weight.detach().abs().sum()) == 0.0
    merge_adapter(model, path, base_sha256="a" * 64)
    # alpha / r * B @ A = 2 * (0.5 * 2) everywhere
    assert torch.allclose(model.layer.weight, torch.full((4, 3), 2.0))
    model.layer = torch.nn.Linear(5, 4, bias=False)
    with pytest.raises(AdapterMismatch):
        merge_adapter(model, path, base_sha256="a" * 64)


def test_adapter_specs(tmp_path: Path) -> None:
    assert split_adapter("qwen2.5-coder-0.5b+runs/a+b.safetensors") == (
        "qwen2.5-coder-0.5b+runs/a",
        "b.safetensors",
    )
    assert split_adapter("smollm2-135m+/x/student.safetensors") == ("smollm2-135m", "/x/student.safetensors")
    assert split_adapter("smollm2-135m") == ("smollm2-135m", None)
    assert split_adapter("/models/a+b") == ("/models/a+b", None)
    with pytest.raises(ConfigError):
        read_adapter_info(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(ConfigError):
        read_adapter_info(tmp_path / "junk.safetensors")
    from hoprank.llm import load_engine

    _fake_adapter(tmp_path / "a.safetensors")
    with pytest.raises(ConfigError):
        load_engine(f"openai:gpt-4o+{tmp_path / 'a.safetensors'}")


def test_import_stays_light() -> None:
    code = (
        "import sys, hoprank, hoprank.train, hoprank.llm.models.lora\n"
        "from hoprank.llm import split_adapter, read_adapter_info\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ----------------------------------------------------------------------------- CLI glue


def test_teacher_from_a_run_folder_and_a_trec_file(tmp_path: Path) -> None:
    from hoprank.cli.train import _teacher_lists
    from hoprank.evals import load_dataset

    ds = load_dataset("sample-hotpotqa")
    qids = list(ds.queries)[1:3]
    run = ds.run()
    folder = tmp_path / "run"
    folder.mkdir()
    with open(folder / "results.jsonl", "w", encoding="utf-8") as f:
        for q in qids:
            ranked = [[d, -i] for i, (d, _) in enumerate(run[q])]
            f.write(json.dumps({"qid": q, "ranked": ranked}) + "\n")
        f.write('{"qid": "torn", "ranked": [[')  # a line still being written
    lists = _teacher_lists(ds, str(folder), None, 5, qids)
    assert [tl.qid for tl in lists] == qids and all(len(tl.docs) == 5 for tl in lists)
    assert [d.id for d in lists[0].docs] == [d for d, _ in run[qids[0]][:5]]
    trec = tmp_path / "teacher.run"
    trec.write_text(f"{qids[0]} Q0 {run[qids[0]][3][0]} 1 9.0 t\n{qids[0]} Q0 {run[qids[0]][0][0]} 2 1.0 t\n")
    lists = _teacher_lists(ds, str(trec), None, 5, qids)
    assert len(lists) == 1 and lists[0].docs[0].id == run[qids[0]][3][0]
    qrels = _teacher_lists(ds, "qrels", None, 10, qids)
    assert all(tl.scores[0] >= 1 for tl in qrels)


def test_cli_input_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["train", "first", "-d", "sample-hotpotqa", "-m", "smollm2-135m", "--no-progress"]
    bad_teacher = runner.invoke(
        app, [*base, "--teacher", str(tmp_path / "nope"), "-o", str(tmp_path / "a.safetensors")]
    )
    assert bad_teacher.exit_code == 2, bad_teacher.output
    bad_out = runner.invoke(app, [*base, "--teacher", "qrels", "-o", str(tmp_path / "a.bin")])
    assert bad_out.exit_code == 2 and "safetensors" in bad_out.output
    bad_set = runner.invoke(
        app, [*base, "--teacher", "qrels", "-o", str(tmp_path / "a.safetensors"), "--set", "r=0"]
    )
    assert bad_set.exit_code == 2, bad_set.output
    none = runner.invoke(
        app, [*base, "--teacher", "qrels", "-o", str(tmp_path / "a.safetensors"), "--skip", "1000"]
    )
    assert none.exit_code == 2 and "no training windows" in none.output


def test_head_selections_tell_a_student_from_its_base() -> None:
    from hoprank.rankers.heads import engine_identity

    class Fake:
        name = "m"

        def __init__(self, adapter: dict[str, str] | None) -> None:
            self.adapter = adapter

        def describe(self) -> dict[str, object]:
            return {
                "model": "m",
                "gguf_sha256": "b" * 64,
                **({"adapter": self.adapter} if self.adapter else {}),
            }

    assert engine_identity(Fake(None)) == ("m", "b" * 64)
    assert engine_identity(Fake({"sha256": "c" * 64}))[1] == "b" * 64 + "+" + "c" * 64


def test_run_folders_tell_a_retrained_student_from_the_last_one() -> None:
    from hoprank.evals.run_folder import model_sha256

    base = {"gguf_sha256": "b" * 64}
    assert model_sha256(base) == "b" * 64
    one, two = (dict(base, adapter={"sha256": c * 64}) for c in "cd")
    assert model_sha256(one) != model_sha256(two) and model_sha256(one) == "b" * 64 + "+" + "c" * 64


def test_train_config_reads_cli_style_targets() -> None:
    from hoprank.train import FirstTrainConfig

    assert FirstTrainConfig(targets="q_proj, v_proj").targets == ("q_proj", "v_proj")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        FirstTrainConfig(window=30)
