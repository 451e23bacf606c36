"""`quill train` end to end on tiny real-format data, into a real MLflow SQLite store.

One CTC run is shared by several tests (each checks one part of what a run must record);
each other model gets its own smoke run; resume continues from the shared run's checkpoint.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import typer
from mlflow import MlflowClient
from typer.testing import CliRunner

from quill.training.cli import register
from quill.training.config import resolve_config
from quill.training.init_weights import load_initial_weights
from quill.training.module import create_module, load_module
from quill.training.tracking_store import TRACKING_URI_ENV
from quill.training.train import train
from quill.vocab import Tokenizer

from .conftest import TINY_CONFIG

runner = CliRunner()
# The training commands alone, as `quill` registers them (other layers' commands stay out).
app = typer.Typer()
register(app)


def quill(*args: str) -> str:
    """Run a quill command in-process; fail the test with its output if it fails."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def train_args(data: Path, uri: str, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        str(TINY_CONFIG),
        "--tracking-uri",
        uri,
        f"data.sources=[{{path: {data}, weight: 1}}]",
        f"output_dir={out}",
        *extra,
    ]


def tiny_config(data: Path, uri: str, out: Path, *overrides: str) -> dict:
    """tiny.yaml on ``data`` into the store at ``uri``, without system metrics."""
    return resolve_config(
        TINY_CONFIG,
        [
            f"data.sources=[{{path: {data}, weight: 1}}]",
            f"tracking.tracking_uri={uri}",
            f"output_dir={out}",
            "tracking.system_metrics=false",
            *overrides,
        ],
    )


