"""`quill evaluate`: report cards for real staged models, and the promotion rule."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from quill.cli import app
from quill.monitoring.evaluate import EvaluationConfig, PromotionRefused, check_promotion


@pytest.fixture
def rules(tmp_path):
    path = tmp_path / "evaluation.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "version": "test-1",
                "slices": ["dataset", "source", "polarity", "length"],
                "min_slice_samples": 4,
                # Both models run the same weights: on a busy 2-core machine their timings differ
                # by noise only, which this test must not trip on.
                "rules": {"max_latency_ratio": 20},
                "protected": ["polarity=light-on-dark", "dataset=smoke"],
            }
        )
    )
    return path


def _evaluate(candidate, current, rules, out, *datasets, code):
    args = [
        "evaluate",
        "--candidate",
        str(candidate),
        "--current",
        str(current),
        "--config",
        str(rules),
        "--out",
        str(out),
        "--backend",
        "onnx",
        "--threads",
        "1",
    ]
    for dataset in datasets:
        args += ["--dataset", str(dataset)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    return json.loads((out / "report-card.json").read_text()), result.output


@pytest.mark.slow  # needs the staged smoke model
def test_report_cards_pass_an_equal_model_and_fail_a_broken_one(
    tmp_path, rules, smoke_model, broken_model, smoke_dataset, inverted_dataset
):
    smoke_set = tmp_path / "smoke"
    smoke_set.symlink_to(smoke_dataset)
    datasets = (smoke_set, inverted_dataset)

    card, output = _evaluate(smoke_model, smoke_model, rules, tmp_path / "same", *datasets, code=0)
    assert card["passed"] and "PASS" in output and card["samples"] == 20
    assert card["rules_version"] == "test-1"
    overall = card["overall"]
    assert overall["candidate"]["cer"] == overall["current"]["cer"] < 0.2
    # the same model read the same lines: every resample of their groups differs by 0
    assert overall["delta_cer_interval"] == [0.0, 0.0] and overall["groups"] >= 2
    slices = {s["slice"]: s for s in card["slices"]}
    assert {
        "dataset=smoke",
        "polarity=dark-on-light",
        "polarity=light-on-dark",
        "source=photos",
        "length=short",
    } <= set(slices)
    assert slices["polarity=light-on-dark"]["n"] == 8 and slices["dataset=smoke"]["protected"]

    card, output = _evaluate(
        broken_model, smoke_model, rules, tmp_path / "broken", *datasets, code=1
    )
    assert not card["passed"] and "FAIL" in output
    failed = {c["rule"] for c in card["checks"] if not c["passed"]}
    assert {
        "max_cer_regression",
        "protected:polarity=light-on-dark",
        "protected:dataset=smoke",
    } <= failed
    assert "max_latency_ratio" not in failed
    assert card["overall"]["candidate"]["cer"] > 0.5
    low, high = card["overall"]["delta_cer_interval"]
    assert (
        0 < low <= card["overall"]["candidate"]["cer"] - card["overall"]["current"]["cer"] <= high
    )
    markdown = (tmp_path / "broken" / "report-card.md").read_text()
    assert markdown.startswith("# Report card: smoke-broken vs smoke-") and "**FAIL**" in markdown
    assert f"{low:+.4f} to {high:+.4f}" in markdown

    # The promotion gate reads the card.
    card_path = tmp_path / "broken" / "report-card.json"
    with pytest.raises(PromotionRefused, match="protected:polarity=light-on-dark"):
        check_promotion(card_path, "smoke-broken")
    forced = check_promotion(card_path, "smoke-broken", force=True)
    assert any(f.startswith("max_cer_regression") for f in forced)
    with pytest.raises(PromotionRefused, match="evaluates 'smoke-broken'"):
        check_promotion(card_path, "another-model")
    assert check_promotion(tmp_path / "same" / "report-card.json", card["current"]["version"]) == []


def test_evaluate_names_what_is_missing(tmp_path, rules, smoke_dataset):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--candidate",
            str(tmp_path / "nope"),
            "--current",
            str(tmp_path / "nope"),
            "--config",
            str(rules),
            "--dataset",
            str(smoke_dataset),
        ],
    )
    assert result.exit_code == 2 and "--candidate" in result.output
    assert "quill-model.json is missing" in result.output
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--candidate",
            "a",
            "--current",
            "b",
            "--config",
            str(rules),
            "--dataset",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2 and "no evaluation set could be read" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [("rules: [unclosed\n", "is not a readable YAML file"), ("- a\n- b\n", "expected a mapping")],
)
def test_a_rules_file_that_is_not_a_mapping_of_settings_is_named(tmp_path, text, message):
    """An unparseable file was a yaml.parser.ParserError traceback (exit 1)."""
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message) as refused:
        EvaluationConfig.load(path)
    assert str(path) in str(refused.value)
