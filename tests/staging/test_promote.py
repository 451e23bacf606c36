"""``quill model promote``: the report card gates the champion alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from quill.cli import app
from quill.errors import EXIT_ERROR
from quill.monitoring.evaluate import EvaluationConfig, Item, Outcome, report_card, write_card

PROTECTED = "polarity=light-on-dark"


def card_regressing_a_protected_slice(version: str, out: Path) -> Path:
    """A real card: the candidate is better overall but worse on light-on-dark images."""
    config = EvaluationConfig(slices=["polarity"], min_slice_samples=2, protected=[PROTECTED])
    items = [
        Item(
            "ink pen",
            {"polarity": polarity},
            {
                "candidate": Outcome("ink pen" if polarity == "dark-on-light" else "ink pan", 10.0),
                "current": Outcome("ink pan" if polarity == "dark-on-light" else "ink pen", 10.0),
            },
        )
        for polarity in ["dark-on-light"] * 6 + ["light-on-dark"] * 2
    ]
    card = report_card(items, config, {"version": version}, {"version": "current-1"})
    return write_card(card, out)[0]


def test_promote_refuses_a_protected_slice_regression_unless_forced(
    smoke_model: Path, tmp_path: Path
) -> None:
    meta = json.loads((smoke_model / "quill-model.json").read_text())
    card = card_regressing_a_protected_slice(meta["version"], tmp_path / "card")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = ["model", "promote", str(smoke_model), "--report-card", str(card)]
    command += ["--tracking-uri", uri]
    runner = CliRunner()
    client = MlflowClient(uri, registry_uri=uri)

    refused = runner.invoke(app, command)
    assert refused.exit_code == 1, refused.output
    assert f"protected:{PROTECTED}" in refused.output and "--force" in refused.output
    assert client.search_registered_models() == []

    forced = runner.invoke(app, [*command, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "promoting despite a failed check" in forced.output
    champion = client.get_model_version_by_alias(meta["name"], "champion")
    assert champion.tags["quill.model_version"] == meta["version"]


def test_promote_refuses_a_card_for_another_version(smoke_model: Path, tmp_path: Path) -> None:
    card = card_regressing_a_protected_slice("someone-else", tmp_path / "card")
    result = CliRunner().invoke(
        app,
        ["model", "promote", str(smoke_model), "--force", "--report-card", str(card)]
        + ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
    )
    assert result.exit_code == 1 and "someone-else" in result.output


def test_fetch_and_promote_are_model_commands_and_old_spellings_name_them(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["model", "--help"])
    assert listed.exit_code == 0 and "fetch" in listed.output and "promote" in listed.output
    for old, new in [
        (["--fetch", "m@champion", "--out", str(tmp_path)], "quill model fetch"),
        ([str(tmp_path), "--promote"], "quill model promote"),
    ]:
        result = runner.invoke(app, ["stage", *old])
        assert result.exit_code == 2 and new in result.output, result.output
    not_staged = runner.invoke(app, ["model", "promote", str(tmp_path)])
    assert not_staged.exit_code == 2 and "quill-model.json" in not_staged.output


def test_a_file_that_is_not_a_report_card_is_an_input_error_not_a_refusal(
    smoke_model: Path, tmp_path: Path
) -> None:
    """Not JSON was a JSONDecodeError traceback; JSON without checks a KeyError. Neither is
    a verdict on the candidate (exit 1): the input is wrong (exit 2), and nothing is
    registered."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    not_json = tmp_path / "notes.txt"
    not_json.write_text("not a card\n")
    no_checks = tmp_path / "other.json"
    no_checks.write_text('{"candidate": {"version": "x"}}')
    for card, problem in (
        (not_json, "is not a report card (JSON)"),
        (no_checks, "is not a report card: no list of checks"),
    ):
        command = ["model", "promote", str(smoke_model), "--report-card", str(card)]
        result = CliRunner().invoke(app, [*command, "--tracking-uri", uri])
        assert result.exit_code == EXIT_ERROR, result.output
        assert f"error: {card} {problem}" in " ".join(result.output.split())
        assert "Traceback" not in result.output
    assert not (tmp_path / "mlflow.db").exists()


def card_improving_every_slice(version: str, out: Path) -> Path:
    """A real card that passes: the candidate reads every item the current model misreads."""
    config = EvaluationConfig(slices=["polarity"], min_slice_samples=2, protected=[PROTECTED])
    items = [
        Item(
            "ink pen",
            {"polarity": polarity},
            {"candidate": Outcome("ink pen", 10.0), "current": Outcome("ink pan", 10.0)},
        )
        for polarity in ["dark-on-light"] * 6 + ["light-on-dark"] * 2
    ]
    card = report_card(items, config, {"version": version}, {"version": "current-1"})
    return write_card(card, out)[0]


@pytest.mark.parametrize(
    ("scheme", "error"),
    [
        ("file://", "error: no model registry: tracking URI {uri} is a folder path, and MLflow "),
        ("foo://", "error: cannot open the model registry at {uri}: "),
    ],
)
def test_promote_into_a_store_mlflow_will_not_open_is_one_line(
    smoke_model: Path, tmp_path: Path, scheme: str, error: str
) -> None:
    """A folder store is refused with what to give instead (before MLflow's paragraph about
    its file store), a scheme MLflow has no registry for with MLflow's reason: one line each."""
    meta = json.loads((smoke_model / "quill-model.json").read_text())
    uri = f"{scheme}{tmp_path / 'noreg'}"
    error = error.format(uri=uri)
    passing = card_improving_every_slice(meta["version"], tmp_path / "passing")
    command = ["model", "promote", str(smoke_model), "--report-card", str(passing)]
    result = CliRunner().invoke(app, [*command, "--tracking-uri", uri])
    assert result.exit_code == EXIT_ERROR, result.output
    (line,) = result.output.splitlines()  # the error alone, on one line: no traceback
    assert line.startswith(error)
    # forced past a failed check: the warning, then the same one-line error
    card = card_regressing_a_protected_slice(meta["version"], tmp_path / "card")
    command = ["model", "promote", str(smoke_model), "--report-card", str(card), "--force"]
    result = CliRunner().invoke(app, [*command, "--tracking-uri", uri])
    assert result.exit_code == EXIT_ERROR, result.output
    warning, line = result.output.splitlines()
    assert warning.startswith("warning: promoting despite a failed check: ")
    assert line.startswith(error)
