"""Cached, checksummed, atomic downloads of the public datasets.

A dataset archive is fetched into ``<data root>/<name>/`` by ``pooch.retrieve``
(a temporary file, its sha256 checked, and only then renamed to its final name,
with a progress bar), so an interrupted or tampered download never passes for a
good one. A
file the user placed by hand at the final path is accepted when its checksum
matches, which is also the way round a machine without internet; one that does
not match is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from domadapt.errors import DataError, DownloadError

#: Environment variable naming the data root (overridden by ``--data-root``).
DATA_ENV = "DOMADAPT_DATA"
_CHUNK = 1 << 20


def data_root(explicit: str | Path | None = None) -> Path:
    """Where datasets live: ``explicit`` (``--data-root``), else ``$DOMADAPT_DATA``, else a cache.

    The cache is the per-user cache folder (``$XDG_CACHE_HOME/domadapt`` or
    ``~/.cache/domadapt`` on Linux), so downloads survive between runs without
    cluttering the working directory.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    try:
        import pooch

        return Path(pooch.os_cache("domadapt"))
    except ImportError:  # pooch is a dependency, but keep the fallback cheap
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "domadapt"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large archives stay out of memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _retrieve(url: str, sha256: str, dest: Path, progress: bool) -> None:
    """pooch downloads into a temporary file, checks the hash, then renames it into place."""
    import pooch

    pooch.get_logger().setLevel("WARNING")
    pooch.retrieve(url, known_hash=f"sha256:{sha256.lower()}", fname=dest.name, path=dest.parent,
                   progressbar=progress)


def fetch(url: str, sha256: str, dest: Path, progress: bool = True) -> Path:
    """Return ``dest``, downloading ``url`` to it first unless a file with ``sha256`` is there.

    Raises :class:`DownloadError` when the download fails (naming the URL and
    where to place the file by hand) or its checksum does not match (naming
    both checksums); no partial file is left behind in either case.
    """
    import requests

    dest = Path(dest)
    if dest.is_file():
        found = sha256_of(dest)
        if found == sha256.lower():
            return dest
        raise DownloadError(
            f"Checksum mismatch for {dest}, which was placed there by hand: expected sha256 "
            f"{sha256}, got {found}; replace it with the file from {url}, or delete it to download."
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        _retrieve(url, sha256, dest, progress)
    except ValueError as exc:  # pooch: the downloaded file's hash differs (it deleted the file)
        got = re.search(r"but got ([0-9a-f]{64})", str(exc))
        raise DownloadError(
            f"Checksum mismatch for {url}: expected sha256 {sha256}, got "
            f"{got.group(1) if got else 'another hash'}; the file was deleted, try again or "
            f"download it by hand to {dest}."
        ) from None
    except (OSError, requests.RequestException) as exc:
        raise DownloadError(
            f"Could not download {url} ({type(exc).__name__}); download it by hand and put it "
            f"at {dest}."
        ) from None
    return dest


def _check_members(archive: zipfile.ZipFile, path: Path) -> None:
    for name in archive.namelist():
        parts = Path(name).parts
        if Path(name).is_absolute() or ".." in parts:
            raise DataError(f"Archive {path} holds an unsafe path '{name}'; refusing to extract.")


def extract_zip(archive: Path, into: Path) -> list[Path]:
    """Unpack ``archive`` into ``into`` and return the top-level entries it created.

    Extraction happens in a temporary folder inside ``into`` and each top-level
    entry is then renamed into place, so a half-extracted dataset never sits at
    the path the loaders look at. Existing entries of the same name are replaced.
    """
    archive, into = Path(archive), Path(into)
    into.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extracting-", dir=into))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                _check_members(zf, archive)
                zf.extractall(tmp)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DataError(f"Could not extract archive {archive} ({exc}).") from None
        created = []
        for entry in sorted(tmp.iterdir()):
            target = into / entry.name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            os.replace(entry, target)
            created.append(target)
        return created
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
