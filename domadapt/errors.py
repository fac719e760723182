"""Typed, user-facing errors.

Every error a user can cause (bad name, bad file, bad config) is raised as a
subclass of :class:`DomadaptError` with a single readable sentence; the CLI
prints that sentence and exits with code 2 instead of showing a traceback.
"""

import errno


class DomadaptError(Exception):
    """An error caused by the user's input, reported as one sentence."""


class ConfigError(DomadaptError):
    """Unknown key, wrong type or invalid value in a configuration."""


class DataError(DomadaptError):
    """Missing, corrupt or inconsistent data (files, shapes, masks, voxel sizes)."""


class DownloadError(DataError):
    """A dataset file could not be fetched or failed its checksum."""


class CheckpointError(DomadaptError):
    """A checkpoint file that is not ours, is truncated, or does not fit."""


class RunFolderError(DomadaptError):
    """A run folder that exists (without --resume/--overwrite) or is inconsistent."""


class TrainingError(DomadaptError):
    """Training cannot go on (e.g. the loss became NaN)."""


class StorageError(DomadaptError):
    """A file could not be written: the disk, a quota or a file-size limit is full."""


#: errno values that mean the storage, not the data, is at fault.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def write_failure(path: object, exc: BaseException) -> StorageError:
    """The one sentence for a write that failed half-way (the file was not kept)."""
    reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return StorageError(
        f"Could not write {path}: no space left on the device or a file-size limit reached "
        f"({reason}); free space and run again (a run continues with --resume)."
    )
