"""The signer keeps each CA generation's delegated OCSP responder certificate:
issued when missing, journaled before the CA key signs it, renewed with the
same key when half of its life has passed, and made once when several signers
run the round together."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scepline_shared.ca.keysource import KeySource
from scepline_shared.ca.material import CaPaths, load_certificate, locked
from scepline_shared.ca.ocsp_responder import load_responder
from scepline_shared.ca.schedule import CaSchedule, init_ca
from scepline_shared.ca.tbs import tbs_sha256_of
from scepline_shared.serials import serial_hex
from scepline_shared.store import RequestRepository
from scepline_shared.store.models import JournalKind
from scepline_signer.ocsp_responders import OcspResponderKeeper

FILES = KeySource(backend="file")


@pytest.fixture
def schedule(tmp_path: Path) -> CaSchedule:
    return init_ca(tmp_path, FILES, ca_key_type="ec", validity_days=365)


def keeper(
    repository: RequestRepository, data_dir: Path, schedule: CaSchedule
) -> OcspResponderKeeper:
    return OcspResponderKeeper(
        repository=repository,
        data_dir=data_dir,
        keys=FILES,
        schedule=lambda: schedule,
        validity=timedelta(days=7),
    )


async def test_a_responder_certificate_is_issued_and_journaled(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    (issued,) = await keeper(repository, tmp_path, schedule).run_once()

    ca = schedule.active().material.ca.certificate
    issued.verify_directly_issued_by(ca)
    extensions = issued.extensions
    assert extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.OCSP_SIGNING]
    )
    assert extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert not extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued.not_valid_after_utc - issued.not_valid_before_utc <= timedelta(days=7, minutes=5)

    paths = CaPaths.under(tmp_path)
    assert load_certificate(paths.ocsp_cert) == issued
    assert paths.ocsp_key.stat().st_mode & 0o077 == 0  # the key is private
    responder = load_responder(paths, FILES)
    assert responder is not None and responder.certificate == issued

    entry = await repository.journal_entry(JournalKind.OCSP_CERTIFICATE, issued.serial_number)
    assert entry is not None
    assert entry.tbs_sha256 == tbs_sha256_of(issued)
    assert entry.serial == serial_hex(issued.serial_number)


async def test_a_fresh_certificate_is_left_alone(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    keeping = keeper(repository, tmp_path, schedule)
    await keeping.run_once()
    assert await keeping.run_once(now=datetime.now(UTC) + timedelta(days=3)) == []


async def test_at_half_its_life_it_is_renewed_with_the_same_key(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    keeping = keeper(repository, tmp_path, schedule)
    (first,) = await keeping.run_once()
    (second,) = await keeping.run_once(now=datetime.now(UTC) + timedelta(days=3, hours=13))

    assert second.serial_number != first.serial_number
    assert second.public_key() == first.public_key()
    journaled = [e for e in await repository.journal() if e.kind is JournalKind.OCSP_CERTIFICATE]
    assert {e.serial for e in journaled} == {
        serial_hex(first.serial_number),
        serial_hex(second.serial_number),
    }


async def test_signers_running_the_round_together_make_one_certificate(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    rounds = await asyncio.gather(
        *(keeper(repository, tmp_path, schedule).run_once() for _ in range(4))
    )
    assert sum(len(issued) for issued in rounds) == 1


async def test_a_fresh_certificate_costs_a_round_neither_the_lock_nor_the_key(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    keeping = keeper(repository, tmp_path, schedule)
    await keeping.run_once()
    with locked(CaPaths.under(tmp_path), exclusive=True):  # e.g. `ca rollover` at work
        assert await asyncio.wait_for(keeping.run_once(), timeout=5) == []


async def test_a_responder_key_that_went_missing_is_made_again_at_the_next_round(
    repository: RequestRepository, tmp_path: Path, schedule: CaSchedule
) -> None:
    keeping = keeper(repository, tmp_path, schedule)
    (first,) = await keeping.run_once()
    CaPaths.under(tmp_path).ocsp_key.unlink()

    (second,) = await keeping.run_once()

    assert second.public_key() != first.public_key()
    responder = load_responder(CaPaths.under(tmp_path), FILES)
    assert responder is not None and responder.certificate == second
