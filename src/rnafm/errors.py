"""Exceptions raised for user-facing problems.

Every message names the offending file (when there is one) and says what to do.
"""

from __future__ import annotations

__all__ = ["RnafmError", "InputError", "SlideError", "IncompatibleRunError"]


class RnafmError(Exception):
    """Base class of all errors rnafm raises on purpose."""


class InputError(RnafmError, ValueError):
    """A user-supplied file or option is missing, malformed or inconsistent."""


class SlideError(RnafmError):
    """One slide cannot be processed; cohort runs record it and go on."""


class IncompatibleRunError(RnafmError):
    """A run directory was written by an incompatible rnafm version or is incomplete."""
