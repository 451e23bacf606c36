"""quill lm language: a second language's LM lands in a staged model, is used for the lines
that read as that language, survives a re-tuned main LM, and is refused when it cannot work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.inference.decoding_tuning import attach
from quill.inference.recognizer import Recognizer
from quill.model_files import METADATA_FILE
from quill.staged_model import DecodingConfig, LanguageDecoding, ModelLoadError, StagedModel
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS

#: A result row: CER, ms per line, lines read in the language, the setting or the baseline.
ROW = re.compile(r"^ *(\d+\.\d{4}) +\d+\.\d{2} +(\d+)  (.*)$")


def invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return " ".join(result.output.split()) if code else result.output


def misleading_main_lm(model: Path, tmp_path: Path) -> Path:
    """Make ``model`` beam-search with an LM of text unlike its words (it misreads them then),
    and return that LM, which also serves as the main language's identifier."""
    text = tmp_path / "q.txt"
    text.write_text("qqqq xxxx zzzz\n" * 5)
    lm = tmp_path / "main.json"
    invoke("lm", "fit", str(lm), "--text", str(text), "--no-corpus", "--order", "3",
           "--model", str(model))  # fmt: skip
    decoding = DecodingConfig(method="beam", beam_width=4, lm_weight=1.0, insertion_bonus=0.0)
    StagedModel.load(model).set_decoding(decoding, lm)
    return lm


def words_lm(model: Path, val_lines: Path, tmp_path: Path) -> Path:
    lm = tmp_path / "words.json"
    invoke("lm", "fit", str(lm), "--dataset", str(val_lines), "--no-corpus", "--order", "3",
           "--model", str(model))  # fmt: skip
    return lm


def read(model: Path, backend: str) -> list[str]:
    recognizer = Recognizer.from_path(model, backend=backend, threads=1)
    return [p.text for p in recognizer.predict([render_line(w) for w in SMOKE_WORDS], "line")]


def test_a_language_that_reads_better_is_written_and_used_by_every_runtime(
    model_copy, val_lines, tmp_path
):
    main = misleading_main_lm(model_copy, tmp_path)
    words = words_lm(model_copy, val_lines, tmp_path)
    assert read(model_copy, "onnx") != list(SMOKE_WORDS)  # the main LM misleads
    before = StagedModel.load(model_copy)
    table = invoke("lm", "language", str(model_copy), "--language", "xx", "--lm", str(words),
                   "--identify", str(words), "--identify-main", str(main), "--data",
                   str(val_lines), "--weights", "0.5", "--bonuses", "0,1", "--margins", "0.5",
                   "--write")  # fmt: skip
    rows = [ROW.match(line).groups() for line in table.splitlines() if ROW.match(line)]
    assert len(rows) == 3 and "4 lines, best first" in table
    baseline = next(row for row in rows if row[2] == "(the model as it is)")
    assert float(rows[0][0]) == 0.0 < float(baseline[0]) and baseline[1] == "0"
    assert rows[0][1] == "4"  # every line read as the words' language
    best = json.loads(rows[0][2])

    written = StagedModel.load(model_copy)
    decoding = json.loads((model_copy / METADATA_FILE).read_text())["decoding"]
    assert decoding["identifier"] == "identify.json" and decoding["identify_margin"] == 0.5
    assert decoding["languages"] == [{
        "language": "xx", "lm": "lm-xx.json", "identifier": "identify-xx.json",
        "lm_weight": 0.5, "insertion_bonus": best["insertion_bonus"],
    }]  # fmt: skip
    copied = {"identify.json": main, "lm-xx.json": words, "identify-xx.json": words}
    for name, source in copied.items():
        assert (model_copy / name).read_bytes() == source.read_bytes()
    assert written.version == written.content_version() != before.version
    card = (model_copy / "MODEL_CARD.md").read_text()
    assert f"Version `{written.version}`" in card
    # the card says which languages the decoding reads and what the tuning measured
    section = card[card.index("## Other languages") : card.index("## Files")]
    assert "| xx | `lm-xx.json` | `identify-xx.json` | 0.5 |" in section
    assert "`identify.json`" in section and "(0.5) nats per character" in section
    assert section.count("| the model as it was |") == 1 and "4 val lines" in section
    for backend in ("onnx", "torchscript"):
        assert read(model_copy, backend) == list(SMOKE_WORDS), backend

    # asked again, the language the model reads already is as good as any setting tried
    again = invoke("lm", "language", str(model_copy), "--language", "xx", "--lm", str(words),
                   "--identify", str(words), "--data", str(val_lines), "--weights", "0.5",
                   "--bonuses", "0", "--margins", "0.5")  # fmt: skip
    assert "reads better than the xx the model reads now: kept" in again

    # the identifier's bytes are part of the version
    (model_copy / "identify-xx.json").write_bytes(main.read_bytes())
    assert StagedModel.load(model_copy).content_version() != written.version

    # a main LM re-tuned to another beam + LM setting keeps the other language (what
    # `quill lm tune --write` writes); a switch to greedy leaves no LM to keep it beside
    beam = {"method": "beam", "beam_width": 4, "lm_weight": 0.3, "insertion_bonus": 0.0}
    attach(model_copy, main, beam)
    retuned = json.loads((model_copy / METADATA_FILE).read_text())["decoding"]
    assert retuned["lm_weight"] == 0.3 and retuned["languages"] == decoding["languages"]
    attach(model_copy, None, {"method": "greedy"})
    assert "languages" not in json.loads((model_copy / METADATA_FILE).read_text())["decoding"]


