"""The one error hierarchy of tomostream.

Each subclass also inherits the builtin exception it means, so callers may catch either
(``except ValueError`` keeps working). Messages name the PV, device or parameter and the
offending value.
"""


class TomostreamError(Exception):
    """Base class of every error raised by tomostream."""


class BadFrame(TomostreamError, ValueError):
    """A frame (projection, dark or flat) of the wrong shape, dtype or content."""


class BadParameter(TomostreamError, ValueError):
    """A reconstruction or acquisition parameter outside its valid range."""


class BackendUnavailable(TomostreamError, RuntimeError):
    """The requested compute backend (e.g. CuPy) cannot be used on this machine."""


class CaptureError(TomostreamError, OSError):
    """A capture could not be written (path refused, disk full, ...)."""


class AutosaveError(TomostreamError, OSError):
    """An autosave file that cannot be read, or is not a complete ``.sav`` file."""


class ConnectionLost(TomostreamError, ConnectionError):
    """An EPICS server (IOC, PVA channel) did not answer or went away."""


class AccessDenied(TomostreamError, PermissionError):
    """A server refused this client's credentials (a wrong or missing API key)."""


class TomostreamTimeout(TomostreamError, TimeoutError):
    """Something did not happen within its time limit."""
