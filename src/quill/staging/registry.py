"""Staged models in the MLflow model registry, with lineage back to their training run.

Each staged directory is logged as the artifacts of a ``quill-staging`` run (tagged with the
training run it came from) and registered as a new version of a registered model. The
version's tags carry the lineage (training run, checkpoint, dataset version) so that
``quill model fetch NAME@ALIAS`` can later bring back the exact files and say where they
came from.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quill.errors import QuillError
from quill.model_files import METADATA_FILE
from quill.staged_model import StagedModel

if TYPE_CHECKING:
    from mlflow.exceptions import MlflowException

STAGING_EXPERIMENT = "quill-staging"
ARTIFACT_PATH = "staged_model"


class RegistryError(QuillError, LookupError):
    """A registered model, version or alias does not exist, the store cannot be opened or
    read, or it refused a write."""

    code = "registry_error"


@dataclass(frozen=True)
class ModelReference:
    """``NAME``, ``NAME@ALIAS`` or ``NAME@VERSION`` (a number), parsed.

    >>> ModelReference.parse("quill-line@champion")
    ModelReference(name='quill-line', version=None, alias='champion')
    >>> ModelReference.parse("quill-line@3").version
    '3'
    >>> ModelReference.parse("quill-line").alias is None
    True
    """

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelReference:
        name, _, suffix = text.partition("@")
        if not re.fullmatch(r"[\w.\-]+", name) or (
            suffix and not re.fullmatch(r"[\w.\-]+", suffix)
        ):
            raise RegistryError(f"{text!r} is not NAME, NAME@ALIAS or NAME@VERSION")
        if suffix.isdigit():
            return cls(name, version=suffix)
        return cls(name, alias=suffix or None)


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    source: str
    tags: dict[str, str]


def _client(tracking_uri: str, *, create: bool = False) -> Any:
    """A registry client; ``create`` makes a local store that is not there yet (registering),
    else a missing one is a ``RegistryError`` (looking a model up must not leave an empty
    store behind)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from quill.training.tracking_store import (
        NoTrackingStore,
        TrackingStoreUnreadable,
        prepare_store,
        require_store,
    )

    try:
        if create:
            prepare_store(tracking_uri)
        else:
            require_store(tracking_uri)
    except (NoTrackingStore, TrackingStoreUnreadable) as exc:
        raise RegistryError(f"no model registry: {exc}") from exc
    try:
        return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    except MlflowException as exc:  # a scheme MLflow has no registry for (foo://)
        raise RegistryError(f"cannot open the model registry at {tracking_uri}: {exc}") from exc


def lineage_tags(model: StagedModel) -> dict[str, str]:
    """Registry tags of a staged model: where it came from and what it is."""
    lineage = model.lineage
    tags = {
        "quill.model_version": model.version,
        "quill.family": model.family,
        "quill.model_name": model.model_name,
        "run_id": lineage.run_id or "",
        "checkpoint": lineage.checkpoint or "",
        "checkpoint_sha256": lineage.checkpoint_sha256 or "",
        "dataset_version": lineage.dataset_version or "",
    }
    return {k: str(v) for k, v in tags.items()}


def register(
    staged_dir: Path, tracking_uri: str, name: str | None = None, alias: str | None = None
) -> RegisteredVersion:
    """Log ``staged_dir`` as run artifacts and register it as a new model version."""
    from mlflow.exceptions import MlflowException

    from quill.training.tracking_store import ensure_experiment

    model = StagedModel.load(staged_dir)
    name = name or model.name
    client = _client(tracking_uri, create=True)
    tags = lineage_tags(model)
    experiment_id = ensure_experiment(client, STAGING_EXPERIMENT, tracking_uri)
    run = client.create_run(
        experiment_id,
        run_name=f"stage {name} {model.version}",
        tags={**tags, "mlflow.parentRunId": tags["run_id"]} if tags["run_id"] else tags,
    )
    stage_run_id = run.info.run_id
    try:
        client.log_artifacts(stage_run_id, str(staged_dir), ARTIFACT_PATH)
        for key, value in model.metrics.items():
            client.log_metric(stage_run_id, key, float(value))
        client.set_terminated(stage_run_id)
        with contextlib.suppress(MlflowException):  # already registered: add a version
            client.create_registered_model(name, description=f"Quill {model.family} recognizer")
        source = f"{run.info.artifact_uri}/{ARTIFACT_PATH}"
        version = client.create_model_version(
            name, source, run_id=tags["run_id"] or stage_run_id, tags=tags
        )
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except MlflowException as exc:
        client.set_terminated(stage_run_id, status="FAILED")
        raise RegistryError(f"could not register {staged_dir} as {name!r}: {exc}") from exc
    return RegisteredVersion(name, str(version.version), source, tags)


def resolve(reference: str, tracking_uri: str) -> RegisteredVersion:
    """The model version a ``NAME[@ALIAS|VERSION]`` names (NAME alone: the newest version)."""
    from mlflow.exceptions import MlflowException

    ref = ModelReference.parse(reference)
    client = _client(tracking_uri)
    try:
        if ref.alias:
            version = client.get_model_version_by_alias(ref.name, ref.alias)
        elif ref.version:
            version = client.get_model_version(ref.name, ref.version)
        else:
            versions = client.search_model_versions(f"name='{ref.name}'")
            if not versions:
                raise RegistryError(f"no versions of {ref.name!r} in {tracking_uri}")
            version = max(versions, key=lambda v: int(v.version))
    except MlflowException as exc:
        if _not_found(exc, ref):
            raise RegistryError(
                f"{reference!r} not found in the registry at {tracking_uri}"
            ) from exc
        raise RegistryError(
            f"could not look up {reference!r} in the registry at {tracking_uri}: {exc.message}"
        ) from exc
    return RegisteredVersion(ref.name, str(version.version), version.source, dict(version.tags))


def _not_found(exc: MlflowException, ref: ModelReference) -> bool:
    """Whether MLflow's error says the model or version does not exist (rather than that the
    store failed). A missing alias comes back as INVALID_PARAMETER_VALUE, not as
    RESOURCE_DOES_NOT_EXIST."""
    codes = {"RESOURCE_DOES_NOT_EXIST"} | ({"INVALID_PARAMETER_VALUE"} if ref.alias else set())
    return exc.error_code in codes


def fetch(reference: str, out_dir: Path, tracking_uri: str) -> Path:
    """Download the staged files of ``reference`` into ``out_dir``; returns the folder.

    ``out_dir`` is replaced whole, as ``quill stage`` replaces its folder: the model is
    downloaded beside it and renamed into place, so a model fetched over another is never a
    mix of both, and a folder that is not a staged model is refused before any download
    (:func:`~quill.staging.stage.check_target`, whose ``StagingTargetError`` says why).
    """
    import mlflow.artifacts

    # lazy: staging imports torch, which looking up and registering models never need
    from quill.staging.stage import check_target, replace_folder

    check_target(out_dir)
    found = resolve(reference, tracking_uri)
    target = out_dir.resolve()  # "a/.." has the parent "a", which the swap would remove
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as scratch:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=found.source, dst_path=scratch, tracking_uri=tracking_uri
            )
        )
        if not (local / METADATA_FILE).is_file():
            raise RegistryError(f"{reference!r} at {found.source} has no {METADATA_FILE}")
        replace_folder(target, local)
    return out_dir
