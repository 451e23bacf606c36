"""Types of the compiled part of the ink map (``_paper.c``); see quill.preprocess."""

import numpy as np

ABI_VERSION: int

def window_medians(cells: np.ndarray, size: int, /) -> bytes: ...
def colour_distance(image: np.ndarray, paper: np.ndarray, /) -> tuple[bytes, float, float]: ...
