"""stage_rollover, the schedule across a switch time, GetNextCACert and the watcher."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from scepline_shared.ca import (
    CaPaths,
    CaSchedule,
    CaScheduleWatcher,
    KeySource,
    RolloverRefused,
    init_ca,
    load_ca_schedule,
    stage_rollover,
)
from scepline_shared.ca.keysource import key_id_for_label
from scepline_shared.keys.pkcs11 import Pkcs11EcPrivateKey, Pkcs11RsaPrivateKey, Pkcs11Token
from scepline_shared.scep import (
    BadMessageCheck,
    build_next_ca_response,
    parse_degenerate,
    read_next_ca_response,
)

from ._pki import openssl, token_keys, write_pem

FILE = KeySource(backend="file")


def der_set(certificates: list[x509.Certificate]) -> set[bytes]:
    """The bag is a DER SET OF: its order is the encoding's, not the caller's."""
    return {c.public_bytes(Encoding.DER) for c in certificates}


def cms_verify(
    directory: Path, body: bytes, trusted: x509.Certificate, *, out: str = "/dev/null"
) -> subprocess.CompletedProcess[str]:
    """``openssl cms -verify`` of a next-ca.p7 ``body`` against ``trusted`` alone;
    the signed content goes to ``out`` (relative to ``directory``)."""
    (directory / "next-ca.p7").write_bytes(body)
    write_pem(directory / "trusted.pem", trusted)
    return openssl(
        "cms", "-verify", "-inform", "DER", "-in", "next-ca.p7",
        "-CAfile", "trusted.pem", "-binary", "-out", out,
        cwd=directory,
    )  # fmt: skip


def lab(data_dir: Path, *, validity_days: int = 3650) -> CaSchedule:
    return init_ca(data_dir, FILE, ca_key_size=2048, validity_days=validity_days)


def stage(data_dir: Path, keys: KeySource = FILE, **options: object) -> object:
    options.setdefault("switch_at", datetime.now(UTC) + timedelta(days=1))
    options.setdefault("ca_key_size", 2048)
    options.setdefault("ca_common_name", "scepline lab CA 2")
    return stage_rollover(data_dir, keys, **options)  # type: ignore[arg-type]


class TestScheduleAcrossTheSwitch:
    def test_active_previous_staged_and_decryptors(self, tmp_path: Path) -> None:
        now = datetime.now(UTC)
        lab(tmp_path, validity_days=30)
        switch = now + timedelta(days=1)
        stage(tmp_path, switch_at=switch, now=now)
        schedule = load_ca_schedule(tmp_path, FILE)
        gen0, gen1 = schedule.generations
        assert gen1.number == 1 and gen1.switch_at == switch
        ra0, ra1 = gen0.material.ra, gen1.material.ra

        before = now + timedelta(hours=1)
        assert schedule.active(before) is gen0
        assert schedule.previous(before) == ()
        assert schedule.staged(before) is gen1
        assert schedule.material(before).ca == gen0.material.ca
        assert schedule.material(before).chain == ()
        # A client that fetched GetNextCACert may already encrypt to the new RA.
        assert schedule.decryptors(before) == (ra0, ra1)

        at_switch = switch
        assert schedule.active(at_switch) is gen1

        after = switch + timedelta(hours=1)
        assert schedule.active(after) is gen1
        assert schedule.previous(after) == (gen0,)
        assert schedule.staged(after) is None
        material = schedule.material(after)
        assert (material.ca, material.ra) == (gen1.material.ca, ra1)
        assert material.chain == (gen0.material.ca.certificate,)
        # A device that got PENDING before the switch polls with the old RA's cert.
        assert schedule.decryptors(after) == (ra1, ra0)

        # Once the old CA has expired it is no longer previous.
        expired = now + timedelta(days=31)
        assert schedule.previous(expired) == ()
        assert schedule.decryptors(expired) == (ra1,)
        assert schedule.material(expired).chain == ()

    def test_naive_now_is_refused(self, tmp_path: Path) -> None:
        schedule = lab(tmp_path)
        with pytest.raises(ValueError, match="naive"):
            schedule.active(datetime.now())

    def test_new_certificates_have_the_lab_extensions(self, tmp_path: Path) -> None:
        first = lab(tmp_path).active().material
        switch = datetime.now(UTC) + timedelta(days=2)
        generation = stage(tmp_path, switch_at=switch, validity_days=365)
        new = generation.material  # type: ignore[attr-defined]
        for role in ("ca", "ra"):
            old_cert, new_cert = getattr(first, role).certificate, getattr(new, role).certificate
            assert {e.oid for e in new_cert.extensions} == {e.oid for e in old_cert.extensions}
            for oid in (
                ExtensionOID.BASIC_CONSTRAINTS,
                ExtensionOID.KEY_USAGE,
                ExtensionOID.EXTENDED_KEY_USAGE,
            ):
                if role == "ca" and oid == ExtensionOID.EXTENDED_KEY_USAGE:
                    continue
                old_ext = old_cert.extensions.get_extension_for_oid(oid)
                new_ext = new_cert.extensions.get_extension_for_oid(oid)
                assert (new_ext.value, new_ext.critical) == (old_ext.value, old_ext.critical)
        new.ca.certificate.verify_directly_issued_by(new.ca.certificate)
        new.ra.certificate.verify_directly_issued_by(new.ca.certificate)
        assert new.ca.certificate.public_key() != first.ca.certificate.public_key()
        # Valid before the switch (clients may check it when they fetch it) ...
        assert new.ca.certificate.not_valid_before_utc < datetime.now(UTC)
        # ... and for validity_days after it.
        assert new.ca.certificate.not_valid_after_utc == switch.replace(microsecond=0) + timedelta(
            days=365
        )
        paths = CaPaths.generation(tmp_path, 1)
        assert paths.directory == tmp_path / "ca" / "next" / "1"
        assert paths.switch_at.read_text().strip() == switch.isoformat()
        assert paths.next_ca_response.read_bytes() == generation.next_ca_response  # type: ignore[attr-defined]


class TestRefusals:
    def test_second_staging_while_one_is_pending(self, tmp_path: Path) -> None:
        lab(tmp_path)
        now = datetime.now(UTC)
        stage(tmp_path, switch_at=now + timedelta(days=1), now=now)
        with pytest.raises(RolloverRefused, match="generation 1 is already staged"):
            stage(tmp_path, switch_at=now + timedelta(days=5), now=now)
        assert [g.number for g in load_ca_schedule(tmp_path, FILE).generations] == [0, 1]

    def test_after_the_switch_the_next_one_is_signed_by_the_new_ca(self, tmp_path: Path) -> None:
        lab(tmp_path)
        now = datetime.now(UTC)
        first = stage(tmp_path, switch_at=now + timedelta(hours=1), now=now)
        later = now + timedelta(hours=2)
        second = stage(tmp_path, switch_at=later + timedelta(days=1), now=later)
        assert second.number == 2  # type: ignore[attr-defined]
        announced = read_next_ca_response(
            second.next_ca_response,  # type: ignore[attr-defined]
            first.material.ca.certificate,  # type: ignore[attr-defined]
        )
        assert second.material.ca.certificate in announced  # type: ignore[attr-defined]
        schedule = load_ca_schedule(tmp_path, FILE)
        assert schedule.active(later).number == 1
        assert schedule.staged(later).number == 2  # type: ignore[union-attr]

    def test_switch_time_in_the_past(self, tmp_path: Path) -> None:
        lab(tmp_path)
        with pytest.raises(RolloverRefused, match="in the past"):
            stage(tmp_path, switch_at=datetime.now(UTC) - timedelta(minutes=1))
        assert not CaPaths.under(tmp_path).next_directory.exists()

    def test_naive_switch_time(self, tmp_path: Path) -> None:
        lab(tmp_path)
        with pytest.raises(ValueError, match="naive"):
            stage(tmp_path, switch_at=datetime.now() + timedelta(days=1))

    def test_without_a_ca(self, tmp_path: Path) -> None:
        from scepline_shared.ca import CaNotInitialised

        with pytest.raises(CaNotInitialised):
            stage(tmp_path)

    def test_interrupted_staging_is_redone(self, tmp_path: Path) -> None:
        lab(tmp_path)
        leftover = CaPaths.under(tmp_path).next_directory / ".staging-1"
        leftover.mkdir(parents=True)
        (leftover / "ca.crt").write_text("half written")
        generation = stage(tmp_path)
        assert generation.number == 1  # type: ignore[attr-defined]
        assert not leftover.exists()


class TestNextCaResponse:
    def test_openssl_verifies_it_against_the_current_ca(self, tmp_path: Path) -> None:
        current = lab(tmp_path).active().material.ca.certificate
        generation = stage(tmp_path)
        body = generation.next_ca_response  # type: ignore[attr-defined]
        result = cms_verify(tmp_path, body, current, out="certs.p7")
        assert result.returncode == 0, result.stderr
        assert "Verification successful" in result.stderr
        certificates, _ = parse_degenerate((tmp_path / "certs.p7").read_bytes())
        new = generation.material  # type: ignore[attr-defined]
        assert der_set(certificates) == der_set([new.ra.certificate, new.ca.certificate])

        # A different trust anchor does not verify it.
        refused = cms_verify(tmp_path, body, new.ca.certificate)
        assert refused.returncode != 0

    def test_reader_verifies_signature_and_signer(self, tmp_path: Path) -> None:
        current = lab(tmp_path).active().material
        generation = stage(tmp_path)
        body: bytes = generation.next_ca_response  # type: ignore[attr-defined]
        new = generation.material  # type: ignore[attr-defined]
        announced = read_next_ca_response(body, current.ca.certificate)
        assert der_set(announced) == der_set([new.ra.certificate, new.ca.certificate])
        with pytest.raises(BadMessageCheck):
            read_next_ca_response(body, new.ca.certificate)
        # Flip a byte of the new CA certificate inside the signed content.
        serial = new.ca.certificate.serial_number.to_bytes(20, "big").lstrip(b"\0")
        tampered = bytearray(body)
        index = tampered.index(serial)
        tampered[index] ^= 0x01
        with pytest.raises(BadMessageCheck):
            read_next_ca_response(bytes(tampered), current.ca.certificate)

    def test_signed_by_an_ec_token_ca(self, tmp_path: Path, softhsm_token: Pkcs11Token) -> None:
        """Token EC CA signs next-ca.p7 for a token RSA CA; OpenSSL judges it."""
        keys = token_keys(softhsm_token)
        ca_label, ra_label = f"{keys.ca_key_label}-g1", f"{keys.ra_key_label}-g1"
        current = init_ca(tmp_path, keys, ca_key_type="ec", ca_key_size=256).active().material
        assert isinstance(current.ca.key, Pkcs11EcPrivateKey)
        generation = stage(tmp_path, keys, ca_key_type="rsa")
        new = generation.material  # type: ignore[attr-defined]
        assert isinstance(new.ca.key, Pkcs11RsaPrivateKey)
        assert isinstance(new.ra.key, Pkcs11RsaPrivateKey)
        index = json.loads(CaPaths.generation(tmp_path, 1).keys_index.read_text())
        assert index == {
            "ca": {"pkcs11_label": ca_label, "pkcs11_id": key_id_for_label(ca_label).hex()},
            "ra": {"pkcs11_label": ra_label, "pkcs11_id": key_id_for_label(ra_label).hex()},
        }
        result = cms_verify(tmp_path, generation.next_ca_response, current.ca.certificate)  # type: ignore[attr-defined]
        assert result.returncode == 0, result.stderr
        # Every generation's token keys are proved again at load.
        assert len(load_ca_schedule(tmp_path, keys).generations) == 2

    def test_build_refuses_a_key_that_is_not_the_signers(self, tmp_path: Path) -> None:
        material = lab(tmp_path).active().material
        with pytest.raises(ValueError, match="does not belong"):
            build_next_ca_response(
                [material.ra.certificate], material.ra.key, material.ca.certificate
            )
        with pytest.raises(ValueError, match="at least one"):
            build_next_ca_response([], material.ca.key, material.ca.certificate)


class TestWatcher:
    def test_check_picks_up_a_staged_rollover(self, tmp_path: Path) -> None:
        lab(tmp_path)
        watcher = CaScheduleWatcher(tmp_path, FILE, check_interval=60)
        before = watcher.current()
        assert watcher.check() is False
        assert watcher.current() is before
        stage(tmp_path)
        assert watcher.check() is True
        assert [g.number for g in watcher.current().generations] == [0, 1]
        assert watcher.current().staged() is not None

    def test_each_generations_expiry_is_a_metric_for_alerting(self, tmp_path: Path) -> None:
        lab(tmp_path)
        watcher = CaScheduleWatcher(tmp_path, FILE, check_interval=60)

        def expiry(generation: str, role: str) -> float | None:
            return REGISTRY.get_sample_value(
                "scepline_ca_certificate_not_after_timestamp_seconds",
                {"generation": generation, "role": role},
            )

        first = watcher.current().active().material
        assert expiry("0", "ca") == first.ca.certificate.not_valid_after_utc.timestamp()
        assert expiry("0", "ra") == first.ra.certificate.not_valid_after_utc.timestamp()
        assert expiry("1", "ca") is None
        stage(tmp_path)
        assert watcher.check() is True
        staged = watcher.current().staged()
        assert staged is not None
        assert expiry("1", "ca") == staged.material.ca.certificate.not_valid_after_utc.timestamp()

    def test_failed_reload_keeps_the_previous_schedule(self, tmp_path: Path) -> None:
        lab(tmp_path)
        watcher = CaScheduleWatcher(tmp_path, FILE, check_interval=60)
        before = watcher.current()
        stage(tmp_path)
        (CaPaths.generation(tmp_path, 1).ca_cert).write_text("not a certificate")
        with capture_logs() as logs:
            assert watcher.check() is False
            assert watcher.check() is False  # retried, warned once
        assert watcher.current() is before
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1
        assert "keeping the previous CA schedule" in warnings[0]["event"]
        assert "ca.crt" in warnings[0]["error"]

    def test_run_reloads_in_the_background_until_stopped(self, tmp_path: Path) -> None:
        lab(tmp_path)

        async def scenario() -> CaSchedule:
            watcher = CaScheduleWatcher(tmp_path, FILE, check_interval=0.05)
            task = asyncio.create_task(watcher.run())
            staged = threading.Thread(target=stage, args=(tmp_path,))
            staged.start()
            await asyncio.to_thread(staged.join)
            for _ in range(200):
                if len(watcher.current().generations) == 2:
                    break
                await asyncio.sleep(0.05)
            watcher.stop()
            await asyncio.wait_for(task, timeout=5)
            return watcher.current()

        schedule = asyncio.run(scenario())
        assert [g.number for g in schedule.generations] == [0, 1]


def test_certificate_types_round_trip(tmp_path: Path) -> None:
    """next-ca.p7's bag holds plain X.509 certificates, as GetCACert's does."""
    lab(tmp_path)
    generation = stage(tmp_path)
    certificates = read_next_ca_response(
        generation.next_ca_response,  # type: ignore[attr-defined]
        load_ca_schedule(tmp_path, FILE).generations[0].material.ca.certificate,
    )
    assert all(isinstance(c, x509.Certificate) for c in certificates)
