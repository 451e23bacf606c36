"""``quill sweep``: Optuna hyperparameter search over ``quill train`` runs.

A sweep file names a run config (``base``), fixed overrides, the study settings and a search
space of dotted config keys::

    base: ../ctc_line_synth.yaml
    overrides: [trainer.max_epochs=8]
    study:
      name: ctc_line
      metric: val_cer
      direction: minimize
      sampler: {name: tpe, seed: 42, n_startup_trials: 5}
      pruner: {name: median, n_startup_trials: 3, n_warmup_steps: 1}
    search_space:
      optim.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
      model.config.hidden: {type: categorical, choices: [128, 256]}

Every trial is a normal tracked run, tagged as a child of one MLflow parent run per study.
The study lives in an RDB (SQLite file by default, any Postgres/MySQL URL for many machines):
start ``quill sweep`` again on another terminal or host with the same ``--storage`` and it
joins the study. The study records what its values mean (metric, direction, search space and
base config) when it is made, and a worker whose sweep differs is refused rather than mixing
its trials in. Unpromising trials are pruned on the validation metric after each epoch.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quill.digest import json_digest
from quill.errors import QuillError, check_output
from quill.strict_dict import field_names, unknown_key_message
from quill.training.config import (
    ConfigError,
    did_you_mean,
    logged_metrics,
    read_yaml,
    resolve_config,
    schema_class,
    set_dotted,
)
from quill.training.tracking_store import (
    default_tracking_uri,
    ensure_experiment,
    file_lock,
    log_to_shared_run,
    prepare_store,
    project_root,
)

STORAGE_ENV = "QUILL_OPTUNA_STORAGE"
PARENT_RUN_ATTR = "mlflow_parent_run_id"
RUN_ID_ATTR = "mlflow_run_id"
#: The study user attribute holding what its trial values mean (:func:`study_settings`).
SETTINGS_ATTR = "quill_settings"
#: Base config sections that say where a worker writes, not what its trials compute: they
#: may differ between the workers of one study.
WORKER_SECTIONS = ("tracking", "output_dir")
#: How long a worker that joined a study waits for the creator to open the parent run.
PARENT_WAIT_S = 60.0


@dataclass
class SweepSpec:
    """A parsed sweep file."""

    base_config: dict[str, Any]
    base_path: Path
    study: dict[str, Any]
    search_space: dict[str, dict[str, Any]]


def default_storage() -> str:
    """``$QUILL_OPTUNA_STORAGE``, else an SQLite file beside the embedded MLflow store."""
    return os.environ.get(STORAGE_ENV) or (f"sqlite:///{project_root() / 'mlruns' / 'optuna.db'}")


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> SweepSpec:
    """Read a sweep file; ``overrides`` apply to the base config of every trial."""
    path = Path(path)
    data = read_yaml(path)
    unknown = set(data) - {"base", "overrides", "study", "search_space"}
    if unknown:
        raise ConfigError(f"{path}: unknown sweep keys {sorted(unknown)}")
    if "base" not in data or not data.get("search_space"):
        raise ConfigError(f"{path}: a sweep needs 'base' (a run config) and 'search_space'")
    base_path = (path.parent / data["base"]).resolve()
    base = resolve_config(base_path, [*data.get("overrides", []), *overrides])
    study = {
        "name": path.stem,
        "metric": base["checkpoint"]["monitor"],
        "direction": "minimize" if base["checkpoint"]["mode"] == "min" else "maximize",
        "sampler": {"name": "tpe", "seed": 42},
        "pruner": {"name": "median"},
        **data.get("study", {}),
    }
    _check_metric(path, study["metric"], base)
    _check_study(path, study)
    space = data["search_space"]
    for key, spec in space.items():
        _check_dimension(path, key, spec)
        if key.startswith("model.config."):
            _check_model_field(path, key, base)
        else:
            set_dotted(copy.deepcopy(base), key.split("."), None)  # raises for a typo
    return SweepSpec(base, base_path, study, space)


def _check_model_field(path: Path, key: str, base: Mapping[str, Any]) -> None:
    """Refuse a ``model.config`` key the model's config class lacks: the first trial trained
    up to building the model and then stopped the sweep with a traceback."""
    schema = schema_class(base, ("model", "config"))
    if schema is None:  # an unknown model name, which building the model names
        return
    field = key.split(".")[2]
    fields = field_names(schema)
    if field not in fields:
        raise ConfigError(unknown_key_message(f"{path}: search_space.{key}", [field], fields))


def _check_study(path: Path, study: Mapping[str, Any]) -> None:
    """Refuse a direction, sampler or pruner Optuna would refuse when the study is opened,
    after the tracking store had been set up."""
    if study["direction"] not in ("minimize", "maximize"):
        raise ConfigError(f"{path}: study.direction must be minimize or maximize")
    for key, make in (("sampler", make_sampler), ("pruner", make_pruner)):
        try:
            make(study[key])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: study.{key}: {exc}") from exc


def _check_metric(path: Path, metric: Any, base: Mapping[str, Any]) -> None:
    """Refuse a study metric no trial logs: pruning and checkpointing need it every epoch,
    and Lightning only said so after a whole trial had trained."""
    known = logged_metrics(base)
    if metric not in known:
        raise ConfigError(
            f"{path}: study.metric {metric!r} is not logged by training"
            f"{did_you_mean(str(metric), known)} (it logs {', '.join(known)})"
        )


def _check_dimension(path: Path, key: str, spec: Mapping[str, Any]) -> None:
    """Refuse a dimension Optuna would refuse, now rather than at the first trial."""
    kind = spec.get("type")
    needs = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
    if kind not in needs:
        raise ConfigError(f"{path}: search_space.{key}.type must be float, int or categorical")
    missing = [k for k in needs[kind] if k not in spec]
    if missing:
        raise ConfigError(f"{path}: search_space.{key} ({kind}) needs {missing}")
    if kind == "categorical":
        return
    try:
        low, high = float(spec["low"]), float(spec["high"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: search_space.{key}: low and high must be numbers") from exc
    if low > high:
        raise ConfigError(f"{path}: search_space.{key}: low {low:g} is above high {high:g}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{path}: search_space.{key}: log: true needs low above 0")


def suggest(trial: Any, space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per dimension of the search space, drawn by the trial's sampler."""
    values = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            values[key] = trial.suggest_float(
                key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
            )
        elif kind == "int":
            values[key] = trial.suggest_int(
                key,
                int(spec["low"]),
                int(spec["high"]),
                step=int(spec.get("step", 1)),
                log=bool(spec.get("log", False)),
            )
        else:
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
    return values


