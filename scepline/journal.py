"""``scepline ca journal``: every signature the CA keys made, and its reconciliation.

The issuance journal is written before each signature (see the sign step and
the CRL publisher), so each entry ends up in one of these states:

- certificate: ``recorded`` (stored; the sign step released it or will),
  ``voided`` (the claim was given up: the serial is revoked and on the CRL),
  ``claimed`` (a signer is at work on it now);
- CRL: ``published`` or ``unpublished`` (its signer died or lost the number
  before storing it: never served);
- the CA's own certificates: ``on-disk`` (they live in the CA directory);
- OCSP responder certificates: ``in-use`` (a generation's ``ocsp.crt`` now)
  or ``retired`` (renewed since, or its signer died before writing it).

``--check`` reconciles both ways: every entry has one of those outcomes and the
TBS hash of what the store holds equals the journaled one; every certificate
and CRL the store holds since the journal exists has an entry, and so has every
responder certificate in use. Anything else
is printed and the command exits 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cryptography import x509

from scepline_shared.ca.material import CaPaths, load_certificate
from scepline_shared.ca.schedule import generation_numbers
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.serials import serial_hex
from scepline_shared.settings import Settings
from scepline_shared.store.models import JournalKind, RequestState
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import JournalEntry

from .runtime import runtime

__all__ = ["print_journal"]

_BATCH = 1000


@dataclass
class _Tally:
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, kind: JournalKind, status: str) -> None:
        key = f"{kind.value} {status}"
        self.counts[key] = self.counts.get(key, 0) + 1


async def print_journal(settings: Settings, *, check: bool, as_json: bool) -> int:
    async with runtime(settings, with_broker=False) as rt:
        repository = rt.repository
        claims = {
            view.cert_serial: view.transaction_id
            for view in await repository.in_state(RequestState.SIGNING, limit=1_000_000)
            if view.cert_serial is not None
        }
        tally = _Tally()
        responders = _responders_in_use(settings)
        journaled_responders: set[str] = set()
        after = 0
        while batch := await repository.journal(after_id=after, limit=_BATCH):
            after = batch[-1].id
            for entry, status in await _statuses(
                repository, batch, claims, responders, check, tally
            ):
                tally.count(entry.kind, status)
                if entry.kind is JournalKind.OCSP_CERTIFICATE:
                    journaled_responders.add(entry.serial)
                print(_line(entry, status, as_json=as_json))
        if check:
            tally.problems += [
                f"OCSP responder certificate {serial} ({where}) is in use but not journaled"
                for serial, (where, _) in responders.items()
                if serial not in journaled_responders
            ]
            certificates, crls, legacy = await repository.unjournaled()
            tally.problems += [f"certificate {s} is stored but not journaled" for s in certificates]
            tally.problems += [f"CRL {n} is stored but not journaled" for n in crls]
    if not check:
        return 0
    for key, number in sorted(tally.counts.items()):
        print(f"# {number} {key}")
    if legacy:
        print(f"# {legacy} certificate(s) recorded before the journal existed (not journaled)")
    for problem in tally.problems:
        print(f"# PROBLEM: {problem}")
    print("# journal reconciles" if not tally.problems else "# journal does NOT reconcile")
    return 0 if not tally.problems else 1


async def _statuses(
    repository: RequestRepository,
    batch: list[JournalEntry],
    claims: dict[str, str],
    responders: dict[str, tuple[str, str]],
    check: bool,
    tally: _Tally,
) -> list[tuple[JournalEntry, str]]:
    serials = [e.serial for e in batch if e.kind is JournalKind.CERTIFICATE]
    certificates = await repository.certificates_by_serial(serials)
    numbers = [int(e.serial, 16) for e in batch if e.kind is JournalKind.CRL]
    crls = await repository.crls_by_number(numbers)
    found: list[tuple[JournalEntry, str]] = []
    for entry in batch:
        if entry.kind is JournalKind.CERTIFICATE:
            stored = certificates.get(entry.serial)
            if stored is None:
                status = "claimed" if entry.serial in claims else "unresolved"
            elif stored.der is None:
                status = "voided" if stored.revoked_at is not None else "unresolved"
            else:
                status = "recorded"
                if check:
                    signed = x509.load_der_x509_certificate(stored.der)
                    if tbs_sha256_of(signed) != entry.tbs_sha256:
                        status = "mismatch"
        elif entry.kind is JournalKind.CRL:
            crl = crls.get(int(entry.serial, 16))
            if crl is None or crl.issuer_key_id != entry.issuer_key_id:
                status = "unpublished"
            else:
                status = "published"
                if check and tbs_sha256_of(x509.load_der_x509_crl(crl.der)) != entry.tbs_sha256:
                    status = "mismatch"
        elif entry.kind is JournalKind.OCSP_CERTIFICATE:
            in_use = responders.get(entry.serial)
            status = "retired" if in_use is None else "in-use"
            if check and in_use is not None and in_use[1] != entry.tbs_sha256:
                status = "mismatch"
        else:
            status = "on-disk"
        if status in ("unresolved", "mismatch"):
            tally.problems.append(f"{entry.kind.value} {entry.serial} is {status}")
        found.append((entry, status))
    return found


def _responders_in_use(settings: Settings) -> dict[str, tuple[str, str]]:
    """serial -> (file, TBS hash) of each generation's OCSP responder certificate,
    of the default CA and of every named CA (``cas/NAME``)."""
    named = settings.data_dir / "cas"
    roots = [settings.data_dir, *(sorted(named.iterdir()) if named.is_dir() else [])]
    found = {}
    for root in roots:
        for number in generation_numbers(root):
            path = CaPaths.generation(root, number).ocsp_cert
            if path.exists():
                certificate = load_certificate(path)
                found[serial_hex(certificate.serial_number)] = (
                    str(path),
                    tbs_sha256_of(certificate),
                )
    return found


def _line(entry: JournalEntry, status: str, *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {
                "id": entry.id,
                "at": entry.at.isoformat(),
                "kind": entry.kind.value,
                "serial": entry.serial,
                "status": status,
                "issuer_key_id": entry.issuer_key_id,
                "issuer": entry.issuer,
                "subject": entry.subject,
                "not_before": entry.not_before.isoformat(),
                "not_after": entry.not_after.isoformat(),
                "tbs_sha256": entry.tbs_sha256,
                "transaction_id": entry.transaction_id,
            }
        )
    return (
        f"{entry.at:%Y-%m-%dT%H:%M:%SZ}  {entry.kind.value:<16} {entry.serial:<32}  "
        f"{status:<11} {entry.issuer_key_id[:16]}  {entry.transaction_id or '-'}  {entry.subject}"
    )
