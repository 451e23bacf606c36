"""The training entry point: a resolved config in, a tracked run and checkpoints out.

``train(config)`` wires the pieces together: data (``quill.data.datamodule``), the
LightningModule of the model's family, a logger with its :class:`Tracker`, the callbacks,
and a Lightning ``Trainer`` whose accelerator, precision, strategy, devices and nodes all
come from the config, so the same code runs on a laptop CPU and on multi-node DDP.
"""

from __future__ import annotations

import copy
import logging
import os
import secrets
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException

from quill.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, QuillError, output_problem
from quill.preprocess import PreprocessConfig
from quill.training import tracking
from quill.training.callbacks import (
    CheckpointArtifacts,
    CtrlC,
    Norms,
    PredictionTable,
    RunCheckpoint,
    Throughput,
    ValidateBeforeMaxSteps,
)
from quill.training.console import capture_console, clean_console_log
from quill.training.distill import load_teacher
from quill.training.init_weights import (
    INITIALISED_FROM_TAG,
    InitWeightsError,
    load_initial_weights,
)
from quill.training.module import CTCModule, create_module
from quill.training.profile import StepProfiler
from quill.training.tracking_store import (
    TrackingStoreUnreadable,
    default_tracking_uri,
    ensure_experiment,
    prepare_store,
    project_root,
)
from quill.vocab import Tokenizer

log = logging.getLogger(__name__)


class TrainingSetupError(QuillError, ValueError):
    """The config cannot make a run (no data, a model that does not fit the input...)."""

    code = "training_setup_invalid"


@dataclass
class TrainResult:
    """What a finished run left behind."""

    run_id: str
    output_dir: Path
    best_checkpoint: Path | None
    #: best value of the checkpoint monitor (val_cer by default) over the run, if validated
    best_score: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tracking_uri: str | None = None


@dataclass
class Run:
    """The logger Lightning writes metrics to and the tracker for everything else."""

    run_id: str
    logger: Any
    tracker: tracking.Tracker
    tracking_uri: str | None = None


def resolve_precision(precision: Any, accelerator: str) -> Any:
    """``auto``: bf16-mixed on a GPU that has it, 16-mixed on older GPUs, 32 on CPU."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_datamodule(
    config: Mapping[str, Any], tokenizer: Tokenizer, preprocess: PreprocessConfig
) -> Any:
    """The HTRDataModule described by ``config['data']``, set up (sources loaded, checked)."""
    from quill.data.augment import AugmentConfig
    from quill.data.datamodule import HTRDataModule

    data = config["data"]
    if not data["sources"]:
        raise TrainingSetupError(
            "data.sources is empty: list at least one dataset folder, e.g. "
            "data.sources=[{path: data/synth/lines, weight: 1.0}] "
            "(make one with `quill data synth --kind line --n 2000 --out data/synth/lines`)"
        )
    augment = data["augment"]
    if isinstance(augment, Mapping):
        augment = AugmentConfig.from_dict(dict(augment))
    try:
        datamodule = HTRDataModule(
            sources=[_resolve_source(s) for s in data["sources"]],
            task=preprocess.kind,
            tokenizer=tokenizer,
            preprocess_config=preprocess,
            batch_size=int(data["batch_size"]),
            eval_batch_size=data["eval_batch_size"],
            num_workers=data["num_workers"],
            epoch_size=data["epoch_size"],
            augment=augment,
            seed=int(config["seed"]),
            cache=bool(data["cache"]),
            cache_dir=project_path(data["cache_dir"]) if data["cache_dir"] else None,
            augment_on=data["augment_on"],
        )
        datamodule.setup("fit")
        datamodule.train_sampler()  # no training sample with weight > 0: refused now, not by fit
    except (ValueError, TypeError, FileNotFoundError) as exc:
        raise TrainingSetupError(f"data: {exc}") from exc
    return datamodule


def _resolve_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset entry with its path resolved by :func:`project_path`, so `quill train` works
    from any folder of the checkout."""
    if not isinstance(source, Mapping) or "path" not in source:
        raise TrainingSetupError(f"each data.sources entry needs a path, got {source!r}")
    path = project_path(source["path"])
    if not path.exists():
        # a relative path was looked for in the working folder and the project root (one
        # folder when run from the root); an absolute one only where it says
        folders = " and ".join(dict.fromkeys(str(f) for f in (Path.cwd(), project_root())))
        relative = not Path(source["path"]).expanduser().is_absolute()
        looked = f" (looked in {folders})" if relative else ""
        raise TrainingSetupError(
            f"dataset folder not found: {source['path']}{looked}; make one with "
            "`quill data synth` or fix data.sources"
        )
    return {**source, "path": str(path.resolve())}