def make_sampler(settings: Mapping[str, Any], seed_offset: int = 0) -> Any:
    """An explicit sampler (Optuna 5 changed defaults, so nothing is left implicit)."""
    import optuna

    settings = dict(settings)
    name = settings.pop("name", "tpe")
    seed = settings.pop("seed", None)
    seed = None if seed is None else int(seed) + seed_offset
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **settings)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"study.sampler.name must be tpe or random, not {name!r}")


def make_pruner(settings: Mapping[str, Any]) -> Any:
    import optuna

    settings = dict(settings)
    name = settings.pop("name", "median")
    if name == "median":
        return optuna.pruners.MedianPruner(**settings)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ConfigError(f"study.pruner.name must be median or none, not {name!r}")


STORAGE_HINT = "give sqlite:///PATH.db (a file) or a postgresql:// or mysql:// URL"


def check_storage(url: str) -> None:
    """Refuse a ``--storage`` that is no database URL, or an SQLite one naming a folder,
    before any work: a plain path was a SQLAlchemy traceback after the tracking store was
    set up."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ArgumentError as exc:
        raise ConfigError(f"--storage {url!r} is not a database URL: {STORAGE_HINT}") from exc
    if url.startswith("sqlite:///") and Path(url.removeprefix("sqlite:///")).is_dir():
        raise ConfigError(f"--storage {url}: names a folder, not a database file: {STORAGE_HINT}")


def _storage(url: str) -> Any:
    """RDB storage; SQLite waits for locks instead of failing when workers write at once.
    A database that cannot be opened (no driver, no server) is one line naming --storage."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    try:
        if url.startswith("sqlite:///"):
            database = Path(url.removeprefix("sqlite:///"))
            # Creating the schema is not safe for two processes at once; using it is.
            with file_lock(database.with_name(database.name + ".lock")):
                return optuna.storages.RDBStorage(
                    url, engine_kwargs={"connect_args": {"timeout": 60}}
                )
        return optuna.storages.RDBStorage(url)
    except (SQLAlchemyError, ImportError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"--storage {_safe_url(url)}: cannot open it ({first})") from exc


