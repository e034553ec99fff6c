"""A recording consumer and polling helpers for the broker contract tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from scepline_shared.broker import Delivery
from scepline_shared.messages import StepMessage
from scepline_shared.pipeline import Step

__all__ = [
    "Inbox",
    "Policy",
    "Received",
    "ack",
    "dead_letter_policy",
    "eventually",
    "step_message",
]

T = TypeVar("T")

Policy = Callable[[Delivery], Awaitable[None]]


def step_message(
    transaction_id: str = "tx-1", *, step: Step = Step.VALIDATE, attempt: int = 1
) -> StepMessage:
    return StepMessage(transaction_id=transaction_id, step=step, attempt=attempt)


async def ack(delivery: Delivery) -> None:
    await delivery.ack()


def dead_letter_policy(reason: str) -> Policy:
    async def policy(delivery: Delivery) -> None:
        await delivery.dead_letter(reason=reason)

    return policy


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic() when the consumer was called
    delivery: Delivery

    @property
    def message(self) -> StepMessage:
        assert self.delivery.message is not None, "body was unreadable"
        return self.delivery.message


class Inbox:
    """A consumer that records every delivery, then settles it by ``policy``
    (ack unless told otherwise; the policy may be swapped between phases)."""

    def __init__(self, policy: Policy = ack) -> None:
        self.policy = policy
        self._received: asyncio.Queue[Received] = asyncio.Queue()
        self.count = 0

    async def __call__(self, delivery: Delivery) -> None:
        self.count += 1
        self._received.put_nowait(Received(time.monotonic(), delivery))
        await self.policy(delivery)

    async def next(self, timeout: float = 5.0) -> Received:
        return await asyncio.wait_for(self._received.get(), timeout)

    async def quiet_for(self, seconds: float) -> bool:
        """True if nothing more arrives within ``seconds``."""
        try:
            await asyncio.wait_for(self._received.get(), seconds)
        except TimeoutError:
            return True
        return False


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float = ...
) -> T: ...
@overload
async def eventually(
    probe: Callable[[], T], accept: Callable[[T], bool], *, timeout: float = ...
) -> T: ...
async def eventually(
    probe: Callable[[], Any],
    accept: Callable[[Any], bool],
    *,
    timeout: float = 5.0,
) -> Any:
    """Poll ``probe`` (sync or async) until ``accept`` holds for its result; return it."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last value {result!r}")
        await asyncio.sleep(0.05)
