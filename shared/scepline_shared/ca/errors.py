"""CA errors: each carries the datum a caller needs to report it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CaError", "CaMaterialError", "CaNotInitialised", "PolicyViolation"]


class CaError(Exception):
    """Base class of every error raised by :mod:`scepline_shared.ca`."""


class PolicyViolation(CaError, ValueError):
    """The CSR is refused by the certificate profile (requester's fault).

    ``reason`` is a short human-readable text, safe to return to the client
    (SCEP failInfoText) and to log.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CaNotInitialised(CaError):
    """CA material is absent: the lab CA was never created or the path is wrong."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"CA material not initialised: {path} is missing")
        self.path = path


class CaMaterialError(CaError):
    """CA material exists but is unusable (key/cert mismatch, expired, corrupt)."""

    def __init__(self, path: Path | None, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path is not None else reason)
        self.path = path
        self.reason = reason