def study_settings(spec: SweepSpec) -> dict[str, Any]:
    """What a study's trial values mean, recorded when it is made: the metric and its
    direction, a hash per search-space dimension and per base config section (so a
    difference can be named), less the sections a worker may set for itself."""
    return {
        "metric": spec.study["metric"],
        "direction": spec.study["direction"],
        "search_space": {key: json_digest(value, 16) for key, value in spec.search_space.items()},
        "base_config": {
            key: json_digest(value, 16)
            for key, value in spec.base_config.items()
            if key not in WORKER_SECTIONS
        },
    }


def _check_settings(study: Any, spec: SweepSpec, storage_url: str) -> None:
    """Refuse to join a study made with another metric, direction, search space or base
    config: its best value was reported under the new metric's name and new trials were
    pruned against the old ones. A study made before settings were recorded is joined."""
    recorded = study.user_attrs.get(SETTINGS_ATTR)
    if not isinstance(recorded, dict):
        return
    mine = study_settings(spec)
    differences = []
    if (recorded.get("metric"), recorded.get("direction")) != (mine["metric"], mine["direction"]):
        differences.append(
            f"metric {recorded.get('metric')} ({recorded.get('direction')}), "
            f"not {mine['metric']} ({mine['direction']})"
        )
    for part, what in (("search_space", "search space"), ("base_config", "base config")):
        old, new = recorded.get(part) or {}, mine[part]
        changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        if changed:
            differences.append(f"another {what} (differing in {', '.join(changed)})")
    if differences:
        raise ConfigError(
            f"study {study.study_name!r} in {_safe_url(storage_url)} was made with "
            f"{'; '.join(differences)}: give another --study name, or run the sweep file "
            "and overrides it was made with"
        )


def open_study(spec: SweepSpec, storage_url: str, name: str, client: Any, experiment_id: str):
    """Create the study and its MLflow parent run, or join both if another worker made them.

    Creating the study is the race-free election: exactly one worker's ``create_study``
    succeeds, and that worker records its settings (:func:`study_settings`) and opens the
    parent run; the others wait for its id, and join only a study with their own settings.
    """
    import optuna

    storage = _storage(storage_url)
    direction = spec.study["direction"]
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            direction=direction,
            sampler=make_sampler(spec.study["sampler"]),
            pruner=make_pruner(spec.study["pruner"]),
        )
    except optuna.exceptions.DuplicatedStudyError:
        # Joiners draw from their own seed stream, so two workers never repeat each other.
        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=make_sampler(spec.study["sampler"], seed_offset=1000 + os.getpid()),
            pruner=make_pruner(spec.study["pruner"]),
        )
        _check_settings(study, spec, storage_url)
        parent = _wait_for_parent(study, client, experiment_id, name)
        # the creator writes its settings before the parent run's id: now they are there
        _check_settings(_reload(study), spec, storage_url)
        return study, parent
    study.set_user_attr(SETTINGS_ATTR, study_settings(spec))
    parent = client.create_run(
        experiment_id,
        run_name=f"sweep-{name}",
        tags={
            "quill.sweep.study": name,
            "quill.sweep.role": "parent",
            "quill.sweep.storage": _safe_url(storage_url),
        },
    )
    study.set_user_attr(PARENT_RUN_ATTR, parent.info.run_id)
    return study, parent.info.run_id


