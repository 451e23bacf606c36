"""quill lm wordlist and quill lm words: a word list is written from texts, tuned on val
lines, lands in a staged model (a new version, its card's Word lists section) and is read by
every runtime; what cannot work is refused with a clear message."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from quill.evaluation import corpus_cer
from quill.inference.recognizer import Recognizer
from quill.model_files import METADATA_FILE
from quill.models.lexicon import WordLexicon
from quill.staged_model import DecodingConfig, ModelLoadError, StagedModel
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS
from quill.vocab import Tokenizer

from .test_lm_languages import invoke, misleading_main_lm

#: A result row of `quill lm words`: CER, ms per line, the penalty.
ROW = re.compile(r"^ *(\d+\.\d{4}) +\d+\.\d{2}  (\d+(?:\.\d+)?)$")


def read(model: Path, backend: str) -> list[str]:
    recognizer = Recognizer.from_path(model, backend=backend, threads=1)
    return [p.text for p in recognizer.predict([render_line(w) for w in SMOKE_WORDS], "line")]


@pytest.fixture
def word_list(val_lines: Path, tmp_path: Path) -> Path:
    out = tmp_path / "words.txt"
    invoke("lm", "wordlist", str(out), "--dataset", str(val_lines))
    return out


def test_the_word_list_holds_the_words_of_the_texts_given(val_lines, word_list, tmp_path):
    assert word_list.read_text().split() == sorted(w.lower() for w in SMOKE_WORDS)
    text = tmp_path / "more.txt"
    text.write_text("Darwin's 2nd letter\n")
    both = tmp_path / "both.txt"
    invoke("lm", "wordlist", str(both), "--text", str(text), "--dataset", str(val_lines))
    assert set(both.read_text().split()) == {*word_list.read_text().split(), "darwin", "s", "nd",
                                             "letter"}  # fmt: skip


def test_a_word_list_that_reads_better_is_written_and_used_by_every_runtime(
    model_copy, val_lines, word_list, tmp_path
):
    misleading_main_lm(model_copy, tmp_path)
    misread = read(model_copy, "onnx")
    assert misread != list(SMOKE_WORDS)  # the main LM misleads
    before = StagedModel.load(model_copy)
    table = invoke("lm", "words", str(model_copy), "--words", str(word_list), "--data",
                   str(val_lines), "--penalties", "0,20", "--write")  # fmt: skip
    rows = [ROW.match(line).groups() for line in table.splitlines() if ROW.match(line)]
    assert "4 lines, best first" in table and len(rows) == 2
    assert rows[0][1] == "20" and float(rows[0][0]) < float(rows[1][0])  # the list helps

    decoding = json.loads((model_copy / METADATA_FILE).read_text())["decoding"]
    assert decoding["words"] == "words.txt" and decoding["word_penalty"] == 20
    assert (model_copy / "words.txt").read_text() == word_list.read_text()
    written = StagedModel.load(model_copy)
    assert written.version != before.version
    assert model_copy / "words.txt" in written.decoding_files()
    card = written.card_path.read_text()
    assert "## Word lists" in card and "| main | `words.txt` | 20 |" in card
    assert f"Version `{written.version}`" in card
    fixed = read(model_copy, "onnx")
    assert corpus_cer(fixed, SMOKE_WORDS) < corpus_cer(misread, SMOKE_WORDS)
    assert read(model_copy, "torchscript") == fixed

    # a penalty of 0 written takes the list out again
    invoke("lm", "words", str(model_copy), "--words", str(word_list), "--data", str(val_lines),
           "--penalties", "0", "--write")  # fmt: skip
    again = StagedModel.load(model_copy).decoding
    assert again is not None and again.words is None and again.word_penalty is None
    assert read(model_copy, "onnx") == misread


def test_what_cannot_work_is_refused_with_a_reason(model_copy, val_lines, word_list, tmp_path):
    words = ["lm", "words", str(model_copy), "--words", str(word_list), "--data", str(val_lines)]
    assert "does not beam-search" in invoke(*words, code=2)  # the smoke model reads greedily
    misleading_main_lm(model_copy, tmp_path)
    assert "reads no language 'fr'" in invoke(*words, "--language", "fr", code=2)
    assert "at least 0" in invoke(*words, "--penalties", "1,-2", code=2)
    empty = tmp_path / "digits.txt"
    empty.write_text("1914 1918\n")
    assert "no words to write" in invoke("lm", "wordlist", str(tmp_path / "w.txt"), "--text",
                                          str(empty), code=2)  # fmt: skip
    assert "holds no words" in invoke(*words[:3], "--words", str(empty), *words[5:], code=2)


def test_a_word_list_the_decoding_names_must_be_there(model_copy, word_list, tmp_path):
    misleading_main_lm(model_copy, tmp_path)
    StagedModel.load(model_copy).set_words(word_list, 2.0)
    decoding = StagedModel.load(model_copy).decoding
    assert decoding is not None and (decoding.words, decoding.word_penalty) == ("words.txt", 2.0)
    (model_copy / "words.txt").unlink()
    with pytest.raises(ModelLoadError, match="has no words.txt"):
        Recognizer.from_path(model_copy, backend="onnx")
    with pytest.raises(ModelLoadError, match="not a file name"):
        DecodingConfig.from_dict({"method": "beam", "words": "../words.txt"})


def test_a_word_list_is_read_once_into_the_cache(word_list, tmp_path, monkeypatch):
    """A new process takes a list's letters from the user cache instead of reading its file
    again (20-50 ms a list of 100,000 words); a damaged copy is read again, a changed file
    gets its own."""
    from quill.runtimes import backends, cache

    monkeypatch.setenv("QUILL_CACHE_DIR", str(tmp_path / "cache"))
    tokenizer = Tokenizer()

    def load(path: Path) -> WordLexicon:  # as a model's decoding reads it in a new process
        backends._load_words.cache_clear()
        state = path.stat()
        return backends._load_words(path, state.st_mtime_ns, state.st_size, tokenizer)

    def not_read(*args: object) -> None:
        raise AssertionError("the word list file was read again")

    first = load(word_list)
    kept = cache.read_words_path(word_list)
    assert kept is not None and kept.is_file()
    with monkeypatch.context() as patch:
        patch.setattr(WordLexicon, "load", not_read)
        again = load(word_list)
    assert np.array_equal(again.letters, first.letters) and again.words == first.words
    assert again.characters == first.characters
    for damage in (b"not an array", kept.read_bytes()[:-3]):
        kept.write_bytes(damage)
        assert np.array_equal(load(word_list).letters, first.letters)
        assert np.array_equal(np.load(kept), first.letters)  # and kept again
    changed = tmp_path / "changed.txt"
    changed.write_text(word_list.read_text() + "darwin\n")
    assert "darwin" in load(changed).words and cache.read_words_path(changed) != kept
    backends._load_words.cache_clear()
