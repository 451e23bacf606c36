"""The trie-based beam search, in Python and compiled, answers exactly as the plain
dict-of-tuples formulation.

:func:`reference_beam_search` is the prefix beam search as Quill wrote it before it was made
faster (issue 16): prefixes as tuples, ``dict[prefix, [log P_blank, log P_label]]``, a stable
sort per frame. Both fast ones (``compiled=False``: Python; ``compiled=None``: the compiled
search wherever it can run, the Python one elsewhere) must give the same ids and the same
confidence to the bit, with and without a language model, on frames with ties, repeats and
pruning.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from quill.models.decoding import (
    COMPILED_SEARCH,
    CTCDecoder,
    _logaddexp,
    ctc_beam_search,
    log_likelihood,
)
from quill.models.language_model import CharNGramLM
from quill.vocab import LATIN_CHARACTERS, Tokenizer

TEXTS = [
    "the botanic garden at Kew",
    "my dear Hooker, the seeds came to Kew in March",
    "the herbarium is there, and the letters too",
    "aa bb cc dd ee ff gg hh",
]


def reference_beam_search(
    frames: np.ndarray,
    beam_width: int,
    lm: CharNGramLM | None,
    lm_weight: float,
    insertion_bonus: float,
    prune_log_prob: float,
    rank_gap: float | None = None,
    blank: int = 0,
) -> tuple[list[int], float]:
    """One item's prefix beam search, as first written (the specification)."""
    num_classes = frames.shape[1]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}
    lm_scores: dict[tuple[int, ...], float] = {(): 0.0}

    def rank(item: tuple[tuple[int, ...], list[float]]) -> float:
        prefix, (p_blank, p_label) = item
        acoustic = _logaddexp(p_blank, p_label)
        return acoustic + lm_weight * lm_scores[prefix] + insertion_bonus * len(prefix)

    top = np.argsort(frames, axis=1)[:, ::-1][:, : min(num_classes, beam_width + 1)]
    for frame, best in zip(frames.tolist(), top.tolist(), strict=True):
        candidates = [token for token in best if frame[token] > prune_log_prob and token != blank]
        if not candidates:
            beams = {
                prefix: [_logaddexp(p_blank, p_label) + frame[blank], -math.inf]
                for prefix, (p_blank, p_label) in beams.items()
            }
            continue
        following: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [-math.inf] * 2)
        for prefix, (p_blank, p_label) in beams.items():
            p_total = _logaddexp(p_blank, p_label)
            stay = following[prefix]
            stay[0] = _logaddexp(stay[0], p_total + frame[blank])
            for token in candidates:
                p = frame[token]
                extended = (*prefix, token)
                grown = following[extended]
                if prefix and token == prefix[-1]:
                    stay[1] = _logaddexp(stay[1], p_label + p)
                    grown[1] = _logaddexp(grown[1], p_blank + p)
                else:
                    grown[1] = _logaddexp(grown[1], p_total + p)
                if extended not in lm_scores:
                    step = lm.log_prob(prefix, token) if lm is not None else 0.0
                    lm_scores[extended] = lm_scores[prefix] + step
        kept = sorted(following.items(), key=rank, reverse=True)[:beam_width]
        if rank_gap is not None:
            cut = rank(kept[0]) - rank_gap
            kept = [item for item in kept if not rank(item) < cut]
        beams = dict(kept)
    best, (p_blank, p_label) = next(iter(beams.items()))
    confidence = math.exp(_logaddexp(p_blank, p_label) / len(frames)) if len(frames) else 1.0
    return list(best), confidence


def line_like_log_probs(rng: np.random.Generator, frames: int, classes: int) -> np.ndarray:
    """Peaked frames like a trained model's: mostly blank, one or a few likely classes, some
    exact ties (two classes with the same log-probability)."""
    logits = rng.normal(size=(frames, classes)) * 1.5
    peaks = rng.integers(0, classes, size=frames)
    logits[np.arange(frames), peaks] += rng.choice([2.0, 6.0, 9.0], size=frames)
    logits[rng.random(frames) < 0.4, 0] += 10.0  # blank-only stretches
    tied = rng.random(frames) < 0.15  # two likely classes exactly as likely
    logits[tied, 1] = logits[tied, 2] = logits[tied].max(axis=1) + 0.5
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return log_probs.astype(np.float32)


@pytest.fixture(scope="module")
def lm() -> CharNGramLM:
    return CharNGramLM.fit(TEXTS, order=4)