def _wait_for_parent(study: Any, client: Any, experiment_id: str, name: str) -> str:
    deadline = time.monotonic() + PARENT_WAIT_S
    while time.monotonic() < deadline:
        parent = study.user_attrs.get(PARENT_RUN_ATTR)
        if parent:
            return parent
        time.sleep(0.5)
        study = _reload(study)
    # The creator died before opening it: open one so trials are still grouped.
    run = client.create_run(
        experiment_id,
        run_name=f"sweep-{name}",
        tags={"quill.sweep.study": name, "quill.sweep.role": "parent"},
    )
    study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
    return run.info.run_id


def _reload(study: Any) -> Any:
    import optuna

    return optuna.load_study(study_name=study.study_name, storage=study._storage)


def _safe_url(url: str) -> str:
    """A storage URL without its password, for tags.

    >>> _safe_url("postgresql://me:secret@db:5432/optuna")
    'postgresql://me:***@db:5432/optuna'
    """
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def objective_for(spec: SweepSpec, parent_run_id: str, study_name: str):
    """The function Optuna calls per trial: one tracked training run, its best metric back."""
    import optuna
    from optuna_integration import PyTorchLightningPruningCallback

    from quill.training.train import train

    metric = spec.study["metric"]

    def objective(trial: optuna.Trial) -> float:
        config = resolve_config(base=spec.base_config)
        params = suggest(trial, spec.search_space)
        for key, value in params.items():
            set_dotted(config, key.split("."), value, add=True)
        config["tracking"]["run_name"] = f"{study_name}-trial-{trial.number}"
        config["checkpoint"]["monitor"] = metric
        tags = {
            "mlflow.parentRunId": parent_run_id,
            "quill.sweep.study": study_name,
            "quill.sweep.trial": str(trial.number),
        }
        run_ids: list[str] = []
        pruning = PyTorchLightningPruningCallback(trial, monitor=metric)

        def run_started(run_id: str) -> None:
            run_ids.append(run_id)
            trial.set_user_attr(RUN_ID_ATTR, run_id)

        try:
            result = train(
                config,
                config_path=str(spec.base_path),
                extra_callbacks=[pruning],
                tags=tags,
                run_started=run_started,
            )
        except optuna.TrialPruned:
            _mark(config, run_ids, "pruned")
            raise
        except SystemExit as exc:
            # Lightning answers Ctrl+C with a graceful shutdown and sys.exit(1), which Optuna
            # lets through with the trial left RUNNING; an interrupt it marks FAIL.
            raise KeyboardInterrupt from exc
        _mark(config, run_ids, "complete")
        if result.best_score is None:
            raise ConfigError(f"trial {trial.number} produced no {metric}: did validation run?")
        return result.best_score

    return objective


def _mark(config: Mapping[str, Any], run_ids: list[str], state: str) -> None:
    if not run_ids or config["tracking"]["logger"] != "mlflow":
        return
    from mlflow import MlflowClient

    client = MlflowClient(config["tracking"]["tracking_uri"] or default_tracking_uri())
    client.set_tag(run_ids[0], "quill.sweep.state", state)
    if state == "pruned":
        client.set_terminated(run_ids[0], "KILLED")


