"""The one kind of failure the ``scepline`` command reports without a traceback."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """Something the operator can fix: a bad setting, a busy port, a missing CA
    or database. ``main`` prints the message (one line per line of it, after
    ``scepline:``) and exits with ``status``."""

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
