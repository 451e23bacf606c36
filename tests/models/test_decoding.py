"""CTC decoding checked against brute-force enumeration of every alignment."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict

import numpy as np
import pytest
import torch

from quill.models.decoding import CTCDecoder, ctc_beam_search, ctc_greedy_decode
from quill.models.language_model import CharNGramLM
from quill.vocab import Tokenizer


def collapse(path: tuple[int, ...], blank: int = 0) -> tuple[int, ...]:
    return tuple(c for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1]))


def labelling_probs(probs: np.ndarray) -> dict[tuple[int, ...], float]:
    """P(labelling) summed over all alignments of a (T, C) probability matrix."""
    totals: dict[tuple[int, ...], float] = defaultdict(float)
    for path in itertools.product(range(probs.shape[1]), repeat=probs.shape[0]):
        totals[collapse(path)] += math.prod(probs[t, c] for t, c in enumerate(path))
    return totals


def random_log_probs(rng: np.random.Generator, batch: int, frames: int, classes: int):
    logits = rng.normal(size=(batch, frames, classes)) * 2
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def test_greedy_equals_collapsed_argmax_path_and_its_probability():
    rng = np.random.default_rng(0)
    log_probs = random_log_probs(rng, 4, 9, 5)
    for (ids, confidence), item in zip(ctc_greedy_decode(log_probs), log_probs, strict=True):
        path = tuple(item.argmax(1))
        assert tuple(ids) == collapse(path)
        assert confidence == pytest.approx(math.exp(item.max(1).sum() / 9), rel=1e-5)


def test_greedy_accepts_torch_and_numpy_alike_and_respects_lengths():
    rng = np.random.default_rng(1)
    log_probs = random_log_probs(rng, 3, 12, 6).astype(np.float32)
    lengths = np.array([12, 5, 0])
    from_numpy = ctc_greedy_decode(log_probs, lengths)
    from_torch = ctc_greedy_decode(torch.from_numpy(log_probs), torch.from_numpy(lengths))
    assert from_numpy == from_torch
    assert from_numpy[1][0] == ctc_greedy_decode(log_probs[1:2, :5])[0][0]
    assert from_numpy[2] == ([], 1.0)


def test_greedy_rejects_wrong_rank_and_lengths():
    with pytest.raises(ValueError, match=r"must be \(B, T, C\)"):
        ctc_greedy_decode(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="2 lengths for a batch of 1"):
        ctc_greedy_decode(np.zeros((1, 4, 5)), [1, 2])


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_finds_the_most_probable_labelling(seed):
    rng = np.random.default_rng(seed)
    log_probs = random_log_probs(rng, 1, 5, 3)
    totals = labelling_probs(np.exp(log_probs[0]))
    best = max(totals, key=totals.get)
    ids, confidence = ctc_beam_search(log_probs, beam_width=64)[0]
    assert tuple(ids) == best
    assert confidence == pytest.approx(totals[best] ** (1 / 5), rel=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_blank_only_frames_keep_beam_search_exact(seed):
    # A confident model's frames between characters are blank-only (every label below the
    # pruning threshold); beam search takes a shortcut there, which must not change the
    # answer, including a repeated label split by such a frame ("a _ a" is "aa").
    rng = np.random.default_rng(seed)
    log_probs = random_log_probs(rng, 1, 6, 3)
    log_probs[0, [1, 3]] = np.log([1 - 2e-7, 1e-7, 1e-7])
    totals = labelling_probs(np.exp(log_probs[0]))
    best = max(totals, key=totals.get)
    ids, confidence = ctc_beam_search(log_probs, beam_width=64)[0]
    assert tuple(ids) == best
    assert confidence == pytest.approx(totals[best] ** (1 / 6), rel=1e-5)


def test_beam_search_never_worse_than_greedy():
    rng = np.random.default_rng(7)
    log_probs = random_log_probs(rng, 6, 5, 3)
    for item, (greedy_ids, _), (beam_ids, _) in zip(
        log_probs, ctc_greedy_decode(log_probs), ctc_beam_search(log_probs), strict=True
    ):
        totals = labelling_probs(np.exp(item))
        assert totals[tuple(beam_ids)] >= totals[tuple(greedy_ids)] - 1e-12


def test_language_model_breaks_an_acoustic_tie():
    # After a clear "q", the next frame is a coin toss between "u" and "x".
    tokenizer = Tokenizer()
    q, u, x = tokenizer.encode("qux")
    probs = np.full((2, len(tokenizer)), 1e-6)
    probs[0, q], probs[0, 0] = 0.95, 0.05
    probs[1, u], probs[1, x], probs[1, 0] = 0.45, 0.45, 0.1
    log_probs = np.log(probs[None])
    for corpus, expected in ((["quite", "quiet", "queen"], u), (["qxa", "qxb"], x)):
        lm = CharNGramLM.fit(corpus, order=2, tokenizer=tokenizer)
        assert ctc_beam_search(log_probs, lm=lm, lm_weight=1.0)[0][0] == [q, expected]


def test_pruned_classes_never_extend_a_prefix():
    # [1] is the most probable labelling (.3*.3 + .3*.5 + .5*.3 = .39 > P([]) = .25), but class 1
    # never reaches log .3 = -1.20 in a frame: a prune threshold above that leaves only blanks.
    log_probs = np.log(np.array([[[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]]))
    assert ctc_beam_search(log_probs)[0][0] == [1]
    assert ctc_beam_search(log_probs, prune_log_prob=-1.0)[0][0] == []
    assert CTCDecoder("beam", prune_log_prob=-1.0)(log_probs)[0][0] == []


def test_a_rank_gap_drops_prefixes_far_below_the_best():
    # After the first frame [] ranks log .5 and [1] log .4: a gap of 1 keeps both, and [1]
    # wins (P = .47 over all its paths); a gap of 0.1 drops [1] there, and [] is left.
    log_probs = np.log(np.array([[[0.5, 0.4, 0.1], [0.5, 0.3, 0.2]]]))
    assert ctc_beam_search(log_probs, rank_gap=1.0)[0][0] == [1]
    assert ctc_beam_search(log_probs, rank_gap=0.1)[0][0] == []
    assert CTCDecoder("beam", rank_gap=0.1)(log_probs)[0][0] == []
    with pytest.raises(ValueError, match="rank_gap must be positive"):
        CTCDecoder("beam", rank_gap=0.0)


def test_ctc_decoder_dispatches_and_rejects_unknown_methods():
    log_probs = random_log_probs(np.random.default_rng(3), 4, 6, 5)
    assert CTCDecoder()(log_probs) == ctc_greedy_decode(log_probs)
    assert CTCDecoder("beam", beam_width=4)(log_probs) == ctc_beam_search(log_probs, beam_width=4)
    with pytest.raises(ValueError, match="'greedy' or 'beam'"):
        CTCDecoder("viterbi")