class _OneLineForQuillErrors(logging.Filter):
    """Drops the traceback from Optuna's "Trial N failed" warning when a trial stopped on a
    :class:`~quill.errors.QuillError` (missing data, a model that does not fit): the message
    says what to fix, and the sweep stops with it in one line; the warning printed two full
    tracebacks before it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], QuillError):
            record.exc_info = None
        return True


@dataclass
class SweepResult:
    study_name: str
    parent_run_id: str
    best_number: int | None
    best_value: float | None
    best_params: dict[str, Any]
    plots: list[Path]


def run_sweep(
    spec: SweepSpec,
    trials: int,
    storage_url: str | None = None,
    study_name: str | None = None,
    out_dir: Path | None = None,
) -> SweepResult:
    """Run ``trials`` trials in this process (other workers may be adding their own)."""
    import optuna
    from mlflow import MlflowClient

    name = study_name or spec.study["name"]
    storage_url = storage_url or default_storage()
    tracking_cfg = spec.base_config["tracking"]
    if tracking_cfg["logger"] != "mlflow":
        raise ConfigError("sweeps record trials as MLflow child runs: use tracking.logger=mlflow")
    out_dir = out_dir or project_root() / spec.base_config["output_dir"] / "sweeps" / name
    check_output(out_dir, folder=True)  # the plots are written after every trial
    check_storage(storage_url)
    uri = tracking_cfg["tracking_uri"] or default_tracking_uri()
    spec.base_config["tracking"]["tracking_uri"] = uri
    prepare_store(uri)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, tracking_cfg["experiment"], uri)
    study, parent = open_study(spec, storage_url, name, client, experiment_id)
    # the parent run ends however the sweep does: left RUNNING, it looked alive forever
    status = "FAILED"
    optimize_log = logging.getLogger("optuna.study._optimize")
    one_line = _OneLineForQuillErrors()
    optimize_log.addFilter(one_line)
    try:
        study.optimize(objective_for(spec, parent, name), n_trials=trials, gc_after_trial=True)
        study = _reload(study)
        plots = write_plots(study, out_dir)
        for plot in plots:
            client.log_artifact(parent, str(plot), "sweep")
        completed = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
        best = study.best_trial if completed else None
        tags = {"quill.sweep.trials": str(len(study.trials))}
        metrics = {}
        if best is not None:
            tags["quill.sweep.best_trial"] = str(best.number)
            tags["quill.sweep.best_run"] = str(best.user_attrs.get(RUN_ID_ATTR, ""))
            metrics[f"best_{spec.study['metric']}"] = float(best.value)
        # every worker writes this summary when it finishes, possibly at the same moment
        log_to_shared_run(client, parent, tags, metrics)
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        optimize_log.removeFilter(one_line)
        client.set_terminated(parent, status)
    return SweepResult(
        name,
        parent,
        best.number if best else None,
        float(best.value) if best else None,
        dict(best.params) if best else {},
        plots,
    )


#: The page of a sweep's plots (in its output folder and in the parent run's artifacts).
PLOTS_PAGE = "sweep_plots.html"


def write_plots(study: Any, out_dir: Path) -> list[Path]:
    """Parameter importance, parallel coordinates and history on one offline HTML page.

    The plotly library (4.8 MB) is inlined once, with the first figure drawn, and the later
    figures use that copy (``include_plotlyjs=False``): one page per plot carried one copy
    each. Importance needs at least two finished trials with varied parameters; with fewer,
    that plot is skipped and the reason is written in its place.
    """
    import html

    from optuna import visualization as vis

    out_dir.mkdir(parents=True, exist_ok=True)
    sections = []
    library_included = False
    for name, title, plot in (
        ("param_importances", "Parameter importance", vis.plot_param_importances),
        ("parallel_coordinate", "Parallel coordinates", vis.plot_parallel_coordinate),
        ("optimization_history", "Optimization history", vis.plot_optimization_history),
    ):
        try:
            figure = plot(study).to_html(
                full_html=False, include_plotlyjs=not library_included, div_id=name
            )
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            sections.append(f"<h2>{title}</h2><p>not drawn: {html.escape(str(exc))}</p>")
            continue
        library_included = True
        sections.append(f"<h2>{title}</h2>{figure}")
    name = html.escape(str(study.study_name))
    path = out_dir / PLOTS_PAGE
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>Sweep {name}</title></head>"
        f"<body style='font-family:system-ui,sans-serif'><h1>Sweep {name}</h1>"
        f"{''.join(sections)}</body></html>",
        encoding="utf-8",
    )
    return [path]