def project_path(raw: str | Path) -> Path:
    """A relative path means the working directory if it exists there, else the project root."""
    path = Path(raw).expanduser()
    if not path.is_absolute() and not path.exists():
        path = project_root() / path
    return path


def _initialise_weights(module: Any, source: str, tokenizer: Tokenizer) -> str:
    """``model.init_from``: start from an earlier model's weights (fine-tuning); returns what
    was loaded, for the run's ``quill.initialised_from`` tag."""
    try:
        return load_initial_weights(module.model, project_path(source), tokenizer)
    except InitWeightsError as exc:
        raise TrainingSetupError(str(exc)) from exc


#: The run tag naming the model a distilled run learned from (``distill.teacher``).
TAUGHT_BY_TAG = "quill.taught_by"


def _attach_teacher(module: Any, config: dict[str, Any], tokenizer: Tokenizer, source: str) -> None:
    """``distill.teacher``: the run also learns that model's reading at ``distill.shifts``."""
    if not isinstance(module, CTCModule):
        raise TrainingSetupError("distill.teacher: only a CTC line model learns from a teacher")
    try:
        shifts = config["distill"]["shifts"]
        teacher = load_teacher(project_path(source), tokenizer, module.model, shifts)
    except InitWeightsError as exc:
        raise TrainingSetupError(f"distill.teacher: {exc}") from exc
    module.learn_from(teacher, config["distill"]["weight"])


def mlflow_store(config: Mapping[str, Any]) -> tuple[str, Any]:
    """The MLflow store of ``config``'s runs: its URI and a client. :func:`train` opens it
    before the data is read, so a URI no store can be at (a plain file, a folder that cannot
    be made) is a one-line error before any work and before any run exists to be left
    FAILED."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # an sqlite:/// file that is no database

    uri = config["tracking"]["tracking_uri"] or default_tracking_uri()
    if "://" not in uri and Path(uri).expanduser().is_file():
        raise TrainingSetupError(
            f"tracking URI {uri} is a file, not an MLflow store: give sqlite:///PATH.db or "
            "an MLflow server's http(s):// address"
        )
    try:
        prepare_store(uri)
        return uri, MlflowClient(uri)
    except TrackingStoreUnreadable as exc:  # it names the store and what to give instead
        raise TrainingSetupError(str(exc)) from exc
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        raise TrainingSetupError(f"tracking URI {uri}: {str(exc).splitlines()[0]}") from exc


def open_run(
    config: Mapping[str, Any],
    output_root: Path,
    tags: Mapping[str, str] | None = None,
    store: tuple[str, Any] | None = None,
) -> Run:
    """Create the run in the configured logger and return it with its tracker; an MLflow
    run in ``store`` (from :func:`mlflow_store`, opened here if not given)."""
    kind = config["tracking"]["logger"]
    experiment = config["tracking"]["experiment"]
    # MLflow's random names repeat here: seeding fixes Python's RNG before the run exists.
    run_name = config["tracking"]["run_name"] or (
        f"{config['model']['name']}-{time.strftime('%m%d-%H%M%S')}"
    )
    all_tags = {**{k: str(v) for k, v in config["tracking"]["tags"].items()}, **(tags or {})}
    if kind == "mlflow":
        uri, client = store or mlflow_store(config)
        return _open_mlflow_run(client, uri, experiment, run_name, all_tags)
    run_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = output_root / run_id
    logger: L.pytorch.loggers.Logger
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(save_dir=str(folder), name=experiment, version="")
        tracker = tracking.Tracker(folder / "artifacts", run_id)
    elif kind == "tensorboard":
        _require("tensorboard", "the TensorBoard logger", "tensorboard")
        from lightning.pytorch.loggers import TensorBoardLogger

        logger = TensorBoardLogger(save_dir=str(folder), name=experiment, version="")
        tracker = tracking.TensorBoardTracker(folder / "artifacts", run_id, logger.experiment)
    elif kind == "wandb":
        _require("wandb", "the Weights & Biases logger", "wandb")
        from lightning.pytorch.loggers import WandbLogger

        logger = WandbLogger(project=experiment, name=run_name, save_dir=str(folder), id=run_id)
        # Files under the W&B run folder are uploaded with the run (or by `wandb sync`).
        tracker = tracking.Tracker(Path(logger.experiment.dir) / "quill", run_id)
    else:
        raise TrainingSetupError(f"tracking.logger must be one of {tracking.LOGGERS}, not {kind!r}")
    tracker.set_tags(all_tags)
    return Run(run_id, logger, tracker)


def _require(module: str, what: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TrainingSetupError(
            f"{what} needs the '{package}' package, which is not installed: "
            f"`pip install {package}`, or use --logger mlflow (the default) or csv"
        )


def _open_mlflow_run(
    client: Any, uri: str, experiment: str, run_name: str | None, tags: dict[str, str]
) -> Run:
    from lightning.pytorch.loggers import MLFlowLogger

    experiment_id = ensure_experiment(client, experiment, uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    logger = MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_id=run.info.run_id)
    return Run(run.info.run_id, logger, tracking.MLflowTracker(client, run.info.run_id), uri)


def build_trainer(
    config: Mapping[str, Any],
    logger: Any,
    callbacks: Sequence[L.Callback],
    output_dir: Path,
) -> L.Trainer:
    """A Trainer configured entirely from ``config['trainer']``; a :class:`StepProfiler`
    among ``callbacks`` gets its data-wait clock installed as the Trainer's profiler."""
    t = config["trainer"]
    optional = {
        key: t[key]
        for key in (
            "limit_train_batches",
            "limit_val_batches",
            "limit_test_batches",
            "val_check_interval",
            "max_time",
        )
        if t[key] is not None
    }
    return L.Trainer(
        accelerator=t["accelerator"],
        devices=t["devices"],
        strategy=t["strategy"],
        num_nodes=int(t["num_nodes"]),
        precision=resolve_precision(t["precision"], t["accelerator"]),
        max_epochs=t["max_epochs"],
        max_steps=t["max_steps"],
        gradient_clip_val=t["gradient_clip_val"],
        accumulate_grad_batches=int(t["accumulate_grad_batches"]),
        log_every_n_steps=int(t["log_every_n_steps"]),
        check_val_every_n_epoch=t["check_val_every_n_epoch"],
        overfit_batches=t["overfit_batches"],
        fast_dev_run=t["fast_dev_run"],
        deterministic=t["deterministic"],
        enable_progress_bar=t["enable_progress_bar"],
        logger=logger,
        callbacks=list(callbacks),
        default_root_dir=str(output_dir),
        profiler=next((c.fetch_clock for c in callbacks if isinstance(c, StepProfiler)), None),
        **optional,
    )


