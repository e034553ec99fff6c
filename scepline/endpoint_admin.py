"""Operator commands of SCEP endpoints (docs/endpoints.md): one-time challenges
(`scepline challenge new|list`) and decisions on requests awaiting approval
(`scepline request approve|reject`).

A challenge is printed once, on stdout, and stored as its SHA-256 only: it
cannot be shown again. An approval moves the request to VALIDATED; with
RabbitMQ the command hands it to the sign step itself, with the in-process
broker of `scepline up` the running process's sweep does (within
SCEPLINE_SWEEP_INTERVAL_SECONDS).
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import secrets
import sys
from collections.abc import Sequence

from scepline_shared.endpoints import Endpoint, Endpoints
from scepline_shared.messages import StepMessage
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings
from scepline_shared.store.challenges import challenge_sha256
from scepline_shared.store.models import RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import RequestView

from .connections import runtime
from .errors import CommandError

__all__ = [
    "MAX_CHALLENGES",
    "MAX_TTL",
    "decide",
    "list_challenges",
    "new_challenges",
    "normal_san",
    "operator_name",
    "resolve_request",
]

MAX_CHALLENGES = 1000
MAX_TTL = dt.timedelta(days=366)
_CHALLENGE_BYTES = 16  # 128 bits, written as 32 hex digits (a PrintableString)


def operator_name(given: str | None) -> str:
    """Who decides: ``--by``, or the account running the command."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


def normal_san(text: str) -> str:
    """``dns:Host.Example.com`` -> ``dns:host.example.com``; ValueError for
    anything but dns:, email:, ip:, uri:."""
    kind, _, value = text.strip().partition(":")
    kind = kind.lower()
    value = value.strip()
    if not value:
        raise ValueError(f"{text!r}: write TYPE:VALUE, e.g. dns:host.example.com")
    if kind in ("dns", "email"):
        return f"{kind}:{value.lower()}"
    if kind == "ip":
        return f"ip:{ipaddress.ip_address(value)}"
    if kind == "uri":
        return f"uri:{value}"
    raise ValueError(f"{text!r}: the SAN type must be dns, email, ip or uri")


def one_time_endpoint(endpoints: Endpoints, name: str) -> Endpoint:
    endpoint = endpoints.get(name)
    one_time = sorted(endpoints.with_provider("one-time"))
    which = f" (one-time endpoints: {', '.join(one_time)})" if one_time else ""
    if endpoint is None:
        raise CommandError(
            f"no endpoint named {name!r}; endpoints: {', '.join(endpoints.names)}{which}",
            status=2,
        )
    if endpoint.provider != "one-time":
        raise CommandError(
            f'endpoint {name!r} has challenge = "{endpoint.provider}"; one-time challenges '
            f'are for endpoints with challenge = "one-time"{which}',
            status=2,
        )
    return endpoint


async def new_challenges(
    settings: Settings,
    endpoints: Endpoints,
    *,
    endpoint_name: str,
    ttl: dt.timedelta | None,
    count: int,
    subject: str | None,
    sans: Sequence[str],
    by: str | None,
) -> int:
    """Make ``count`` challenges for a one-time endpoint: printed one a line on
    stdout (nothing else goes there), stored hashed."""
    endpoint = one_time_endpoint(endpoints, endpoint_name)
    lifetime = ttl if ttl is not None else endpoint.challenge_ttl
    if lifetime > MAX_TTL:
        raise CommandError(f"--ttl: at most {MAX_TTL.days} days", status=2)
    expires_at = dt.datetime.now(dt.UTC) + lifetime
    challenges = [secrets.token_hex(_CHALLENGE_BYTES) for _ in range(count)]
    async with runtime(settings, with_broker=False, patience=0) as rt:
        await rt.repository.add_challenges(
            endpoint=endpoint.name,
            hashes=[challenge_sha256(challenge) for challenge in challenges],
            expires_at=expires_at,
            created_by=operator_name(by),
            bound_subject=subject,
            bound_sans=sans,
        )
    for challenge in challenges:
        print(challenge)
    bound = ""
    if subject or sans:
        bound = " for " + ", ".join([*([subject] if subject else []), *sans])
    print(
        f"{count} one-time challenge(s) for endpoint {endpoint.name}{bound}, valid until "
        f"{expires_at:%Y-%m-%d %H:%M} UTC; each works once and is not shown again",
        file=sys.stderr,
    )
    return 0


