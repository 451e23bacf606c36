"""Word lists: beam search's prefixes ranked lower for each word missing from a list.

The compiled and the Python search must rank the same prefixes to the bit, so a word
list reads the same whichever runs; at a penalty of 0 a list changes nothing; a penalty
larger than the gap between a non-word and a word moves the reading to the word; and a bad
word list file is refused with its name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quill.models.decoding import COMPILED_SEARCH, best_by_words, ctc_beam_search
from quill.models.language_model import CharNGramLM
from quill.models.lexicon import WordLexicon, save_words, words_of
from quill.vocab import Tokenizer

from .test_beam_search_exact import TEXTS, line_like_log_probs

TOKENIZER = Tokenizer()


def lexicon(*words: str) -> WordLexicon:
    characters = tuple(TOKENIZER.decode([i]) for i in range(len(TOKENIZER)))
    return WordLexicon.of(words, characters)


def frames_of(*steps: dict[str, float]) -> np.ndarray:
    """(1, T, C) log-probabilities: each step a frame with these characters' probabilities
    (the rest of the mass on blank), a blank frame between steps."""
    classes = len(TOKENIZER)
    rows = []
    for step in steps:
        row = np.full(classes, 1e-6)
        for character, p in step.items():
            row[TOKENIZER.encode(character)[0]] = p
        row[0] = max(1e-6, 1.0 - row[1:].sum())
        blank = np.full(classes, 1e-6)
        blank[0] = 1.0
        rows += [row / row.sum(), blank / blank.sum()]
    return np.log(np.array(rows))[None].astype(np.float32)


def test_words_are_runs_of_letters_in_lower_case():
    assert words_of(["L'Homme, 2 chats", "naïve"]) == {"l", "homme", "chats", "naïve"}
    assert words_of(["The CAT, 3 cots", "12 -- 34"]) == {"the", "cat", "cots"}
    letters, codes = lexicon("Cat").search_arrays()
    assert letters.tolist() == [ord("c"), ord("a"), ord("t"), 0]
    # the search tells letters (lower-cased) from the characters between words by codes
    assert [codes[i] for i in TOKENIZER.encode("B3'a")] == [ord("b"), 0, 0, ord("a")]


@pytest.mark.skipif(not COMPILED_SEARCH, reason="the compiled search is not built here")
@pytest.mark.parametrize("gap", [None, 4.0])
def test_compiled_and_python_searches_choose_the_same_reading(gap):
    rng = np.random.default_rng(0)
    lm = CharNGramLM.fit(TEXTS, order=4)
    words = lexicon(*words_of(TEXTS[:2]))
    search = {"beam_width": 16, "lm": lm, "lm_weight": 0.6, "insertion_bonus": 1.5,
              "prune_log_prob": -6.0, "rank_gap": gap}  # fmt: skip
    changed = 0
    for _ in range(12):
        frames = line_like_log_probs(rng, int(rng.integers(1, 90)), len(TOKENIZER))[None]
        alone = ctc_beam_search(frames, **search)[0]
        for penalty in (0.5, 2.0, 8.0):
            read = [
                ctc_beam_search(frames, **search, compiled=compiled, words=words,
                                word_penalty=penalty)[0]
                for compiled in (False, True)
            ]  # fmt: skip
            assert read[1] == read[0]  # ids, and the confidence as the same float
            changed += read[0] != alone
    assert changed >= 3  # the word list did choose other readings


@pytest.mark.parametrize("compiled", [False, None], ids=["python", "compiled"])
def test_a_penalty_of_nothing_reads_as_the_search_alone(compiled):
    rng = np.random.default_rng(7)
    lm = CharNGramLM.fit(TEXTS, order=4)
    for _ in range(5):
        frames = line_like_log_probs(rng, int(rng.integers(1, 60)), len(TOKENIZER))[None]
        settings = {"beam_width": 8, "lm": lm, "lm_weight": 0.5, "compiled": compiled}
        alone = ctc_beam_search(frames, **settings)
        assert ctc_beam_search(frames, **settings, words=lexicon("the"), word_penalty=0.0) == alone


@pytest.mark.parametrize("compiled", [False, None], ids=["python", "compiled"])
def test_a_missing_word_costs_its_penalty(compiled):
    # "cot" is a little likelier than "cat" letter by letter
    frames = frames_of({"c": 0.9}, {"o": 0.5, "a": 0.45}, {"t": 0.9})
    search = {"beam_width": 8, "compiled": compiled}
    assert TOKENIZER.decode(ctc_beam_search(frames, **search)[0][0]) == "cot"
    gap = np.log(0.5 / 0.45)
    for penalty, expected in ((gap / 2, "cot"), (2 * gap, "cat")):
        ids, _ = ctc_beam_search(frames, **search, words=lexicon("cat"), word_penalty=penalty)[0]
        assert TOKENIZER.decode(ids) == expected
    # the confidence is the chosen reading's own: "cat" is less likely than "cot" was
    cat = ctc_beam_search(frames, **search, words=lexicon("cat"), word_penalty=1.0)[0]
    cot = ctc_beam_search(frames, **search)[0]
    assert 0 < cat[1] < cot[1]


@pytest.mark.parametrize("compiled", [False, None], ids=["python", "compiled"])
def test_a_missing_word_costs_as_soon_as_it_ends(compiled):
    # with two beams, "cot " and "cat " both branch on the next frame: ranked by the CTC and
    # LM alone, "cot x" and "cot y" would fill the beam and "cat" would be gone by the end
    frames = frames_of({"c": 0.9}, {"o": 0.5, "a": 0.45}, {"t": 0.9}, {" ": 0.9},
                       {"x": 0.34, "y": 0.33, "z": 0.32})  # fmt: skip
    search = {"beam_width": 2, "compiled": compiled}
    assert TOKENIZER.decode(ctc_beam_search(frames, **search)[0][0]) == "cot x"
    words = lexicon("cat", "x", "y", "z")
    ids, _ = ctc_beam_search(frames, **search, words=words, word_penalty=1.0)[0]
    assert TOKENIZER.decode(ids) == "cat x"


def test_the_first_of_equally_ranked_beams_wins():
    beams = [([3], -1.0, -1.0, False), ([4], -1.0, -2.0, False)]
    assert best_by_words(beams, 0.0, 2) == ([3], np.exp(-0.5))
    beams = [([3], -1.0, -1.0, True), ([4], -2.0, -2.0, False)]
    assert best_by_words(beams, 1.0, 2) == ([3], np.exp(-0.5))  # -2.0 each: the first


def test_a_word_list_file_is_read_in_lower_case_and_refused_when_unusable(tmp_path: Path):
    path = tmp_path / "words.txt"
    assert save_words(path, ["Kew", "kew", "Hooker", "3rd", "l'homme"]) == 2
    assert path.read_text() == "hooker\nkew\n"
    assert WordLexicon.load(path, TOKENIZER).words == {"hooker", "kew"}
    path.write_text("Kew Gardens, 1865\nhooker\n")  # not a word a line: read by its words
    assert WordLexicon.load(path, TOKENIZER).words == {"kew", "gardens", "hooker"}
    path.write_text("\n \n")
    with pytest.raises(ValueError, match="holds no words"):
        WordLexicon.load(path, TOKENIZER)
    path.write_bytes(b"caf\xe9\n")  # Latin-1
    with pytest.raises(ValueError, match="UTF-8"):
        WordLexicon.load(path, TOKENIZER)