def _validates(config: Mapping[str, Any], datamodule: Any) -> bool:
    """Whether validation runs, so that val_cer exists for checkpointing and early stopping."""
    limited_away = config["trainer"]["limit_val_batches"] in (0, 0.0)
    split = "train" if overfits(config) else "val"
    return not limited_away and bool(datamodule.split_items(split))


def overfits(config: Mapping[str, Any]) -> bool:
    """Whether the run is an ``--overfit-batches`` run (learn N training batches by heart)."""
    return bool(config["trainer"]["overfit_batches"])


def overfit_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The config an ``--overfit-batches`` run needs, and what was changed (for the log).

    Memorising a batch is the check that the model, loss and decoding can learn at all, so
    nothing may get in its way: augmentation would show the model a different batch each
    step, and early stopping (patience counted in epochs of one or a few steps) would end the
    run while CTC still emits only blanks. Both are turned off; the recorded config says so.
    """
    result = copy.deepcopy(dict(config))
    if not overfits(result):
        return result, []
    changed = []
    if result["data"]["augment"]:
        result["data"]["augment"] = False
        changed.append("data.augment=false")
    if result["early_stopping"]["enabled"]:
        result["early_stopping"]["enabled"] = False
        changed.append("early_stopping.enabled=false")
    return result, changed


def validate_on_training_batches(datamodule: Any, module: Any) -> None:
    """Make validation read the training batches, as ``--overfit-batches`` promises.

    Lightning's ``overfit_batches`` trains on the first N training batches but validates on
    the first N batches of the *validation* split, so the prediction table could never read
    the memorised batch back. Here the validation loader serves the training items in the
    order the overfitting train loader reads them (Lightning makes it sequential), in
    training batches, without augmentation: the same N batches.
    """
    from quill.data.datamodule import CachedCollate, CachedLineDataset, HTRDataset

    items = datamodule.split_items("train")

    def val_dataloader() -> Any:
        if datamodule.cache:
            collate = CachedCollate(datamodule.preprocess_config.width_multiple)
            cached = CachedLineDataset(items, datamodule.caches)
            return datamodule._loader(cached, datamodule.batch_size, collate_fn=collate)
        dataset = HTRDataset(items, datamodule.preprocess_config)
        return datamodule._loader(dataset, datamodule.batch_size)

    datamodule.val_dataloader = val_dataloader
    module.track_sources({s.spec.name: s.spec.role for s in datamodule.data if s.items["train"]})


def build_callbacks(
    config: Mapping[str, Any], run: Run, output_dir: Path, validates: bool
) -> tuple[list[L.Callback], RunCheckpoint]:
    """Checkpointing, early stopping and the tracking callbacks the config asks for."""
    from lightning.pytorch.callbacks import EarlyStopping

    ckpt = config["checkpoint"]
    # without validation the monitored metric is never logged: a name with it read "=0.0000"
    scored = f"-{ckpt['monitor']}={{{ckpt['monitor']}:.4f}}" if validates else ""
    checkpoint = RunCheckpoint(
        dirpath=str(output_dir / "checkpoints"),
        filename=f"epoch={{epoch:03d}}{scored}",
        auto_insert_metric_name=False,
        monitor=ckpt["monitor"] if validates else None,
        mode=ckpt["mode"],
        save_top_k=int(ckpt["save_top_k"]) if validates else 1,
        save_last=bool(ckpt["save_last"]),
    )
    tr = config["tracking"]
    callbacks: list[L.Callback] = [
        checkpoint,
        CheckpointArtifacts(run.tracker, checkpoint),
        PredictionTable(run.tracker, tr["prediction_table_every_n_epochs"]),
        Norms(run.tracker, tr["norms_every_n_steps"]),
        Throughput(),
        ValidateBeforeMaxSteps(),
    ]
    stop = config["early_stopping"]
    if stop["enabled"] and validates:
        callbacks.append(
            EarlyStopping(
                monitor=stop["monitor"], mode=stop["mode"], patience=int(stop["patience"])
            )
        )
    profile = config["profile"]
    if profile["enabled"]:
        callbacks.append(
            StepProfiler(
                run.tracker,
                output_dir / "profile",
                profile["wait"],
                profile["warmup"],
                profile["active"],
            )
        )
    return callbacks, checkpoint


def _sources_record(datamodule: Any) -> list[dict[str, Any]]:
    """Each source's path, weight, manifest version and sample counts, for the run record."""
    versions = datamodule.source_versions
    return [
        {
            "name": source.spec.name,
            "path": str(source.spec.path),
            "weight": source.spec.weight,
            "manifest_version": versions[source.spec.name],
            "samples": {split: len(items) for split, items in source.items.items()},
        }
        for source in datamodule.data
    ]


