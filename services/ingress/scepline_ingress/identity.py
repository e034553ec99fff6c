"""What ingress holds at one moment: RA key pairs and the public CA certificates.

A CA rollover changes them while ingress runs, so ingress does not hold one
``ScepIdentity`` but a function that returns the current one; each operation
calls it once at its start. :func:`schedule_identities` builds that function
from a CA schedule (the active generation's RA signs, the RA keys of the
active, previous and staged generations decrypt).
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from scepline_shared.keys.pkcs11 import Pkcs11EcPrivateKey, Pkcs11RsaPrivateKey
from scepline_shared.scep import build_degenerate

if TYPE_CHECKING:
    from scepline_shared.ca import CaMaterial
    from scepline_shared.keys import KeyPair

__all__ = [
    "IdentitySource",
    "Recipient",
    "ScepIdentity",
    "blocks_in_token",
    "identity_from_schedule",
    "schedule_identities",
    "static_identities",
]

#: An RA key and the certificate clients encrypt to.
Recipient = tuple[rsa.RSAPrivateKey, x509.Certificate]
#: Called once at the start of every operation.
IdentitySource = Callable[[], "ScepIdentity"]


def blocks_in_token(key: object) -> bool:
    """True for a PKCS#11 key: each decrypt or sign waits ~1 ms for the token."""
    return isinstance(key, Pkcs11RsaPrivateKey | Pkcs11EcPrivateKey)


@dataclass(frozen=True)
class ScepIdentity:
    # The active RA: signs GetCACert's RA slot and every CertRep to a message
    # that could not be decrypted. SCEP key transport needs RSA.
    ra_key: rsa.RSAPrivateKey
    ra_certificate: x509.Certificate
    # The issuing CA, then any older CA still valid (kept for renewals and chains).
    ca_certificate: x509.Certificate
    previous_ca_certificates: tuple[x509.Certificate, ...] = ()
    # Every RA that may open a request: active, previous and staged generations.
    # The active RA is added first when missing. A reply is signed by the RA the
    # request was encrypted to, which the client already holds.
    decryptors: tuple[Recipient, ...] = ()
    # The GetNextCACert body of a staged generation, pre-signed by the current CA.
    next_ca_response: bytes | None = None
    # Derived once per identity.
    ca_response: bytes = field(init=False, repr=False, compare=False)
    decrypt_blocks: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        active: Recipient = (self.ra_key, self.ra_certificate)
        decryptors = tuple(self.decryptors)
        if not any(certificate == self.ra_certificate for _, certificate in decryptors):
            decryptors = (active, *decryptors)
        object.__setattr__(self, "decryptors", decryptors)
        object.__setattr__(self, "previous_ca_certificates", tuple(self.previous_ca_certificates))
        object.__setattr__(
            self, "ca_response", build_degenerate([self.ra_certificate, *self.ca_certificates])
        )
        object.__setattr__(
            self, "decrypt_blocks", any(blocks_in_token(key) for key, _ in decryptors)
        )

    @property
    def active_ra(self) -> Recipient:
        return (self.ra_key, self.ra_certificate)

    @property
    def ca_certificates(self) -> tuple[x509.Certificate, ...]:
        return (self.ca_certificate, *self.previous_ca_certificates)

    def issued_by_us(self, certificate: x509.Certificate) -> bool:
        """True when ``certificate`` was signed by one of our CA keys."""
        return self.issuer_of(certificate) is not None

    def issuer_of(self, certificate: x509.Certificate) -> x509.Certificate | None:
        """Which of our CA certificates signed ``certificate``, if any."""
        for ca in self.ca_certificates:
            try:
                certificate.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            return ca
        return None


def static_identities(identity: ScepIdentity) -> IdentitySource:
    """A source that always returns ``identity`` (no rollover)."""
    return functools.partial(_same, identity)


def _same(identity: ScepIdentity) -> ScepIdentity:
    return identity


# -- from a CA schedule ---------------------------------------------------------
# Structural types for scepline_shared.ca.schedule (CaSchedule/CaGeneration), so
# ingress depends on the contract only.


class _Generation(Protocol):
    @property
    def number(self) -> int: ...

    @property
    def next_ca_response(self) -> bytes | None: ...


class _Schedule(Protocol):
    def active(self, now: dt.datetime | None = None) -> _Generation: ...

    def previous(self, now: dt.datetime | None = None) -> tuple[_Generation, ...]: ...

    def staged(self, now: dt.datetime | None = None) -> _Generation | None: ...

    def material(self, now: dt.datetime | None = None) -> CaMaterial: ...

    def decryptors(self, now: dt.datetime | None = None) -> tuple[KeyPair, ...]: ...


def identity_from_schedule(schedule: _Schedule, now: dt.datetime | None = None) -> ScepIdentity:
    """The identity at ``now``: active RA and CA, previous CAs, every RA that
    decrypts, and the staged generation's GetNextCACert body."""
    now = now or dt.datetime.now(dt.UTC)
    material = schedule.material(now)
    staged = schedule.staged(now)
    return ScepIdentity(
        ra_key=_rsa(material.ra.key),
        ra_certificate=material.ra.certificate,
        ca_certificate=material.ca.certificate,
        previous_ca_certificates=tuple(material.chain),
        decryptors=tuple(
            (_rsa(pair.key), pair.certificate)
            for pair in schedule.decryptors(now)
            if isinstance(pair.key, rsa.RSAPrivateKey)
        ),
        next_ca_response=None if staged is None else staged.next_ca_response,
    )


def schedule_identities(current: Callable[[], _Schedule]) -> IdentitySource:
    """An identity source over ``current()`` (e.g. ``CaScheduleWatcher.current``).

    The identity is rebuilt only when the schedule object changes or time moves
    a generation from staged to active or out of the previous ones; otherwise
    every call returns the same object (and its cached GetCACert body).
    """
    lock = threading.Lock()
    cached: list[tuple[object, tuple[object, ...], ScepIdentity]] = []

    def identities() -> ScepIdentity:
        schedule = current()
        now = dt.datetime.now(dt.UTC)
        staged = schedule.staged(now)
        moment = (
            schedule.active(now).number,
            tuple(generation.number for generation in schedule.previous(now)),
            None if staged is None else staged.number,
        )
        with lock:
            if cached and cached[0][0] is schedule and cached[0][1] == moment:
                return cached[0][2]
        identity = identity_from_schedule(schedule, now)
        with lock:
            cached[:] = [(schedule, moment, identity)]
        return identity

    return identities


def _rsa(key: object) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"an RA key must be RSA (SCEP key transport), got {type(key).__name__}")
    return key
