"""Download the IAM Handwriting Database for users who are online, checking every file.

IAM is free for non-commercial research but needs a registered account at the FKI (Fribourg)
site: set ``IAM_USERNAME`` (the e-mail you registered) and ``IAM_PASSWORD`` in the
environment. The archives are streamed to disk with a progress bar, their SHA-256 checked,
then unpacked into the layout :func:`quill.data.readers.iam.read_iam` reads.

Checksums: the reference system's single-archive mirror (``--source fsdl``) has a digest
pinned below. The FKI archives have none published, so the first download records each
file's SHA-256 in ``SHA256SUMS`` beside it (and prints it, to compare with a colleague's);
every later download or re-check must match that record. Nothing here runs in the tests,
which check the verification and extraction logic on local files and a local server.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from quill.data.manifest import file_sha256
from quill.errors import QuillError

if TYPE_CHECKING:  # httpx is imported where a download happens, not at CLI start
    import httpx

FKI = "https://fki.tic.heia-fr.ch"
SUMS_NAME = "SHA256SUMS"
USER_ENV, PASSWORD_ENV = "IAM_USERNAME", "IAM_PASSWORD"


class DownloadError(QuillError, RuntimeError):
    """A download cannot go on: no credentials, no network, a bad checksum."""

    code = "download_failed"


@dataclass(frozen=True)
class RemoteFile:
    """One archive: where it is, its pinned SHA-256 (None: not published) and where to unpack."""

    name: str
    url: str
    sha256: str | None
    unpack_to: str


#: Files per source. ``fki`` is the official site (login needed); ``fsdl`` the reference
#: system's public mirror (forms downsampled by 2, XML and task lists included).
SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "fki": (
        RemoteFile("xml.tgz", f"{FKI}/DBs/iamDB/data/xml.tgz", None, "xml"),
        RemoteFile("formsA-D.tgz", f"{FKI}/DBs/iamDB/data/formsA-D.tgz", None, "forms"),
        RemoteFile("formsE-H.tgz", f"{FKI}/DBs/iamDB/data/formsE-H.tgz", None, "forms"),
        RemoteFile("formsI-Z.tgz", f"{FKI}/DBs/iamDB/data/formsI-Z.tgz", None, "forms"),
        RemoteFile(
            "largeWriterIndependentTextLineRecognitionTask.zip",
            f"{FKI}/static/zip/largeWriterIndependentTextLineRecognitionTask.zip",
            None,
            "task",
        ),
    ),
    "fsdl": (
        RemoteFile(
            "iamdb.zip",
            "https://s3-us-west-2.amazonaws.com/fsdl-public-assets/iam/iamdb.zip",
            "f3c9e87a88a313e557c6d3548ed8a2a1af2dc3c4a678c5f3fc6f972ba4a50c55",
            "",
        ),
    ),
}


def read_sums(folder: Path) -> dict[str, str]:
    """File name -> SHA-256 from ``folder/SHA256SUMS`` (``sha256sum`` format)."""
    path = folder / SUMS_NAME
    if not path.is_file():
        return {}
    sums = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if digest and name:
            sums[name.strip()] = digest.strip()
    return sums


def verify(path: Path, pinned: str | None) -> str:
    """Check ``path`` against its pinned digest, else against ``SHA256SUMS`` beside it.

    Returns a note for the user. A file with no digest anywhere is recorded in
    ``SHA256SUMS`` (trust on first use). A mismatch deletes the file and raises
    :class:`DownloadError`, so a corrupt or substituted archive is never unpacked.
    """
    digest = file_sha256(path)
    recorded = read_sums(path.parent).get(path.name)
    expected = pinned or recorded
    if expected and digest != expected:
        path.unlink()
        origin = "pinned in Quill" if pinned else f"recorded in {SUMS_NAME}"
        raise DownloadError(
            f"{path.name}: SHA-256 {digest} does not match the {expected} {origin}; "
            "the download is corrupt or not the expected file. It was deleted: run again."
        )
    if expected:
        return f"{path.name}: SHA-256 verified"
    with open(path.parent / SUMS_NAME, "a") as sums:
        sums.write(f"{digest}  {path.name}\n")
    return (
        f"{path.name}: no published SHA-256; recorded {digest} in {SUMS_NAME} "
        "(later downloads must match it)"
    )


def unpack(archive: Path, destination: Path) -> None:
    """Extract a .tgz/.tar/.zip into ``destination``, refusing members that escape it."""
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                if not (root / member).resolve().is_relative_to(root):
                    raise DownloadError(f"{archive.name}: member {member!r} escapes the folder")
            bundle.extractall(root)
        return
    try:
        with tarfile.open(archive) as bundle:
            bundle.extractall(root, filter="data")
    except tarfile.FilterError as exc:
        raise DownloadError(f"{archive.name}: unsafe member refused ({exc})") from exc
    except tarfile.TarError as exc:
        raise DownloadError(f"{archive.name} is not a readable archive ({exc})") from exc


def fetch(client: httpx.Client, url: str, destination: Path, show_progress: bool = False) -> None:
    """Stream ``url`` to ``destination`` through ``client`` (an ``httpx.Client``).

    Writes to a ``.part`` file first so an interrupted download never looks complete.
    """
    import httpx

    partial = destination.with_name(destination.name + ".part")
    try:
        with client.stream("GET", url, follow_redirects=True) as response:
            if response.status_code in (401, 403):
                raise DownloadError(
                    f"{url}: access refused ({response.status_code}); check {USER_ENV} and "
                    f"{PASSWORD_ENV}, and that your IAM registration is confirmed"
                )
            response.raise_for_status()
            total = int(response.headers.get("content-length", 0)) or None
            with (
                open(partial, "wb") as handle,
                _byte_progress(destination.name, total, show_progress) as advance,
            ):
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    advance(len(chunk))
    except httpx.HTTPStatusError as exc:
        raise DownloadError(f"{url}: the server answered {exc.response.status_code}") from exc
    except httpx.TransportError as exc:
        raise DownloadError(
            f"cannot reach {url} ({exc.__class__.__name__}): this needs a network connection"
        ) from exc
    partial.replace(destination)


@contextmanager
def _byte_progress(name: str, total: int | None, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar in bytes; yields ``advance(n)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

    with Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task(name, total=total)
        yield lambda n: bar.advance(task, n)


def credentials(env: Mapping[str, str] = os.environ) -> tuple[str, str]:
    """(user, password) from the environment, or a DownloadError saying how to get them."""
    user, password = env.get(USER_ENV, ""), env.get(PASSWORD_ENV, "")
    if not user or not password:
        raise DownloadError(
            f"IAM needs a free account: register at {FKI}/register, then set {USER_ENV} "
            f"(your e-mail) and {PASSWORD_ENV} in the environment and run again"
        )
    return user, password


def download_iam(
    to: Path,
    source: str = "fki",
    env: Mapping[str, str] = os.environ,
    show_progress: bool = False,
) -> list[str]:
    """Download, verify and unpack IAM into ``to``; returns notes to show the user.

    Archives already present and verified are not downloaded again.
    """
    import httpx

    if source not in SOURCES:
        raise DownloadError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    files = SOURCES[source]
    login = credentials(env) if source == "fki" else None
    archives = Path(to) / "archives"
    archives.mkdir(parents=True, exist_ok=True)
    notes = []
    with httpx.Client(timeout=httpx.Timeout(60.0, connect=15.0)) as client:
        if login:
            _login(client, *login)
        for remote in files:
            path = archives / remote.name
            if not path.is_file():
                fetch(client, remote.url, path, show_progress)
            notes.append(verify(path, remote.sha256))
            unpack(path, Path(to) / remote.unpack_to)
    return notes


def _login(client: httpx.Client, user: str, password: str) -> None:
    """Open a session on the FKI site (a form login that sets a ``session`` cookie)."""
    import httpx

    try:
        client.post(f"{FKI}/login", data={"email": user, "password": password})
    except httpx.TransportError as exc:
        raise DownloadError(
            f"cannot reach {FKI} ({exc.__class__.__name__}): this needs a network connection"
        ) from exc
    if "session" not in client.cookies:
        raise DownloadError(f"login to {FKI} failed: check {USER_ENV} and {PASSWORD_ENV}")
