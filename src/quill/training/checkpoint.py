"""The checkpoint format training writes: find one (a path or an MLflow run), rebuild it.

Training owns this format, so it lives here: staging and ``--init-from`` read checkpoints
through this module, and nothing in training imports staging. Reading must not need
Lightning: a Quill ``.ckpt`` is a ``torch.save`` dict whose ``hyper_parameters`` say how to
build the network (``model_name``, ``model_config``) and how to read and write text
(``tokenizer``, ``preprocess``), and whose ``state_dict`` holds the network's weights under
the prefix ``model.``. Rebuilding from those alone is what makes a staged model independent
of the training code that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quill.data.manifest import file_sha256
from quill.errors import QuillError
from quill.models import build_model
from quill.preprocess import PreprocessConfig
from quill.training.config import flatten
from quill.training.runs import RunNotFoundError, resolve_run
from quill.vocab import Tokenizer

#: Tag the training layer sets on a run to name its best checkpoint (artifact path).
BEST_CHECKPOINT_TAG = "quill.best_checkpoint"
#: Run tag naming the weights a run started from (``model.init_from``); staging copies it
#: into the model's lineage.
INITIALISED_FROM_TAG = "quill.initialised_from"
WEIGHT_PREFIX = "model."
REQUIRED_HYPER_PARAMETERS = ("model_name", "model_config", "tokenizer", "preprocess")
#: Settings a resumed run takes from its checkpoint's state whatever its config says: the
#: optimiser's (learning rate, betas, weight decay) and the schedule's (its base rate, its
#: kind and shape), and early stopping's patience. Changed, they were recorded as the run's
#: but not used. ``optim.label_smoothing`` (the loss's, read from the config) and the run's
#: length (train longer: a cosine schedule is stretched over the new length) may change.
RESTORED_SETTINGS = (
    "optim.lr",
    "optim.weight_decay",
    "optim.betas",
    "optim.warmup",
    "optim.schedule",
    "optim.min_lr_ratio",
    "early_stopping.patience",
)
#: What sets the number of steps, which a one-cycle schedule's saved state fixes: it fails
#: when stepped past its end, and a shorter run ends it before its low-rate finish.
ONECYCLE_LENGTH_SETTINGS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.limit_train_batches",
    "trainer.accumulate_grad_batches",
    "data.batch_size",
    "data.epoch_size",
)


class CheckpointError(QuillError, ValueError):
    """A checkpoint or run cannot be read; the message names the file or run and the fix."""

    code = "checkpoint_invalid"


@dataclass
class CheckpointSource:
    """Where a checkpoint came from: the lineage a staged model records."""

    path: Path
    run_id: str | None = None
    #: Metrics of the training run (empty when staging a bare file).
    metrics: dict[str, float] = field(default_factory=dict)
    #: Artifact path of the checkpoint inside the run, when it came from one.
    artifact: str | None = None
    #: The weights the run started from (``--init-from``), when it was a fine-tuning run.
    initialised_from: str | None = None


@dataclass
class LoadedCheckpoint:
    """A rebuilt network in eval mode and everything needed to use it."""

    model: Any  # torch.nn.Module
    model_name: str
    model_config: dict[str, Any]
    tokenizer: Tokenizer
    preprocess: PreprocessConfig
    dataset_version: str | None
    config: dict[str, Any]
    sha256: str

    @property
    def family(self) -> str:
        return str(self.model.family)


def _read(path: Path) -> dict[str, Any]:
    """The contents of a checkpoint file; :class:`CheckpointError` for anything else."""
    import torch  # lazy, as everywhere torch is used outside models: imports stay light

    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # Any: torch's weights-only unpickler, fed bytes that are no checkpoint (a text file,
        # a zip of something else), raises whatever it trips on: UnpicklingError,
        # RuntimeError, EOFError, KeyError, IndexError, struct.error, OSError...
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint: {_cause(exc)}"
        ) from exc
    return checkpoint if isinstance(checkpoint, dict) else {}


def _weights(path: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The network's weights in a checkpoint (its ``state_dict`` under the module's prefix)."""
    state = checkpoint.get("state_dict")
    weights = {
        key.removeprefix(WEIGHT_PREFIX): value
        for key, value in (state.items() if isinstance(state, dict) else ())
        if isinstance(key, str) and key.startswith(WEIGHT_PREFIX)
    }
    if not weights:
        raise CheckpointError(f"{path} holds no weights under the prefix {WEIGHT_PREFIX!r}")
    return weights


