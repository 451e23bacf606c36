"""CharNGramLM: a proper distribution, backoff to shorter contexts, ids, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quill.models.language_model import LINE_START, CharNGramLM
from quill.vocab import Tokenizer

TEXTS = ["the botanic garden at Kew", "the herbarium is there", "then they wrote to Kew"]


@pytest.fixture(scope="module")
def lm() -> CharNGramLM:
    return CharNGramLM.fit(TEXTS, order=4)


@pytest.mark.parametrize(
    "history", ["", "th", "the", "zzq", "Kew and", LINE_START, LINE_START + "t"]
)
def test_every_context_gives_a_distribution_over_the_characters(lm, history):
    total = sum(math.exp(lm.char_log_prob(history, c)) for c in lm.tokenizer.characters)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_a_longer_context_sharpens_and_an_unseen_one_backs_off(lm):
    uniform = math.log(1 / len(lm.tokenizer.characters))
    assert lm.char_log_prob("th", "e") > lm.char_log_prob("", "e") > uniform
    # "Xth" was never seen: the model uses what "th" knows, not a uniform guess
    assert lm.char_log_prob("Xth", "e") == pytest.approx(lm.char_log_prob("th", "e"))
    assert lm.perplexity(["the garden"]) < lm.perplexity(["xqzvj kwpf"])


def test_characters_outside_the_vocabulary_end_the_context():
    lm = CharNGramLM.fit(["abé c"], order=3)
    # "é" is skipped and nothing is predicted from a context that spans it
    assert {context: dict(c) for context, c in lm.counts.items()} == {
        "": {"a": 1, "b": 1, " ": 1, "c": 1},
        LINE_START: {"a": 1},
        LINE_START + "a": {"b": 1},
        "a": {"b": 1},
        " ": {"c": 1},
    }


def test_token_ids_and_characters_agree(lm):
    tokenizer = Tokenizer()
    prefix, token = tuple(tokenizer.encode("the her")), tokenizer.encode("b")[0]
    assert lm.log_prob(prefix, token) == lm.char_log_prob("the her", "b")
    # a prefix shorter than the context starts the line
    assert lm.log_prob(prefix[:1], token) == lm.char_log_prob(LINE_START + "t", "b")
    assert lm.char_log_prob(LINE_START, "t") > lm.char_log_prob(LINE_START, "h")
    assert lm.log_prob(prefix, Tokenizer.blank_id) == -math.inf  # never predicts a special


def test_save_and_load_round_trip(lm, tmp_path):
    loaded = CharNGramLM.load(lm.save(tmp_path / "lm.json"))
    rng = np.random.default_rng(0)
    characters = lm.tokenizer.characters
    for _ in range(50):
        history = "".join(rng.choice(list(characters), size=3))
        char = str(rng.choice(list(characters)))
        assert loaded.char_log_prob(history, char) == lm.char_log_prob(history, char)


@pytest.mark.parametrize(
    "content", ["{not json", '{"format_version": 99}', '{"format_version": 1}']
)
def test_a_bad_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "lm.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="cannot read language model .*lm.json"):
        CharNGramLM.load(path)
