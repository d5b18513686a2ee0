"""Exceptions raised by samlib.

Every error that a user can cause (a missing checkpoint, a data folder that is not there, an array of
the wrong shape) is a :class:`SamlibError`, with a message that says what was wrong and what to do.
"""

from __future__ import annotations

__all__ = ["CheckpointUnavailableError", "DataNotFoundError", "InvalidInputError", "SamlibError"]


class SamlibError(Exception):
    """Base class of all samlib errors."""


class CheckpointUnavailableError(SamlibError):
    """A model checkpoint could not be found, downloaded or verified."""


class DataNotFoundError(SamlibError):
    """A data set (or a results file) is not where samlib looked for it."""


class InvalidInputError(SamlibError, ValueError):
    """An argument has the wrong type, shape, range or value."""