def only_run(client: MlflowClient, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return runs[0]


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return found


@pytest.fixture(scope="module")
def ctc_run(tiny_lines: Path, tmp_path_factory: pytest.TempPathFactory):
    """One tracked CTC run (2 epochs); returns (client, run, output folder). System metrics
    are sampled every 10 minutes, far longer than the run: the sample held at its end is
    still logged."""
    folder = tmp_path_factory.mktemp("ctc_run")
    uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    output = quill(*train_args(tiny_lines, uri, folder / "out", "--experiment", "smoke",
                               "--profile", "tracking.system_metrics_interval_s=600"))  # fmt: skip
    (folder / "output.txt").write_text(output, encoding="utf-8")
    client = MlflowClient(uri)
    return client, only_run(client, "smoke"), folder


def test_run_records_metrics_of_every_stage(ctc_run) -> None:
    client, run, _ = ctc_run
    metrics = run.data.metrics
    for key in (
        "train_loss",
        "train_loss_epoch",
        "val_loss",
        "val_cer",
        "val_wer",
        "test_loss",
        "test_cer",
        "test_wer",
        "lr",
        "samples_per_sec",
        "samples_per_sec_epoch",
        "grad_norm/total",
        "weight_norm/total",
        "best_val_cer",
    ):
        assert key in metrics, key
    assert 0.0 <= metrics["test_cer"] <= 1.5
    assert any(key.startswith("system/cpu") for key in metrics)  # MLflow system metrics
    assert len(client.get_metric_history(run.info.run_id, "val_cer")) == 2  # one per epoch
    assert run.info.status == "FINISHED"


def test_run_records_config_code_and_environment(ctc_run) -> None:
    client, run, _ = ctc_run
    params, tags = run.data.params, run.data.tags
    assert params["optim.lr"] == "0.003" and params["model.name"] == "ctc_line"
    assert run.info.run_name.startswith("ctc_line-")  # not a seeded, repeating random name
    assert int(params["model_num_parameters"]) > 1000
    assert len(tags["mlflow.source.git.commit"]) == 40
    assert tags["mlflow.source.git.branch"]
    assert tags["quill.dataset_version"] == params["dataset_version"]
    files = artifact_paths(client, run.info.run_id)
    for expected in (
        "config/resolved.yaml",
        "environment/requirements.txt",
        "environment/environment.json",
        "model/summary.txt",
        "console.log",
        "data/dataset.json",
    ):
        assert expected in files, expected
    if tags["quill.git.dirty"] == "True":
        assert "code/diff.patch" in files
    requirements = Path(client.download_artifacts(run.info.run_id, "environment/requirements.txt"))
    assert "torch==" in requirements.read_text()
    console = Path(client.download_artifacts(run.info.run_id, "console.log")).read_text()
    assert "finished" in console and "val_cer" in console


def test_prediction_table_has_images_truth_and_predictions(ctc_run) -> None:
    client, run, _ = ctc_run
    tables = [p for p in artifact_paths(client, run.info.run_id, "predictions")]
    assert tables == ["predictions/epoch_000.json", "predictions/epoch_001.json"]
    table = json.loads(Path(client.download_artifacts(run.info.run_id, tables[-1])).read_text())
    assert table["columns"][:3] == ["image", "ground_truth", "prediction"]
    assert len(table["data"]) == 4  # tracking.prediction_table_samples in tiny.yaml
    image_cell = table["data"][0][0]
    assert image_cell["type"] == "image"
    assert client.download_artifacts(run.info.run_id, image_cell["filepath"]).endswith(".png")


def test_checkpoints_are_artifacts_with_the_best_marked(ctc_run) -> None:
    client, run, _ = ctc_run
    files = artifact_paths(client, run.info.run_id, "checkpoints")
    best = run.data.tags["quill.best_checkpoint"]
    assert best in files and "checkpoints/last.ckpt" in files
    index = json.loads(
        Path(client.download_artifacts(run.info.run_id, "checkpoints/index.json")).read_text()
    )
    assert [c["file"] for c in index["checkpoints"] if c["best"]] == [best]
    module = load_module(client.download_artifacts(run.info.run_id, best))
    assert module.hparams["dataset_version"] == run.data.tags["quill.dataset_version"]
    assert module.hparams["config"]["optim"]["lr"] == pytest.approx(0.003)


def test_profile_trace_and_summary_are_artifacts(ctc_run) -> None:
    client, run, _ = ctc_run
    files = artifact_paths(client, run.info.run_id, "profile")
    assert {
        "profile/trace.json",
        "profile/operators.txt",
        "profile/summary.txt",
        "profile/steps.json",
    } <= set(files)
    trace = json.loads(
        Path(client.download_artifacts(run.info.run_id, "profile/trace.json")).read_text()
    )
    names = {event.get("name", "") for event in trace["traceEvents"]}
    assert any(name.startswith("ProfilerStep#") for name in names)
    assert any("conv" in name for name in names)  # the model's operators are in it
    summary = Path(client.download_artifacts(run.info.run_id, "profile/summary.txt")).read_text()
    assert "median data wait per step" in summary and "verdict:" in summary


def test_runs_commands_find_and_compare_the_run(ctc_run, tmp_path: Path) -> None:
    client, run, _ = ctc_run
    uri = client.tracking_uri
    listed = json.loads(quill("runs", "list", "--tracking-uri", uri, "--json"))
    assert [r["run"] for r in listed] == [run.info.run_id]
    none = json.loads(
        quill("runs", "list", "--tracking-uri", uri, "--json", "--filter", "metrics.val_cer < -1")
    )
    assert none == []
    shown = json.loads(quill("runs", "show", run.info.run_id[:8], "--tracking-uri", uri, "--json"))
    assert shown["params"]["model.name"] == "ctc_line"
    report = tmp_path / "report.html"
    quill("runs", "report", run.info.run_id[:8], "--tracking-uri", uri, "--out", str(report))
    page = report.read_text()
    assert page.count("data:image/png;base64,") >= 3 + 4  # three charts, four table images
    assert "Generalization gap" in page and "ground_truth" in page


def test_unknown_run_is_a_clear_error(ctc_run) -> None:
    client, _, _ = ctc_run
    result = runner.invoke(
        app, ["runs", "show", "nosuchrun", "--tracking-uri", client.tracking_uri]
    )
    assert result.exit_code == 2 and "no run with id" in result.output


def test_the_summary_shows_the_best_validation_cer_the_test_figures_come_from(ctc_run) -> None:
    """It showed the last epoch's, beside test figures of the best epoch's checkpoint."""
    _, run, folder = ctc_run
    output = (folder / "output.txt").read_text(encoding="utf-8")
    best = run.data.metrics["best_val_cer"]
    assert f"  val_cer    {best:.4f}  (best)" in output
    assert "  val_wer    " in output and "(last epoch)" in output


def test_resume_continues_from_the_checkpoint(ctc_run, tiny_lines: Path) -> None:
    client, run, folder = ctc_run
    last = folder / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
    quill(
        *train_args(
            tiny_lines,
            client.tracking_uri,
            folder / "out",
            "--experiment",
            "resumed",
            "--resume",
            str(last),
            "--max-epochs",
            "3",
        )
    )
    resumed = only_run(client, "resumed")
    assert resumed.data.tags["quill.resumed_from_checkpoint"] == str(last)
    epochs = client.get_metric_history(resumed.info.run_id, "val_cer")
    assert len(epochs) == 1  # only the third epoch ran
    first_step = min(m.step for m in client.get_metric_history(resumed.info.run_id, "train_loss"))
    assert first_step >= torch.load(last, weights_only=False)["global_step"]


def test_a_checkpoint_no_run_can_go_on_from_is_refused_before_a_run_exists(
    ctc_run, tiny_lines: Path, tmp_path: Path
) -> None:
    """Each was a traceback after the data was read, leaving a FAILED run tagged as
    resumed: a truncated file, an averaged soup (no optimiser state), another network size."""
    client, run, folder = ctc_run
    last = folder / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[:3000])
    soup = tmp_path / "soup.ckpt"
    torch.save(
        {k: v for k, v in torch.load(last, weights_only=False).items() if k != "optimizer_states"},
        soup,
    )
    cases = [
        (truncated, [], "is not a readable PyTorch checkpoint"),
        (soup, [], "holds no optimiser state"),
        (last, ["model.config.hidden=96"], "does not fit this config's ctc_line"),
    ]
    for checkpoint, extra, message in cases:
        args = ["--experiment", "refused", "--resume", str(checkpoint), *extra]
        result = runner.invoke(app, train_args(tiny_lines, client.tracking_uri, tmp_path, *args))
        assert result.exit_code == 2, result.output
        assert f"error: --resume {checkpoint}" in result.output and message in result.output
    assert client.get_experiment_by_name("refused") is None


