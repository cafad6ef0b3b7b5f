"""Distilling FIRST on a real model (SmolLM2-135M): a few LoRA steps on two HotpotQA
questions outside the evaluation slice (101+), teacher = qrels; then the adapter file,
loading it merged, the refusal of a foreign base and the cache identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from hoprank.errors import AdapterMismatch
from hoprank.evals import CachedEngine, load_dataset
from hoprank.llm import load_engine, read_adapter_info
from hoprank.llm.models.packs import PACKS
from hoprank.llm.spec import EngineSpec
from hoprank.rankers.first import FIRST
from hoprank.train import FirstTrainConfig, Window, make_windows, qrels_teacher, train_first
from hoprank.train.losses import ranknet_loss

pytestmark = pytest.mark.slow

WINDOW, MAX_TOKENS = 4, 8
CONFIG = FirstTrainConfig(
    window=WINDOW, epochs=3, grad_accum=2, lr=1e-3, dropout=0.0, max_passage_tokens=MAX_TOKENS
)


def _windows(datasets_dir: Path) -> list[Window]:
    ds = load_dataset(str(datasets_dir / "hotpotqa-dev-distractor-500"))
    run = ds.run()
    qids = list(ds.queries)[100:102]
    lists = [qrels_teacher(q, ds.queries[q].text, ds.candidates(q, run, 10), ds.qrels[q]) for q in qids]
    return make_windows(lists, window=WINDOW, seed=0)


async def _label_logprobs(engine: Any, windows: list[Window]) -> list[torch.Tensor]:
    ranker = FIRST(engine, window=WINDOW, max_passage_tokens=MAX_TOKENS)
    out = []
    for w in windows:
        req = ranker.window_request(w.query, w.docs)
        res = await engine.next_token_logprobs(req.messages, candidates=req.candidates, prefill=req.prefill)
        out.append(torch.tensor([res.logprobs[c] for c in req.candidates]))
    return out


def _loss(scores: list[torch.Tensor], windows: list[Window]) -> float:
    losses = [
        float(ranknet_loss(s, torch.tensor(w.teacher), torch.tensor(w.ranks)))
        for s, w in zip(scores, windows, strict=True)
    ]
    return sum(losses) / len(losses)


async def test_distil_first_on_smollm2(smollm2_engine: Any, datasets_dir: Path, tmp_path: Path) -> None:
    base = smollm2_engine
    windows = _windows(datasets_dir)
    assert len(windows) == 2 and all(len(w.docs) == WINDOW for w in windows)
    before = await _label_logprobs(base, windows)
    params = {n: p.requires_grad for n, p in base.model.named_parameters()}

    path = tmp_path / "student.safetensors"
    seen: list[int] = []
    result = train_first(
        base,
        windows,
        out=path,
        config=CONFIG,
        provenance={"teacher": "qrels"},
        on_step=lambda s: seen.append(s.step),
    )
    # the same batch every step (2 windows, grad_accum 2): the loss falls as it overfits
    assert result.steps == 3 and seen == [1, 2, 3]
    assert result.losses[-1] < result.losses[0]
    assert result.losses[0] == pytest.approx(_loss(before, windows), rel=1e-3)  # step 1 = the base
    log = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    assert [r["event"] for r in log] == ["start", "step", "step", "step", "end"]
    assert [r["loss"] for r in log[1:4]] == result.losses

    info = read_adapter_info(path)
    assert info.sha256 == result.adapter.sha256
    assert (info.base_model, info.base_sha256) == ("smollm2-135m", PACKS["smollm2-135m"].sha256)
    assert (info.r, info.alpha, info.targets) == (8, 16.0, ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert info.meta["config"]["window"] == WINDOW and info.meta["complete"] and info.meta["steps"] == 3
    assert info.meta["provenance"] == {"teacher": "qrels"} and info.meta["hoprank_version"]
    assert info.meta["label_tokens"] == "prefill" and info.meta["prompt"].startswith("first@1")

    # training left the base engine as it was (the LoRA layers removed, nothing merged)
    assert {n: p.requires_grad for n, p in base.model.named_parameters()} == params
    assert not [n for n, _ in base.model.named_modules() if "lora" in n] and not base.model.training

    student = load_engine(f"smollm2-135m+{path}", threads=2)
    assert student.name == f"smollm2-135m+student@{info.sha256[:12]}"
    assert student.describe()["adapter"]["sha256"] == info.sha256
    assert EngineSpec(f"smollm2-135m+{path}").identity()["adapter"] == student.describe()["adapter"]
    taught = await _label_logprobs(student, windows)
    assert max(float((a - b).abs().max()) for a, b in zip(before, taught, strict=True)) > 1e-3
    # the merged weights rank the training windows as the trained LoRA did: better than the base
    assert _loss(taught, windows) < _loss(before, windows)

    # the LLM-call cache never answers the student with the base's calls
    cache = tmp_path / "cache"
    msgs = [{"role": "user", "content": "hi"}]
    assert CachedEngine(base, cache).key("generate", messages=msgs) != CachedEngine(student, cache).key(
        "generate", messages=msgs
    )

    # an adapter recorded for another base is refused
    from safetensors.torch import load_file, save

    meta = dict(info.meta, base_sha256="0" * 64)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(save(load_file(str(path)), metadata={"hoprank_adapter": json.dumps(meta)}))
    with pytest.raises(AdapterMismatch) as e:
        load_engine(f"smollm2-135m+{foreign}", threads=2)
    assert e.value.expected == "0" * 64 and e.value.actual == PACKS["smollm2-135m"].sha256


def test_ctrl_c_saves_the_steps_done(smollm2_engine: Any, datasets_dir: Path, tmp_path: Path) -> None:
    windows = _windows(datasets_dir)[:1]
    path = tmp_path / "partial.safetensors"

    def interrupt(step: Any) -> None:
        raise KeyboardInterrupt

    cfg = CONFIG.model_copy(update={"grad_accum": 1})
    with pytest.raises(KeyboardInterrupt):
        train_first(smollm2_engine, windows, out=path, config=cfg, on_step=interrupt)
    info = read_adapter_info(path)
    assert info.meta["complete"] is False and info.meta["steps"] == 1
    events = [
        json.loads(line)["event"] for line in path.with_name("partial.train.jsonl").read_text().splitlines()
    ]
    assert events == ["start", "step", "interrupted"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
