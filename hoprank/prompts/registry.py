"""Loading, listing and strictly rendering versioned prompt templates.

Why YAML + Jinja2: YAML keeps multi-line chat messages readable and diffable; Jinja2
gives loops (a window of passages) and ``StrictUndefined``; rendering happens in a
sandboxed environment, so a user-supplied template cannot reach Python internals.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticSerializationError

from hoprank.errors import PromptError

__all__ = ["PromptLike", "PromptMessage", "PromptTemplate", "list_prompts", "load_prompt", "prompt_param"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
_FILE_RE = re.compile(r"^(?P<name>[a-z0-9_.-]+)@(?P<version>\d+)\.ya?ml$")
_ENV = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=False, autoescape=False)


class PromptMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class PromptTemplate(BaseModel):
    """A versioned chat prompt. ``render(**variables)`` returns chat messages."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: int
    description: str = ""
    variables: list[str]
    messages: list[PromptMessage]
    output_pattern: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        """First 12 hex digits of the sha256 of the canonical template content."""
        try:
            dumped = self.model_dump_json()
        except PydanticSerializationError:  # e.g. a lone surrogate: hash the YAML directly
            return _yaml_hash(self.model_dump(mode="json"))
        return _content_hash(dumped)

    @property
    def ref(self) -> str:
        """``name@version#hash``: what every trace records."""
        return f"{self.name}@{self.version}#{self.content_hash}"

    def model_post_init(self, __context: Any) -> None:
        declared = set(self.variables)
        used: set[str] = set()
        for m in self.messages:
            try:
                used |= meta.find_undeclared_variables(_ENV.parse(m.content))
            except TemplateError as e:
                raise PromptError(f"prompt {self.name}@{self.version}: bad template: {e}") from e
        if used - declared:
            raise PromptError(
                f"prompt {self.name}@{self.version} uses undeclared variables {sorted(used - declared)}"
            )
        if self.output_pattern is not None:
            try:
                re.compile(self.output_pattern)
            except re.error as e:
                raise PromptError(f"prompt {self.name}@{self.version}: bad output_pattern: {e}") from e

    def render(self, **variables: Any) -> list[dict[str, str]]:
        """Render the messages. Missing or unknown variables raise :class:`PromptError`."""
        missing = [v for v in self.variables if v not in variables]
        unknown = [v for v in variables if v not in self.variables]
        if missing or unknown:
            raise PromptError(
                f"prompt {self.name}@{self.version}: missing variables {missing}, unknown variables {unknown}"
            )
        out: list[dict[str, str]] = []
        for m in self.messages:
            try:
                text = _compiled(m.content).render(**variables)
            except TemplateError as e:
                raise PromptError(f"prompt {self.name}@{self.version}: render failed: {e}") from e
            out.append({"role": m.role, "content": text})
        return out

    def check_output(self, text: str) -> bool:
        """Whether ``text`` matches the declared ``output_pattern`` (True if none)."""
        return self.output_pattern is None or re.search(self.output_pattern, text, re.DOTALL) is not None


PromptLike = str | Path | PromptTemplate | Mapping[str, Any]


@lru_cache(maxsize=256)
def _content_hash(dumped: str) -> str:
    """The hash of a template from its JSON dump: YAML-canonicalised (sorted keys), so the
    value is the one every earlier trace recorded; cached, since every step asks for it."""
    return _yaml_hash(json.loads(dumped))


def _yaml_hash(data: Any) -> str:
    canon = yaml.safe_dump(data, sort_keys=True, allow_unicode=True)
    return hashlib.sha256(canon.encode("utf-8", errors="surrogatepass")).hexdigest()[:12]


@lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    """A message template compiled once (Jinja2 templates render thread-safely)."""
    return _ENV.from_string(source)


def _from_file(path: Path) -> PromptTemplate:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise PromptError(f"prompt file not found: {path}") from e
    except yaml.YAMLError as e:
        raise PromptError(f"prompt file {path} is not valid YAML: {e}") from e
    return _from_mapping(data, str(path))


def _from_mapping(data: Any, where: str) -> PromptTemplate:
    if not isinstance(data, Mapping):
        raise PromptError(f"prompt {where}: expected a mapping at the top level")
    try:
        return PromptTemplate.model_validate(dict(data))
    except ValidationError as e:
        raise PromptError(f"prompt {where} is malformed: {e}") from e


@lru_cache(maxsize=1)
def _builtin_index() -> dict[str, dict[int, Path]]:
    index: dict[str, dict[int, Path]] = {}
    for p in sorted(TEMPLATES_DIR.glob("*.y*ml")):
        m = _FILE_RE.match(p.name)
        if not m:
            raise PromptError(f"built-in prompt file {p.name} is not named <name>@<version>.yaml")
        index.setdefault(m["name"], {})[int(m["version"])] = p
    return index


def list_prompts() -> list[str]:
    """Every built-in prompt as ``name@version``, sorted."""
    return [f"{n}@{v}" for n, vs in sorted(_builtin_index().items()) for v in sorted(vs)]


def load_prompt(prompt: PromptLike) -> PromptTemplate:
    """Load a prompt from ``name``, ``name@version``, a YAML file path, a mapping, or a
    :class:`PromptTemplate` (returned as is)."""
    if isinstance(prompt, PromptTemplate):
        return prompt
    if isinstance(prompt, Mapping):
        return _from_mapping(prompt, "<mapping>")
    if isinstance(prompt, Path) or str(prompt).endswith((".yaml", ".yml")):
        return _from_file(Path(prompt))
    name, at, version = str(prompt).partition("@")
    versions = _builtin_index().get(name)
    if not versions:
        raise PromptError(f"unknown prompt {prompt!r}; built-in prompts: {', '.join(list_prompts())}")
    if at:
        if not version.isdigit() or int(version) not in versions:
            raise PromptError(f"prompt {name!r} has no version {version!r}; versions: {sorted(versions)}")
        path = versions[int(version)]
    else:
        path = versions[max(versions)]
    tpl = _from_file(path)
    if f"{tpl.name}@{tpl.version}" != f"{name}@{int(version) if at else max(versions)}":
        raise PromptError(
            f"built-in prompt file {path.name} declares {tpl.name}@{tpl.version}, not what its name says"
        )
    return tpl


def prompt_param(template: PromptTemplate, key: str, builtin: str) -> Any:
    """``template.params[key]``, or else that parameter of the built-in prompt ``builtin``
    (``name@version``).

    Auxiliary texts a component sends besides the rendered messages (a repair message, the
    agent's observations, a calibration query) live in a built-in template's ``params``; a
    user template may override them and otherwise inherits the built-in's, so no prompt
    text has to live in code. Raises :class:`PromptError` when neither has the key.
    """
    if key in template.params:
        return template.params[key]
    base = load_prompt(builtin)
    if key not in base.params:
        raise PromptError(f"prompt {template.ref} has no params.{key}, and neither has {base.ref}")
    return base.params[key]
