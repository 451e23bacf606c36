"""Beam search in more than one language: each line decoded with the LM of the language its
greedy reading looks like (CTCDecoder.languages), the main LM keeping the benefit of the doubt."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from quill.models.decoding import (
    CTCDecoder,
    LanguageOption,
    ctc_beam_search,
    ctc_greedy_decode,
    mean_log_prob,
)
from quill.models.language_model import CharNGramLM
from quill.vocab import Tokenizer

ENGLISH = ["the cat sat on the mat", "where is the hat", "this is the way"] * 4
FRENCH = ["le chat est sur le tapis", "ou est le chapeau", "voici la rue"] * 4


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return Tokenizer.named("latin")


def fit(texts: list[str], order: int, tokenizer: Tokenizer) -> CharNGramLM:
    return CharNGramLM.fit(texts, order=order, tokenizer=tokenizer)


def reading(text: str, tokenizer: Tokenizer, noise: int) -> np.ndarray:
    """(1, T, C) log-probabilities of a line that reads ``text`` greedily: two frames per
    character and a blank between, each frame's other classes given random shares (seed
    ``noise``), so beam search and its LM have alternatives to weigh."""
    rng = np.random.default_rng(noise)
    ids = tokenizer.encode(text)
    classes = len(tokenizer)
    frames = []
    for token in ids:
        for best in (token, token, 0):
            logits = rng.normal(size=classes) * 1.5
            logits[best] += 6.0
            frames.append(logits - np.log(np.exp(logits).sum()))
    return np.asarray(frames, dtype=np.float32)[None]


@pytest.fixture(scope="module")
def decoder(tokenizer: Tokenizer) -> CTCDecoder:
    mixed = fit(ENGLISH + FRENCH, 4, tokenizer)
    french = LanguageOption("fr", fit(FRENCH, 3, tokenizer), fit(FRENCH, 4, tokenizer), 0.8, 1.0)
    return CTCDecoder(
        method="beam",
        beam_width=8,
        lm=mixed,
        lm_weight=0.5,
        insertion_bonus=0.5,
        languages=(french,),
        identifier=fit(ENGLISH, 3, tokenizer),
        identify_margin=0.3,
    )


def test_a_line_reads_like_the_language_whose_lm_finds_its_greedy_reading_likely(tokenizer):
    english, french = fit(ENGLISH, 3, tokenizer), fit(FRENCH, 3, tokenizer)
    ids = tokenizer.encode("le chat est la")
    assert mean_log_prob(french, ids) > mean_log_prob(english, ids)
    ids = tokenizer.encode("the cat is")
    assert mean_log_prob(english, ids) > mean_log_prob(french, ids)
    assert mean_log_prob(english, []) == 0.0


def test_each_line_is_decoded_with_the_lm_and_weights_of_its_language(decoder, tokenizer):
    lines = [reading(text, tokenizer, seed) for seed, text in enumerate(
        ["le chat est sur le tapis", "the cat sat on the mat", "voici le chapeau", "this hat"]
    )]  # fmt: skip
    french = decoder.languages[0]
    chosen = [decoder.languages_of(line)[0] for line in lines]
    assert [option and option.language for option in chosen] == ["fr", None, "fr", None]
    for line, option in zip(lines, chosen, strict=True):
        lm, weight, bonus = (
            (decoder.lm, decoder.lm_weight, decoder.insertion_bonus)
            if option is None
            else (french.lm, french.lm_weight, french.insertion_bonus)
        )
        alone = ctc_beam_search(line, beam_width=8, lm=lm, lm_weight=weight, insertion_bonus=bonus)
        assert decoder(line) == alone
    # in one batch (padded to the longest line) each item is decoded as it is alone
    width = max(line.shape[1] for line in lines)
    batch = np.stack([np.pad(line[0], ((0, width - line.shape[1]), (0, 0))) for line in lines])
    lengths = np.array([line.shape[1] for line in lines])
    assert decoder(batch, lengths) == [decoder(line)[0] for line in lines]


def test_the_main_language_keeps_the_benefit_of_the_doubt(decoder, tokenizer):
    line = reading("le chat est sur le tapis", tokenizer, 0)
    assert decoder.languages_of(line)[0] is not None
    # a margin larger than any likelihood ratio keeps every line in the main language
    doubtful = dataclasses.replace(decoder, identify_margin=50.0)
    assert doubtful.languages_of(line) == [None]
    assert doubtful(line) == dataclasses.replace(decoder, languages=())(line)
    # a line with no greedy reading (all blank) stays in the main language
    blank = np.full((1, 6, len(tokenizer)), -20.0, dtype=np.float32)
    blank[..., 0] = 0.0
    assert ctc_greedy_decode(blank)[0][0] == [] and decoder.languages_of(blank) == [None]


def test_forget_clears_every_language_model_and_languages_need_an_identifier(decoder, tokenizer):
    """(The Python search memoises LM answers; the compiled one keeps nothing between lines.)"""
    decoder = dataclasses.replace(decoder, compiled=False)
    decoder(reading("voici la rue", tokenizer, 3))
    decoder(reading("this is the way", tokenizer, 4))
    models = [decoder.lm, decoder.identifier]
    models += [decoder.languages[0].lm, decoder.languages[0].identifier]
    assert all(lm.context_log_prob.cache_info().currsize for lm in models)
    decoder.forget()
    assert not any(lm.context_log_prob.cache_info().currsize for lm in models)
    with pytest.raises(ValueError, match="need an identifier"):
        dataclasses.replace(decoder, identifier=None)
