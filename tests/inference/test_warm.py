"""`quill model warm`: what it keeps, a start that then reads it all from the cache (in a new
process, as a container's first request is), and what it refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import build_app, modules_for
from quill.models.language_model import CharNGramLM
from quill.runtimes import backends
from quill.staged_model import DecodingConfig, StagedModel
from quill.staging.smoke import SMOKE_WORDS
from quill.vocab import Tokenizer


def warm(*args: str, code: int = 0) -> str:
    """``quill model warm ARGS`` as the command line builds it (only the modules of `model`)."""
    result = CliRunner().invoke(build_app(modules_for(["model"])), ["model", "warm", *args])
    assert result.exit_code == code, result.output
    return " ".join(result.output.split())


@pytest.fixture
def lm_model(model_copy: Path, tmp_path: Path) -> Path:
    """The smoke model beam-searching with a character LM and a word list of its words."""
    model = StagedModel.load(model_copy)
    lm = tmp_path / "lm.json"
    texts = [" ".join(SMOKE_WORDS), *SMOKE_WORDS]
    CharNGramLM.fit(texts, order=3, tokenizer=Tokenizer.from_dict(model.tokenizer.to_dict())).save(
        lm
    )
    model = model.set_decoding(DecodingConfig(method="beam", beam_width=4, lm_weight=0.5), lm)
    words = tmp_path / "words.txt"
    words.write_text("\n".join(w.lower() for w in SMOKE_WORDS) + "\n")
    model.set_words(words, 2.0)
    return model_copy


#: A new process loading the model as a start does, where compiling an LM, reading a word
#: list or measuring the runtimes fails instead: it can only start from the cache.
FROM_THE_CACHE_ONLY = """
import sys
from quill.inference.recognizer import Recognizer
from quill.models.language_model import CharNGramLM
from quill.models.lexicon import WordLexicon
from quill.runtimes import backends
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS

def refused(*args, **kwargs):
    raise AssertionError("a warmed start computed what the cache keeps")

CharNGramLM.load = WordLexicon.load = backends.choose_backend = refused
recognizer = Recognizer.from_path(sys.argv[1], backend="auto", threads=1)
texts = [p.text for p in recognizer.predict([render_line(w) for w in SMOKE_WORDS], "line")]
print(recognizer.backend_choice, recognizer.backend, "|".join(texts))
"""


def files_of(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


def test_a_warmed_model_starts_without_compiling_or_measuring(
    lm_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("QUILL_CACHE_DIR", str(cache))
    backends._load_lm.cache_clear()
    backends._load_words.cache_clear()
    out = warm(str(lm_model), "--threads", "1", "--threads", "2")
    assert f"into {cache}" in out
    assert "2 language models and word lists in the cache" in out
    assert "threads 1: onnx" in out and "threads 2: onnx" in out and "measured" in out
    kept = files_of(cache)
    assert any(name.startswith("lm/") for name in kept)
    assert any(name.startswith("words/") for name in kept)
    choices = json.loads((cache / "backend-choice.json").read_text())
    assert sorted(choice["threads"] for choice in choices.values()) == [1, 2]

    started = subprocess.run(
        [sys.executable, "-c", FROM_THE_CACHE_ONLY, str(lm_model)],
        capture_output=True,
        text=True,
        env={**os.environ, "QUILL_CACHE_DIR": str(cache)},
        timeout=120,
    )
    assert started.returncode == 0, started.stderr[-3000:]
    choice, backend, texts = started.stdout.split()
    assert choice == "cached" and backend.startswith("onnx")
    assert texts.split("|") == list(SMOKE_WORDS)
    assert files_of(cache) == kept  # the start wrote nothing: a read-only image cache serves

    # warming again finds everything kept and measures nothing
    again = warm(str(lm_model), "--threads", "1")
    assert "threads 1: onnx" in again and "cached" in again and "measured" not in again
    backends._load_lm.cache_clear()
    backends._load_words.cache_clear()


def test_a_named_runtime_is_loaded_not_measured(
    lm_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QUILL_BACKEND", "onnx")  # as the Lambda image names it
    out = warm(str(lm_model))
    assert "threads all: onnx loaded" in out
    assert not (tmp_path / "cache" / "backend-choice.json").exists()
    backends._load_lm.cache_clear()
    backends._load_words.cache_clear()


def test_warm_says_why_it_cannot(
    lm_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUILL_CACHE_DIR", "off")
    assert "the cache is off" in warm(str(lm_model), code=2)
    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder would have to be inside this file")
    monkeypatch.setenv("QUILL_CACHE_DIR", str(blocker / "cache"))
    backends._load_lm.cache_clear()
    backends._load_words.cache_clear()
    out = warm(str(lm_model), code=2)
    assert "could not keep lm.json, words.txt in" in out and "is the folder writable?" in out
    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    assert "is not a staged model" in warm(str(tmp_path / "nowhere"), code=2)
    assert "--backend must be one of auto, onnx" in warm(str(lm_model), "--backend", "gpu", code=2)
    assert "greater than or equal to 0" in warm(str(lm_model), "--threads", "-1", code=2)
    backends._load_lm.cache_clear()
    backends._load_words.cache_clear()


def test_a_damaged_copy_in_a_cache_that_cannot_be_changed_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image's cache is read-only where it serves (Lambda): a copy that cannot be read
    there is made again for this process, and the start goes on."""
    import numpy as np

    from quill.runtimes import cache

    kept = tmp_path / "words.npy"
    kept.write_bytes(b"half an array")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(f"[Errno 30] Read-only file system: {self}")

    monkeypatch.setattr(Path, "unlink", read_only)
    made = cache.kept_or_made(
        kept, lambda path: np.load(path), lambda: np.arange(3), lambda array, new: None, 4
    )
    assert made.tolist() == [0, 1, 2] and kept.read_bytes() == b"half an array"
