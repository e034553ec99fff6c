"""The sign step: the CA active at signing time, token keys off the event loop,
the profile and CRL distribution point from settings, HSM outages retried."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CertificateProfile
from scepline_shared.ca.crl import crl_distribution_url
from scepline_shared.keys import KeyPair
from scepline_shared.keys.pkcs11 import Pkcs11KeyRef, Pkcs11RsaPrivateKey, Pkcs11Token
from scepline_shared.pipeline import Transient
from scepline_shared.settings import Settings
from scepline_shared.store import RequestRepository, RequestState
from scepline_shared.store.models import Approval
from scepline_signer.handler import SignerDeps, handle_sign, signs_in_token
from scepline_signer.main import build_handler
from tests.shared.ca._pki import INTUNE_SID_URI, make_csr, name, openssl, write_pem

from .pki import file_ca, record_validated, token_ca

_transactions = itertools.count(1)


class RecordingExecutor(ThreadPoolExecutor):
    """A one-thread executor that counts what it was given."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="test-signer")
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Any:
    pool = RecordingExecutor()
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def hsm_ca(softhsm_token: Pkcs11Token) -> KeyPair:
    return token_ca(softhsm_token, "signer")


async def _validated(
    repository: RequestRepository,
    csr: x509.CertificateSigningRequest,
    approval: Approval = Approval.CHALLENGE,
) -> str:
    transaction_id = f"sign-{next(_transactions)}"
    await record_validated(
        repository,
        transaction_id,
        csr_der=csr.public_bytes(Encoding.DER),
        subject=csr.subject.rfc4514_string(),
        approval=approval,
    )
    return transaction_id


async def _signed(repository: RequestRepository, transaction_id: str) -> x509.Certificate:
    request = await repository.get(transaction_id)
    assert request is not None and request.state is RequestState.SIGNED, request
    assert request.cert_der is not None
    return x509.load_der_x509_certificate(request.cert_der)


def _deps(repository: RequestRepository, ca: Callable[[], KeyPair], **kw: Any) -> SignerDeps:
    return SignerDeps(repository=repository, ca=ca, profile=CertificateProfile(), **kw)


class TestSigningWithATokenKey:
    async def test_certificate_verifies_with_openssl_and_keeps_the_sid_uri(
        self,
        repository: RequestRepository,
        hsm_ca: KeyPair,
        executor: RecordingExecutor,
        tmp_path: Path,
    ) -> None:
        csr = make_csr(
            subject=name("laptop-42"), sans=[x509.UniformResourceIdentifier(INTUNE_SID_URI)]
        )
        # Intune vouched for the names: the SID may be issued.
        transaction_id = await _validated(repository, csr, Approval.PROVIDER)
        settings = Settings(public_base_url="http://scep.example.com")
        handler = build_handler(settings, repository, lambda: hsm_ca, executor=executor)

        assert (await handler(transaction_id)).state is RequestState.SIGNED

        certificate = await _signed(repository, transaction_id)
        assert executor.submitted == 1  # the token signing ran on the executor
        ca_pem = write_pem(tmp_path / "ca.pem", hsm_ca.certificate)
        leaf_pem = write_pem(tmp_path / "leaf.pem", certificate)
        verified = openssl("verify", "-CAfile", ca_pem, leaf_pem)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [INTUNE_SID_URI]
        (point,) = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        expected_url = crl_distribution_url("http://scep.example.com", hsm_ca.certificate)
        assert point.full_name == [x509.UniformResourceIdentifier(expected_url)]
        stored = await repository.get_certificate(certificate.serial_number)
        assert stored is not None and stored.issuer == hsm_ca.certificate.subject.rfc4514_string()

    async def test_a_lost_token_is_retried_not_refused(
        self, repository: RequestRepository, hsm_ca: KeyPair, executor: RecordingExecutor
    ) -> None:
        # A token key whose object is gone (e.g. the HSM was swapped): signing raises HsmError.
        public = hsm_ca.certificate.public_key()
        assert isinstance(hsm_ca.key, Pkcs11RsaPrivateKey) and isinstance(public, rsa.RSAPublicKey)
        ref = Pkcs11KeyRef(label="no-such-key", id=b"\xde\xad")
        missing = Pkcs11RsaPrivateKey(hsm_ca.key.token, ref, public)
        gone = KeyPair(key=missing, certificate=hsm_ca.certificate)
        transaction_id = await _validated(repository, make_csr())

        with pytest.raises(Transient, match="HSM unavailable"):
            await handle_sign(transaction_id, _deps(repository, lambda: gone, executor=executor))

        request = await repository.get(transaction_id)
        assert request is not None and request.state is RequestState.VALIDATED

    def test_token_keys_are_recognised(self, hsm_ca: KeyPair) -> None:
        assert signs_in_token(hsm_ca.key)
        assert not signs_in_token(file_ca().key)


class TestSigningWithAFileKey:
    async def test_signs_inline_without_the_executor(
        self, repository: RequestRepository, executor: RecordingExecutor
    ) -> None:
        ca = file_ca()
        transaction_id = await _validated(repository, make_csr())

        state = (
            await handle_sign(transaction_id, _deps(repository, lambda: ca, executor=executor))
        ).state

        assert state is RequestState.SIGNED
        assert executor.submitted == 0
        certificate = await _signed(repository, transaction_id)
        certificate.verify_directly_issued_by(ca.certificate)
        with pytest.raises(x509.ExtensionNotFound):  # no public_base_url, no CDP
            certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints)


class TestTheCaAtSigningTime:
    async def test_a_rollover_takes_effect_without_a_new_handler(
        self, repository: RequestRepository
    ) -> None:
        old, new = file_ca("Scepline CA"), file_ca("Scepline CA")
        active = {"ca": old}
        handler = build_handler(Settings(), repository, lambda: active["ca"])

        before = await _validated(repository, make_csr(subject=name("before")))
        await handler(before)
        active["ca"] = new  # what CaScheduleWatcher.current() returns after the switch
        after = await _validated(repository, make_csr(subject=name("after")))
        await handler(after)

        (await _signed(repository, before)).verify_directly_issued_by(old.certificate)
        (await _signed(repository, after)).verify_directly_issued_by(new.certificate)


class TestProfileFromSettings:
    async def test_a_profile_refusal_fails_the_request(self, repository: RequestRepository) -> None:
        ca = file_ca()
        settings = Settings(cert_key_types=["P-256"])  # the CSR key is RSA
        handler = build_handler(settings, repository, lambda: ca)
        transaction_id = await _validated(repository, make_csr())

        assert (await handler(transaction_id)).state is RequestState.FAILED
        request = await repository.get(transaction_id)
        assert request is not None and "key type rsa not allowed" in (request.fail_reason or "")

    async def test_uri_sans_dropped_when_settings_exclude_them(
        self, repository: RequestRepository
    ) -> None:
        ca = file_ca()
        settings = Settings(cert_san_types=["dns"], cert_extended_key_usage=["client_auth"])
        handler = build_handler(settings, repository, lambda: ca)
        csr = make_csr(
            sans=[x509.UniformResourceIdentifier(INTUNE_SID_URI), x509.DNSName("pc.example")]
        )
        transaction_id = await _validated(repository, csr)

        await handler(transaction_id)

        certificate = await _signed(repository, transaction_id)
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [x509.DNSName("pc.example")]