def _check_geometry(module: Any, preprocess: PreprocessConfig) -> None:
    height = getattr(getattr(module.model, "config", None), "height", None)
    if height is not None and preprocess.kind == "line" and height != preprocess.height:
        raise TrainingSetupError(
            f"model.config.height={height} but data.preprocess.height={preprocess.height}: "
            "the model must see images of the height it was built for"
        )


def create_run_parts(config: dict[str, Any]) -> tuple[Any, Any, str | None]:
    """The set-up DataModule and LightningModule of ``config`` (threads and seed applied,
    initial weights loaded), and what those weights came from (None: fresh)."""
    if config["threads"]:
        torch.set_num_threads(int(config["threads"]))
    L.seed_everything(int(config["seed"]), workers=True)
    try:
        tokenizer = Tokenizer.named(config["model"]["vocabulary"])
    except ValueError as exc:
        raise TrainingSetupError(f"model.vocabulary: {exc}") from exc
    preprocess = PreprocessConfig.from_dict(config["data"]["preprocess"])
    datamodule = build_datamodule(config, tokenizer, preprocess)
    module = create_module(config, tokenizer, preprocess.to_dict(), datamodule.dataset_version)
    module.track_sources(datamodule.val_sources)
    _check_geometry(module, preprocess)
    init_from = config["model"]["init_from"]
    initialised_from = _initialise_weights(module, init_from, tokenizer) if init_from else None
    teacher = config["distill"]["teacher"]
    if teacher:
        _attach_teacher(module, config, tokenizer, teacher)
    return datamodule, module, initialised_from


