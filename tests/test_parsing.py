"""Permutation parsing: a table of real-world output shapes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hoprank.rankers.parsing import normalize_text, parse_permutation, strip_reasoning

NUM5 = [str(i) for i in range(1, 6)]
LET5 = list("ABCDE")

# (case id, text, labels, expected found, duplicates, out_of_range, ok)
CASES = [
    ("clean", "[3] > [1] > [2] > [5] > [4]", NUM5, ["3", "1", "2", "5", "4"], [], [], True),
    ("bare", "3 > 1 > 2", NUM5, ["3", "1", "2"], [], [], True),
    ("no-spaces", "[2]>[1]", NUM5, ["2", "1"], [], [], True),
    ("comma-list", "[4], [2], [5]", NUM5, ["4", "2", "5"], [], [], True),
    ("newlines", "[4]\n[2]\n[5]", NUM5, ["4", "2", "5"], [], [], True),
    (
        "prose-around",
        "Here is the ranking: [2] > [4] > [1]. Hope it helps!",
        NUM5,
        ["2", "4", "1"],
        [],
        [],
        True,
    ),
    ("garbage", "I cannot rank these passages.", NUM5, [], [], [], False),
    ("stray-number", "There are 20 passages here.", NUM5, [], [], [], False),
    ("empty", "", NUM5, [], [], [], False),
    ("whitespace", "   \n ", NUM5, [], [], [], False),
    ("partial", "[5] > [3]", NUM5, ["5", "3"], [], [], True),
    ("duplicates", "[2] > [2] > [1] > [2]", NUM5, ["2", "1"], ["2", "2"], [], True),
    ("out-of-range", "[9] > [1] > [0] > [3]", NUM5, ["1", "3"], [], ["9", "0"], True),
    ("only-out-of-range", "[7] > [8]", NUM5, [], [], ["7", "8"], False),
    ("think-block", "<think>maybe [1] > [2]</think>\n[4] > [3]", NUM5, ["4", "3"], [], [], True),
    ("think-close-only", "so [1] is best... </think> [5] > [2]", NUM5, ["5", "2"], [], [], True),
    ("think-unclosed", "<think>[1] > [2] hmm, let me", NUM5, [], [], [], False),
    ("fullwidth", "［３］ ＞ ［１］ ＞ ［２］", NUM5, ["3", "1", "2"], [], [], True),
    ("arabic-indic", "[٣] > [١] > [٢]", NUM5, ["3", "1", "2"], [], [], True),
    ("devanagari-bare", "४ > २", NUM5, ["4", "2"], [], [], True),
    ("leading-zero", "[03] > [1]", NUM5, ["3", "1"], [], [], True),
    ("letters", "[C] > [A] > [E]", LET5, ["C", "A", "E"], [], [], True),
    ("letters-bare", "C > A > B", LET5, ["C", "A", "B"], [], [], True),
    ("letters-lower-bracketed", "[c] > [a]", LET5, ["C", "A"], [], [], True),
    ("letters-article-ignored", "A good ranking is [D] > [B]", LET5, ["D", "B"], [], [], True),
    ("letters-out-of-range", "[Z] > [B]", LET5, ["B"], [], ["Z"], True),
    ("letters-fullwidth", "Ｃ > Ａ", LET5, ["C", "A"], [], [], True),
    ("mixed-bracket-bare", "[1] > 2 > [3]", NUM5, ["1", "2", "3"], [], [], True),
    ("single-id-answer", "2", NUM5, ["2"], [], [], True),
    ("spaces-in-brackets", "[ 4 ] > [ 1 ]", NUM5, ["4", "1"], [], [], True),
    (
        "mixed-everything",
        "<think>x</think> [٢] > 5 > [2] > [11] > ４",
        NUM5,
        ["2", "5", "4"],
        ["2"],
        ["11"],
        True,
    ),
]


@pytest.mark.parametrize(
    ("text", "labels", "found", "dups", "oor", "ok"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_parse_table(
    text: str, labels: list[str], found: list[str], dups: list[str], oor: list[str], ok: bool
) -> None:
    r = parse_permutation(text, labels)
    assert r.ok is ok
    assert r.found == found
    assert r.duplicates == dups
    assert r.out_of_range == oor
    # missing = labels never named, in prior order; the order is always a full permutation
    assert r.missing == [lab for lab in labels if lab not in found]
    assert sorted(r.order) == list(range(len(labels)))
    assert [labels[i] for i in r.order] == found + r.missing
    if not ok:
        assert r.order == list(range(len(labels)))  # never invent a ranking
        assert r.error


def test_complete_flag() -> None:
    assert parse_permutation("[2] > [1]", ["1", "2"]).complete
    assert not parse_permutation("[2]", ["1", "2"]).complete
    assert not parse_permutation("[2] > [2] > [1]", ["1", "2"]).complete


def test_none_is_a_failed_parse() -> None:
    assert not parse_permutation(None, NUM5).ok


def test_helpers() -> None:
    assert strip_reasoning("<think>a</think>b") == "b"
    assert normalize_text("٣३３") == "333"


@given(st.permutations(list(range(1, 21))), st.sampled_from([" > ", ">", ", ", "\n"]))
@settings(max_examples=100, deadline=None)
def test_roundtrip_any_permutation(perm: list[int], sep: str) -> None:
    labels = [str(i) for i in range(1, 21)]
    r = parse_permutation(sep.join(f"[{i}]" for i in perm), labels)
    assert r.complete
    assert [labels[i] for i in r.order] == [str(i) for i in perm]


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_never_raises_and_always_permutes(text: str) -> None:
    r = parse_permutation(text, NUM5)
    assert sorted(r.order) == list(range(5))
    r = parse_permutation(text, LET5)
    assert sorted(r.order) == list(range(5))
