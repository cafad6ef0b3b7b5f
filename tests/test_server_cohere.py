"""The real ``cohere`` client (``Client`` for /v1/rerank, ``ClientV2`` for /v2/rerank)
against the service on 127.0.0.1, with a bearer token."""

from __future__ import annotations

import asyncio

import pytest
from _live_server import live_server

from hoprank.rankers.base import BaseRanker, RankerOutput
from hoprank.server import ServerSettings, create_app
from hoprank.types import Document

cohere = pytest.importorskip("cohere", reason="the 'test' extra installs cohere")

TOKEN = "tok-cohere-5d1e2a9b7c"
DOCS = ["cats purr", "dogs bark loudly at cats", "the stock market", "dogs and cats and birds"]


class OverlapRanker(BaseRanker):
    name = "overlap"

    async def _rank(self, query: str, docs: list[Document], *, top_k: int | None) -> RankerOutput:
        await asyncio.sleep(0)
        words = set(query.lower().split())
        scored = [d.with_score(float(len(words & set(d.text.lower().split())))) for d in docs]
        scored.sort(key=lambda d: -(d.score or 0.0))
        return RankerOutput(scored)


def test_cohere_client_v1_and_v2() -> None:
    settings = ServerSettings(api_token=TOKEN, rankers=("identity", "overlap"), default_ranker="overlap")
    app = create_app(settings, rankers={"overlap": OverlapRanker()})
    expected = [1, 3, 0, 2]  # overlap with "dogs cats": 2, 2, 1, 0 (ties keep the input order)
    with live_server(app) as url:
        v2 = cohere.ClientV2(api_key=TOKEN, base_url=url, timeout=60)
        out = v2.rerank(model="hoprank-overlap", query="dogs cats", documents=DOCS, top_n=3)
        assert [r.index for r in out.results] == expected[:3]
        scores = [r.relevance_score for r in out.results]
        assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
        assert out.meta is not None and out.meta.api_version is not None
        assert out.meta.api_version.version == "2"

        v1 = cohere.Client(api_key=TOKEN, base_url=url, timeout=60)
        out1 = v1.rerank(model="hoprank-overlap", query="dogs cats", documents=DOCS, return_documents=True)
        assert [r.index for r in out1.results] == expected
        assert [r.relevance_score for r in out1.results] == [1.0, 0.5, pytest.approx(1 / 3), 0.25]
        assert out1.results[0].document is not None and out1.results[0].document.text == DOCS[1]

        bad = cohere.ClientV2(api_key="wrong", base_url=url, timeout=60)
        with pytest.raises(cohere.errors.UnauthorizedError):
            bad.rerank(model="m", query="q", documents=DOCS)
