"""Types of the compiled beam search (``_ctc_beam.c``); see quill.models.decoding."""

from typing import Any

import numpy as np

ABI_VERSION: int

def lm_tables(
    slots: np.ndarray,
    starts: np.ndarray,
    totals: np.ndarray,
    following: np.ndarray,
    token_codes: np.ndarray,
    context_length: int,
    base: int,
    line_start: int,
    uniform: float,
    discount: float,
    /,
) -> Any: ...
def beam_search(
    blank_column: np.ndarray,
    candidate_starts: np.ndarray,
    candidate_tokens: np.ndarray,
    candidate_values: np.ndarray,
    classes: int,
    beam_width: int,
    lm: Any,
    lm_weight: float,
    insertion_bonus: float,
    rank_gap: float | None,
    floor_margin: float,
    words: Any,
    word_penalty: float,
    /,
) -> tuple[list[int], float]: ...
def log_likelihood(lm: Any, ids: np.ndarray, /) -> float: ...
def word_tables(letters: np.ndarray, codes: np.ndarray, /) -> Any: ...
