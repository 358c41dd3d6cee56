"""Errors raised by the training package.

Every error a user can cause (bad data, bad configuration, missing weights) derives from
``TrainingError`` so the CLI can print one line and exit with code 2, and the Django app can
store the message on the run.
"""


class TrainingError(Exception):
    """Base class for errors that should be reported to the user as one clear sentence."""


class ConfigError(TrainingError, ValueError):
    """A configuration value is invalid (unknown optimizer, negative epochs, ...)."""


class DataError(TrainingError):
    """The dataset on disk cannot be used (missing folder, too few classes or images, ...)."""


class WeightsUnavailable(TrainingError):
    """Pretrained weights for a backbone are not available on this machine."""


class NonFiniteLoss(TrainingError):
    """The training loss became NaN or infinite."""


class Cancelled(TrainingError):
    """The reporter asked the run to stop (cooperative cancellation)."""