def train(
    config: dict[str, Any],
    *,
    config_path: str | None = None,
    resume: str | Path | None = None,
    extra_callbacks: Iterable[L.Callback] = (),
    tags: Mapping[str, str] | None = None,
    run_started: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train and test the model of ``config``, recording the run; see ``docs/training.md``.

    ``run_started`` is called with the run id as soon as the run exists, so a caller (the
    sweep) can link to the run even if training then stops with an exception. Under DDP only
    global rank 0 records anything; the other ranks train and stay silent.
    """
    config, overfit_changes = overfit_config(config)
    mlflow = config["tracking"]["logger"] == "mlflow" and _is_rank_zero()
    store = mlflow_store(config) if mlflow else None
    output_root = project_root() / config["output_dir"]
    problem = output_problem(output_root, folder=True)
    if problem:  # before the data is read, not when the first checkpoint is written
        raise TrainingSetupError(f"output_dir {output_root}: {problem}")
    datamodule, module, initialised_from = create_run_parts(config)
    if overfits(config):
        validate_on_training_batches(datamodule, module)

    run_tags = dict(tags or {})
    if resume:
        run_tags["quill.resumed_from_checkpoint"] = str(resume)
    if initialised_from:
        run_tags[INITIALISED_FROM_TAG] = initialised_from
    teacher = getattr(module, "teacher", None)
    if teacher is not None:
        run_tags[TAUGHT_BY_TAG] = teacher.source
    if config["trainer"]["fast_dev_run"]:
        run_tags[FAST_DEV_RUN_TAG] = "true"
    # From the moment the run exists, Ctrl+C is a request to stop at the next safe point
    # (CtrlC): a KeyboardInterrupt inside a store write could leave the run RUNNING for good.
    ctrl_c = CtrlC()
    with ctrl_c.deferred():
        if _is_rank_zero():
            run = open_run(config, output_root, run_tags, store)
        else:
            run = _follower_run(config)
        if run_started is not None and _is_rank_zero():
            run_started(run.run_id)
        output_dir = output_root / run.run_id
        validates = _validates(config, datamodule)
        if not validates and config["trainer"]["limit_val_batches"] not in (0, 0.0):
            log.warning(
                "no val samples in data.sources: this run trains without validation, so no "
                "checkpoint is chosen by %s (the last epoch's is kept) and nothing stops it "
                "early; give a source a val split (quill data import --val-fraction)",
                config["checkpoint"]["monitor"],
            )
        outcome: dict[str, Any] = {"status": "FAILED", "metrics": {}}
        recorder = _recording(
            run, config, config_path, datamodule, module, output_dir, outcome, ctrl_c
        )
        # everything that can fail once the run exists fails inside the recorder, which ends
        # the run FAILED (or KILLED), never leaving it RUNNING
        with recorder, _run_id_for_workers(run.run_id):
            callbacks, checkpoint = build_callbacks(config, run, output_dir, validates)
            if overfits(config) and _is_rank_zero():
                print(
                    f"overfit_batches={config['trainer']['overfit_batches']}: validating on the "
                    "same training batches"
                    + (f"; set {', '.join(overfit_changes)}" if overfit_changes else ""),
                    flush=True,
                )
            trainer = build_trainer(
                config, run.logger, [*callbacks, ctrl_c, *extra_callbacks], output_dir
            )
            ctrl_c.raise_if_requested()
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
            metrics = _scalars(trainer)
            best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
            tests = config["tracking"]["test_after_fit"] and datamodule.split_items("test")
            if tests and not trainer.interrupted:
                ctrl_c.raise_if_requested()
                trainer.test(module, datamodule=datamodule, ckpt_path=str(best) if best else None)
                metrics.update(_scalars(trainer))
            outcome.update(status="KILLED" if trainer.interrupted else "FINISHED", metrics=metrics)
            score = checkpoint.best_model_score
            if _is_rank_zero():
                best_score = None if score is None else float(score)
                _print_summary(
                    run,
                    best,
                    metrics,
                    str(checkpoint.monitor),
                    best_score,
                    recorded=not config["trainer"]["fast_dev_run"],
                )
    return TrainResult(
        run.run_id,
        output_dir,
        best,
        None if score is None else float(score),
        metrics,
        run.tracking_uri,
    )


#: Set by rank 0 for the DDP worker processes it launches, so all ranks share one run folder.
RUN_ID_ENV = "QUILL_RUN_ID"
#: Tag of a ``--fast-dev-run`` run: Lightning swaps its logger for a dummy in that mode, so
#: the run holds no metrics (the summary printed says so too).
FAST_DEV_RUN_TAG = "quill.fast_dev_run"


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _follower_run(config: Mapping[str, Any]) -> Run:
    """What a DDP rank other than 0 uses: rank 0's run id (if known), no tracking of its own."""
    run_id = os.environ.get(RUN_ID_ENV, "unnamed-run")
    uri = config["tracking"]["tracking_uri"] or default_tracking_uri()
    logger: Any = False
    if config["tracking"]["logger"] == "mlflow":
        from lightning.pytorch.loggers import MLFlowLogger

        # Lightning's loggers only write on rank 0; this one exists so every rank agrees.
        logger = MLFlowLogger(config["tracking"]["experiment"], tracking_uri=uri, run_id=run_id)
    return Run(run_id, logger, tracking.NullTracker(), None)


@contextmanager
def _run_id_for_workers(run_id: str) -> Iterator[None]:
    """Export the run id while training so DDP worker processes find rank 0's run."""
    previous = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = run_id
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = previous


@contextmanager
def _recording(
    run: Run,
    config: Mapping[str, Any],
    config_path: str | None,
    datamodule: Any,
    module: Any,
    output_dir: Path,
    outcome: dict[str, Any],
    ctrl_c: CtrlC,
) -> Iterator[None]:
    """On rank 0: the run record, console capture and system metrics around training; the
    console log and the final status are saved even when training fails."""
    if not _is_rank_zero():
        yield
        return
    from lightning.pytorch.utilities.model_summary import ModelSummary

    console = output_dir / "console.log"
    monitor = tracking.system_metrics(
        run.run_id,
        run.tracking_uri or "",
        float(config["tracking"]["system_metrics_interval_s"]),
        enabled=bool(config["tracking"]["system_metrics"]) and run.tracking_uri is not None,
    )
    try:
        with capture_console(console), monitor:
            tracking.record_run_start(
                run.tracker,
                config,
                config_path,
                datamodule.dataset_version,
                _sources_record(datamodule),
                module.model,
                str(ModelSummary(module, max_depth=3)),
            )
            yield
    except (KeyboardInterrupt, SystemExit) as exc:
        # Ctrl+C, or SIGTERM (Lightning exits after its SIGTERM handler): stopped, not broken.
        # Lightning ends both as an exit of 1 or 0, and 0 told a script the run was done. A
        # first Ctrl+C stops training the way SIGTERM does (CtrlC), and is still Ctrl+C.
        outcome["status"] = "KILLED"
        _print_stopped(run, output_dir, config_path)
        terminated = isinstance(exc, SIGTERMException) and not ctrl_c.requested
        raise SystemExit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED) from exc
    finally:
        if console.is_file():
            text = clean_console_log(console.read_text(encoding="utf-8"))
            run.tracker.log_text(text, "console.log")
        run.tracker.finish(outcome["status"])


