"""What an Intune call can end in: a result with a code, or one of three errors.

Business outcomes (a challenge that does not match, an expired challenge) are
HTTP 200 with a ``code``; they are ``IntuneResult`` values, not exceptions. The
exceptions say why there is no answer at all, typed by what the caller should
do: wait and retry (``IntuneUnavailable``), tell an admin
(``IntuneConfigurationError``), or give up on this request
(``IntuneProtocolError``). Every one of them means "do not issue".
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "SUCCESS",
    "IntuneConfigurationError",
    "IntuneError",
    "IntuneProtocolError",
    "IntuneResult",
    "IntuneUnavailable",
]

SUCCESS = "Success"


@dataclass(frozen=True)
class IntuneResult:
    """The ``code``/``errorDescription`` a ScepAction answered with."""

    code: str
    error_description: str = ""
    # client-request-id of the HTTP call that answered: Intune support's handle.
    activity_id: str = ""

    @property
    def ok(self) -> bool:
        # Exactly "Success": every other code, known or invented, is a failure
        # (docs/specs/intune-api.md, "Calls, results and errors").
        return self.code == SUCCESS


class IntuneError(Exception):
    """No usable answer from Entra, Graph or Intune."""

    def __init__(self, message: str, *, activity_id: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.activity_id = activity_id


class IntuneUnavailable(IntuneError):
    """Transient: network error, timeout, throttling or 5xx after the retry budget.

    ``retry_after`` is the wait the service asked for, when it named one.
    """

    def __init__(
        self, message: str, *, activity_id: str = "", retry_after: float | None = None
    ) -> None:
        super().__init__(message, activity_id=activity_id)
        self.retry_after = retry_after


class IntuneConfigurationError(IntuneError):
    """Our side is set up wrong (credentials, consent, app role, discovery).

    Retrying does not help until an admin acts, so callers fail closed at once.
    """


class IntuneProtocolError(IntuneError):
    """Intune refused our request as malformed (4xx) or answered something unreadable."""
