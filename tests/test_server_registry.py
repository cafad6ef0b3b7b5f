"""The service reads ranker names and parameter checks from the ranker registry."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")

from hoprank.errors import ConfigError
from hoprank.rankers.registry import REGISTRY, check_ranker_params, served_ranker_names
from hoprank.server import ServerSettings, create_app


def test_default_rankers_come_from_the_registry() -> None:
    assert ServerSettings().rankers == served_ranker_names()
    assert set(served_ranker_names()) == {"identity", "rankgpt", "first", "pointwise", "icr"}
    assert all(name in REGISTRY for name in served_ranker_names())


def test_ranker_params_checked_by_the_config_class() -> None:
    check_ranker_params("first", {"window": 10, "step": 5, "samples": 3})  # wrapper keys pass
    with pytest.raises(ConfigError):
        check_ranker_params("first", {"windw": 10})
    with pytest.raises(ConfigError):
        check_ranker_params("identity", {"window": 10})
    with pytest.raises(ConfigError):
        check_ranker_params("nope", {})


def test_bad_ranker_params_refused_when_the_app_is_built() -> None:
    with pytest.raises(ConfigError, match="windw"):
        create_app(ServerSettings(ranker_params={"first": {"windw": 10}}))
    create_app(ServerSettings(ranker_params={"first": {"window": 10, "step": 5}}))
