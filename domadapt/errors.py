"""Typed, user-facing errors.

Every error a user can cause (bad name, bad file, bad config) is raised as a
subclass of :class:`DomadaptError` with a single readable sentence; the CLI
prints that sentence and exits with code 2 instead of showing a traceback.
"""


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
