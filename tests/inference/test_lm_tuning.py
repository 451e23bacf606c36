"""quill lm fit + tune: the LM and the chosen decoding land in a staged model and are used."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.inference.recognizer import Recognizer
from quill.model_files import METADATA_FILE
from quill.staged_model import ModelLoadError, StagedModel
from quill.staging.parity import render_line
from quill.staging.smoke import SMOKE_WORDS

#: A result row of `quill lm tune`: CER, ms per line, the decoding setting as JSON.
ROW = re.compile(r"^ *\d+\.\d{4} +\d+\.\d{2}  \{")


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_tune_writes_the_best_decoding_and_the_recognizer_uses_it(
    model_copy, val_lines, tmp_path, smoke_model
):
    lm_path = tmp_path / "lm.json"
    fitted = invoke("lm", "fit", str(lm_path), "--dataset", str(val_lines), "--no-corpus",
                    "--order", "3", "--evaluate", str(val_lines))  # fmt: skip
    assert "contexts" in fitted and "perplexity on" in fitted
    table = invoke("lm", "tune", str(model_copy), "--data", str(val_lines), "--lm", str(lm_path),
                   "--weights", "0.5", "--bonuses", "0,1", "--beam", "4", "--prunes", "-12,-4",
                   "--write")  # fmt: skip
    # greedy, beam alone and two LM settings at each of two prune thresholds, on 4 val lines
    rows = [line.split(maxsplit=2) for line in table.splitlines() if ROW.match(line)]
    settings = [json.loads(row[2]) for row in rows]
    assert "4 lines, best first" in table and len(rows) == 7
    assert sorted(s.get("insertion_bonus", -1) for s in settings) == [-1, -1, -1, 0, 0, 1, 1]
    assert sorted(s.get("prune_log_prob", 0) for s in settings) == [-12] * 3 + [-4] * 3 + [0]
    assert [float(row[0]) for row in rows] == sorted(float(row[0]) for row in rows)

    before = StagedModel.load(smoke_model)
    written = StagedModel.load(model_copy)
    decoding = json.loads((model_copy / METADATA_FILE).read_text())["decoding"]
    card = (model_copy / "MODEL_CARD.md").read_text()
    # a decoding that reads differently is a new version, shown in the card's header
    assert (written.version == before.version) == (
        written.content_version() == before.content_version()
    )
    assert written.version == written.content_version()
    assert f"Version `{written.version}`" in card
    assert card.count("## Decoding") == 1 and card.index("## Decoding") < card.index("## Files")
    assert f"`{json.dumps(decoding)}`, chosen by" in card and "4 val lines" in card
    # the setting in use is a row of the table (which names no files), whichever won
    measured = [json.loads(row) for row in re.findall(r"^\| `(\{.*\})` \|", card, re.M)]
    assert {k: v for k, v in decoding.items() if k != "lm"} in measured
    assert decoding["method"] in ("greedy", "beam")
    recognizer = Recognizer.from_path(model_copy, backend="onnx", threads=1)
    assert recognizer.runtime.decoder.method == decoding["method"]
    if "lm_weight" in decoding:
        assert (model_copy / "lm.json").is_file() and recognizer.runtime.decoder.lm is not None
    texts = [p.text for p in recognizer.predict([render_line(w) for w in SMOKE_WORDS], "line")]
    assert texts == list(SMOKE_WORDS)
    # tuned again: the section is replaced; a budget no beam search meets leaves greedy
    again = invoke("lm", "tune", str(model_copy), "--data", str(val_lines), "--write",
                   "--limit", "2", "--max-ms", "0.000001")  # fmt: skip
    assert 'best within 1e-06 ms per line: {"method": "greedy"}' in again
    card = (model_copy / "MODEL_CARD.md").read_text()
    assert card.count("## Decoding") == 1 and "2 val lines" in card and "4 val lines" not in card
    assert json.loads((model_copy / METADATA_FILE).read_text())["decoding"]["method"] == "greedy"


def test_tune_tries_rank_gaps_and_can_take_the_fastest_within_a_tolerance(
    model_copy, val_lines, tmp_path
):
    lm_path = tmp_path / "lm.json"
    invoke("lm", "fit", str(lm_path), "--dataset", str(val_lines), "--no-corpus", "--order", "3")
    table = invoke("lm", "tune", str(model_copy), "--data", str(val_lines), "--lm", str(lm_path),
                   "--weights", "0.5", "--bonuses", "1", "--beam", "4", "--rank-gaps", "none,8",
                   "--cer-tolerance", "100", "--write")  # fmt: skip
    rows = [line.split(maxsplit=2) for line in table.splitlines() if ROW.match(line)]
    settings = [json.loads(row[2]) for row in rows]
    # greedy, beam alone and beam + LM, each beam with the whole beam and with a gap of 8
    assert sorted(str(s.get("rank_gap")) for s in settings) == ["8.0"] * 2 + ["None"] * 3
    # within 100 points of the best, every setting qualifies: the fastest is chosen
    fastest = min(rows, key=lambda row: float(row[1]))
    assert f"of the best: {fastest[2]}" in table
    decoding = json.loads((model_copy / METADATA_FILE).read_text())["decoding"]
    assert decoding == {
        **json.loads(fastest[2]),
        **({"lm": "lm.json"} if "lm_weight" in decoding else {}),
    }
    for bad in ("0", "-3", "wide"):
        result = CliRunner().invoke(app, ["lm", "tune", str(model_copy), "--data",
                                          str(val_lines), "--rank-gaps", bad])  # fmt: skip
        assert result.exit_code == 2 and "rank gaps must be" in " ".join(result.output.split())


def test_beam_with_a_language_model_reads_through_every_runtime(model_copy, val_lines, tmp_path):
    invoke("lm", "fit", str(tmp_path / "lm.json"), "--dataset", str(val_lines), "--no-corpus")
    shutil.copyfile(tmp_path / "lm.json", model_copy / "lm.json")
    meta = json.loads((model_copy / METADATA_FILE).read_text())
    meta["decoding"] = {"method": "beam", "beam_width": 4, "lm": "lm.json", "lm_weight": 0.3}
    (model_copy / METADATA_FILE).write_text(json.dumps(meta))
    images = [render_line(w) for w in SMOKE_WORDS]
    for backend in ("onnx", "torchscript", "eager"):
        recognizer = Recognizer.from_path(model_copy, backend=backend, threads=1)
        assert recognizer.runtime.decoder.lm is not None, backend
        assert [p.text for p in recognizer.predict(images, "line")] == list(SMOKE_WORDS)
    greedy = Recognizer.from_path(model_copy, backend="onnx", threads=1, decoding="greedy")
    assert greedy.runtime.decoder.method == "greedy"


def test_a_missing_or_bad_decoding_section_is_a_clear_load_error(model_copy):
    meta = json.loads((model_copy / METADATA_FILE).read_text())
    meta["decoding"] = {"method": "beam", "lm": "lm.json", "lm_weight": 0.3}
    (model_copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="has no lm.json"):
        Recognizer.from_path(model_copy, backend="onnx")
    meta["decoding"] = {"method": "beam", "beam": 4}
    (model_copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="unknown decoding settings"):
        Recognizer.from_path(model_copy, backend="onnx")
    del meta["decoding"]
    (model_copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="'greedy' or 'beam'"):
        Recognizer.from_path(model_copy, backend="onnx", decoding="fast")


def labels_folder(root: Path, rows: list[tuple[str, str]]) -> Path:
    """A folder of rendered lines with labels.tsv (file, page, text), as the shared sets are."""
    (root / "lines").mkdir(parents=True)
    lines = ["file\tpage\ttext"]
    for index, (page, text) in enumerate(rows):
        render_line("line").save(root / "lines" / f"{index}.png")
        lines.append(f"lines/{index}.png\t{page}\t{text}")
    (root / "labels.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


SHIPPED = Path(__file__).resolve().parents[2] / "models" / "hooker"
FRENCH = ["il a été reçu par sa sœur", "l’été fut doux ∞", "cet été nous avons été là"]
ENGLISH = ["my dear Hooker", "the seeds came to Kew", "the summer was warm"]


def test_fit_counts_the_train_lines_of_several_datasets_in_one_latin_lm(tmp_path):
    from quill.data.manifest import assign_splits
    from quill.models.language_model import CharNGramLM
    from quill.vocab import Tokenizer

    # pages whose hash puts them in train, so every line below is counted
    pages = [
        p for p, split in assign_splits(f"p{i}" for i in range(40)).items() if split == "train"
    ]
    french = labels_folder(tmp_path / "fr", [(pages[i], t) for i, t in enumerate(FRENCH * 3)])
    english = labels_folder(tmp_path / "en", [(pages[0], t) for t in ENGLISH])
    out = tmp_path / "lm.json"
    output = invoke("lm", "fit", str(out), "--dataset", str(french), "--dataset", str(english),
                    "--vocabulary", "latin", "--no-corpus", "--order", "4")  # fmt: skip
    assert f"{french}: 9 train lines" in output and f"{english}: 3 train lines" in output
    assert "3 characters outside the latin vocabulary (1 distinct)" in output
    assert "'∞' ×3" in output and "(174 characters)" in output
    lm = CharNGramLM.load(out)
    assert lm.tokenizer == Tokenizer.named("latin")
    assert lm.counts["été"][" "] == 12 and lm.counts["Ke"] == {"w": 1}
    assert lm.char_log_prob("il a ét", "é") > lm.char_log_prob("il a ét", "e")

    # the shipped model's character set is ASCII: the accents are reported, not dropped silently
    output = invoke("lm", "fit", str(out), "--dataset", str(french), "--no-corpus",
                    "--model", str(SHIPPED))  # fmt: skip
    assert f"outside the vocabulary of {SHIPPED}" in output and "'é' ×" in output
    assert CharNGramLM.load(out).tokenizer == Tokenizer()


def test_tune_refuses_a_language_model_of_another_character_set(model_copy, val_lines, tmp_path):
    lm_path = tmp_path / "lm.json"
    invoke("lm", "fit", str(lm_path), "--dataset", str(val_lines), "--no-corpus",
           "--vocabulary", "latin")  # fmt: skip
    result = CliRunner().invoke(app, ["lm", "tune", str(model_copy), "--data", str(val_lines),
                                      "--lm", str(lm_path)])  # fmt: skip
    assert result.exit_code == 2
    assert "fitted with another character set" in " ".join(result.output.split())


def test_a_staged_language_model_of_another_character_set_is_a_load_error(
    model_copy, val_lines, tmp_path
):
    """An ASCII model whose decoding names a Latin LM would have every class scored as
    another character: loading it says so instead of reading wrongly."""
    invoke("lm", "fit", str(tmp_path / "lm.json"), "--dataset", str(val_lines),
           "--no-corpus", "--vocabulary", "latin")  # fmt: skip
    shutil.copyfile(tmp_path / "lm.json", model_copy / "lm.json")
    meta = json.loads((model_copy / METADATA_FILE).read_text())
    meta["decoding"] = {"method": "beam", "lm": "lm.json", "lm_weight": 0.3}
    (model_copy / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="fitted with another character set"):
        Recognizer.from_path(model_copy, backend="onnx")


def test_a_blank_tuning_line_is_scored_as_read_empty(smoke_model, tmp_path):
    """The recognizer does not run the model on blank paper; tuning keeps its place in the
    line order and scores it as the empty reading it gets."""
    from PIL import Image

    from quill.inference import decoding_tuning

    render_line("ink").save(tmp_path / "ink.png")
    Image.new("RGB", (600, 90), (246, 242, 232)).save(tmp_path / "blank.png")
    recognizer = Recognizer.from_path(smoke_model, backend="onnx", threads=1, decoding="greedy")
    batches = decoding_tuning.record_log_probs(
        recognizer, [tmp_path / "ink.png", tmp_path / "blank.png"]
    )
    assert len(batches) == 2 and batches[1] == (None, None)
    results = decoding_tuning.tune(
        batches, ["ink", ""], recognizer.tokenizer.decode, None, [], [], [4]
    )
    assert {r.cer for r in results} == {0.0}
