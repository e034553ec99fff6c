"""StepMessage and DeadLetter: the inter-step wire format."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from scepline_shared.messages import MalformedMessage, StepMessage, utc_now
from scepline_shared.pipeline import Step


def test_a_message_round_trips_through_json_bytes() -> None:
    message = StepMessage(transaction_id="tx-1", step=Step.SIGN, attempt=3, last_error="boom")

    assert StepMessage.from_bytes(message.to_bytes()) == message
    assert message.to_bytes().startswith(b'{"schema_version":1,')


def test_enqueued_at_defaults_to_now_and_is_kept_in_utc() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    at = dt.datetime(2026, 1, 2, 13, 0, tzinfo=paris)

    message = StepMessage(transaction_id="tx-1", step=Step.SIGN, enqueued_at=at)

    assert message.enqueued_at == at and message.enqueued_at.tzinfo is dt.UTC
    assert StepMessage(transaction_id="tx", step=Step.SIGN).enqueued_at <= utc_now()


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError):
        StepMessage(transaction_id="tx-1", step=Step.SIGN, enqueued_at=dt.datetime(2026, 1, 2))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b'{"transaction_id": "tx-1"}',
        b'{"transaction_id": "tx-1", "step": "sign", "schema_version": 2}',
        b'{"transaction_id": "tx-1", "step": "sign", "attempt": 0}',
        b'{"transaction_id": "", "step": "sign"}',
    ],
    ids=["empty", "not-utf8", "not-object", "no-step", "newer-schema", "attempt-0", "no-id"],
)
def test_an_unreadable_body_raises_malformed_message(raw: bytes) -> None:
    with pytest.raises(MalformedMessage) as caught:
        StepMessage.from_bytes(raw)

    assert isinstance(caught.value, ValueError)


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    raw = b'{"transaction_id": "tx-1", "step": "notify", "priority": "high"}'

    assert StepMessage.from_bytes(raw).transaction_id == "tx-1"


def test_a_retry_copy_counts_the_attempt_and_a_replay_starts_over() -> None:
    message = StepMessage(transaction_id="tx-1", step=Step.NOTIFY)
    due = utc_now() + dt.timedelta(seconds=30)

    retried = message.next_attempt(error="Intune 503", due_at=due)
    replayed = retried.replayed()

    assert (retried.attempt, retried.last_error, retried.enqueued_at) == (2, "Intune 503", due)
    assert replayed.attempt == 1 and replayed.enqueued_at < due
    assert message.attempt == 1, "messages are immutable"
    with pytest.raises(ValidationError):
        message.attempt = 5
