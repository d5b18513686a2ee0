"""Exceptions raised by samlib.

Every error that a user can cause (a missing checkpoint, a data folder that is not there, an array of
the wrong shape) is a :class:`SamlibError`, with a message that says what was wrong and what to do.
"""

from __future__ import annotations

__all__ = [
    "CheckpointUnavailableError",
    "CorruptFileError",
    "TrainingDivergedError",
    "DataNotFoundError",
    "InvalidInputError",
    "SamlibError",
]


class SamlibError(Exception):
    """Base class of all samlib errors."""


class CheckpointUnavailableError(SamlibError):
    """A model checkpoint could not be found, downloaded or verified."""


class DataNotFoundError(SamlibError):
    """A data set (or a results file) is not where samlib looked for it."""


class InvalidInputError(SamlibError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class CorruptFileError(SamlibError):
    """A file is there but cannot be used: truncated, corrupt, of the wrong format, or with bad values.

    The message names the file (and the line, for text formats) and what was wrong with it.
    """


class TrainingDivergedError(SamlibError, FloatingPointError):
    """A training loss (or the weights) became NaN or infinite; the message names the step."""
