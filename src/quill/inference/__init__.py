"""Inference: load a staged model and recognise images (``Recognizer``).

Kept free of heavy imports so that command-line modules can read the defaults below.
"""

from pathlib import Path

#: Where the shipped model lives in a checkout; every serving command uses it by default.
DEFAULT_MODEL_DIR = Path("models/default")
