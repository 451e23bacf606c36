"""Run configs: files, extends chains, dotted overrides and the errors for typos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from quill.models import build_model, model_config
from quill.preprocess import PreprocessConfig
from quill.training.config import ConfigError, resolve_config, save_config
from quill.vocab import Tokenizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINING_CONFIGS = ("ctc_line_synth", "line_cnn_transformer", "resnet_transformer", "tiny")


@pytest.mark.parametrize("path", [CONFIGS / f"{n}.yaml" for n in TRAINING_CONFIGS], ids=str)
def test_every_shipped_config_resolves(path: Path) -> None:
    config = resolve_config(path)
    assert config["model"]["name"] in ("ctc_line", "line_cnn_transformer", "resnet_transformer")
    assert config["checkpoint"]["monitor"] == "val_cer"


def test_overrides_parse_yaml_values_and_keep_other_keys() -> None:
    config = resolve_config(
        CONFIGS / "ctc_line_synth.yaml",
        ["optim.lr=1e-4", "trainer.devices=2", "trainer.strategy=ddp", "+tracking.tags.foo=[1, 2]"],
    )
    assert config["optim"]["lr"] == pytest.approx(1e-4)
    assert (config["trainer"]["devices"], config["trainer"]["strategy"]) == (2, "ddp")
    assert config["tracking"]["tags"]["foo"] == [1, 2]
    assert config["model"]["config"]["hidden"] == 192  # from the file
    assert config["optim"]["betas"] == [0.9, 0.999]  # from the defaults


def test_typo_in_override_names_the_closest_key() -> None:
    with pytest.raises(ConfigError, match=r"optim\.lrr.*did you mean lr"):
        resolve_config(CONFIGS / "tiny.yaml", ["optim.lrr=0.1"])


@pytest.mark.parametrize("override", ["optim.lr", "=3", "optim..lr=1"])
def test_malformed_overrides_are_rejected(override: str) -> None:
    with pytest.raises(ConfigError):
        resolve_config(overrides=[override])


def test_extends_merges_parent_and_unknown_file_keys_fail(tmp_path: Path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {CONFIGS / 'tiny.yaml'}\noptim: {{lr: 0.5}}\n")
    config = resolve_config(child)
    assert config["optim"]["lr"] == 0.5
    assert config["model"]["config"]["hidden"] == 64  # inherited from tiny.yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer: {max_epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch.*max_epochs"):
        resolve_config(bad)


def test_extends_cycle_and_missing_file_are_clear(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        resolve_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = resolve_config(CONFIGS / "tiny.yaml", ["optim.lr=0.02"])
    path = save_config(config, tmp_path / "resolved.yaml")
    assert yaml.safe_load(path.read_text()) == config


def test_default_model_stages_chain_and_match_the_shipped_model() -> None:
    """scripts/train_hooker_model.sh starts each stage from the previous stage's weights, so
    every stage's architecture must hold the same tensors, but for the output rows when a
    stage changes the character set (they are copied by character); the last one shipped."""
    script = (CONFIGS.parent / "scripts" / "train_hooker_model.sh").read_text()
    stages = re.findall(r"train --config (configs/\S+\.yaml)", script)
    assert len(stages) >= 2 and stages[0] == "configs/default.yaml"
    configs = [resolve_config(CONFIGS.parent / stage) for stage in stages]
    sizes = [len(Tokenizer.named(config["model"]["vocabulary"])) for config in configs]
    shapes = [
        {
            name: tuple(tensor.shape)
            for name, tensor in build_model(
                config["model"]["name"], num_classes=size, **config["model"]["config"]
            )
            .state_dict()
            .items()
        }
        for config, size in zip(configs, sizes, strict=True)
    ]
    for before, after, rows_before, rows_after in zip(
        shapes, shapes[1:], sizes, sizes[1:], strict=False
    ):
        assert before.keys() == after.keys()
        changed = {name for name in after if after[name] != before[name]}
        assert all(
            before[name][0] == rows_before and after[name] == (rows_after, *before[name][1:])
            for name in changed
        )
        assert bool(changed) == (rows_before != rows_after)

    shipped = json.loads((CONFIGS.parent / "models" / "hooker" / "quill-model.json").read_text())
    final = configs[-1]["model"]
    assert shipped["model_name"] == final["name"]
    assert shipped["tokenizer"] == Tokenizer.named(final["vocabulary"]).to_dict()
    assert shipped["model_config"] == model_config(final["name"], **final["config"]).to_dict()


def test_fields_of_config_classes_are_overridden_without_plus() -> None:
    """data.preprocess, data.augment and model.config know their class's fields, so a field
    the config does not list is set as any other key; `+` still adds a key on purpose."""
    config = resolve_config(
        CONFIGS / "tiny.yaml",
        [
            "data.preprocess.max_width=1024",
            "data.augment=true",
            "data.augment.invert=0.9",
            "model.config.convs_per_block=1",
        ],
    )
    assert config["data"]["preprocess"] == {"kind": "line", "height": 32, "max_width": 1024}
    assert config["data"]["augment"] == {"invert": 0.9}  # true + one field: defaults but that
    assert config["model"]["config"]["convs_per_block"] == 1
    assert PreprocessConfig.from_dict(config["data"]["preprocess"]).max_width == 1024
    build_model("ctc_line", num_classes=10, **config["model"]["config"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.preprocess.hieght=48", r"data\.preprocess: unknown key 'hieght' \(did you mean "),
        ("data.augment.invrt=1", r"data\.augment: unknown key 'invrt'.*allowed: slant"),
        ("model.config.dropuot=0.1", r"model\.config: unknown key 'dropuot'.*'dropout'"),
        ("data.augment.invert=0.5", r"data\.augment is false: set data\.augment=true"),
    ],
)
def test_unknown_fields_of_config_classes_name_the_allowed_ones(
    override: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(CONFIGS / "tiny.yaml", [override])  # tiny.yaml: augment: false


def test_a_typo_in_a_config_class_section_of_a_file_is_an_error(tmp_path: Path) -> None:
    for text, key in [
        ("data: {preprocess: {hieght: 48}}\n", "hieght"),
        ("data: {augment: {invrt: 0.5}}\n", "invrt"),
    ]:
        path = tmp_path / "typo.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=rf"typo\.yaml: data\.\w+: unknown key '{key}'"):
            resolve_config(path)
    path.write_text("data: {augment: {invert: 0.5, blur_sigma: [0.1, 0.2]}}\n")
    assert resolve_config(path)["data"]["augment"] == {"invert": 0.5, "blur_sigma": [0.1, 0.2]}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=fast", "optim.lr must be a number, got 'fast'"),
        ("optim.lr=-0.01", "optim.lr must be a positive finite number, got -0.01"),
        ("optim.lr=.inf", "optim.lr must be a positive finite number, got inf"),
        ("optim.weight_decay=-1", "optim.weight_decay must be a zero or positive finite number"),
        ("data.batch_size=0", "data.batch_size must be a positive whole number, got 0"),
        ("data.batch_size=2.5", "data.batch_size must be a whole number, got 2.5"),
        ("data.batch_size=true", "data.batch_size must be a whole number, got True"),
        ("trainer.max_steps=0", "trainer.max_steps must be a positive whole number or -1"),
        ("trainer.max_epochs=ten", "trainer.max_epochs must be a whole number or -1 or null"),
    ],
)
def test_values_of_the_wrong_type_or_sign_name_their_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        resolve_config(CONFIGS / "tiny.yaml", [override])


def test_values_that_mean_unset_or_no_limit_are_accepted() -> None:
    config = resolve_config(
        CONFIGS / "tiny.yaml",
        ["data.eval_batch_size=null", "trainer.max_steps=-1", "optim.weight_decay=0"],
    )
    assert config["trainer"]["max_steps"] == -1 and config["optim"]["weight_decay"] == 0


def test_a_wrong_value_in_a_file_names_its_key(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("extends: " + str(CONFIGS / "tiny.yaml") + "\ndata: {batch_size: eight}\n")
    with pytest.raises(ConfigError, match="data.batch_size must be a whole number, got 'eight'"):
        resolve_config(path)


def test_an_unknown_model_name_suggests_the_registered_one() -> None:
    with pytest.raises(
        ConfigError, match="model.name 'ctc_lien' is not a model; did you mean ctc_line"
    ):
        resolve_config(CONFIGS / "tiny.yaml", ["model.name=ctc_lien"])