async def list_challenges(settings: Settings, endpoint: str | None, limit: int) -> int:
    """Challenges made, newest first: their hash prefix, never the challenge."""
    now = dt.datetime.now(dt.UTC)
    async with runtime(settings, with_broker=False, patience=0) as rt:
        found = await rt.repository.challenges(endpoint=endpoint, limit=limit)
    for challenge in found:
        if challenge.used_at is not None:
            status = f"used {challenge.used_at:%Y-%m-%d %H:%M} by {challenge.used_by}"
        elif challenge.expires_at <= now:
            status = "expired"
        else:
            status = f"unused, expires {challenge.expires_at:%Y-%m-%d %H:%M}"
        bound = ", ".join([*filter(None, [challenge.bound_subject]), *challenge.sans]) or "-"
        print(
            f"{challenge.created_at:%Y-%m-%d %H:%M:%S}  sha256:{challenge.challenge_sha256[:16]}"
            f"  {challenge.endpoint}  {status}  bound: {bound}  by {challenge.created_by or '-'}"
        )
    print(f"{len(found)} challenge(s)")
    return 0


async def resolve_request(repository: RequestRepository, transaction_id: str) -> RequestView:
    """The request awaiting approval that ``transaction_id`` names: its store key
    (as `request list` prints it) or the client's transactionID, if only one
    request awaiting approval has it."""
    exact = await repository.get(transaction_id)
    if exact is not None:
        if exact.state is not RequestState.AWAITING_APPROVAL:
            raise CommandError(
                f"request {transaction_id} is {exact.state.value}, not AWAITING_APPROVAL "
                "(`scepline request show` tells its history)"
            )
        return exact
    waiting = [
        request
        for request in await repository.by_client_transaction(transaction_id)
        if request.state is RequestState.AWAITING_APPROVAL
    ]
    if len(waiting) == 1:
        return waiting[0]
    if not waiting:
        raise CommandError(
            f"no request awaiting approval with transaction id {transaction_id!r} "
            "(`scepline request list --state AWAITING_APPROVAL` lists them)"
        )
    keys = ", ".join(request.transaction_id for request in waiting)
    raise CommandError(f"{transaction_id!r} names several requests awaiting approval: {keys}")


async def decide(
    settings: Settings,
    transaction_id: str,
    *,
    approve: bool,
    by: str | None,
    reason: str | None,
) -> int:
    who = operator_name(by)
    in_process = settings.broker_url.startswith("memory://")
    async with runtime(settings, with_broker=approve and not in_process, patience=0) as rt:
        request = await resolve_request(rt.repository, transaction_id)
        key = request.transaction_id
        decided = await rt.repository.decide_approval(
            transaction_id=key, approve=approve, by=who, reason=reason
        )
        if decided is None:
            now = await rt.repository.get(key)
            state = "gone" if now is None else now.state.value
            raise CommandError(f"request {key} was decided meanwhile: it is {state}")
        if not approve:
            print(f"rejected {key} ({decided.subject}) at endpoint {decided.endpoint}: FAILED")
            print(f"  reason: {decided.fail_reason}; the device hears FAILURE when it polls")
            return 0
        print(f"approved {key} ({decided.subject}) at endpoint {decided.endpoint}: VALIDATED")
        if in_process:
            print(
                "  the running scepline signs it within "
                f"{settings.sweep_interval_seconds:g} s; the device gets it when it polls"
            )
            return 0
        await rt.repository.mark_queued(key)
        await rt.broker.publish(
            StepMessage(transaction_id=key, step=Step.SIGN, enqueued_at=dt.datetime.now(dt.UTC))
        )
        print("  handed to the signers; the device gets it when it polls")
    return 0