def _scalars(trainer: L.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def _print_stopped(run: Run, output_dir: Path, config_path: str | None) -> None:
    """Say on stderr where a stopped run's checkpoints are and how to go on from them."""
    print(
        f"\nrun {run.run_id} stopped (recorded as KILLED); its checkpoints: {output_dir}",
        file=sys.stderr,
    )
    last = output_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        config = shlex.quote(config_path) if config_path else "CONFIG"
        print(
            f"  go on with `quill train --config {config} --resume {shlex.quote(str(last))}` "
            "(and the same overrides)",
            file=sys.stderr,
        )


def _print_summary(
    run: Run,
    best: Path | None,
    metrics: Mapping[str, float],
    monitor: str,
    best_score: float | None,
    recorded: bool = True,
) -> None:
    """The closing lines: the monitored metric at its best (the checkpoint the test scores
    come from), not at the last epoch, which is what the other validation figures are.
    ``recorded`` False (fast-dev-run): the figures are not in the run, so it says so rather
    than send the reader to a run without them."""
    shown = {k: metrics[k] for k in ("val_cer", "val_wer", "test_cer", "test_wer") if k in metrics}
    if best_score is not None:
        shown[monitor] = best_score
    print(f"\nrun {run.run_id} finished")
    for key, value in shown.items():
        note = "  (best)" if key == monitor else "  (last epoch)" if key.startswith("val") else ""
        print(f"  {key:10s} {value:.4f}{note}")
    if best:
        print(f"  best checkpoint: {best}")
    if not recorded:
        print(
            "  fast-dev-run: these figures are not recorded in the run (Lightning logs "
            f"nothing in this mode; the run is tagged {FAST_DEV_RUN_TAG})"
        )
    elif run.tracking_uri:
        print(f"  see it with `quill runs show {run.run_id[:8]}` or `quill ui`")
