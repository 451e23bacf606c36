"""StagedModel: the staged folder's typed metadata, read strictly, written back unchanged,
and a version that says how the model reads."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from quill.model_files import LM_FILE, METADATA_FILE, MODEL_CARD_FILE, ONNX_FILE
from quill.preprocess import PreprocessConfig
from quill.staged_model import DecodingConfig, ModelLoadError, StagedModel
from quill.vocab import Tokenizer

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in REPO.glob(f"models/*/{METADATA_FILE}"))
#: The versions the shipped models were released with (README, model cards): kept on load.
SHIPPED_VERSIONS = {
    "default": "quill-multiwriter-f7fbcc3fabc8",
    "hooker": "quill-default-af4adf13670b",
}


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_a_shipped_model_loads_typed_and_writes_back_the_same_json(
    folder: Path, tmp_path: Path
) -> None:
    model = StagedModel.load(folder)
    assert model.version == SHIPPED_VERSIONS[folder.name]
    assert model.family == "ctc" and isinstance(model.tokenizer, Tokenizer)
    assert isinstance(model.preprocess, PreprocessConfig) and model.preprocess.height == 48
    assert model.decoding is not None and model.decoding.method == "beam"
    assert model.lm_path == folder / LM_FILE
    assert model.files_of("onnx") == [folder / ONNX_FILE]
    assert model.lineage.run_id and model.metrics["val_cer"] > 0
    original = json.loads((folder / METADATA_FILE).read_text())
    assert model.to_dict() == original
    assert list(model.to_dict()) == list(original)  # key order too
    copy = dataclasses.replace(model, path=tmp_path)
    copy.save()
    assert json.loads((tmp_path / METADATA_FILE).read_text()) == original


def test_unknown_keys_and_decoding_settings_are_refused_by_name(tmp_path: Path) -> None:
    meta = json.loads((SHIPPED[0] / METADATA_FILE).read_text())

    def load(data: dict) -> StagedModel:
        (tmp_path / METADATA_FILE).write_text(json.dumps(data))
        return StagedModel.load(tmp_path)

    with pytest.raises(ModelLoadError, match=r"unknown key 'verison' \(did you mean 'version'"):
        load({**meta, "verison": "x"})
    with pytest.raises(ModelLoadError, match=r"unknown decoding settings \['beam'\]"):
        load({**meta, "decoding": {"method": "beam", "beam": 4}})
    with pytest.raises(ModelLoadError, match="lineage: unknown key 'run'"):
        load({**meta, "lineage": {"run": "x"}})
    with pytest.raises(ModelLoadError, match="format_version 2"):
        load({**meta, "format_version": 2})
    with pytest.raises(ModelLoadError, match="lacks 'tokenizer'"):
        load({k: v for k, v in meta.items() if k != "tokenizer"})
    with pytest.raises(ModelLoadError, match="unknown model family 'crnn'"):
        load({**meta, "family": "crnn"})
    with pytest.raises(ModelLoadError, match="hieght"):
        load({**meta, "preprocess": {"hieght": 48}})
    with pytest.raises(ModelLoadError, match="is missing"):
        StagedModel.load(tmp_path / "nowhere")
    # a newer format says so first, not that its new keys are unknown
    with pytest.raises(ModelLoadError, match="format_version 2"):
        load({**meta, "format_version": 2, "new_thing": 1})
    # a decoding's files are files of the folder: "../../etc/passwd" was read as an LM
    for name in ("../../etc/passwd", "/etc/passwd", "sub/lm.json", ""):
        with pytest.raises(ModelLoadError, match="decoding.lm: .* is not a file name in"):
            load({**meta, "decoding": {**meta["decoding"], "lm": name}})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("parameters", "lots", "a value of the wrong type"),
        ("model_config", [1, 2], "a value of the wrong type"),
        ("metrics", [1], "a value of the wrong type"),
        ("runtime_versions", 5, "a value of the wrong type"),
        ("max_output_length", "a", "a value of the wrong type"),
        ("tokenizer", "abc", "a tokenizer is a mapping with its 'characters'"),
    ],
)
def test_values_of_the_wrong_type_are_a_load_error(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    """Each was a traceback (ValueError, TypeError, AttributeError) from `quill predict` and
    from `quill serve`'s start, which catches load errors only."""
    meta = json.loads((SHIPPED[0] / METADATA_FILE).read_text())
    (tmp_path / METADATA_FILE).write_text(json.dumps({**meta, key: value}))
    with pytest.raises(ModelLoadError, match=message):
        StagedModel.load(tmp_path)


