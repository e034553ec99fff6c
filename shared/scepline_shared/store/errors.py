"""Errors raised by the state store.

Each carries the datum that caused it, so callers branch on type and read the
value instead of parsing messages.
"""

from __future__ import annotations

__all__ = [
    "CrlNumberCollision",
    "IllegalTransition",
    "SerialCollision",
    "StoreError",
    "StoreKeyError",
    "UnreadableCsr",
    "UnsupportedDatabaseUrl",
]


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class IllegalTransition(StoreError, ValueError):
    """A transition outside the state machine was asked for.

    Also a ValueError: it is a programming error in the caller, not a race.
    """

    def __init__(
        self, from_state: str, to_state: str, *, kind: str = "state", hint: str = ""
    ) -> None:
        message = f"{kind} transition {from_state} -> {to_state} is not allowed"
        super().__init__(f"{message}: {hint}" if hint else message)
        self.from_state = from_state
        self.to_state = to_state
        self.kind = kind


class SerialCollision(StoreError):
    """The certificate serial is already in the store; draw another one."""

    def __init__(self, serial: str) -> None:
        super().__init__(f"certificate serial {serial} already exists")
        self.serial = serial


class CrlNumberCollision(StoreError):
    """A CRL with this number is already stored."""

    def __init__(self, number: int) -> None:
        super().__init__(f"CRL number {number} already exists")
        self.number = number


class UnsupportedDatabaseUrl(StoreError, ValueError):
    """The database URL names a backend or driver the store cannot run on.

    Only the scheme is kept: URLs carry passwords, which must not reach logs.
    """

    def __init__(self, scheme: str) -> None:
        super().__init__(f"unsupported database URL scheme {scheme!r}")
        self.scheme = scheme


class StoreKeyError(StoreError, ValueError):
    """The store key cannot be used: its file is missing, unreadable or the
    wrong size, or it is not the key the stored CSRs were sealed with."""


class UnreadableCsr(StoreError):
    """A stored CSR does not open with the store key: it was sealed under
    another key, altered, or copied from another request's row."""

    def __init__(self, transaction_id: str) -> None:
        super().__init__(
            f"the stored CSR of request {transaction_id!r} does not open with the store key "
            "(sealed under another key, altered, or moved from another request)"
        )
        self.transaction_id = transaction_id