def test_a_language_that_does_not_help_is_not_written(model_copy, val_lines, tmp_path):
    words = words_lm(model_copy, val_lines, tmp_path)
    StagedModel.load(model_copy).set_decoding(
        DecodingConfig(method="beam", beam_width=4, lm_weight=0.5, insertion_bonus=0.0), words
    )
    text = tmp_path / "q.txt"
    text.write_text("qqqq xxxx zzzz\n" * 5)
    other = tmp_path / "other.json"
    invoke("lm", "fit", str(other), "--text", str(text), "--no-corpus", "--order", "3",
           "--model", str(model_copy))  # fmt: skip
    before = (model_copy / METADATA_FILE).read_text()
    table = invoke("lm", "language", str(model_copy), "--language", "qq", "--lm", str(other),
                   "--identify", str(words), "--identify-main", str(other), "--data",
                   str(val_lines), "--weights", "1", "--bonuses", "0", "--margins", "0",
                   "--write")  # fmt: skip
    assert "does not help here: nothing to keep" in table
    assert (model_copy / METADATA_FILE).read_text() == before


def test_a_broken_languages_section_is_a_clear_load_error(model_copy, val_lines, tmp_path):
    words = words_lm(model_copy, val_lines, tmp_path)
    staged = StagedModel.load(model_copy).set_decoding(
        DecodingConfig(method="beam", beam_width=4, lm_weight=0.5, insertion_bonus=0.0), words
    )
    language = LanguageDecoding("xx", "", "", lm_weight=0.5, insertion_bonus=0.0)
    staged.set_languages(words, 0.5, [(language, words, words)])
    metadata = json.loads((model_copy / METADATA_FILE).read_text())
    (model_copy / "lm-xx.json").unlink()
    with pytest.raises(ModelLoadError, match="has no lm-xx.json"):
        Recognizer.from_path(model_copy, backend="onnx")
    broken = {**metadata["decoding"]["languages"][0], "weight": 1.0}
    cases = {
        "unknown key 'weight'": {**metadata["decoding"], "languages": [broken]},
        "need an 'identifier' file": {**metadata["decoding"], "identifier": None},
        "'languages' must be a list": {**metadata["decoding"], "languages": "fr"},
    }
    for message, decoding in cases.items():
        (model_copy / METADATA_FILE).write_text(json.dumps({**metadata, "decoding": decoding}))
        with pytest.raises(ModelLoadError, match=message):
            StagedModel.load(model_copy)


def test_languages_are_refused_where_they_cannot_work(model_copy, val_lines, tmp_path, smoke_model):
    words = words_lm(model_copy, val_lines, tmp_path)
    args = ["--language", "xx", "--lm", str(words), "--identify", str(words), "--data",
            str(val_lines)]  # fmt: skip
    # a greedy model has no main LM to keep the benefit of the doubt
    out = invoke("lm", "language", str(model_copy), *args, code=2)
    assert "does not beam-search with a language model" in out
    StagedModel.load(model_copy).set_decoding(
        DecodingConfig(method="beam", beam_width=4, lm_weight=0.5, insertion_bonus=0.0), words
    )
    out = invoke("lm", "language", str(model_copy), *args, code=2)
    assert "no identifier of its main language yet: give --identify-main" in out
    ascii_lm = tmp_path / "ascii.json"
    invoke("lm", "fit", str(ascii_lm), "--dataset", str(val_lines), "--no-corpus",
           "--vocabulary", "latin")  # fmt: skip
    out = invoke("lm", "language", str(model_copy), *args, "--identify-main", str(ascii_lm),
                 code=2)  # fmt: skip
    assert str(ascii_lm) in out and "character set" in out
    out = invoke("lm", "language", str(model_copy), *args[2:], "--language", "../fr", code=2)
    assert "letters, digits" in out
