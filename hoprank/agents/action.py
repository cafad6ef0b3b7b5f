"""The reply format of the multi-hop agent's model: :class:`AgentAction` (search or
answer), parsed leniently because small models rename fields and write numbers bare."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from hoprank.agents._json import with_alias

__all__ = ["MAX_QUERY_WORDS", "AgentAction"]

#: a search query is cut to this many words (small models run on)
MAX_QUERY_WORDS = 32


class AgentAction(BaseModel):
    """One parsed reply of the agent model."""

    action: Literal["search", "answer"]
    notes: str = ""
    query: str | None = None
    answer: str | None = None
    citations: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _lenient(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = with_alias(data, "notes", ("bridge_fact", "bridge", "thought", "facts"))
        notes = data.get("notes")
        if isinstance(notes, list):
            data["notes"] = " ".join(str(x) for x in notes)
        elif isinstance(notes, dict):
            data["notes"] = "; ".join(f"{k}: {v}" for k, v in notes.items())
        elif notes is None:
            data["notes"] = ""
        elif not isinstance(notes, str):
            data["notes"] = str(notes)
        # Small models write years and counts as bare numbers: {"answer": 1970}.
        for key in ("answer", "query"):
            if isinstance(data.get(key), int | float):  # bool is an int too
                data[key] = str(data[key]).lower() if isinstance(data[key], bool) else str(data[key])
        if isinstance(data.get("action"), str):
            data["action"] = data["action"].strip().lower()
        if "action" not in data:
            if "query" in data:
                data["action"] = "search"
            elif "answer" in data:
                data["action"] = "answer"
        if isinstance(data.get("citations"), str):
            data["citations"] = [data["citations"]]
        if data.get("citations") is None:
            data["citations"] = []
        return data

    @field_validator("citations", mode="before")
    @classmethod
    def _citations(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [str(x).strip().strip("[]").strip() for x in v if str(x).strip()]
        return v

    @field_validator("query")
    @classmethod
    def _one_query(cls, v: str | None) -> str | None:
        # Small models sometimes run on, copying the " | "-joined search list of the prompt
        # or repeating themselves until max_tokens: keep the first query, at most
        # MAX_QUERY_WORDS words.
        if v is None:
            return v
        lines = [ln for ln in v.strip().splitlines() if ln.strip()]
        first = lines[0].split(" | ")[0] if lines else ""
        return " ".join(first.split()[:MAX_QUERY_WORDS])

    @model_validator(mode="after")
    def _arguments(self) -> AgentAction:
        if self.action == "search" and not (self.query and self.query.strip()):
            raise ValueError('action "search" needs a non-empty "query"')
        if self.action == "answer" and not (self.answer and str(self.answer).strip()):
            raise ValueError('action "answer" needs a non-empty "answer"')
        return self
