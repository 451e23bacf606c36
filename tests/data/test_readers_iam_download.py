"""IAM download path, without the network: checksums, unpacking, streaming from 127.0.0.1."""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from quill.data.download import (
    SOURCES,
    SUMS_NAME,
    DownloadError,
    download_iam,
    fetch,
    read_sums,
    unpack,
    verify,
)


def _file(tmp_path: Path, data: bytes = b"iam archive bytes") -> tuple[Path, str]:
    path = tmp_path / "xml.tgz"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_pinned_checksum_accepts_the_right_file_and_deletes_a_wrong_one(tmp_path: Path):
    path, digest = _file(tmp_path)
    assert verify(path, digest) == "xml.tgz: SHA-256 verified"
    with pytest.raises(DownloadError, match="does not match .* pinned in Quill"):
        verify(path, "0" * 64)
    assert not path.exists()


def test_unpinned_file_is_recorded_then_held_to_its_record(tmp_path: Path):
    path, digest = _file(tmp_path)
    assert "recorded" in verify(path, None)
    assert read_sums(tmp_path) == {"xml.tgz": digest}
    assert verify(path, None) == "xml.tgz: SHA-256 verified"
    path.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=f"recorded in {SUMS_NAME}"):
        verify(path, None)


#: The one digest published for IAM: the reference system's single-archive mirror.
FSDL_SHA256 = "f3c9e87a88a313e557c6d3548ed8a2a1af2dc3c4a678c5f3fc6f972ba4a50c55"
#: The FKI archives, which publish none: recorded in SHA256SUMS on first use.
FKI_FILES = {
    "xml.tgz",
    "formsA-D.tgz",
    "formsE-H.tgz",
    "formsI-Z.tgz",
    "largeWriterIndependentTextLineRecognitionTask.zip",
}


def test_every_source_file_is_pinned_or_recorded_on_first_use():
    pinned = {
        (source, remote.name): remote.sha256
        for source, files in SOURCES.items()
        for remote in files
        if remote.sha256 is not None
    }
    unpinned = {
        (source, remote.name)
        for source, files in SOURCES.items()
        for remote in files
        if remote.sha256 is None
    }
    assert pinned == {("fsdl", "iamdb.zip"): FSDL_SHA256}
    assert unpinned == {("fki", name) for name in FKI_FILES}


def test_unpack_tar_and_zip_and_refuse_escaping_members(tmp_path: Path):
    tgz = tmp_path / "ok.tgz"
    with tarfile.open(tgz, "w:gz") as bundle:
        info = tarfile.TarInfo("a01-000u.xml")
        info.size = 5
        bundle.addfile(info, io.BytesIO(b"<form"))
    unpack(tgz, tmp_path / "xml")
    assert (tmp_path / "xml" / "a01-000u.xml").read_bytes() == b"<form"

    evil_tar = tmp_path / "evil.tgz"
    with tarfile.open(evil_tar, "w:gz") as bundle:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        bundle.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(DownloadError, match="unsafe member"):
        unpack(evil_tar, tmp_path / "x")
    evil_zip = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil_zip, "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    with pytest.raises(DownloadError, match="escapes"):
        unpack(evil_zip, tmp_path / "z")
    assert not (tmp_path / "outside.txt").exists()


def test_missing_credentials_stop_before_any_network(tmp_path: Path):
    with pytest.raises(DownloadError, match="IAM_USERNAME"):
        download_iam(tmp_path, source="fki", env={})
    with pytest.raises(DownloadError, match="unknown source"):
        download_iam(tmp_path, source="elsewhere", env={})


@pytest.fixture
def local_server(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/served``."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_streams_to_disk_then_verifies(local_server: str, tmp_path: Path):
    data = bytes(range(256)) * 5000
    (tmp_path / "served" / "forms.tgz").write_bytes(data)
    target = tmp_path / "got" / "forms.tgz"
    target.parent.mkdir()
    with httpx.Client(trust_env=False) as client:
        fetch(client, f"{local_server}/forms.tgz", target)
        assert verify(target, hashlib.sha256(data).hexdigest()) == "forms.tgz: SHA-256 verified"
        with pytest.raises(DownloadError, match="answered 404"):
            fetch(client, f"{local_server}/missing.tgz", tmp_path / "got" / "missing.tgz")
    assert not (tmp_path / "got" / "missing.tgz").exists()


def test_unreachable_server_is_a_clear_error(tmp_path: Path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        httpx.Client(trust_env=False) as client,
        pytest.raises(DownloadError, match="cannot reach"),
    ):
        fetch(client, f"http://127.0.0.1:{port}/xml.tgz", tmp_path / "xml.tgz")
