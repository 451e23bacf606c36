"""The whole model-development path on tiny data: synthesise -> train -> stage -> serve -> ask.

Every step is the real command a user runs (``quill data synth``, ``quill train``,
``quill stage RUN_ID``), against a real MLflow SQLite store, and the staged model answers
over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from quill.cli import app
from quill.serving.runner import ApiServer
from quill.serving.settings import ServingSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_train_stage_serve_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from mlflow.tracking import MlflowClient

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)  # run outputs land here, not in the checkout
    runner = CliRunner()
    data = tmp_path / "data"
    synth = runner.invoke(
        app, ["data", "synth", "--out", str(data), "-n", "24", "--seed", "1", "--workers", "1"]
    )
    assert synth.exit_code == 0, synth.output

    tracking_uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    train = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(REPO / "configs" / "tiny.yaml"),
            f"data.sources=[{{path: {data}, weight: 1}}]",
            "--max-epochs",
            "1",
            "--tracking-uri",
            tracking_uri,
        ],
    )
    assert train.exit_code == 0, train.output
    [run] = MlflowClient(tracking_uri).search_runs(
        [e.experiment_id for e in MlflowClient(tracking_uri).search_experiments()]
    )

    staged = tmp_path / "models" / "e2e"
    stage = runner.invoke(
        app, ["stage", run.info.run_id, "--out", str(staged), "--tracking-uri", tracking_uri]
    )
    assert stage.exit_code == 0, stage.output
    meta = json.loads((staged / "quill-model.json").read_text())
    assert meta["lineage"]["run_id"] == run.info.run_id
    assert meta["lineage"]["dataset_version"]

    sample = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])
    image = base64.b64encode((data / sample["image"]).read_bytes()).decode()
    settings = ServingSettings(model_dir=staged, threads=1, monitoring_url="off")
    with ApiServer(settings) as server:
        response = httpx.post(f"{server.url}/v1/predict", json={"image": image}, timeout=60)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert isinstance(answer["text"], str) and 0.0 <= answer["confidence"] <= 1.0
    assert answer["model_version"] == meta["version"]
