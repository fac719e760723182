"""A disk cache of rendered synthetic volumes.

Rendering one synthetic volume takes seconds, over 90 % of a synthetic run's data
preparation, and every run of a benchmark or an auto portfolio renders the same volumes
again. The key holds everything the pixels depend on: the domain's parameters, split,
seed and shape, the generator's source code, and numpy's and scipy's versions, so a
change to any of them renders anew instead of reading a stale volume.

``$DOMADAPT_CACHE`` names the folder (``off`` disables the cache); by default it is the
user cache folder that pooch picks for the platform.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from domadapt.data.atomic import atomic_path

CACHE_ENV = "DOMADAPT_CACHE"
_OFF = {"", "0", "off", "none", "false"}
#: The modules whose code decides a synthetic volume's pixels.
_GENERATOR = ("synthetic.py", "synthetic_geometry.py", "synthetic_cell.py")


def cache_dir() -> Path | None:
    """The folder of cached volumes, or None when the cache is switched off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser() / "synthetic"
    import pooch

    return Path(pooch.os_cache("domadapt")) / "synthetic"


@lru_cache(maxsize=1)
def _generator_digest() -> str:
    import scipy

    h = hashlib.sha256(f"numpy {np.__version__} scipy {scipy.__version__}".encode())
    for name in _GENERATOR:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def volume_key(*parts: object) -> str:
    """A file name for the volume that ``parts`` (and the generator's code) decide."""
    text = "|".join(repr(p) for p in parts) + "|" + _generator_digest()
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached(key: str, render: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(image, mask) read from the cache, or rendered and stored there.

    An unreadable entry is rendered again and replaced; a cache that cannot be written
    (read-only or full disk) costs only the rendering.
    """
    folder = cache_dir()
    if folder is None:
        return render()
    path = folder / f"{key}.npz"
    try:
        with np.load(path) as stored:
            return stored["image"], stored["mask"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
        pass
    image, mask = render()
    try:
        with atomic_path(path) as partial, open(partial, "wb") as handle:
            np.savez(handle, image=image, mask=mask)  # a handle: savez would append ".npz" to a name
    except OSError:
        pass
    return image, mask
