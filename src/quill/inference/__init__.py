"""Inference: load a staged model and recognise images (``Recognizer``).

Kept free of heavy imports so that command-line modules can read the defaults below.
"""

from pathlib import Path


def _shipped_model() -> Path:
    """``models/default`` of the checkout this package runs from, so that a command run from
    another folder finds it (it said "models/default is not a staged model"); for an
    installed package, ``models/default`` under the folder a command runs in."""
    checkout = Path(__file__).resolve().parents[3] / "models" / "default"
    return checkout if (checkout / "quill-model.json").is_file() else Path("models/default")


#: The shipped model; every serving and reading command uses it by default.
DEFAULT_MODEL_DIR = _shipped_model()
