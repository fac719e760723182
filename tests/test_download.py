"""Checksummed, atomic downloads against a local HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from domadapt.data import registry
from domadapt.data.download import data_root, extract_zip, fetch
from domadapt.errors import DataError, DownloadError

PAYLOAD = b"mitochondria " * 100
GOOD = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Keep urllib off any configured proxy: these tests talk to 127.0.0.1 only."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/served`` on an ephemeral loopback port; yield its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "file.bin").write_bytes(PAYLOAD)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    handler = functools.partial(Quiet, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("DOMADAPT_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "cli") == tmp_path / "cli"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("DOMADAPT_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data_root() == tmp_path / "cache" / "domadapt"


def test_good_checksum_leaves_only_the_file(server, tmp_path):
    url, _ = server
    dest = fetch(f"{url}/file.bin", GOOD, tmp_path / "data" / "file.bin", progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [p.name for p in dest.parent.iterdir()] == ["file.bin"]


def test_present_file_with_good_checksum_is_not_downloaded_again(tmp_path):
    dest = tmp_path / "file.bin"
    dest.write_bytes(PAYLOAD)  # placed by hand; the URL is unreachable
    assert fetch(_closed_port_url(), GOOD, dest, progress=False) == dest


def test_bad_checksum_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "data" / "file.bin"
    with pytest.raises(DownloadError, match=f"expected sha256 {'0' * 64}, got {GOOD}"):
        fetch(f"{url}/file.bin", "0" * 64, dest, progress=False)
    assert list(dest.parent.iterdir()) == []


def test_unreachable_url_says_where_to_put_the_file(tmp_path):
    dest = tmp_path / "data" / "file.bin"
    url = _closed_port_url()
    with pytest.raises(DownloadError) as err:
        fetch(url, GOOD, dest, progress=False)
    assert url in str(err.value) and str(dest) in str(err.value)
    assert list(dest.parent.iterdir()) == []


def test_extract_zip_and_unsafe_or_corrupt_archives(tmp_path):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Top/inner.txt", "x")
    assert extract_zip(archive, tmp_path / "out") == [tmp_path / "out" / "Top"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["Top"]  # no temp folder left
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DataError, match="unsafe"):
        extract_zip(tmp_path / "evil.zip", tmp_path / "out")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.zip"):
        extract_zip(tmp_path / "bad.zip", tmp_path / "out")


def _lucchi_like_zip(path: Path) -> None:
    """A two-slice archive in the exact Lucchi++ layout."""
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("Train", "Test"):
            for i in range(2):
                zf.writestr(f"Lucchi++/{split}_In/mask{i:04d}.png", _png(np.full((4, 4), 9)))
                zf.writestr(f"Lucchi++/{split}_Out/{i}.png", _png(np.eye(4) * 255))


def _png(arr: np.ndarray) -> bytes:
    return iio.imwrite("<bytes>", arr.astype(np.uint8), extension=".png")


def test_download_dataset_fetches_unpacks_and_loads(server, tmp_path, monkeypatch):
    url, served = server
    _lucchi_like_zip(served / "lucchi_pp.zip")
    sha = hashlib.sha256((served / "lucchi_pp.zip").read_bytes()).hexdigest()
    spec = dataclasses.replace(registry.get_spec("lucchi"), url=f"{url}/lucchi_pp.zip", sha256=sha)
    monkeypatch.setattr(registry, "_REAL", (spec,))
    folder = registry.download_dataset("lucchi", tmp_path / "root")
    assert folder == tmp_path / "root" / "lucchi" / "Lucchi++"
    vol = registry.load_split("lucchi", "test", data_root=tmp_path / "root")
    assert vol.shape == (2, 4, 4) and vol.mask.sum() == 8