def _copy(tmp_path: Path) -> StagedModel:
    """The shipped Hooker model (named quill-default), its ONNX weights and LM only (what the
    version reads)."""
    folder = tmp_path / "model"
    shutil.copytree(REPO / "models" / "hooker", folder, ignore=shutil.ignore_patterns("model.pt"))
    return StagedModel.load(folder)


def test_the_version_hashes_weights_preprocessing_vocabulary_and_decoding(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    version = model.content_version()
    assert version.startswith("quill-default-") and len(version) == len("quill-default-") + 12
    assert model.content_version() == version  # a content hash: same files, same version
    changed = [
        dataclasses.replace(model, preprocess=dataclasses.replace(model.preprocess, height=64)),
        dataclasses.replace(model, tokenizer=Tokenizer(characters="abc")),
        dataclasses.replace(model, decoding=DecodingConfig(method="greedy")),
        dataclasses.replace(model, decoding=dataclasses.replace(model.decoding, lm_weight=0.1)),
    ]
    versions = {m.content_version() for m in changed}
    assert version not in versions and len(versions) == len(changed)
    # greedy with no section and greedy written out decode alike: one version
    greedy = dataclasses.replace(model, decoding=None)
    assert greedy.content_version() == changed[2].content_version()
    (model.path / LM_FILE).write_text((model.path / LM_FILE).read_text() + " ")
    other_lm = model.content_version()
    assert other_lm != version  # another language model file
    (model.path / ONNX_FILE).write_bytes(b"other weights")
    assert model.content_version() not in (version, other_lm)  # other weights


def test_a_new_decoding_makes_a_new_version_and_the_same_one_keeps_it(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    recorded = model.version
    again = model.set_decoding(model.decoding or DecodingConfig())
    assert again.version == recorded  # nothing changed: the recorded (older-rule) version stays
    tuned = model.set_decoding(DecodingConfig(method="beam", beam_width=4))
    assert tuned.version != recorded and tuned.version == tuned.content_version()
    assert StagedModel.load(model.path).version == tuned.version
    assert StagedModel.load(model.path).decoding == DecodingConfig(method="beam", beam_width=4)
    lm = tmp_path / "other-lm.json"
    lm.write_text((model.path / LM_FILE).read_text())
    with_lm = tuned.set_decoding(DecodingConfig(method="beam", lm_weight=0.5), lm)
    assert with_lm.decoding is not None and with_lm.decoding.lm == LM_FILE
    assert with_lm.version not in (recorded, tuned.version)
    assert with_lm.set_decoding(with_lm.decoding, lm).version == with_lm.version


def test_lm_tune_write_rewrites_the_card_header_with_the_new_version(tmp_path: Path) -> None:
    from quill.inference.decoding_tuning import TuningResult, attach

    model = _copy(tmp_path)
    card = model.card_path.read_text()
    assert f"Version `{model.version}`" in card
    setting = {"method": "beam", "beam_width": 4}
    written = attach(model.path, None, setting, [TuningResult(setting, 0.25, 3.0)], "3 val lines")
    assert written.version != model.version
    card = (model.path / MODEL_CARD_FILE).read_text()
    assert f"Version `{written.version}`" in card and model.version not in card.split("\n## ")[0]
    assert card.count("## Decoding") == 1 and "3 val lines" in card
    assert '| `{"method": "beam", "beam_width": 4}` | 0.2500 | 3.00 |' in card
    hooker_card = (REPO / "models" / "hooker" / MODEL_CARD_FILE).read_text()
    assert card.endswith(hooker_card.split("## Files")[1])
