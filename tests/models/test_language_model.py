"""CharNGramLM: a proper distribution, backoff to shorter contexts, ids, save/load."""

from __future__ import annotations

import math
from pathlib import Path

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


# One LM for English and French, under the Latin character set.
LATIN = Tokenizer.named("latin")
BILINGUAL = [
    "l’été fut chaud et l’hiver doux",
    "un été à la campagne, près de la rivière",
    "il a été reçu à Paris par sa sœur",
    "cet été nous avons été heureux",
    "the summer was warm and the winter mild",
    "my dear Hooker, the seeds came to Kew",
]


def text_log_prob(lm: CharNGramLM, history: str, text: str) -> float:
    total = 0.0
    for char in text:
        total += lm.char_log_prob(history, char)
        history += char
    return total


@pytest.fixture(scope="module")
def bilingual() -> CharNGramLM:
    return CharNGramLM.fit(BILINGUAL, order=4, tokenizer=LATIN)


def test_a_latin_lm_prefers_french_accents_in_french_context(bilingual):
    assert bilingual.tokenizer == LATIN and not bilingual.unknown_characters
    for history in ("il a ", "cet ", LINE_START + "un "):
        assert text_log_prob(bilingual, history, "été") > text_log_prob(bilingual, history, "ete")
    assert text_log_prob(bilingual, "l", "’été") > text_log_prob(bilingual, "l", "'ete")
    assert bilingual.char_log_prob("sa s", "œ") > bilingual.char_log_prob("sa s", "o")
    # English is still English: "the " is followed by "s" rather than "é"
    assert bilingual.char_log_prob("the ", "s") > bilingual.char_log_prob("the ", "é")
    total = sum(math.exp(bilingual.char_log_prob("l’ét", c)) for c in LATIN.characters)
    assert total == pytest.approx(1.0, abs=1e-9)


def test_a_latin_lm_round_trips_through_utf8_json(bilingual, tmp_path):
    path = bilingual.save(tmp_path / "lm.json")
    assert '"l’été"' not in path.read_text(encoding="utf-8")  # contexts are order-1 long
    assert "’ét" in path.read_bytes().decode("utf-8")  # written as UTF-8, not \u escapes
    loaded = CharNGramLM.load(path)
    assert loaded.tokenizer == LATIN and loaded.order == 4
    for history, text in (("il a ", "été"), ("il a ", "ete"), ("sa ", "sœur"), ("l", "’été")):
        assert text_log_prob(loaded, history, text) == text_log_prob(bilingual, history, text)
    assert loaded.perplexity(BILINGUAL[:2]) == bilingual.perplexity(BILINGUAL[:2])


def test_beam_search_with_a_latin_lm_reads_the_accents():
    """A line "il a été" whose é's ink is faint: the frames say "ete" by a hair, the LM
    (fitted on English and French) settles it."""
    from quill.models.decoding import ctc_beam_search, ctc_greedy_decode

    lm = CharNGramLM.fit(BILINGUAL, order=4, tokenizer=LATIN)
    frames = []
    for char in "il a ":  # a clear character, then a clear blank
        for index in (LATIN.encode(char)[0], LATIN.blank_id):
            frame = np.full(len(LATIN), 1e-4)
            frame[index] = 0.95
            frames.append(frame / frame.sum())
    e, acute, t = (LATIN.encode(c)[0] for c in "eét")
    for best, other in ((e, acute), (t, None), (e, acute)):
        frame = np.full(len(LATIN), 1e-4)
        frame[best], frame[LATIN.blank_id] = 0.5, 0.02
        if other is not None:
            frame[other] = 0.45
        frames.append(frame / frame.sum())
    log_probs = np.log(np.array([frames]))
    assert LATIN.decode(ctc_greedy_decode(log_probs)[0][0]) == "il a ete"
    assert LATIN.decode(ctc_beam_search(log_probs, beam_width=8)[0][0]) == "il a ete"
    decoded = ctc_beam_search(log_probs, beam_width=8, lm=lm, lm_weight=0.5, insertion_bonus=1)
    assert LATIN.decode(decoded[0][0]) == "il a été"


def test_characters_outside_the_vocabulary_are_counted_for_the_report():
    lm = CharNGramLM.fit(["naïve ∞ café ∞", "ſ π"], order=3, tokenizer=LATIN)
    assert lm.unknown_characters == {"∞": 2, "π": 1}
    ascii_lm = CharNGramLM.fit(["naïve café"], order=3)
    assert ascii_lm.unknown_characters == {"ï": 1, "é": 1}
    # a decomposed accent (e + U+0301) is the same character as é once normalised
    assert CharNGramLM.fit(["cafe\u0301"], tokenizer=LATIN).unknown_characters == {}


def test_an_lm_must_speak_the_model_s_character_set(lm):
    lm.check_tokenizer(Tokenizer())
    with pytest.raises(ValueError, match="another character set .* lacks 77 of its characters"):
        lm.check_tokenizer(LATIN)


SHIPPED_LM = Path(__file__).resolve().parents[2] / "models" / "hooker" / "lm.json"


def test_the_shipped_ascii_lm_scores_exactly_as_before():
    """Values measured with the shipped lm.json before the LM learnt other character sets."""
    shipped = CharNGramLM.load(SHIPPED_LM)
    assert shipped.tokenizer == Tokenizer() and shipped.order == 6
    assert len(shipped.counts) == 219034
    assert shipped.char_log_prob("Dear Hook", "e") == -0.006393263162047452
    assert shipped.char_log_prob(LINE_START + "Kew", "\n") == -14.01050081990343
    assert shipped.char_log_prob("my dear fr", "i") == -1.3683887748692962
    assert shipped.char_log_prob("zzq", "x") == -7.1589161752120525
    tokenizer = Tokenizer()
    prefix, token = tuple(tokenizer.encode("Kew Gard")), tokenizer.encode("e")[0]
    assert shipped.log_prob(prefix, token) == -1.6124795873392803
    text = "My dear Hooker, the seeds came to Kew in March"
    assert shipped.perplexity([text]) == pytest.approx(4.798723136219419, rel=1e-12)


def test_forget_drops_the_memoised_answers_not_the_answers():
    lm = CharNGramLM.fit(["the cat", "the hat", "the mat"], order=3)
    tokenizer = lm.tokenizer
    prefix, token = tuple(tokenizer.encode("th")), tokenizer.encode("e")[0]
    answer = lm.log_prob(prefix, token)
    memos = (lm.context_log_prob, lm._context_chain)
    assert [memo.cache_info().currsize for memo in memos] == [1, 1]
    lm.forget()
    assert [memo.cache_info().currsize for memo in memos] == [0, 0]
    assert lm.log_prob(prefix, token) == answer
