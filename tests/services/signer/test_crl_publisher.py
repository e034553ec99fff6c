"""publish_crl_if_due / CrlPublisher: when a CRL is published, what it lists, who wins a race.

Runs on SQLite and PostgreSQL (the ``repository`` fixture); the HSM cases sign
with a CA key in the session's SoftHSM token and are checked with openssl.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509

from scepline_shared.ca import CertificateProfile, issue_certificate, new_serial
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.keys.pkcs11 import Pkcs11Token
from scepline_shared.metrics import CRL_PUBLISH_ERRORS
from scepline_shared.settings import Settings
from scepline_shared.store import CrlView, RequestRepository
from scepline_signer.crl_publisher import CrlPublisher, OffLoop, crl_due, publish_crl_if_due
from tests.shared.ca._pki import make_csr, name, openssl, write_pem

from .pki import file_ca, store_issued, token_ca

VALIDITY = timedelta(days=7)
_T = TypeVar("_T")
_transactions = itertools.count(1)


async def _inline(function: Callable[[], _T]) -> _T:
    return function()


def _leaf(ca: KeyPair, common_name: str = "device-1") -> x509.Certificate:
    return issue_certificate(
        csr=make_csr(subject=name(common_name)),
        ca=ca,
        profile=CertificateProfile(),
        serial=new_serial(),
    )


async def _issued(repository: RequestRepository, ca: KeyPair, cn: str = "d") -> x509.Certificate:
    certificate = _leaf(ca, cn)
    await store_issued(repository, certificate, f"txn-{next(_transactions)}")
    return certificate


def _crl(view: CrlView) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(view.der)


def _number(view: CrlView) -> int:
    return _crl(view).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _present(view: CrlView | None) -> CrlView:
    assert view is not None, "expected a CRL to be published"
    return view


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return file_ca()


class TestWhenACrlIsDue:
    async def test_first_crl_is_number_one_and_signed_by_the_ca(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        view = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))

        crl = _crl(view)
        assert (view.number, _number(view)) == (1, 1)
        assert view.issuer_key_id == spki_sha256_hex(ca.certificate.public_key())
        assert crl.issuer == ca.certificate.subject
        assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
        assert len(crl) == 0
        # thisUpdate a little in the past (relying parties' clock skew), validity on top.
        assert view.this_update < datetime.now(UTC) < view.next_update
        assert view.next_update - datetime.now(UTC) > VALIDITY - timedelta(minutes=1)
        assert (crl.last_update_utc, crl.next_update_utc) == (view.this_update, view.next_update)
        assert await repository.latest_crl(view.issuer_key_id) == view

    async def test_nothing_due_publishes_nothing(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        first = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        assert await publish_crl_if_due(repository, ca, validity=VALIDITY) is None
        assert await repository.latest_crl(first.issuer_key_id) == first

    async def test_a_revocation_publishes_the_next_number_listing_it_with_its_reason(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        first = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        kept, revoked = await _issued(repository, ca), await _issued(repository, ca)
        await repository.revoke(revoked.serial_number, reason=1)  # keyCompromise

        second = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))

        crl = _crl(second)
        assert (second.number, _number(second)) == (first.number + 1, 2)
        assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
        entry = crl.get_revoked_certificate_by_serial_number(revoked.serial_number)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason is x509.ReasonFlags.key_compromise
        assert await publish_crl_if_due(repository, ca, validity=VALIDITY) is None

    async def test_a_revocation_dated_before_the_latest_crl_is_still_published(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        # E.g. a revocation committed while another signer was building its CRL,
        # or one backdated to the key compromise: newer-than-thisUpdate would miss it.
        certificate = await _issued(repository, ca)
        first = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        await repository.revoke(
            certificate.serial_number, reason=0, at=first.this_update - timedelta(hours=1)
        )

        second = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        entry = _crl(second).get_revoked_certificate_by_serial_number(certificate.serial_number)
        assert entry is not None
        # Reason 0 (unspecified) is written as no reason extension (RFC 5280 5.3.1).
        assert len(entry.extensions) == 0

    async def test_republished_once_half_the_validity_has_passed(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        first = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        half = first.this_update + (first.next_update - first.this_update) / 2

        before = half - timedelta(minutes=1)
        assert await publish_crl_if_due(repository, ca, validity=VALIDITY, now=before) is None
        refreshed = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY, now=half))
        assert refreshed.number == 2
        assert refreshed.this_update > first.this_update

    async def test_forced_publishes_even_when_nothing_is_due(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        await publish_crl_if_due(repository, ca, validity=VALIDITY)
        forced = await publish_crl_if_due(repository, ca, validity=VALIDITY, force=True)
        assert _present(forced).number == 2

    async def test_an_expired_ca_publishes_nothing(self, repository: RequestRepository) -> None:
        old = file_ca("Old CA", not_after=datetime.now(UTC) + timedelta(hours=1))
        later = datetime.now(UTC) + timedelta(hours=2)
        assert await publish_crl_if_due(repository, old, validity=VALIDITY, now=later) is None

    def test_due_reasons(self) -> None:
        now = datetime.now(UTC)
        assert crl_due(None, [], now) == "initial"
        assert crl_due(None, [], now, force=True) == "forced"

    async def test_bad_arguments_are_refused(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        with pytest.raises(ValueError, match="validity"):
            await publish_crl_if_due(repository, ca, validity=timedelta(0))
        with pytest.raises(ValueError, match="timezone-aware"):
            await publish_crl_if_due(repository, ca, validity=VALIDITY, now=datetime(2026, 1, 1))


class TestWhatTheCrlLists:
    async def test_only_certificates_this_ca_issued_even_under_the_same_name(
        self, repository: RequestRepository
    ) -> None:
        # After a rollover the new CA usually keeps the old one's name; the store
        # files both generations' certificates under that one issuer string.
        old, new = file_ca("Scepline CA"), file_ca("Scepline CA")
        from_old, from_new = await _issued(repository, old), await _issued(repository, new)
        await repository.revoke(from_old.serial_number, reason=4)
        await repository.revoke(from_new.serial_number, reason=5)

        old_crl = _crl(_present(await publish_crl_if_due(repository, old, validity=VALIDITY)))
        new_crl = _crl(_present(await publish_crl_if_due(repository, new, validity=VALIDITY)))

        assert [entry.serial_number for entry in old_crl] == [from_old.serial_number]
        assert [entry.serial_number for entry in new_crl] == [from_new.serial_number]

    async def test_an_expired_certificate_leaves_after_one_crl_past_its_expiry(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        # RFC 5280 3.3: listed on one CRL issued after it expired, then dropped,
        # so CRLs do not grow with every device ever retired.
        short = issue_certificate(
            csr=make_csr(subject=name("short-lived")),
            ca=ca,
            profile=CertificateProfile(validity_days=1),
            serial=new_serial(),
        )
        await store_issued(repository, short, f"txn-{next(_transactions)}")
        valid = await _issued(repository, ca, "still-valid")
        await repository.revoke(short.serial_number, reason=4)  # superseded
        await repository.revoke(valid.serial_number, reason=4)
        expiry = short.not_valid_after_utc

        before = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY))
        after_expiry = _present(
            await publish_crl_if_due(
                repository, ca, validity=VALIDITY, now=expiry + timedelta(hours=1), force=True
            )
        )
        later = expiry + VALIDITY
        pruned = _present(await publish_crl_if_due(repository, ca, validity=VALIDITY, now=later))

        def lists(view: CrlView, certificate: x509.Certificate) -> bool:
            entry = _crl(view).get_revoked_certificate_by_serial_number(certificate.serial_number)
            return entry is not None

        assert lists(before, short) and lists(after_expiry, short)
        assert not lists(pruned, short)
        assert lists(pruned, valid)
        # The dropped entry does not read as a revocation missing from the CRL.
        soon = later + timedelta(hours=1)
        assert await publish_crl_if_due(repository, ca, validity=VALIDITY, now=soon) is None


class TestCrlNumbers:
    async def test_a_number_taken_by_another_ca_is_skipped(
        self, repository: RequestRepository
    ) -> None:
        # The store keeps CRL numbers unique across CAs (one sequence).
        first, second = file_ca("CA one"), file_ca("CA two")
        one = _present(await publish_crl_if_due(repository, first, validity=VALIDITY))
        two = _present(await publish_crl_if_due(repository, second, validity=VALIDITY))
        assert (one.number, two.number) == (1, 2)
        assert _number(two) == 2

        again = await publish_crl_if_due(repository, first, validity=VALIDITY, force=True)
        assert _present(again).number == 3  # 2 is the other CA's: still increasing

    async def test_min_number_raises_the_next_number(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        view = await publish_crl_if_due(repository, ca, validity=VALIDITY, min_number=40)
        assert _present(view).number == 40
        forced = await publish_crl_if_due(repository, ca, validity=VALIDITY, force=True)
        assert _present(forced).number == 41

    async def test_the_publisher_numbers_above_every_ca_of_its_set(
        self, repository: RequestRepository
    ) -> None:
        first, second = file_ca("CA one"), file_ca("CA two")
        await publish_crl_if_due(repository, first, validity=VALIDITY, min_number=10)
        publisher = CrlPublisher(repository, lambda: [first, second], validity=VALIDITY)

        (published,) = await publisher.run_once()

        assert (published.issuer_key_id, published.number) == (second.key_id, 11)


class TestConcurrentPublishers:
    async def test_two_publishers_racing_for_the_same_number_do_not_fail(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        # Both read "no CRL yet" and build number 1 before either claims it.
        both_built = asyncio.Barrier(2)

        def publisher() -> OffLoop:
            calls = 0

            async def sign_then_wait(function: Callable[[], _T]) -> _T:
                nonlocal calls
                calls += 1
                result = function()
                if calls == 2:  # decided, then built: the to-be-signed hash is known
                    await both_built.wait()
                return result

            return sign_then_wait

        results = await asyncio.gather(
            publish_crl_if_due(repository, ca, validity=VALIDITY, sign=publisher()),
            publish_crl_if_due(repository, ca, validity=VALIDITY, sign=publisher()),
        )

        published = [view for view in results if view is not None]
        assert len(published) == 1
        latest = await repository.latest_crl(published[0].issuer_key_id)
        assert latest == published[0]
        assert latest is not None and latest.number == 1

    async def test_many_publishers_after_a_revocation_publish_it_once(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        await publish_crl_if_due(repository, ca, validity=VALIDITY)
        certificate = await _issued(repository, ca)
        await repository.revoke(certificate.serial_number, reason=1)

        results = await asyncio.gather(
            *(publish_crl_if_due(repository, ca, validity=VALIDITY) for _ in range(4))
        )

        assert [view.number for view in results if view is not None] == [2]
        assert await publish_crl_if_due(repository, ca, validity=VALIDITY) is None


@pytest.fixture(scope="module")
def hsm_ca(softhsm_token: Pkcs11Token) -> KeyPair:
    return token_ca(softhsm_token, "crl")


class TestCrlSignedInTheToken:
    async def test_openssl_sees_the_revoked_leaf_as_revoked(
        self, repository: RequestRepository, hsm_ca: KeyPair, tmp_path: Path
    ) -> None:
        first = _present(await publish_crl_if_due(repository, hsm_ca, validity=VALIDITY))
        good, bad = await _issued(repository, hsm_ca, "good"), await _issued(repository, hsm_ca)
        await repository.revoke(bad.serial_number, reason=1)
        second = _present(await publish_crl_if_due(repository, hsm_ca, validity=VALIDITY))
        assert (first.number, second.number) == (1, 2)

        ca_pem = write_pem(tmp_path / "ca.pem", hsm_ca.certificate)
        crl_pem = write_pem(tmp_path / "crl.pem", _crl(second))
        checked = openssl("crl", "-in", crl_pem, "-CAfile", ca_pem, "-noout", "-verify")
        assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, (
            checked.stderr
        )
        text = openssl("crl", "-in", crl_pem, "-noout", "-text").stdout
        assert re.search(r"CRL Number:\s*\n\s*2\n", text)
        assert "Key Compromise" in text

        def verify(leaf: x509.Certificate) -> str:
            path = write_pem(tmp_path / f"{leaf.serial_number}.pem", leaf)
            result = openssl("verify", "-crl_check", "-CAfile", ca_pem, "-CRLfile", crl_pem, path)
            return result.stdout + result.stderr

        assert "OK" in verify(good)
        assert "certificate revoked" in verify(bad)

    async def test_publisher_loop_signs_off_the_event_loop(
        self, repository: RequestRepository, hsm_ca: KeyPair
    ) -> None:
        publisher = CrlPublisher(repository, lambda: [hsm_ca], validity=VALIDITY, interval=60)
        (view,) = await publisher.run_once()
        assert view.issuer_key_id == hsm_ca.key_id
        assert _crl(view).is_signature_valid(hsm_ca.certificate.public_key())  # type: ignore[arg-type]


class TestCrlPublisherLoop:
    async def test_each_ca_of_the_current_set_gets_its_crl(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        other = file_ca("Previous CA")
        cas = [ca, other, ca]  # the same CA twice (active + previous overlap) is one CRL
        publisher = CrlPublisher(repository, lambda: cas, validity=VALIDITY, sign=_inline)

        published = await publisher.run_once()

        assert sorted(view.issuer_key_id for view in published) == sorted([ca.key_id, other.key_id])
        assert await publisher.run_once() == []

    async def test_a_failing_ca_is_logged_and_retried_while_the_others_publish(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        broken = file_ca("Broken CA")
        failures = {"left": 1}

        async def flaky(function: Callable[[], _T]) -> _T:
            if failures["left"]:  # the first CA of the round: ``broken``
                failures["left"] -= 1
                raise RuntimeError("HSM went away")
            return function()

        errors_before = CRL_PUBLISH_ERRORS._value.get()
        publisher = CrlPublisher(repository, lambda: [broken, ca], validity=VALIDITY, sign=flaky)

        first_round = await publisher.run_once()
        assert [view.issuer_key_id for view in first_round] == [ca.key_id]
        assert CRL_PUBLISH_ERRORS._value.get() == errors_before + 1
        second_round = await publisher.run_once()
        assert [view.issuer_key_id for view in second_round] == [broken.key_id]

    async def test_a_failing_ca_source_does_not_end_the_loop(
        self, repository: RequestRepository, ca: KeyPair
    ) -> None:
        calls = {"n": 0}

        def cas() -> list[KeyPair]:
            calls["n"] += 1
            if calls["n"] == 1:
                raise OSError("CA directory unreadable")
            return [ca]

        signed = asyncio.Event()

        async def sign(function: Callable[[], _T]) -> _T:
            result = function()
            if isinstance(result, x509.CertificateRevocationList):
                signed.set()
            return result

        publisher = CrlPublisher(repository, cas, validity=VALIDITY, interval=0.01, sign=sign)
        task = asyncio.create_task(publisher.run())
        try:
            await asyncio.wait_for(signed.wait(), timeout=10)
        finally:
            publisher.stop()  # the round in progress still stores its CRL
            await asyncio.wait_for(task, timeout=5)
        assert calls["n"] >= 2
        assert task.exception() is None
        assert await repository.latest_crl(ca.key_id) is not None

    def test_from_settings(self, repository: RequestRepository, ca: KeyPair) -> None:
        settings = Settings(crl_validity_hours=24, crl_check_interval_seconds=30)
        publisher = CrlPublisher.from_settings(settings, repository, lambda: [ca])
        assert (publisher.validity, publisher.interval) == (timedelta(hours=24), 30)
