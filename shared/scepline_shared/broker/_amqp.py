"""AMQP details shared by the RabbitMQ broker: error mapping, message properties,
and reading a dead letter back from the DLQ."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from aio_pika import DeliveryMode, Message
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError, PublishError
from aiormq import spec

from ..messages import DeadLetter, MalformedMessage, Step, StepMessage, utc_now
from .base import DELIVERY_LIMIT, BrokerUnavailable, clip_reason

__all__ = [
    "AMQP_FAILURES",
    "DEAD_AT_HEADER",
    "REASON_HEADER",
    "bounded",
    "dead_letter_headers",
    "parse_body",
    "persistent_message",
    "persistent_properties",
    "to_dead_letter",
]

REASON_HEADER = "x-scepline-reason"
DEAD_AT_HEADER = "x-scepline-dead-at"
ORIGINAL_ID_HEADER = "x-scepline-original-message-id"

# What aio-pika/aiormq raise when the connection or channel is gone or closing
# (ChannelInvalidStateError is a RuntimeError, not an AMQPError).
AMQP_FAILURES: tuple[type[BaseException], ...] = (
    AMQPError,
    ChannelInvalidStateError,
    ConnectionError,
    OSError,
)

T = TypeVar("T")


async def bounded(awaitable: Awaitable[T], *, timeout: float, what: str) -> T:
    """Await one broker operation; any failure or a wait past ``timeout`` becomes
    ``BrokerUnavailable``. A robust connection waits for reconnection silently,
    so without the bound a publish during an outage would hang.

    The operation runs in the caller's task (``asyncio.timeout``, not
    ``wait_for``, which would wrap it in a task of its own on every publish and
    ack); aiormq also wants a publish cancelled in the task that enqueued it."""
    try:
        async with asyncio.timeout(timeout):
            return await awaitable
    except TimeoutError as error:
        raise BrokerUnavailable(f"{what}: RabbitMQ did not answer within {timeout:g} s") from error
    except PublishError as error:
        # mandatory=True: nothing routed it, so the queue is missing.
        raise BrokerUnavailable(f"{what}: unroutable ({error})") from error
    except DeliveryError as error:
        raise BrokerUnavailable(f"{what}: RabbitMQ refused the message ({error})") from error
    except AMQP_FAILURES as error:
        raise BrokerUnavailable(f"{what}: {error!r}") from error


def persistent_properties() -> spec.Basic.Properties:
    """What ``persistent_message`` sets, for a step message published through
    aiormq directly (the hot path: no aio-pika ``Message`` to build)."""
    return spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT.value,
        message_id=uuid.uuid4().hex,
        timestamp=utc_now(),
        app_id="scepline",
    )


def persistent_message(
    body: bytes,
    *,
    expiration: float | None = None,
    headers: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
) -> Message:
    return Message(
        body,
        content_type=content_type,
        delivery_mode=DeliveryMode.PERSISTENT,
        # Every message gets an id, so one that RabbitMQ itself dead-letters
        # (delivery limit) can still be shown and replayed by id.
        message_id=uuid.uuid4().hex,
        timestamp=utc_now(),
        expiration=expiration,
        headers=dict(headers) if headers else None,
        app_id="scepline",
    )


def parse_body(raw: bytes) -> StepMessage | None:
    try:
        return StepMessage.from_bytes(raw)
    except MalformedMessage:
        return None


def dead_letter_headers(incoming: AbstractIncomingMessage, reason: str) -> dict[str, Any]:
    headers: dict[str, Any] = {
        REASON_HEADER: clip_reason(reason),
        DEAD_AT_HEADER: utc_now().isoformat(),
    }
    if incoming.message_id:
        headers[ORIGINAL_ID_HEADER] = incoming.message_id
    return headers


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else None


def _aware(value: object) -> dt.datetime | None:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _broker_reason(headers: Mapping[str, Any]) -> tuple[str, dt.datetime | None]:
    """Why RabbitMQ itself parked a message (``x-death``), when we did not."""
    deaths = headers.get("x-death")
    death: Mapping[str, Any] = deaths[0] if isinstance(deaths, list) and deaths else {}
    cause = _text(death.get("reason")) or "unknown"
    if cause == "delivery_limit":
        reason = f"delivery limit exceeded: redelivered more than {DELIVERY_LIMIT} times"
    else:
        reason = f"dead-lettered by RabbitMQ ({cause}) from {_text(death.get('queue')) or '?'}"
    return reason, _aware(death.get("time"))


def to_dead_letter(step: Step, incoming: AbstractIncomingMessage) -> DeadLetter:
    headers: Mapping[str, Any] = incoming.headers or {}
    reason = _text(headers.get(REASON_HEADER))
    dead_at = _aware(headers.get(DEAD_AT_HEADER))
    if reason is None:
        reason, dead_at = _broker_reason(headers)
    raw = bytes(incoming.body)
    return DeadLetter(
        # Only a message published by another tool lacks an id; its body hash
        # is still stable across listings.
        id=incoming.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()[:32],
        step=step,
        message=parse_body(raw),
        raw=raw,
        reason=reason,
        dead_at=dead_at or _aware(incoming.timestamp) or utc_now(),
    )
