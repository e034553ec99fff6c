"""The CA generations as the console shows them: read from the certificates in
the CA directory, never from the keys (the console's process need not hold
them, nor reach the HSM), with each generation's latest CRL from the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from scepline_shared.ca.keysource import read_key_index
from scepline_shared.ca.material import CaPaths, load_certificate
from scepline_shared.ca.schedule import generation_numbers
from scepline_shared.store.repository import RequestRepository
from scepline_shared.store.views import CrlView, spki_key_id

__all__ = ["CertificateInfo", "CrlInfo", "GenerationInfo", "generations"]


@dataclass(frozen=True)
class CertificateInfo:
    role: str  # ca, ra, ocsp
    subject: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256: str
    key: str  # file, or pkcs11 hsm_label='...' id=...
    key_id: str  # hex SHA-256 of the SubjectPublicKeyInfo
    pem: str

    def days_left(self, now: datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


@dataclass(frozen=True)
class CrlInfo:
    number: int
    this_update: datetime
    next_update: datetime
    revoked: int
    der: bytes


@dataclass(frozen=True)
class GenerationInfo:
    number: int
    status: str  # active, staged, previous, retired
    switch_at: datetime | None
    ca: CertificateInfo
    ra: CertificateInfo
    ocsp: CertificateInfo | None
    crl: CrlInfo | None


def _info(role: str, certificate: x509.Certificate, key: str) -> CertificateInfo:
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return CertificateInfo(
        role=role,
        subject=certificate.subject.rfc4514_string(),
        serial=format(certificate.serial_number, "x"),
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        key=key,
        key_id=spki_key_id(spki),
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _switch_at(paths: CaPaths) -> datetime | None:
    try:
        return datetime.fromisoformat(paths.switch_at.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _crl(view: CrlView | None) -> CrlInfo | None:
    if view is None:
        return None
    crl = x509.load_der_x509_crl(view.der)
    return CrlInfo(view.number, view.this_update, view.next_update, len(list(crl)), view.der)


async def generations(
    data_dir: Path, repository: RequestRepository, now: datetime
) -> list[GenerationInfo]:
    """Every complete generation, oldest first, with its status at ``now``."""
    found: list[tuple[int, datetime | None, CaPaths]] = []
    for number in generation_numbers(data_dir):
        paths = CaPaths.generation(data_dir, number)
        if not (paths.ca_cert.exists() and paths.ra_cert.exists()):
            continue
        switch_at = None if number == 0 else _switch_at(paths)
        if number > 0 and switch_at is None:
            continue  # being staged
        found.append((number, switch_at, paths))
    started = [n for n, switch_at, _ in found if switch_at is None or switch_at <= now]
    active = max(started, default=None)
    result = []
    for number, switch_at, paths in found:
        index = read_key_index(paths.keys_index)
        infos = {}
        for role in ("ca", "ra", "ocsp"):
            path = paths.certificate(role)  # type: ignore[arg-type]
            if not path.exists():
                continue
            entry = index.get(role)  # type: ignore[call-overload]
            key = f"pkcs11 {entry}" if entry is not None else "file"
            infos[role] = _info(role, load_certificate(path), key)
        ca = infos["ca"]
        if number == active:
            status = "active"
        elif switch_at is not None and switch_at > now:
            status = "staged"
        elif active is not None and number < active and ca.not_after > now:
            status = "previous"
        else:
            status = "retired"
        crl = _crl(await repository.latest_crl(ca.key_id))
        result.append(
            GenerationInfo(number, status, switch_at, ca, infos["ra"], infos.get("ocsp"), crl)
        )
    return result
