"""Trackers: one interface over MLflow and the file-based loggers, and the run record.

A :class:`Tracker` takes a run's artifacts, tags and params, whichever logger Lightning
writes metrics to: :class:`MLflowTracker` sends them to the MLflow run, the base class writes
them into the TensorBoard, CSV or W&B logger's folder, :class:`NullTracker` drops them (DDP
ranks other than 0). :func:`record_run_start` records what describes a run before it trains:
the resolved config, git state and ``diff.patch``, environment and ``pip freeze``, the dataset
version, the model summary and parameter count; :func:`system_metrics` samples the machine
into the MLflow run meanwhile.

Where runs are recorded (the tracking URI) is :mod:`quill.training.tracking_store`; what is
captured about the code and machine, :mod:`quill.training.environment`; the console log,
:mod:`quill.training.console`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

import quill
from quill.training.config import flatten
from quill.training.environment import (
    environment_info,
    git_diff_patch,
    git_info,
    parameter_count,
    pip_freeze,
)

# mlflow takes ~2 s to import: MLflowTracker and system_metrics import it where they use it,
# so a run with another logger (csv, tensorboard, wandb) never pays for it.

log = logging.getLogger(__name__)

LOGGERS = ("mlflow", "tensorboard", "wandb", "csv")
#: MLflow refuses parameter values longer than this.
MAX_PARAM_LENGTH = 6000


class Tracker:
    """Artifacts, tags and params of one run, whichever logger Lightning writes metrics to.

    This base class writes into a local folder (used for the CSV, TensorBoard and W&B
    loggers); :class:`MLflowTracker` sends everything to the MLflow run instead.
    """

    def __init__(self, folder: Path, run_id: str):
        self.folder = folder
        self.run_id = run_id
        self.folder.mkdir(parents=True, exist_ok=True)

    def _target(self, artifact_file: str) -> Path:
        path = self.folder / artifact_file
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        target = self._target(
            f"{artifact_dir}/{local_path.name}" if artifact_dir else local_path.name
        )
        if target.resolve() != Path(local_path).resolve():
            shutil.copy2(local_path, target)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._target(artifact_file).write_text(text, encoding="utf-8")

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.log_text(json.dumps(data, indent=2, default=str), artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        image.save(self._target(artifact_file))

    def log_table(self, columns: Mapping[str, Sequence[Any]], artifact_file: str) -> None:
        """A table in MLflow's layout (``columns`` + ``data`` rows), image cells as PNG files."""
        stem = artifact_file.rsplit(".", 1)[0]
        rows: list[list[Any]] = []
        for i in range(len(next(iter(columns.values())))):
            row = []
            for key, values in columns.items():
                value = values[i]
                if hasattr(value, "save"):
                    name = f"table_images/{stem}/{i:03d}_{key}.png"
                    self.log_image(value, name)
                    value = {"type": "image", "filepath": name}
                row.append(value)
            rows.append(row)
        self.log_dict({"columns": list(columns), "data": rows}, artifact_file)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        existing = self._read("tags.json")
        self.log_dict({**existing, **{k: str(v) for k, v in tags.items()}}, "tags.json")

    def log_params(self, params: Mapping[str, Any]) -> None:
        existing = self._read("params.json")
        self.log_dict({**existing, **{k: str(v) for k, v in params.items()}}, "params.json")

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        with open(self._target("extra_metrics.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "value": value, "step": step}) + "\n")

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        """Loggers without histograms ignore this; TensorBoard draws them."""

    def finish(self, status: str = "FINISHED") -> None:
        self.set_tags({"quill.status": status})

    def _read(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


class NullTracker(Tracker):
    """Records nothing: what DDP ranks other than 0 hold, so only one process writes."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.gettempdir())
        self.run_id = ""

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_image(self, image: Any, artifact_file: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


class TensorBoardTracker(Tracker):
    """Files in the TensorBoard log folder, histograms in TensorBoard itself."""

    def __init__(self, folder: Path, run_id: str, writer: Any):
        super().__init__(folder, run_id)
        self.writer = writer

    def log_histogram(self, name: str, values: Any, step: int) -> None:
        self.writer.add_histogram(name, values, step)


class MLflowTracker(Tracker):
    """Everything goes to one MLflow run through the tracking client: no local folder (one
    made here was never written to and was left behind in the temp dir by every run)."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_artifact(self, local_path: Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_dir)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, json.loads(json.dumps(data, default=str)), artifact_file)

    def log_image(self, image: Any, artifact_file: str) -> None:
        self.client.log_image(self.run_id, image, artifact_file=artifact_file)

    #: MLflow lists a run's tables in one tag (``mlflow.loggedArtifacts``) whose value is cut
    #: at 8,000 characters: after ~150 tables its JSON broke and every later ``log_table``
    #: raised, killing a long run (an ``--overfit-batches`` run logs a table every step). The
    #: tag keeps the newest tables that fit; older table files stay in the run's artifacts.
    TABLE_TAG_BUDGET = 6000

    def log_table(self, columns: Mapping[str, Sequence[Any]], artifact_file: str) -> None:
        # MLflow stores image cells as files and shows the table in the run's Evaluation tab.
        self._make_room_in_table_tag()
        self.client.log_table(
            self.run_id, data={k: list(v) for k, v in columns.items()}, artifact_file=artifact_file
        )

    def _make_room_in_table_tag(self) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_ARTIFACTS

        raw = self.client.get_run(self.run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]")
        try:
            entries = json.loads(raw)
        except ValueError:  # already cut by an earlier run of this code's predecessors
            entries = None
        if isinstance(entries, list) and len(raw) < self.TABLE_TAG_BUDGET:
            return
        kept: list[Any] = []
        for entry in reversed(entries if isinstance(entries, list) else []):
            if len(json.dumps([entry, *kept])) > self.TABLE_TAG_BUDGET // 2:
                break
            kept.insert(0, entry)
        self.client.set_tag(self.run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps(kept))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_value(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.client.log_metric(self.run_id, key, value, step=step or 0)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


# -- the run record written at start and at the end ------------------------------------------


def record_run_start(
    tracker: Tracker,
    config: Mapping[str, Any],
    config_path: str | None,
    dataset_version: str,
    dataset_sources: Sequence[Mapping[str, Any]],
    model: Any,
    model_summary: str,
) -> None:
    """Params, tags and files that describe the run before it trains; the git state is the
    one of the checkout the quill code ran from (:func:`code_checkout`), none for an
    installed package."""
    root = code_checkout()
    git = git_info(root) if root is not None else {}
    counts = parameter_count(model)
    env = environment_info()
    tracker.log_params(
        {
            **flatten(config),
            "model_num_parameters": counts["total"],
            "dataset_version": dataset_version,
        }
    )
    tags = {
        "quill.dataset_version": dataset_version,
        "quill.model_name": config["model"]["name"],
        "quill.model_family": getattr(model, "family", ""),
        "quill.num_parameters": counts["total"],
        "quill.config_file": config_path or "",
        "mlflow.source.name": "quill train",
        "mlflow.source.type": "LOCAL",
        **{f"quill.env.{k}": v for k, v in env.items()},
    }
    if root is not None and git:
        tags.update(
            {
                "mlflow.source.git.commit": git["commit"],
                "mlflow.source.git.branch": git["branch"],
                "quill.git.dirty": git["dirty"],
            }
        )
        tracker.log_text(git_diff_patch(root), "code/diff.patch")
    tracker.set_tags(tags)
    tracker.log_text(_yaml(config), "config/resolved.yaml")
    tracker.log_dict(
        {"version": dataset_version, "sources": list(dataset_sources)}, "data/dataset.json"
    )
    tracker.log_text(pip_freeze(), "environment/requirements.txt")
    tracker.log_dict({**env, "git": git}, "environment/environment.json")
    tracker.log_text(model_summary, "model/summary.txt")
    tracker.log_dict(counts, "model/parameters.json")


def code_checkout() -> Path | None:
    """The git checkout holding the running ``quill`` package, or None where the package is
    not part of one (an installed wheel, even in a venv inside a checkout).

    The provenance of a run is the code that ran, wherever it was started from: taken from
    the current folder, a run started outside the checkout recorded no commit or diff.
    """
    package = Path(quill.__file__).resolve().parent
    try:
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=package,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        # inside a checkout but not tracked by it: a venv's site-packages, not the source
        subprocess.run(
            ["git", "ls-files", "--error-unmatch", "__init__.py"],
            cwd=package,
            capture_output=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(top)


def _yaml(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False)


@contextmanager
def system_metrics(
    run_id: str, tracking_uri: str, interval_s: float, enabled: bool
) -> Iterator[None]:
    """CPU, memory, disk, network (and GPU with pynvml) sampled into the MLflow run meanwhile.

    MLflow's monitor publishes a sample only after waiting ``interval_s`` and drops the one it
    holds when stopped, so a run shorter than the interval (a smoke run, a tiny config, a fast
    machine) would get none: the sample held at the end is published too.
    """
    if not enabled:
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, samples_before_logging=1, tracking_uri=tracking_uri
    )
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as exc:  # noqa: BLE001 - a missing last sample must not fail a run
            log.warning("could not log the last system metrics sample: %s", exc)
