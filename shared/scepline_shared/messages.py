"""What travels between pipeline steps: "look at transaction X, step S".

The state store is the truth, so a message carries only the transaction id,
the step, and delivery bookkeeping (attempt, when it was queued, the last
error). It is JSON on the wire. ``schema_version`` is pinned: a worker that
reads a message of an unknown version treats it as unreadable and dead-letters
it, so an operator can replay it once every worker understands it.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

__all__ = ["DeadLetter", "MalformedMessage", "Step", "StepMessage", "utc_now"]


class Step(enum.StrEnum):
    """A step of the pipeline; each has its own queues and workers."""

    VALIDATE = "validate"
    SIGN = "sign"
    NOTIFY = "notify"


class MalformedMessage(ValueError):
    """A message body that is not a valid ``StepMessage`` (garbage, unknown schema)."""


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _to_utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


# Aware only: a naive timestamp on the wire would make queue lag depend on the
# producer's local clock setting.
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


class StepMessage(BaseModel):
    # Unknown fields are ignored rather than refused: an optional field added
    # by a newer producer during a rolling upgrade must not park messages.
    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = 1
    transaction_id: str = Field(min_length=1)
    step: Step
    attempt: int = Field(default=1, ge=1)
    """1-based delivery attempt of this step (retries count up, redeliveries do not)."""
    enqueued_at: UtcDatetime = Field(default_factory=utc_now)
    """When the message became due in the work queue; workers compute queue lag from it."""
    last_error: str | None = None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> StepMessage:
        try:
            return cls.model_validate_json(raw)
        except (ValidationError, UnicodeDecodeError) as error:
            raise MalformedMessage(f"not a StepMessage v1: {error}") from error

    def next_attempt(self, *, error: str, due_at: dt.datetime) -> StepMessage:
        """The copy a retry sends: attempt + 1, due (enqueued) when the delay ends."""
        return self.model_copy(
            update={"attempt": self.attempt + 1, "last_error": error, "enqueued_at": due_at}
        )

    def replayed(self) -> StepMessage:
        """The copy an operator's replay sends: a fresh start for this step."""
        return self.model_copy(update={"attempt": 1, "enqueued_at": utc_now()})


class DeadLetter(BaseModel):
    """A message parked in a step's dead-letter queue, as an operator sees it."""

    model_config = ConfigDict(frozen=True)

    id: str
    """Stable handle for show/replay/purge of this one message."""
    step: Step
    message: StepMessage | None
    """None when the body was unreadable; ``raw`` still has it."""
    raw: bytes
    reason: str
    dead_at: UtcDatetime