@pytest.mark.parametrize("compiled", [False, None], ids=["python", "compiled"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("beam_width", "lm_weight", "insertion_bonus", "prune", "gap"),
    [
        (16, 0.6, 2.0, -5.0, None),
        (8, 0.5, 1.0, -12.0, None),
        (4, 0.0, 0.0, -8.0, None),
        (24, 1.2, -0.5, -3.0, None),
        (16, 0.6, 2.0, -5.0, 6.0),
        (8, 0.5, 1.0, -12.0, 2.5),
        (4, 0.0, 0.0, -8.0, 4.0),
    ],
)
def test_same_ids_and_confidence_to_the_bit(
    seed, beam_width, lm_weight, insertion_bonus, prune, gap, lm, compiled
):
    rng = np.random.default_rng(seed)
    classes = len(Tokenizer())
    batch = [line_like_log_probs(rng, int(rng.integers(1, 90)), classes) for _ in range(3)]
    width = max(len(item) for item in batch)
    padded = np.full((len(batch), width, classes), -30.0, dtype=np.float32)
    for row, item in enumerate(batch):
        padded[row, : len(item)] = item
    lengths = np.array([len(item) for item in batch])
    for language_model in (lm, None):
        fast = ctc_beam_search(
            padded,
            lengths,
            beam_width=beam_width,
            lm=language_model,
            lm_weight=lm_weight,
            insertion_bonus=insertion_bonus,
            prune_log_prob=prune,
            rank_gap=gap,
            compiled=compiled,
        )
        for item, decoded in zip(batch, fast, strict=True):
            expected = reference_beam_search(
                item, beam_width, language_model, lm_weight, insertion_bonus, prune, gap
            )
            assert decoded == expected  # ids, and the confidence as the same float


def test_the_compiled_search_is_built():
    """`make setup` builds it (setup.py); without it every beam search runs in Python, 5-15x
    slower, and the parity tests above would only ever compare Python with Python."""
    assert COMPILED_SEARCH, "quill.models._ctc_beam is missing: reinstall with a C compiler"


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
def test_an_item_without_frames_reads_nothing_with_full_confidence(lm, compiled):
    empty = np.zeros((1, 4, len(Tokenizer())), dtype=np.float32)
    assert ctc_beam_search(empty, [0], lm=lm, compiled=compiled) == [([], 1.0)]


def test_the_compiled_search_says_why_it_cannot_run_and_python_answers_instead(lm):
    """At an LM weight of 0 an unknown character's -inf LM score makes a rank NaN, which the
    compiled search does not order as Python does; frames holding NaN likewise."""
    rng = np.random.default_rng(3)
    frames = line_like_log_probs(rng, 40, len(Tokenizer()))[None]
    with pytest.raises(ValueError, match="lm_weight is 0.0"):
        ctc_beam_search(frames, lm=lm, lm_weight=0.0, compiled=True)
    broken = frames.copy()
    broken[0, 3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ctc_beam_search(broken, compiled=True)
    for odd in ({"lm": lm, "lm_weight": 0.0}, {}):
        sample = broken if not odd else frames
        assert ctc_beam_search(sample, **odd) == ctc_beam_search(sample, compiled=False, **odd)


def test_an_lm_with_contexts_longer_than_the_compiled_search_keeps_is_searched_in_python():
    """The compiled search keeps up to 15 characters of context; an order-17 LM over a tiny
    alphabet fits the keys but not that, so Python searches, with the same answer."""
    tokenizer = Tokenizer("ab")
    long = CharNGramLM.fit(["abba" * 8, "baab" * 8], order=17, tokenizer=tokenizer)
    frames = np.log(np.random.default_rng(1).dirichlet(np.ones(len(tokenizer)), 30))[None]
    with pytest.raises(ValueError, match="CharNGramLM has no tables"):
        ctc_beam_search(frames, lm=long, compiled=True)
    assert ctc_beam_search(frames, lm=long) == ctc_beam_search(frames, lm=long, compiled=False)


def test_an_lm_of_another_kind_is_searched_in_python():
    """Any object with ``log_prob`` is a language model to beam search (the protocol); only
    :class:`CharNGramLM` has tables for the compiled search."""

    class Vowels:
        def log_prob(self, prefix: tuple[int, ...], token: int) -> float:
            return math.log(0.5 if token in (1, 5, 9) else 0.01)

    rng = np.random.default_rng(4)
    frames = line_like_log_probs(rng, 60, len(Tokenizer()))[None]
    with pytest.raises(ValueError, match="Vowels has no tables"):
        ctc_beam_search(frames, lm=Vowels(), compiled=True)
    expected = reference_beam_search(frames[0], 8, Vowels(), 0.5, 0.0, -12.0)
    assert ctc_beam_search(frames, lm=Vowels()) == [expected]


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "hooker"


def test_the_shipped_lm_decodes_like_the_reference():
    """The shipped model's LM (compiled form, as inference loads it) in the shipped decoding
    settings, on frames shaped like a line: the same answer as the reference."""
    from quill.runtimes.backends import ctc_decoder
    from quill.staged_model import StagedModel

    if not (SHIPPED / "lm.json").is_file():
        pytest.skip("no shipped model")
    staged = StagedModel.load(SHIPPED)
    decoder = ctc_decoder(staged)
    if decoder.method != "beam" or decoder.lm is None:
        pytest.skip("the shipped model decodes without an LM")
    rng = np.random.default_rng(11)
    classes = len(staged.tokenizer)
    for _ in range(4):
        frames = line_like_log_probs(rng, 120, classes)
        expected = reference_beam_search(
            frames,
            decoder.beam_width,
            decoder.lm,
            decoder.lm_weight,
            decoder.insertion_bonus,
            decoder.prune_log_prob,
            decoder.rank_gap,
        )
        assert decoder(frames[None])[0] == expected
        python = CTCDecoder(**{**decoder.__dict__, "compiled": False})
        assert python(frames[None])[0] == expected


def test_the_prune_threshold_is_compared_as_python_compares_it():
    """float32 -3.3 lies above the double -3.3: that class is a candidate, as in the
    reference, where frames are Python floats (NumPy would round the threshold to float32)."""
    classes = 5
    frames = np.full((3, classes), -9.0, dtype=np.float32)
    frames[:, 0] = np.log(0.9)
    frames[1, 2] = np.float32(-3.3)
    assert float(frames[1, 2]) > -3.3
    for prune in (-3.3, -8.2, -5.0):
        expected = reference_beam_search(frames, 4, None, 0.0, 5.0, prune)
        assert (
            ctc_beam_search(frames[None], beam_width=4, insertion_bonus=5.0, prune_log_prob=prune)[
                0
            ]
            == expected
        )
    assert ctc_beam_search(frames[None], beam_width=4, insertion_bonus=5.0, prune_log_prob=-3.3)[0][
        0
    ] == [2]


def reference_log_likelihood(lm: CharNGramLM, ids: list[int]) -> float:
    """A line's log-likelihood as the identifiers first scored it: each character asked of the
    LM after the tokens a beam-search prefix shows it (the specification of both sums)."""
    total = 0.0
    for i, token in enumerate(ids):
        total += lm.log_prob(tuple(ids[max(0, i - lm.context_length) : i]), token)
    return total


@pytest.mark.parametrize("order", [1, 2, 4, 7])
def test_a_line_s_log_likelihood_is_the_same_sum_in_c_and_in_python(order):
    """What a language's identifier scores each line's reading by: summed in C wherever the LM
    has compiled tables, to the bit the Python sum; -inf for a token that is no character
    (blank, padding, an id past the alphabet), a context shorter than the LM's at the line's
    start, accents and an empty line."""
    tokenizer = Tokenizer(LATIN_CHARACTERS)
    texts = [*TEXTS, "élève à Noël, ça déçoit", "œuvre sœur", ""]
    model = CharNGramLM.fit(texts, order=order, tokenizer=tokenizer)
    rng = np.random.default_rng(order)
    lines = [tokenizer.encode(text) for text in (*TEXTS, "Kew élève sœur", "zzq", "")]
    for _ in range(20):  # random ids, specials and ids past the alphabet among them
        lines.append(rng.integers(0, len(tokenizer) + 5, int(rng.integers(1, 40))).tolist())
    for ids in lines:
        expected = reference_log_likelihood(model, ids)
        python = log_likelihood(model, ids, compiled=False)
        compiled = log_likelihood(model, ids, compiled=True)
        assert python == compiled == expected or math.isinf(expected) and python == compiled
    assert log_likelihood(model, [], compiled=True) == 0.0
    assert log_likelihood(model, [len(tokenizer) + 3], compiled=True) == -math.inf


def test_a_log_likelihood_without_compiled_tables_is_summed_in_python():
    tokenizer = Tokenizer("ab")
    long = CharNGramLM.fit(["abba" * 8, "baab" * 8], order=17, tokenizer=tokenizer)
    ids = tokenizer.encode("abbabaab")
    with pytest.raises(ValueError, match="no compiled tables of CharNGramLM"):
        log_likelihood(long, ids, compiled=True)
    assert log_likelihood(long, ids) == reference_log_likelihood(long, ids)


def test_searches_in_several_threads_answer_as_one_after_another(lm):
    """The compiled search runs without the GIL (a server's two recognitions and its request
    handling overlap), so nothing it keeps may be shared between calls: many wide searches
    at once, in four threads, read exactly as the same searches one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(21)
    items = [line_like_log_probs(rng, int(rng.integers(60, 200)), len(Tokenizer()))[None]
             for _ in range(48)]  # fmt: skip

    def search(frames: np.ndarray) -> list:
        return ctc_beam_search(frames, beam_width=64, lm=lm, lm_weight=0.6, compiled=True)

    alone = [search(frames) for frames in items]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(search, items)) == alone
