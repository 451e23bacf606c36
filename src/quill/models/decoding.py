"""CTC decoding: greedy best path and prefix beam search (with an optional character LM).

Pure NumPy on purpose: the ONNX inference path decodes model outputs without importing
torch. Torch tensors are accepted too (converted once). Seq2seq generation in torch lives in
:mod:`quill.models.generation`; :func:`seq2seq_greedy_decode` is its NumPy twin for the
exported encoder + decoder-step graphs.

Confidence, everywhere in Quill, is a geometric mean of probabilities in [0, 1]:
``exp(mean log p)``. For CTC greedy it is over the best class of every valid frame (the
probability of the best path, per frame); for beam search it is the total probability of the
chosen labelling (all its alignments), per frame. A geometric mean does not shrink with the
length of the line, so a long confident line and a short confident line score alike.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

Decoded = tuple[list[int], float]


def _as_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor, converted without importing torch here
        array = array.detach().float().cpu().numpy()
    return np.asarray(array, dtype=np.float32)


def _lengths(log_probs: np.ndarray, lengths: Any) -> np.ndarray:
    batch, frames = log_probs.shape[:2]
    if lengths is None:
        return np.full(batch, frames, dtype=np.int64)
    lengths = _as_numpy(lengths).astype(np.int64).reshape(-1)
    if lengths.shape[0] != batch:
        raise ValueError(f"{lengths.shape[0]} lengths for a batch of {batch}")
    return np.clip(lengths, 0, frames)


def ctc_greedy_decode(log_probs: Any, lengths: Any = None, blank: int = 0) -> list[Decoded]:
    """Best-path decoding of (B, T, C) log-probabilities: argmax, collapse repeats, drop blank.

    ``lengths`` (B,) limits each item to its valid frames (padding is ignored). Returns one
    ``(token_ids, confidence)`` per item; confidence is the geometric mean over valid frames
    of the best class probability (1.0 for an item with no frames).

    >>> lp = np.log(np.array([[[.1, .9, 0], [.1, .9, 0], [.8, .2, 0], [.1, 0, .9]]]) + 1e-9)
    >>> ids, conf = ctc_greedy_decode(lp)[0]
    >>> ids, round(conf, 3)
    ([1, 2], 0.874)
    >>> ctc_greedy_decode(lp, lengths=[2])[0][0]
    [1]
    """
    log_probs = _as_numpy(log_probs)
    if log_probs.ndim != 3:
        raise ValueError(f"log_probs must be (B, T, C), got shape {log_probs.shape}")
    lengths = _lengths(log_probs, lengths)
    best = log_probs.argmax(axis=2)  # (B, T)
    best_log_prob = log_probs.max(axis=2)  # (B, T)
    results: list[Decoded] = []
    for path, scores, length in zip(best, best_log_prob, lengths, strict=True):
        path = path[:length]
        keep = np.ones(length, dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        keep &= path != blank
        confidence = float(np.exp(scores[:length].mean())) if length else 1.0
        results.append((path[keep].tolist(), confidence))
    return results


class CharLanguageModel(Protocol):
    """What beam search asks of a language model: log P(token | previous tokens).

    :class:`quill.models.language_model.CharNGramLM` is the one Quill ships.
    """

    def log_prob(self, prefix: tuple[int, ...], token: int) -> float: ...


#: Classes less likely than this in a frame (e**-12 ~ 6e-6) are not tried by beam search by
#: default. Tighter is faster: on the Hooker val lines -8 read the same CER 1.6x faster, and
#: -5 let a 16-wide beam cost less than an 8-wide one at -12 and read better (``quill lm tune
#: --prunes`` measures it for a model).
PRUNE_LOG_PROB = -12.0


@dataclass(frozen=True)
class CTCDecoder:
    """How CTC log-probabilities become text: greedy best path, or beam search with an LM.

    A staged model's ``decoding`` section (``quill lm tune`` writes it) builds one; greedy is
    the default because it costs nothing, while beam search with a language model costs a few
    milliseconds per line in Python and pays off on ambiguous handwriting.
    """

    method: str = "greedy"
    beam_width: int = 8
    lm: CharLanguageModel | None = None
    lm_weight: float = 0.0
    insertion_bonus: float = 0.0
    prune_log_prob: float = PRUNE_LOG_PROB

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "beam"):
            raise ValueError(f"decoding method must be 'greedy' or 'beam', got {self.method!r}")

    def __call__(self, log_probs: Any, lengths: Any = None) -> list[Decoded]:
        """(B, T, C) log-probabilities and (B,) valid frames -> (ids, confidence) each."""
        if self.method == "greedy":
            return ctc_greedy_decode(log_probs, lengths)
        return ctc_beam_search(
            log_probs,
            lengths,
            beam_width=self.beam_width,
            lm=self.lm,
            lm_weight=self.lm_weight,
            insertion_bonus=self.insertion_bonus,
            prune_log_prob=self.prune_log_prob,
        )


def ctc_beam_search(
    log_probs: Any,
    lengths: Any = None,
    beam_width: int = 8,
    blank: int = 0,
    lm: CharLanguageModel | None = None,
    lm_weight: float = 0.5,
    insertion_bonus: float = 0.0,
    prune_log_prob: float = PRUNE_LOG_PROB,
) -> list[Decoded]:
    """CTC prefix beam search over (B, T, C) log-probabilities.

    Keeps the ``beam_width`` best labellings, summing the probability of all their
    alignments (greedy keeps only the single best alignment). With ``lm``, prefixes are
    ranked by ``log P_ctc + lm_weight * log P_lm + insertion_bonus * length``; confidence
    uses the CTC probability alone, so it stays comparable with greedy decoding. A class whose
    log-probability in a frame is at or below ``prune_log_prob`` does not extend any prefix
    there (a trade of accuracy for speed: see :data:`PRUNE_LOG_PROB`).

    Greedy takes the best single path (blank, blank) with probability .25; beam search sums
    the three paths of ``[1]`` (.4*.3 + .4*.5 + .5*.3 = .47):

    >>> lp = np.log(np.array([[[.5, .4, .1], [.5, .3, .2]]]))
    >>> ctc_greedy_decode(lp)[0][0], ctc_beam_search(lp)[0][0]
    ([], [1])
    >>> round(ctc_beam_search(lp)[0][1] ** 2, 2)  # confidence per frame, squared = P([1])
    0.47
    """
    log_probs = _as_numpy(log_probs)
    lengths = _lengths(log_probs, lengths)
    return [
        _beam_search_one(
            frames[:length],
            beam_width,
            blank,
            lm,
            lm_weight,
            insertion_bonus,
            prune_log_prob,
            log_probs.shape[2],
        )
        for frames, length in zip(log_probs, lengths, strict=True)
    ]


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (NumPy's is ~20x slower per scalar call)."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    return max(a, b) + math.log1p(math.exp(-abs(a - b)))


def _beam_search_one(
    frames: np.ndarray,
    beam_width: int,
    blank: int,
    lm: CharLanguageModel | None,
    lm_weight: float,
    insertion_bonus: float,
    prune_log_prob: float,
    num_classes: int,
) -> Decoded:
    # prefix -> [log P(ending in blank), log P(ending in a label)]
    beams: dict[tuple[int, ...], list[float]] = {(): [0.0, -math.inf]}
    lm_scores: dict[tuple[int, ...], float] = {(): 0.0}

    def rank(item: tuple[tuple[int, ...], list[float]]) -> float:
        prefix, (p_blank, p_label) = item
        acoustic = _logaddexp(p_blank, p_label)
        return acoustic + lm_weight * lm_scores[prefix] + insertion_bonus * len(prefix)

    # Only the most likely classes of each frame can extend a surviving prefix, and a class
    # below prune_log_prob is taken not to change which prefixes survive: most frames of a
    # confident model leave one or two candidates, which makes beam search several times faster.
    top = np.argsort(frames, axis=1)[:, ::-1][:, : min(num_classes, beam_width + 1)]  # (T, k)
    for frame, best in zip(frames.tolist(), top.tolist(), strict=True):
        candidates = [token for token in best if frame[token] > prune_log_prob and token != blank]
        if not candidates:
            # A blank-only frame (most frames between characters) adds the same log P(blank)
            # to every prefix: the ranking cannot change, so there is nothing to sort.
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
                    stay[1] = _logaddexp(stay[1], p_label + p)  # repeat collapses
                    grown[1] = _logaddexp(grown[1], p_blank + p)  # needs a blank between
                else:
                    grown[1] = _logaddexp(grown[1], p_total + p)
                if extended not in lm_scores:
                    step = lm.log_prob(prefix, token) if lm is not None else 0.0
                    lm_scores[extended] = lm_scores[prefix] + step
        beams = dict(sorted(following.items(), key=rank, reverse=True)[:beam_width])
    best, (p_blank, p_label) = next(iter(beams.items()))
    confidence = math.exp(_logaddexp(p_blank, p_label) / len(frames)) if len(frames) else 1.0
    return list(best), confidence


#: (tokens (B, 1) int64, self_keys, self_values) -> (logits (B, C), self_keys, self_values)
StepFunction = Callable[
    [np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]
]


def seq2seq_greedy_decode(
    step: StepFunction,
    cross_keys: np.ndarray,
    max_length: int,
    pad_id: int = 0,
    bos_id: int = 1,
    eos_id: int = 2,
) -> list[Decoded]:
    """Greedy decoding with a KV cache over an exported decoder step, in NumPy.

    ``step`` runs one decoder step (e.g. an onnxruntime session of ``decoder_step.onnx`` with
    the cross-attention keys/values bound); ``cross_keys`` (layers, B, heads, S, head_dim)
    gives the cache geometry. Same rules as the torch decoder: PAD and BOS are never emitted,
    every row stops at its EOS (included in the ids and the confidence), the loop stops when
    all rows have ended. Returns ``(ids, confidence)`` per row.
    """
    layers, batch, heads, _, head_dim = cross_keys.shape
    self_keys = np.zeros((layers, batch, heads, 0, head_dim), dtype=cross_keys.dtype)
    self_values = self_keys
    tokens = np.full((batch, 1), bos_id, dtype=np.int64)
    finished = np.zeros(batch, dtype=bool)
    total = np.zeros(batch, dtype=np.float64)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    for _ in range(max_length):
        logits, self_keys, self_values = step(tokens, self_keys, self_values)
        logits = logits.astype(np.float64)
        logits[:, [pad_id, bos_id]] = -np.inf
        log_probs = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)  # (B, C)
        best = log_probs.argmax(axis=1)
        for row in np.flatnonzero(~finished):
            outputs[row].append(int(best[row]))
            total[row] += log_probs[row, best[row]]
        finished |= best == eos_id
        if finished.all():
            break
        tokens = best[:, None].astype(np.int64)
    return [
        (ids, float(np.exp(score / max(len(ids), 1))))
        for ids, score in zip(outputs, total, strict=True)
    ]