def test_init_from_starts_a_fresh_run_from_checkpoint_weights(ctc_run, tiny_lines: Path) -> None:
    client, run, folder = ctc_run
    last = folder / "out" / run.info.run_id / "checkpoints" / "last.ckpt"
    finetune = ["--experiment", "finetuned", "--init-from", str(last), "--max-epochs", "1"]
    quill(*train_args(tiny_lines, client.tracking_uri, folder / "out", *finetune))
    finetuned = only_run(client, "finetuned")
    assert finetuned.data.tags["quill.initialised_from"] == str(last)
    # a fresh schedule: its steps count from 0, unlike a resumed run's
    assert min(m.step for m in client.get_metric_history(finetuned.info.run_id, "lr")) == 0

    fresh = load_module(str(last))
    module = create_module(
        fresh.hparams.config, Tokenizer(), fresh.hparams.preprocess, "any-version"
    )
    load_initial_weights(module.model, last, Tokenizer())
    trained = fresh.model.state_dict()
    for name, tensor in module.model.state_dict().items():
        assert torch.equal(tensor, trained[name]), name


SEQ2SEQ = {
    "line_cnn_transformer": [
        "model.name=line_cnn_transformer",
        "model.config={height: 32, channels: [16, 32], dim: 32, heads: 2, decoder_layers: 1, "
        "ff_dim: 64, dropout: 0.0, max_output_length: 48}",
    ],
    "resnet_transformer": [
        "model.name=resnet_transformer",
        "model.config={resnet_blocks: [1, 1], resnet_widths: [8, 16], dim: 32, heads: 2, "
        "decoder_layers: 1, ff_dim: 64, dropout: 0.0, max_output_length: 40}",
        "data.preprocess={kind: paragraph, paragraph_height: 64, paragraph_width: 192}",
        "data.batch_size=4",
    ],
}


@pytest.mark.parametrize(
    "model",
    ["line_cnn_transformer", pytest.param("resnet_transformer", marks=pytest.mark.slow)],
)
def test_seq2seq_models_train_and_are_tracked(
    model: str, tiny_lines: Path, tiny_paragraphs: Path, tmp_path: Path, tracking_uri: str
) -> None:
    data = tiny_paragraphs if model == "resnet_transformer" else tiny_lines
    quill(
        *train_args(
            data,
            tracking_uri,
            tmp_path / "out",
            "--max-epochs",
            "1",
            "--limit-train-batches",
            "2",
            "--experiment",
            model,
            *SEQ2SEQ[model],
        )
    )
    client = MlflowClient(tracking_uri)
    run = only_run(client, model)
    assert run.data.tags["quill.model_family"] == "seq2seq"
    assert {"val_cer", "test_cer", "train_loss", "lr"} <= set(run.data.metrics)
    assert run.data.tags["mlflow.source.git.commit"]
    files = artifact_paths(client, run.info.run_id)
    assert "predictions/epoch_000.json" in files
    assert run.data.tags["quill.best_checkpoint"] in files


