"""Vertical shifts: the network read at several heights of a line, its outputs averaged.

The arithmetic (shifting, averaging) is checked against plain NumPy; the decoding section
keeps and validates the shifts; `quill lm shifts` measures and writes them; and the shipped
default model, which reads with shifts, reads real unseen writers' lines no worse for them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.data.manifest import Manifest
from quill.data.readers.folder import read_folder
from quill.evaluation import corpus_cer
from quill.inference.recognizer import Recognizer
from quill.inference.shifts import ONE_PASS, averaged, forward_shifted, shifted
from quill.model_files import METADATA_FILE
from quill.staged_model import DecodingConfig, ModelLoadError, StagedModel

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO_ROOT / "models" / "default"
COPISTE = REPO_ROOT.parent / "shared" / "datasets" / "copiste"
#: A result row of `quill lm shifts`: CER, ms per line, the shifts.
ROW = re.compile(r"^ *(\d+\.\d{4}) +\d+\.\d{2}  (\[.*\])$")


def test_shifting_moves_each_image_and_fills_with_paper():
    rng = np.random.default_rng(0)
    images = rng.random((2, 1, 6, 5)).astype(np.float32)  # (B, 1, H, W)
    out = shifted(images, [0, 2, -1])
    assert out.shape == (6, 1, 6, 5)
    assert np.array_equal(out[0:2], images)
    assert np.array_equal(out[2:4, :, 2:], images[:, :, :4]) and not out[2:4, :, :2].any()
    assert np.array_equal(out[4:6, :, :5], images[:, :, 1:]) and not out[4:6, :, 5:].any()


def test_averaging_is_the_log_of_the_mean_probability():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (3 * 2, 7, 5))
    log_probs = (logits - np.log(np.exp(logits).sum(-1, keepdims=True))).astype(np.float32)
    expected = np.log(np.exp(log_probs.astype(np.float64)).reshape(3, 2, 7, 5).mean(0))
    result = averaged(log_probs, 3)
    assert result.shape == (2, 7, 5) and result.dtype == np.float32
    assert np.allclose(result, expected, atol=1e-5)
    assert np.allclose(np.exp(result).sum(-1), 1.0, atol=1e-5)  # still distributions
    # frames far below float32's smallest probability do not turn into -inf
    assert np.isfinite(averaged(np.full((2, 1, 3), -200.0, np.float32), 2)).all()


def test_forward_runs_the_network_once_over_every_shift():
    calls = []

    def network(images, widths):
        calls.append((images.shape, widths.tolist()))
        frames = images.sum(axis=(1, 2))[:, :, None]  # (rows, W, 1): what the rows hold
        return np.log(np.concatenate([frames, 1 + frames], -1) + 1), widths // 2

    images = np.ones((2, 1, 4, 3), np.float32)
    widths = np.array([3, 2])
    assert np.array_equal(forward_shifted(network, images, widths, ONE_PASS)[0],
                          network(images, widths)[0])  # fmt: skip
    calls.clear()
    log_probs, lengths = forward_shifted(network, images, widths, (0, -1, 1))
    assert calls == [((6, 1, 4, 3), [3, 2, 3, 2, 3, 2])]  # one call, every shift stacked
    assert log_probs.shape == (2, 3, 2) and lengths.tolist() == [1, 1]


def test_the_decoding_section_keeps_and_checks_its_shifts():
    decoding = DecodingConfig.from_dict({"method": "beam", "shifts": [0, -2, 2]})
    assert decoding.shifts == (0, -2, 2)
    assert json.loads(json.dumps(decoding.to_dict()))["shifts"] == [0, -2, 2]
    assert "shifts" not in decoding.decoder_settings()  # the network's, not the decoder's
    for bad, message in [
        ([], "at least one shift"),
        ([0, 9], "more than the 8 allowed"),
        ([0, 1.5], "whole pixels"),
        ([0, True], "whole pixels"),
        ([2, 2], "repeat a shift"),
        ("0,2", "a list"),
    ]:
        with pytest.raises(ModelLoadError, match=rf"decoding\.shifts: .*{message}"):
            DecodingConfig.from_dict({"shifts": bad})


def test_a_model_without_shifts_reads_one_pass(smoke_model):
    recognizer = Recognizer.from_path(smoke_model, backend="onnx", threads=1)
    assert recognizer.shifts == ONE_PASS
    assert recognizer.describe()["shifts"] == [0]


def test_lm_shifts_measures_each_choice_and_writes_the_best(model_copy, val_lines):
    command = ["lm", "shifts", str(model_copy), "--data", str(val_lines)]
    result = CliRunner().invoke(app, [*command, "--shifts", "0", "--shifts", "0,-1,1", "--write"])
    assert result.exit_code == 0, result.output
    rows = [ROW.match(line) for line in result.output.splitlines()]
    measured = {row.group(2): float(row.group(1)) for row in rows if row}
    assert set(measured) == {"[0]", "[0, -1, 1]"}
    best = min(measured, key=lambda shifts: (measured[shifts], shifts != "[0]"))
    written = json.loads((model_copy / METADATA_FILE).read_text())["decoding"].get("shifts")
    assert written == (None if best == "[0]" else json.loads(best))
    card = (model_copy / "MODEL_CARD.md").read_text()
    assert card.count("## Shifts") == 1 and "4 val lines" in card
    assert f"Version `{StagedModel.load(model_copy).version}`" in card


def test_lm_shifts_refuses_a_shift_too_far(model_copy, val_lines):
    result = CliRunner().invoke(
        app, ["lm", "shifts", str(model_copy), "--data", str(val_lines), "--shifts", "0,12"]
    )
    assert result.exit_code == 2 and "more than the 8 allowed" in result.output


@pytest.mark.skipif(not COPISTE.is_dir(), reason="../shared/datasets/copiste is not here")
def test_the_default_model_reads_unseen_writers_no_worse_with_its_shifts(tmp_path):
    """models/default averages three heights of each line; on 48 lines of unseen writers
    (copiste's test split) that reads no worse than one pass, and differently."""
    assert StagedModel.load(DEFAULT_MODEL).decoding.shifts == (0, -2, 2)
    recognizer = Recognizer.from_path(DEFAULT_MODEL, backend="onnx", threads=1)
    latin = StagedModel.load(DEFAULT_MODEL).tokenizer
    manifest = read_folder(COPISTE, tmp_path / "copiste", tokenizer=latin).manifest
    samples = list(manifest.split("test"))[:48]
    paths = [str(manifest.path_of(s)) for s in samples]
    references = [s.text for s in samples]
    shifted_texts = [p.text for p in recognizer.predict(paths, kind="line")]
    recognizer.shifts = ONE_PASS
    single_texts = [p.text for p in recognizer.predict(paths, kind="line")]
    assert shifted_texts != single_texts
    assert corpus_cer(shifted_texts, references) <= corpus_cer(single_texts, references)


def _relabelled_copy(folder: Path, target: Path) -> Path:
    """``folder``'s lines under other texts (each word with "q" in front): a second data
    folder that the same model reads with a different CER."""
    manifest = Manifest.load(folder)
    shutil.copytree(folder, target)
    samples = [dataclasses.replace(s, text="q" + s.text) for s in manifest.samples]
    Manifest(target, samples).save()
    return target


@pytest.mark.parametrize("command", ["shifts", "tune"])
def test_lm_tuning_reports_each_data_folders_cer_beside_the_pooled_one(
    model_copy, val_lines, tmp_path, command
):
    """Tuning on several folders shows each folder's CER: the pooled figure alone once hid a
    choice that read Hooker better and unseen writers worse (docs/models.md, two heights)."""
    other = _relabelled_copy(val_lines, tmp_path / "other")
    options = ["--shifts", "0"] if command == "shifts" else ["--beam", "4"]
    runner = CliRunner()

    def run(*folders: Path, write: bool = False) -> dict[str, list[float]]:
        """Each setting's CERs: the pooled one, then one per folder when there are several."""
        data = [arg for folder in folders for arg in ("--data", str(folder))]
        more = ["--write"] if write else []
        result = runner.invoke(app, ["lm", command, str(model_copy), *data, *options, *more])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        header = next(line for line in lines if line.lstrip().startswith("CER")).split()
        expected = ["CER", "lines", "other"] if len(folders) > 1 else ["CER", "ms/line"]
        assert header[: len(expected)] == expected
        row = re.compile(r"^ *(\d+\.\d{4})((?: +\d+\.\d{4})*) +\d+\.\d{2}  (.+)$")
        return {
            match.group(3): [float(match.group(1)), *map(float, match.group(2).split())]
            for line in lines
            if (match := row.match(line))
        }

    alone, relabelled = run(val_lines), run(other)
    both = run(val_lines, other, write=True)
    assert both and set(both) == set(alone) == set(relabelled)
    for setting, (pooled, first, second) in both.items():
        # each folder's column is what that folder reads alone, in the order given
        assert (first, second) == (alone[setting][0], relabelled[setting][0])
        assert second > first and first <= pooled <= second
    # the model card keeps them: its table has the same columns, one row per setting
    card = (model_copy / "MODEL_CARD.md").read_text()
    section = card.split("## Shifts" if command == "shifts" else "## Decoding")[1].split("\n## ")[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert table[0].split("|")[2:5] == [" CER ", " CER lines ", " CER other "]
    assert len(table) == 2 + len(both)
