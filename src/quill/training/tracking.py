"""Where runs are recorded, and everything a run records without being asked.

The default backend is MLflow embedded in the project: an SQLite store at
``<project>/mlruns/mlflow.db`` with artifacts in ``<project>/mlruns/artifacts`` (no server, no
account, works offline). ``QUILL_TRACKING_URI`` (or ``--tracking-uri``) points runs at any
other store or MLflow server instead. TensorBoard, CSV and W&B loggers are optional
alternatives; for them the same artifacts go to files in the logger's folder.

Recorded with every run: the resolved config, git commit/branch/dirty state and a
``diff.patch`` of uncommitted work, Python/OS/hardware and ``pip freeze``, the dataset
version, the console log, the model summary and parameter count, system metrics.
"""

from __future__ import annotations

import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from quill.training.config import flatten

TRACKING_URI_ENV = "QUILL_TRACKING_URI"
ARTIFACT_ROOT_ENV = "QUILL_ARTIFACT_ROOT"
LOGGERS = ("mlflow", "tensorboard", "wandb", "csv")
#: MLflow refuses parameter values longer than this.
MAX_PARAM_LENGTH = 6000
#: Untracked files larger than this are listed in diff.patch but not inlined.
MAX_UNTRACKED_BYTES = 200_000


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding a git repo or pyproject."""
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or (folder / "pyproject.toml").is_file():
            return folder
    return start


def default_tracking_uri() -> str:
    """``$QUILL_TRACKING_URI``, else the project's embedded SQLite store."""
    env = os.environ.get(TRACKING_URI_ENV)
    if env:
        return env
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact folder for new experiments: beside a SQLite store, or the server's choice.

    >>> artifact_root("sqlite:////tmp/x/mlflow.db")
    'file:///tmp/x/artifacts'
    >>> artifact_root("http://127.0.0.1:5000") is None
    True
    """
    env = os.environ.get(ARTIFACT_ROOT_ENV)
    if env:
        return env if "://" in env else Path(env).resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri.removeprefix("sqlite:///"))
        return (database.parent / "artifacts").as_uri()
    return None


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across processes (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prepare_store(tracking_uri: str) -> None:
    """Create a local SQLite store's folder and tables, one process at a time.

    Two sweep workers starting together on a new store would otherwise both run MLflow's
    schema migrations and one would fail.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    with file_lock(database.with_name(database.name + ".lock")):
        from mlflow import MlflowClient

        MlflowClient(tracking_uri).search_experiments(max_results=1)


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created if missing; safe when workers race to create it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(5):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return client.create_experiment(name, artifact_location=artifact_root(tracking_uri))
        except MlflowException:
            # Another process created it between our lookup and our insert: look again.
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"could not create or find MLflow experiment {name!r}")


def log_to_shared_run(
    client: Any, run_id: str, tags: Mapping[str, str], metrics: Mapping[str, float]
) -> None:
    """Write ``tags`` and ``metrics`` (step 0) onto a run that other processes write too.

    The store inserts a key the first time it sees it on a run, so two workers writing the same
    new key at once (sweep workers finishing together on their shared parent run) collide on
    its unique constraint; the batch is one transaction, so the loser retries it whole and then
    updates the row the winner inserted.
    """
    from mlflow.entities import Metric, RunTag
    from mlflow.exceptions import MlflowException

    timestamp = int(time.time() * 1000)
    batch = {
        "metrics": [Metric(key, float(value), timestamp, 0) for key, value in metrics.items()],
        "tags": [RunTag(key, str(value)) for key, value in tags.items()],
    }
    for attempt in range(5):
        try:
            client.log_batch(run_id, **batch)
            return
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.2 * (attempt + 1))


# -- what is recorded about the code and the machine ---------------------------------------


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout


def git_info(root: Path) -> dict[str, str]:
    """Commit, branch and dirty flag of the project's git checkout ({} outside git)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {}
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    status = _git(root, "status", "--porcelain", "--untracked-files=no") or ""
    return {"commit": commit.strip(), "branch": branch, "dirty": str(bool(status.strip()))}


def git_diff_patch(root: Path) -> str:
    """Uncommitted changes as a patch: tracked edits plus untracked (not ignored) files.

    Applying it to the recorded commit (``git apply diff.patch``) restores the code the run
    used, which the commit alone would not.
    """
    parts = [_git(root, "diff", "HEAD", "--binary") or ""]
    untracked = (_git(root, "ls-files", "--others", "--exclude-standard") or "").split("\n")
    for name in filter(None, untracked):
        path = root / name
        if path.is_file() and path.stat().st_size <= MAX_UNTRACKED_BYTES:
            # --no-index exits 1 when the files differ, which they always do here.
            result = subprocess.run(
                ["git", "diff", "--no-index", "--binary", "--", "/dev/null", name],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=30,
            )
            parts.append(result.stdout)
        else:
            parts.append(f"# untracked file not inlined (too large or unreadable): {name}\n")
    return "".join(parts)


def pip_freeze() -> str:
    """Installed distributions as ``name==version`` lines (what ``pip freeze`` prints)."""
    seen: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(sorted(seen.values(), key=str.lower)) + "\n"


def environment_info() -> dict[str, str]:
    """Python, OS, hardware and the versions of the libraries that shape training."""
    import torch

    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_count": str(os.cpu_count()),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
    }
    for package in ("lightning", "torchmetrics", "mlflow", "optuna", "numpy"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    return info


def parameter_count(model: Any) -> dict[str, int]:
    """Total and trainable parameters of a module."""
    params = list(model.parameters())
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
    }


# -- console log -----------------------------------------------------------------------------


class _Tee(io.TextIOBase):
    """Writes to the real stream and to a log file."""

    def __init__(self, stream: TextIO, log: TextIO):
        self.stream = stream
        self.log = log

    def write(self, text: str) -> int:
        self.log.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


@contextmanager
def capture_console(path: Path) -> Iterator[Path]:
    """Copy everything printed to stdout/stderr (and logging) into ``path`` meanwhile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield path
        finally:
            sys.stdout, sys.stderr = out, err


def clean_console_log(text: str) -> str:
    """Keep only the final state of lines a progress bar redrew with carriage returns.

    >>> clean_console_log("Epoch 0: 10%\\rEpoch 0: 100%\\nDone\\n")
    'Epoch 0: 100%\\nDone\\n'
    """
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


# -- trackers: one interface over MLflow and the file-based loggers --------------------------


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
        import shutil

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
    """Everything goes to one MLflow run through the tracking client."""

    def __init__(self, client: Any, run_id: str):
        self.client = client
        self.run_id = run_id
        self.folder = Path(tempfile.mkdtemp(prefix="quill-artifacts-"))

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
    """Params, tags and files that describe the run before it trains."""
    root = project_root()
    git = git_info(root)
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
    if git:
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


def _yaml(config: Mapping[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(dict(config), sort_keys=False)


@contextmanager
def system_metrics(
    run_id: str, tracking_uri: str, interval_s: float, enabled: bool
) -> Iterator[None]:
    """CPU, memory, disk, network (and GPU with pynvml) sampled into the MLflow run meanwhile."""
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
