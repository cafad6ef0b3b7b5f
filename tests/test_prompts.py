"""The prompt registry: loading (name, name@version, file, mapping, object), strict
rendering, the error cases, content hashes, output patterns, ``prompt=`` on every
ranker and agent (traces record the ref), and the ``hoprank prompts`` CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from typer.testing import CliRunner

from hoprank.agents import Answerer, Decomposer, MultiHopAgent, Rewriter
from hoprank.cli import app
from hoprank.errors import PromptError
from hoprank.llm.base import AttentionRows, Capability, Message
from hoprank.llm.engines.scripted import ScriptedEngine, WhitespaceTokenizer
from hoprank.prompts import PromptTemplate, list_prompts, load_prompt, prompt_param, registry
from hoprank.rankers import FIRST, PointwiseLLM, RankGPT
from hoprank.rankers.icr import ICRRanker
from hoprank.types import Document, Step

MINI = {
    "name": "mini",
    "version": 3,
    "description": "a test prompt",
    "variables": ["query", "items"],
    "output_pattern": r"^\d+$",
    "params": {"k": 1},
    "messages": [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "{{ query }}:{% for i in items %} [{{ i }}]{% endfor %}"},
    ],
}


def _write(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- loading


def test_builtins_load_by_name_and_version() -> None:
    refs = list_prompts()
    key = [(r.split("@")[0], int(r.split("@")[1])) for r in refs]
    assert key == sorted(key) and "rankgpt@1" in refs and "rankgpt-short@1" in refs
    for ref in refs:
        tpl = load_prompt(ref)
        assert f"{tpl.name}@{tpl.version}" == ref
        assert tpl.description.strip(), f"{ref} has no description"
        assert tpl.messages and tpl.variables
        assert re.fullmatch(rf"{re.escape(ref)}#[0-9a-f]{{12}}", tpl.ref)
    assert load_prompt("rankgpt") == load_prompt("rankgpt@1")


def test_latest_version_is_the_numerically_largest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for v in (1, 2, 10):
        _write(tmp_path / f"mini@{v}.yaml", {**MINI, "version": v})
    monkeypatch.setattr(registry, "TEMPLATES_DIR", tmp_path)
    registry._builtin_index.cache_clear()
    try:
        assert list_prompts() == ["mini@1", "mini@2", "mini@10"]
        assert load_prompt("mini").version == 10
        assert load_prompt("mini@2").version == 2
        with pytest.raises(PromptError, match=r"no version '3'; versions: \[1, 2, 10\]"):
            load_prompt("mini@3")
        # a built-in file must declare what its file name says
        _write(tmp_path / "mini@11.yaml", {**MINI, "version": 4})
        registry._builtin_index.cache_clear()
        with pytest.raises(PromptError, match="declares mini@4"):
            load_prompt("mini")
        _write(tmp_path / "mini@11.yaml", {**MINI, "name": "other", "version": 11})
        with pytest.raises(PromptError, match="declares other@11"):
            load_prompt("mini@11")
        (tmp_path / "Bad Name.yaml").write_text("x: 1", encoding="utf-8")
        registry._builtin_index.cache_clear()
        with pytest.raises(PromptError, match=r"not named <name>@<version>\.yaml"):
            list_prompts()
    finally:
        registry._builtin_index.cache_clear()


def test_unknown_name_and_bad_versions() -> None:
    with pytest.raises(PromptError, match=r"unknown prompt 'rankgtp'; built-in prompts: .*rankgpt@1"):
        load_prompt("rankgtp")
    for bad in ("rankgpt@99", "rankgpt@x", "rankgpt@", "rankgpt@-1", "rankgpt@1.0"):
        with pytest.raises(PromptError, match="has no version"):
            load_prompt(bad)


def test_load_from_file_paths(tmp_path: Path) -> None:
    path = _write(tmp_path / "mine.yaml", MINI)
    for form in (path, str(path)):
        tpl = load_prompt(form)
        assert (tpl.name, tpl.version, tpl.params) == ("mini", 3, {"k": 1})
    yml = _write(tmp_path / "mine.yml", MINI)
    assert load_prompt(str(yml)) == load_prompt(path)
    # a Path is a file even without a YAML suffix
    txt = _write(tmp_path / "mine.txt", MINI)
    assert load_prompt(txt) == load_prompt(path)
    with pytest.raises(PromptError, match="prompt file not found"):
        load_prompt(tmp_path / "missing.yaml")
    with pytest.raises(PromptError, match="prompt file not found"):
        load_prompt(str(tmp_path / "missing.yml"))


def test_load_from_mapping_and_object() -> None:
    tpl = load_prompt(MINI)
    assert isinstance(tpl, PromptTemplate) and tpl.name == "mini"
    assert load_prompt(tpl) is tpl
    assert tpl.render(query="q", items=[1, 2]) == [
        {"role": "system", "content": "Answer with a number."},
        {"role": "user", "content": "q: [1] [2]"},
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nversion: [1\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("", "expected a mapping"),
        ("name: x\nversion: 1\nvariables: []\n", "malformed"),  # no messages
        (
            "name: x\nversion: one\nvariables: []\nmessages: [{role: user, content: hi}]\n",
            "malformed",
        ),
        (
            "name: x\nversion: 1\nvariables: []\nmessages: [{role: robot, content: hi}]\n",
            "malformed",
        ),
        (
            "name: x\nversion: 1\nvariables: []\nmessages: [{role: user, content: hi}]\ncolour: red\n",
            "malformed",
        ),
        (
            "name: x\nversion: 1\nvariables: []\nmessages: [{role: user, content: '{% for %}'}]\n",
            "bad template",
        ),
        (
            "name: x\nversion: 1\nvariables: []\noutput_pattern: '(['\nmessages: [{role: user, content: hi}]\n",
            "bad output_pattern",
        ),
    ],
)
def test_malformed_files_raise_prompt_error(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptError, match=match) as e:
        load_prompt(path)
    assert str(path) in str(e.value) or "bad template" in str(e.value) or "output_pattern" in str(e.value)


def test_undeclared_variable_in_template_is_refused() -> None:
    data = {**MINI, "variables": ["query"]}  # the template also uses `items`
    with pytest.raises(PromptError, match=r"uses undeclared variables \['items'\]"):
        load_prompt(data)
    loop_var = {
        **MINI,
        "messages": [{"role": "user", "content": "{% for x in items %}{{ x }}{% endfor %}{{ query }}"}],
    }
    assert load_prompt(loop_var).variables == ["query", "items"]  # loop variables are not free variables


# ----------------------------------------------------------------------------- rendering


def test_strict_rendering_missing_and_unknown_variables() -> None:
    tpl = load_prompt(MINI)
    with pytest.raises(PromptError, match=r"missing variables \['items'\], unknown variables \[\]"):
        tpl.render(query="q")
    with pytest.raises(PromptError, match=r"missing variables \[\], unknown variables \['extra'\]"):
        tpl.render(query="q", items=[], extra=1)
    with pytest.raises(
        PromptError, match=r"missing variables \['query', 'items'\], unknown variables \['q'\]"
    ):
        tpl.render(q="x")


def test_undefined_attribute_at_render_time_is_an_error() -> None:
    tpl = load_prompt({**MINI, "messages": [{"role": "user", "content": "{{ query.label }} {{ items }}"}]})
    with pytest.raises(PromptError, match="render failed"):
        tpl.render(query="plain string", items=[])
    assert tpl.render(query={"label": "L"}, items=[])[0]["content"] == "L []"


def test_sandbox_blocks_python_internals() -> None:
    evil = {
        **MINI,
        "variables": ["query"],
        "messages": [{"role": "user", "content": "{{ query.__class__.__mro__[1].__subclasses__() }}"}],
    }
    with pytest.raises(PromptError, match="render failed"):
        load_prompt(evil).render(query="x")


def test_render_does_not_escape_or_mutate() -> None:
    tpl = load_prompt(MINI)
    out = tpl.render(query='<b> & "q"', items=["{{ x }}"])
    assert out[1]["content"] == '<b> & "q": [{{ x }}]'  # no HTML escaping, no re-rendering of values
    out[0]["content"] = "changed"
    assert tpl.render(query="q", items=[])[0]["content"] == "Answer with a number."


# ----------------------------------------------------------------------------- hashes


def test_hash_is_stable_across_forms_and_key_order(tmp_path: Path) -> None:
    a = load_prompt(MINI)
    b = load_prompt(_write(tmp_path / "a.yaml", MINI))
    reordered = dict(reversed(list(MINI.items())))
    c = load_prompt(_write(tmp_path / "b.yaml", reordered))
    assert a.content_hash == b.content_hash == c.content_hash
    assert a.ref == "mini@3#" + a.content_hash
    # the hash is a pure function of the content (not of the process or the time)
    assert a.content_hash == load_prompt(json.loads(json.dumps(MINI))).content_hash


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["messages"][1].update(content=d["messages"][1]["content"] + " "),
        lambda d: d["messages"][0].update(role="user"),
        lambda d: d.update(description="another description"),
        lambda d: d.update(params={"k": 2}),
        lambda d: d.update(output_pattern=r"^\d+\s*$"),
        lambda d: d.update(version=4),
        lambda d: d.update(name="mini2"),
    ],
)
def test_any_change_changes_the_hash(change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(json.dumps(MINI))
    change(data)
    assert load_prompt(data).content_hash != load_prompt(MINI).content_hash


def test_builtin_hashes_are_distinct() -> None:
    hashes = [load_prompt(r).content_hash for r in list_prompts()]
    assert len(set(hashes)) == len(hashes)


# ----------------------------------------------------------------------------- output patterns

#: Built-ins whose output is never parsed as text: the rankers read next-token
#: log-probabilities (first, pointwise) or attention (icr).
NOT_GENERATED = {"first", "setwise", "pointwise", "icr"}

#: (conforming, non-conforming) outputs per generated-output prompt.
OUTPUTS = {
    "rankgpt": ("[2] > [3] > [1]", "The most relevant passage is [2]."),
    "rankgpt-short": ("[2] > [1]", "2, 1, 3 because"),
    "decompose": ('{"find_first": "x", "sub_questions": ["a?", "b?"]}', "1. a?\n2. b?"),
    "decompose-chain": ('{"sub_questions": ["Who wrote Dune?", "Where was #1 born?"]}', "1. a?\n2. b?"),
    "rewrite-multi-query": ('{"queries": ["a", "b", "c"]}', "- a\n- b"),
    "rewrite-keywords": ("Inception director birth year", "Keywords:\nInception\ndirector"),
    "rewrite-hyde": ("Christopher Nolan, born in 1970, directed Inception.", "   "),
    "answer": ("Nolan was born in 1970 [d2].", "Nolan was born in 1970."),
    "answer-short": ("1970 [d1] [d2]", "1970"),
    "agent-step": (
        '{"notes": "n", "action": "search", "query": "Nolan born"}',
        '{"notes": "n", "action": "wait"}',
    ),
}


@pytest.mark.parametrize("ref", list_prompts())
def test_every_generated_output_prompt_declares_a_pattern(ref: str) -> None:
    tpl = load_prompt(ref)
    if tpl.name in NOT_GENERATED:
        assert tpl.output_pattern is None
        return
    assert tpl.output_pattern is not None, f"{ref}: a prompt whose output is parsed needs output_pattern"
    good, bad = OUTPUTS[tpl.name]
    assert tpl.check_output(good), (ref, good)
    assert not tpl.check_output(bad), (ref, bad)


def test_check_output_without_pattern_accepts_anything() -> None:
    tpl = load_prompt({k: v for k, v in MINI.items() if k != "output_pattern"})
    assert tpl.check_output("") and tpl.check_output("anything")
    assert load_prompt(MINI).check_output("42") and not load_prompt(MINI).check_output("forty-two")


def test_prompt_param_falls_back_to_the_builtin() -> None:
    own = load_prompt({**MINI, "params": {"calibration_query": "nothing"}})
    assert prompt_param(own, "calibration_query", "first@1") == "nothing"
    assert prompt_param(load_prompt(MINI), "calibration_query", "first@1") == "N/A"
    with pytest.raises(PromptError, match=r"no params\.nope"):
        prompt_param(load_prompt(MINI), "nope", "first@1")


# ----------------------------------------------------------------------------- prompt= everywhere


class _FakeAttention:
    """Character-level fake with the ICR engine surface (render + attention_rows)."""

    name = "fake-attention"
    capabilities = frozenset({Capability.ATTENTION, Capability.RENDER})
    context_window = 100_000
    attention_window = 100_000

    def __init__(self) -> None:
        self.tokenizer = WhitespaceTokenizer()
        self.rendered: list[str] = []

    def render(self, messages: Sequence[Message], prefill: str = "") -> str:
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"
        self.rendered.append(text)
        return text

    async def attention_rows(
        self, prefix: str, suffixes: Sequence[str], *, layers: Sequence[int] | None = None
    ) -> AttentionRows:
        n = len(prefix)
        return AttentionRows(
            prefix_offsets=[(i, i + 1) for i in range(n)],
            rows=[[1.0 + (i % 7) for i in range(n)] for _ in suffixes],
            prefix_tokens=n,
            tokens_encoded=[len(s) for s in suffixes],
            layers=[0],
        )


DOCS = [
    Document(id="d1", title="Inception", text="Inception is a 2010 film directed by Christopher Nolan."),
    Document(id="d2", title="Christopher Nolan", text="Christopher Nolan was born on 30 July 1970."),
    Document(id="d3", text="The Eiffel Tower is in Paris."),
]


class _Retriever:
    name = "fixed"
    description = "returns DOCS"

    async def search(self, query: str, k: int = 10) -> list[Document]:
        return DOCS[:k]


def _generate(text: str) -> Callable[[Sequence[Message]], str]:
    return lambda messages: text


async def _rank(ranker: Any) -> list[Step]:
    return list((await ranker.arank("when was the director of Inception born", DOCS)).trace)


# component -> (built-in prompt, engine factory, build(prompt, engine), run(obj) -> trace)
COMPONENTS: dict[
    str, tuple[str, Callable[[], Any], Callable[[Any, Any], Any], Callable[[Any], Awaitable[list[Step]]]]
] = {
    "RankGPT": (
        "rankgpt@1",
        lambda: ScriptedEngine(_generate("[2] > [1] > [3]")),
        lambda p, e: RankGPT(e, prompt=p),
        _rank,
    ),
    "FIRST": (
        "first@1",
        lambda: ScriptedEngine(logprobs_fn=lambda m, c, p: {"B": -0.1, "A": -1.0, "C": -2.0}),
        lambda p, e: FIRST(e, prompt=p, calibrate=True),
        _rank,
    ),
    "PointwiseLLM": (
        "pointwise@1",
        lambda: ScriptedEngine(logprobs_fn=lambda m, c, p: {"Yes": -0.5, "No": -1.0}),
        lambda p, e: PointwiseLLM(e, prompt=p),
        _rank,
    ),
    "ICRRanker": ("icr@1", _FakeAttention, lambda p, e: ICRRanker(e, prompt=p), _rank),
    "Decomposer": (
        "decompose@1",
        lambda: ScriptedEngine(
            _generate('x", "sub_questions": ["Who directed Inception?", "When was he born?"]}')
        ),
        lambda p, e: Decomposer(e, prompt=p),
        lambda d: _trace(d.adecompose("When was the director of Inception born?")),
    ),
    "Rewriter.multi_query": (
        "rewrite-multi-query@1",
        lambda: ScriptedEngine(_generate('"Inception director", "Nolan birth"]}')),
        lambda p, e: Rewriter(e, "multi_query", prompt=p),
        lambda r: _trace(r.arewrite("director of Inception birth year")),
    ),
    "Rewriter.keywords": (
        "rewrite-keywords@1",
        lambda: ScriptedEngine(_generate("Inception director born")),
        lambda p, e: Rewriter(e, "keywords", prompt=p),
        lambda r: _trace(r.arewrite("When was the director of Inception born?")),
    ),
    "Rewriter.hyde": (
        "rewrite-hyde@1",
        lambda: ScriptedEngine(_generate("Christopher Nolan was born in 1970.")),
        lambda p, e: Rewriter(e, "hyde", prompt=p),
        lambda r: _trace(r.arewrite("When was the director of Inception born?")),
    ),
    "Answerer.long": (
        "answer@1",
        lambda: ScriptedEngine(_generate("He was born in 1970 [d2].")),
        lambda p, e: Answerer(e, mode="long", prompt=p),
        lambda a: _trace(a.aanswer("When was the director of Inception born?", DOCS)),
    ),
    "Answerer.short": (
        "answer-short@1",
        lambda: ScriptedEngine(_generate("1970 [d2]")),
        lambda p, e: Answerer(e, mode="short", prompt=p),
        lambda a: _trace(a.aanswer("When was the director of Inception born?", DOCS)),
    ),
    "MultiHopAgent": (
        "agent-step@1",
        lambda: ScriptedEngine(_generate('n", "action": "answer", "answer": "1970", "citations": ["d2"]}')),
        lambda p, e: MultiHopAgent(e, cast(Any, _Retriever()), prompt=p),
        lambda a: _trace(a.arun("When was the director of Inception born?")),
    ),
}


async def _trace(aw: Awaitable[Any]) -> list[Step]:
    return list((await aw).trace)


MARKER = "MARKER-7f3a"


def _user_prompt(builtin: str) -> dict[str, Any]:
    """The built-in under another name and version, with a marker in its last message."""
    data = load_prompt(builtin).model_dump(mode="json")
    data["name"] = f"my-{data['name']}"
    data["version"] = 7
    data["messages"][-1]["content"] = data["messages"][-1]["content"] + f"\n{MARKER}"
    return data


def _seen(engine: Any) -> str:
    if isinstance(engine, _FakeAttention):
        return "\n".join(engine.rendered)
    return "\n".join(m["content"] for c in engine.calls for m in c["messages"])


@pytest.mark.parametrize("form", ["path", "str-path", "object", "mapping", "name"])
@pytest.mark.parametrize("component", sorted(COMPONENTS))
async def test_every_ranker_and_agent_takes_prompt_and_traces_its_ref(
    component: str, form: str, tmp_path: Path
) -> None:
    builtin, make_engine, build, run = COMPONENTS[component]
    data = _user_prompt(builtin)
    path = _write(tmp_path / "mine.yaml", data)
    expected = load_prompt(builtin) if form == "name" else load_prompt(path)
    prompt: Any = {
        "path": path,
        "str-path": str(path),
        "object": load_prompt(path),
        "mapping": data,
        "name": builtin,
    }[form]
    engine = make_engine()
    trace = await run(build(prompt, engine))
    refs = {s.prompt for s in trace if s.prompt is not None}
    assert refs == {expected.ref}, (component, form, refs)
    if form != "name":
        assert expected.ref.startswith(f"my-{builtin.split('@')[0]}@7#")
        assert MARKER in _seen(engine), f"{component} did not send the user's prompt"
    else:
        assert MARKER not in _seen(engine)


def test_listwise_label_desc_comes_from_params() -> None:
    data = _user_prompt("rankgpt@1")
    data["params"]["label_desc"] = {"numeric": "a NUMBERED", "letters": "a LETTERED"}
    eng = ScriptedEngine(_generate("[1]"))
    RankGPT(eng, prompt=data).rank("q", DOCS)
    assert "each indicated by a NUMBERED identifier" in _seen(eng)
    del data["params"]["label_desc"]  # inherited from rankgpt@1
    eng = ScriptedEngine(_generate("[1]"))
    RankGPT(eng, prompt=data).rank("q", DOCS)
    assert "each indicated by a numerical identifier" in _seen(eng)
    data["params"]["label_desc"] = {"numeric": "x"}
    with pytest.raises(PromptError, match="label_desc"):
        RankGPT(ScriptedEngine(["[1]"]), prompt=data)


def test_user_agent_prompt_overrides_observations(tmp_path: Path) -> None:
    data = _user_prompt("agent-step@1")
    data["params"]["observations"] = {"results": "Found {n} for <{query}>."}
    seen: list[str] = []

    def reply(messages: Sequence[Message]) -> str:
        seen.append(messages[-1]["content"])
        return 'n", "action": "answer", "answer": "1970", "citations": ["d2"]}'

    engine: Any = ScriptedEngine(reply)
    agent = MultiHopAgent(engine, cast(Any, _Retriever()), prompt=_write(tmp_path / "a.yaml", data))
    agent.run("When was he born?")
    assert "Result of the last action: Found 3 for <When was he born?>." in seen[0]
    assert agent.observations["repeated"].startswith("You already searched")  # inherited from agent-step@1


# ----------------------------------------------------------------------------- CLI

runner = CliRunner()


def test_cli_prompts_list() -> None:
    res = runner.invoke(app, ["prompts", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [f"{r['name']}@{r['version']}" for r in rows] == list_prompts()
    for r in rows:
        assert r["ref"] == load_prompt(f"{r['name']}@{r['version']}").ref and r["latest"] is True
    table = runner.invoke(app, ["prompts", "list"])
    assert table.exit_code == 0 and "rankgpt-short@1" in table.output
    assert load_prompt("rankgpt-short@1").content_hash in table.output


def test_cli_prompts_show_and_render(tmp_path: Path) -> None:
    res = runner.invoke(app, ["prompts", "show", "rankgpt-short"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith(f"# {load_prompt('rankgpt-short@1').ref}\n")
    assert "{{ query }}" in res.output and "output_pattern:" in res.output
    args = ["prompts", "show", "rewrite-hyde@1", "--render", "query=who wrote Dune", "--json"]
    rendered = json.loads(runner.invoke(app, args).output)
    assert rendered["messages"] == load_prompt("rewrite-hyde@1").render(query="who wrote Dune")
    path = _write(tmp_path / "mini.yaml", MINI)
    res = runner.invoke(app, ["prompts", "show", str(path), "-r", "query=q", "-r", "items=[1, 2]"])
    assert res.exit_code == 0 and "q: [1] [2]" in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["prompts", "show", "no-such-prompt"],
        ["prompts", "show", "rankgpt@9"],
        ["prompts", "show", "rewrite-hyde", "--render", "q=1"],
        ["prompts", "show", "rewrite-hyde", "--render", "query=1", "--render", "extra=2"],
    ],
)
def test_cli_prompts_errors_exit_2(args: list[str]) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert "PromptError" in res.output
