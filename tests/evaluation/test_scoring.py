"""Normalised scoring (the bench's, the report card's) and the slice rows both engines use."""

from __future__ import annotations

import pytest

from quill.evaluation import ALL, Item, normalise, score, score_slices, slice_groups


def test_cer_and_wer_on_known_strings() -> None:
    # kitten -> sitting: 3 edits over 7 reference characters; 1 of 1 word wrong.
    result = score(["kitten"], ["sitting"])
    assert result.cer == pytest.approx(3 / 7)
    assert result.wer == 1.0
    # Two lines: 1 + 0 char edits over 11 + 5 chars; 1 wrong word of 2 + 1.
    result = score(["helo world", "fine."], ["hello world", "fine."])
    assert (result.n, result.chars, result.words) == (2, 16, 3)
    assert result.cer == pytest.approx(1 / 16)
    assert result.wer == pytest.approx(1 / 3)


def test_case_insensitive_rates_ignore_only_case() -> None:
    result = score(["KEW gardens", "Lndon"], ["Kew Gardens", "London"])
    assert result.cer == pytest.approx((3 + 1) / (11 + 6))  # E, W, g + the missing o
    assert result.cer_nocase == pytest.approx(1 / 17)
    assert result.wer == 1.0
    assert result.wer_nocase == pytest.approx(1 / 3)


def test_whitespace_and_blank_lines_are_not_errors() -> None:
    assert normalise("\n  My  dear\tDyer \n\n") == "My dear Dyer"
    assert score(["My  dear Dyer\n\n"], ["My dear Dyer"]).cer == 0.0
    # ...but a missing line break inside a paragraph is one.
    assert score(["My dear Dyer"], ["My dear\nDyer"]).cer == pytest.approx(1 / 12)


def test_unicode_is_compared_in_nfc() -> None:
    assert score(["cafe\u0301"], ["caf\u00e9"]).cer == 0.0


def test_slices_are_corpus_level_per_group_and_skip_whole_set_slices() -> None:
    items = [
        Item("abcd", "abcd", {"source": "s", "group": "a"}),
        Item("ef", "", {"source": "s", "group": "a"}, failed=True),
        Item("ghij", "ghiX", {"source": "s", "group": "b"}),
    ]
    assert slice_groups([i.slices for i in items]) == {
        (ALL, ""): [0, 1, 2],
        ("group", "a"): [0, 1],
        ("group", "b"): [2],
    }
    rows = {(r.key, r.value): r for r in score_slices(items)}
    assert rows[ALL, ""].score.cer == pytest.approx(3 / 10)
    assert rows["group", "a"].score.cer == pytest.approx(2 / 6)  # not the mean of 0 and 1
    assert rows["group", "a"].score.failures == 1
    assert rows["group", "a"].members == (0, 1)
    assert rows["group", "b"].score.cer == pytest.approx(1 / 4)


def test_chosen_keys_and_whole_set_slices_for_the_report_card() -> None:
    items = [
        Item("ab", "ab", {"dataset": "d", "length": "short", "extra": "x"}),
        Item("cd", "cx", {"dataset": "d", "length": "long", "extra": "y"}),
    ]
    rows = score_slices(items, ["dataset", "length"], repeat_whole=True)
    assert [r.name for r in rows] == ["all", "dataset=d", "length=long", "length=short"]
    assert rows[1].score == rows[0].score