def check_resumable(path: Path, config: dict[str, Any]) -> None:
    """Refuse, before any data is read or run opened, a checkpoint the run of ``config``
    cannot go on from: unreadable, without optimiser state (an averaged soup), or holding
    weights of another network or size. Lightning found each only after the data was read,
    in a traceback, leaving a FAILED run tagged as resumed."""
    checkpoint = _read(path)
    if not checkpoint.get("optimizer_states"):
        raise CheckpointError(
            f"{path} holds no optimiser state (an averaged or weights-only checkpoint), so no "
            f"run can go on from it: start a new run from its weights with --init-from {path}"
        )
    name = config["model"]["name"]
    try:
        tokenizer = Tokenizer.named(config["model"]["vocabulary"])
        model = build_model(name, len(tokenizer), **config["model"]["config"])
        model.load_state_dict(_weights(path, checkpoint))
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path} does not fit this config's {name} (model.config, model.vocabulary): "
            f"{weights_mismatch(exc)}; resume with the config it was trained with"
        ) from exc
    hyper = checkpoint.get("hyper_parameters")
    saved = hyper.get("config") if isinstance(hyper, dict) else None
    if isinstance(saved, dict) and saved:
        _check_restored_settings(path, saved, config)


def _check_restored_settings(path: Path, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuse a resume whose config changes what the checkpoint's state decides
    (:data:`RESTORED_SETTINGS`; with a one-cycle schedule also
    :data:`ONECYCLE_LENGTH_SETTINGS`): ``optim.lr=0.5`` was recorded in the run's params and
    config while the optimiser went on at the checkpoint's rate."""
    before, after = flatten(saved), flatten(config)
    keys = list(RESTORED_SETTINGS)
    if before.get("optim.schedule") == "onecycle":
        keys += ONECYCLE_LENGTH_SETTINGS
    if not (before.get("early_stopping.enabled") and after.get("early_stopping.enabled")):
        keys.remove("early_stopping.patience")  # no early-stopping state goes on
    changed = [key for key in keys if key in before and before[key] != after.get(key)]
    if changed:
        was = ", ".join(f"{key}={before[key]}" for key in changed)
        now = ", ".join(f"{key}={after.get(key)}" for key in changed)
        raise CheckpointError(
            f"{path} was trained with {was}, this config says {now}: a resumed run goes on "
            "with the checkpoint's optimiser, schedule and early-stopping state, so the new "
            "values would be recorded but not used; resume with the checkpoint's values, or "
            f"start a new run (and schedule) from its weights with --init-from {path}"
        )


def weights_mismatch(exc: Exception) -> str:
    """The first two things torch's ``load_state_dict`` found wrong, on one line: its own
    message opens with a line that names only the class ("Error(s) in loading state_dict
    for CTCLineModel:") and then lists every tensor.

    >>> weights_mismatch(RuntimeError("Error(s) in loading state_dict for M:\\n\\tsize "
    ...     "mismatch for a.weight: copying [3] into [4].\\n\\tsize mismatch for b: x.\\n\\tc"))
    'size mismatch for a.weight: copying [3] into [4]. size mismatch for b: x. (and more)'
    """
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    details = [line for line in lines if not line.startswith("Error(s) in loading")] or lines
    more = " (and more)" if len(details) > 2 else ""
    return " ".join(details[:2])[:400] + more


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Rebuild the network of a Quill training checkpoint, in eval mode on the CPU.

    Anything that is not one (a missing file, a text file, another zip or pickle, weights
    of another network) raises :class:`CheckpointError` naming the file, never the reader's
    own exception: the commands turn it into one line and exit 2."""
    checkpoint = _read(path)
    hyper = checkpoint.get("hyper_parameters")
    if not isinstance(hyper, dict):
        hyper = {}  # (a list, a number): it lacks every one
    missing = [k for k in REQUIRED_HYPER_PARAMETERS if k not in hyper]
    if missing:
        raise CheckpointError(
            f"{path} is not a Quill training checkpoint: hyper_parameters lack {missing}"
        )
    try:
        tokenizer = Tokenizer.from_dict(hyper["tokenizer"])
        model = build_model(hyper["model_name"], len(tokenizer), **hyper["model_config"])
        preprocess = PreprocessConfig.from_dict(hyper["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: its hyper_parameters describe no network Quill can build: {exc!r}"
        ) from exc
    try:
        model.load_state_dict(_weights(path, checkpoint))
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {path} do not fit {hyper['model_name']}: {exc}") from exc
    model.eval()
    return LoadedCheckpoint(
        model=model,
        model_name=hyper["model_name"],
        model_config=dict(hyper["model_config"]),
        tokenizer=tokenizer,
        preprocess=preprocess,
        dataset_version=hyper.get("dataset_version"),
        config=dict(hyper.get("config") or {}),
        sha256=file_sha256(path),
    )


def _cause(exc: Exception) -> str:
    """Why torch.load refused a file, in one line. Its weights-only refusals are paragraphs
    around the cause that advise ``weights_only=False``, which is never right for a file
    that is not a checkpoint (it would run whatever the pickle says)."""
    text = str(exc)
    _, marker, cause = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (cause if marker else text).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def resolve_source(reference: str, tracking_uri: str, download_dir: Path) -> CheckpointSource:
    """A checkpoint file, or the best checkpoint of MLflow run ``reference`` (an id, a unique
    id prefix or a run name, as ``quill runs`` takes them).

    A run's best checkpoint is the one its ``quill.best_checkpoint`` tag names; a run without
    the tag falls back to its newest ``checkpoints/*.ckpt`` artifact.
    """
    path = Path(reference)
    if path.suffix == ".ckpt" or path.exists():
        return CheckpointSource(path=path)
    from mlflow.tracking import MlflowClient  # lazy: mlflow takes seconds to import

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = resolve_run(client, reference)
    except RunNotFoundError as exc:
        raise CheckpointError(
            f"{reference!r} is neither a checkpoint file nor a run in {tracking_uri} ({exc})"
        ) from exc
    run_id = run.info.run_id
    artifact = run.data.tags.get(BEST_CHECKPOINT_TAG) or _newest_checkpoint(client, run_id)
    local = client.download_artifacts(run_id, artifact, str(download_dir))
    return CheckpointSource(
        path=Path(local),
        run_id=run_id,
        metrics=dict(run.data.metrics),
        artifact=artifact,
        initialised_from=run.data.tags.get(INITIALISED_FROM_TAG),
    )


def _newest_checkpoint(client: Any, run_id: str) -> str:
    listed = [f for f in client.list_artifacts(run_id, "checkpoints") if f.path.endswith(".ckpt")]
    if not listed:
        raise CheckpointError(f"run {run_id} has no checkpoints/*.ckpt artifact to stage")
    last = [f for f in listed if f.path.endswith("last.ckpt")]
    return (last or sorted(listed, key=lambda f: f.path))[-1].path


def write_checkpoint(
    path: Path,
    model: Any,
    model_name: str,
    tokenizer: Tokenizer,
    preprocess: PreprocessConfig,
    dataset_version: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Save a network built by ``build_model`` as a Quill checkpoint that staging accepts.

    For networks trained outside ``quill train`` (imported weights, smoke tests): the file
    has exactly the keys :func:`load_checkpoint` reads from a Lightning checkpoint.
    """
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    hyper = {
        "model_name": model_name,
        "model_config": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        "preprocess": preprocess.to_dict(),
        "dataset_version": dataset_version,
        "config": config or {},
    }
    state = {f"{WEIGHT_PREFIX}{k}": v for k, v in model.state_dict().items()}
    torch.save({"hyper_parameters": hyper, "state_dict": state}, path)
    return path