def test_optional_loggers_fail_clearly_when_not_installed(tiny_lines: Path, tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed here")
    store = tmp_path / "unused.db"
    result = runner.invoke(
        app, train_args(tiny_lines, f"sqlite:///{store}", tmp_path / "out", "--logger", "wandb")
    )
    assert result.exit_code == 2 and "pip install wandb" in result.output
    assert not store.exists() and not (tmp_path / "out").exists()  # refused before any run


def test_csv_logger_keeps_the_same_record_in_files(tiny_lines: Path, tmp_path: Path) -> None:
    quill(
        *train_args(
            tiny_lines,
            f"sqlite:///{tmp_path / 'unused.db'}",  # absolute: the check below can fail
            tmp_path / "out",
            "--logger",
            "csv",
            "--max-epochs",
            "1",
            "--limit-train-batches",
            "1",
        )
    )
    (run_dir,) = (tmp_path / "out").iterdir()
    artifacts = run_dir / "artifacts"
    assert (artifacts / "config" / "resolved.yaml").is_file()
    assert (artifacts / "predictions" / "epoch_000.json").is_file()
    assert (artifacts / "checkpoints" / "index.json").is_file()
    assert "val_cer" in (run_dir / "tiny" / "metrics.csv").read_text()
    assert not (tmp_path / "unused.db").exists()


def test_missing_data_and_bad_override_fail_clearly(
    tmp_path: Path, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, train_args(tmp_path / "nothing", tracking_uri, tmp_path / "out"))
    assert result.exit_code == 2 and "dataset folder not found" in result.output
    assert not (tmp_path / "out").exists()
    # No store or output folder named: had it gone on, its defaults (the project's store,
    # outputs/runs) would have been written in an empty folder of tmp_path, not the repository.
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv(TRACKING_URI_ENV, raising=False)
    result = runner.invoke(app, ["train", "--config", str(TINY_CONFIG), "optim.lrr=1"])
    assert result.exit_code == 2 and "did you mean lr" in result.output
    assert list(elsewhere.iterdir()) == []


class SlowOutsideSteps(L.Callback):
    """What costs time between training steps and is neither data nor compute: a slow
    synchronous logger after every batch, and a long first validation."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        time.sleep(0.2)

    def on_validation_start(self, trainer, module) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            time.sleep(3.0)


def test_throughput_and_profile_time_only_what_they_name(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """samples_per_sec_epoch counted the end-of-epoch validation as training time; an
    interval of more steps than an epoch has never logged samples_per_sec (the count restarted
    each epoch); the profiler's data wait held the logger's writes between steps."""
    config = tiny_config(
        tiny_lines,
        tracking_uri,
        tmp_path / "out",
        "trainer.log_every_n_steps=4",  # 3 steps an epoch, 6 in all
        "profile.enabled=true",
    )
    result = train(config, extra_callbacks=[SlowOutsideSteps()])
    client = MlflowClient(tracking_uri)
    assert [m.step for m in client.get_metric_history(result.run_id, "samples_per_sec")] == [3]
    epochs = client.get_metric_history(result.run_id, "samples_per_sec_epoch")
    first = min(epochs, key=lambda m: m.step).value
    assert first > 24 / 3.0  # 24 lines trained in well under the 3 s validation
    steps = json.loads((result.output_dir / "profile" / "steps.json").read_text())
    assert statistics.median(s["data_wait_ms"] for s in steps[1:]) < 100  # not the 200 ms


def test_fast_dev_run_says_its_metrics_are_not_recorded(
    tiny_lines: Path, tmp_path: Path, tracking_uri: str
) -> None:
    """It printed val_cer and test_cer and sent the reader to `quill runs show`, whose run
    had no metrics: Lightning swaps in a dummy logger for fast-dev-run."""
    output = quill(*train_args(tiny_lines, tracking_uri, tmp_path / "out", "--fast-dev-run"))
    assert "fast-dev-run: these figures are not recorded in the run" in output
    assert "quill runs show" not in output
    run = only_run(MlflowClient(tracking_uri), "tiny")
    assert run.data.tags["quill.fast_dev_run"] == "true"
    assert "val_cer" not in run.data.metrics
