"""Every signature of the CA key is accounted for: the sign step claims the
request and journals the signature before the key is used, a second delivery
finds the claim and signs nothing, and a claim whose certificate never got
stored is voided (its serial revoked, the history saying why) and the request
signed again. A key that counts its signatures is the independent witness."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.ca import CertificateProfile
from scepline_shared.ca.issue import new_serial, prepare_certificate, serial_hex
from scepline_shared.keys import KeyPair, spki_sha256_hex
from scepline_shared.store import RequestRepository, RequestState
from scepline_shared.store.certificates import CRL_REASON_SUPERSEDED
from scepline_shared.store.models import JournalKind
from scepline_shared.store.views import SignatureClaim
from scepline_signer.handler import SignerDeps, handle_sign
from tests.shared.ca._pki import make_csr, name

from .pki import file_ca, record_validated

_transactions = itertools.count(1)


class CountingKey(ec.EllipticCurvePrivateKey):
    """A CA key that counts the signatures it makes (and delegates them)."""

    def __init__(self, inner: ec.EllipticCurvePrivateKey) -> None:
        self._inner = inner
        self.signatures = 0

    def sign(self, data: bytes, signature_algorithm: Any) -> bytes:
        self.signatures += 1
        return self._inner.sign(data, signature_algorithm)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._inner.public_key()

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._inner.curve

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def exchange(self, algorithm: Any, peer_public_key: Any) -> bytes:
        raise NotImplementedError

    def private_numbers(self) -> ec.EllipticCurvePrivateNumbers:
        raise NotImplementedError

    def private_bytes(self, *args: Any) -> bytes:
        raise NotImplementedError

    def __copy__(self) -> CountingKey:
        return self

    def __deepcopy__(self, memo: Any) -> CountingKey:
        return self


def counting_ca() -> tuple[KeyPair, CountingKey]:
    ca = file_ca("Counting CA")
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    key = CountingKey(ca.key)
    return KeyPair(key=key, certificate=ca.certificate), key


async def validated(repository: RequestRepository) -> tuple[str, x509.CertificateSigningRequest]:
    transaction_id = f"claim-{next(_transactions)}"
    csr = make_csr(subject=name(transaction_id))
    await record_validated(
        repository,
        transaction_id,
        csr_der=csr.public_bytes(Encoding.DER),
        subject=csr.subject.rfc4514_string(),
    )
    return transaction_id, csr


async def claimed_by_a_signer_that_died(
    repository: RequestRepository, transaction_id: str, csr: x509.CertificateSigningRequest
) -> str:
    """What a signer leaves when it is killed after its claim committed."""
    dead_signers_ca = file_ca("Dead signer's CA")
    prepared = prepare_certificate(
        csr=csr, ca=dead_signers_ca, profile=CertificateProfile(), serial=new_serial()
    )
    serial = serial_hex(prepared.serial)
    claim = SignatureClaim(
        serial=serial,
        issuer_key_id=spki_sha256_hex(dead_signers_ca.certificate.public_key()),
        issuer=dead_signers_ca.certificate.subject.rfc4514_string(),
        subject=prepared.subject.rfc4514_string(),
        not_before=prepared.not_before,
        not_after=prepared.not_after,
        tbs_sha256=prepared.tbs_sha256,
    )
    assert await repository.claim_signature(transaction_id=transaction_id, claim=claim)
    return serial


def deps(repository: RequestRepository, ca: KeyPair, **options: Any) -> SignerDeps:
    return SignerDeps(repository=repository, ca=lambda: ca, profile=CertificateProfile(), **options)


async def test_the_claim_is_journaled_before_the_key_signs(repository: RequestRepository):
    ca, key = counting_ca()
    transaction_id, _ = await validated(repository)

    assert (await handle_sign(transaction_id, deps(repository, ca))).state is RequestState.SIGNED

    assert key.signatures == 1
    request = await repository.get(transaction_id)
    assert request is not None and request.cert_der is not None
    (entry,) = [e for e in await repository.journal() if e.kind is JournalKind.CERTIFICATE]
    certificate = x509.load_der_x509_certificate(request.cert_der)
    assert entry.serial == serial_hex(certificate.serial_number)
    assert entry.transaction_id == transaction_id
    assert entry.issuer_key_id == spki_sha256_hex(ca.certificate.public_key())
    assert entry.tbs_sha256 == hashlib.sha256(certificate.tbs_certificate_bytes).hexdigest()
    history = [e.to_state for e in await repository.history(transaction_id)]
    assert history[-2:] == ["SIGNING", "SIGNED"]


async def test_a_second_delivery_finds_the_claim_and_signs_nothing(
    repository: RequestRepository,
):
    ca, key = counting_ca()
    transaction_id, csr = await validated(repository)
    serial = await claimed_by_a_signer_that_died(repository, transaction_id, csr)

    state = (await handle_sign(transaction_id, deps(repository, ca))).state

    assert state is RequestState.SIGNING
    assert key.signatures == 0
    assert await repository.get_certificate(serial) is None
    assert len(await repository.journal()) == 1


async def test_an_abandoned_claim_is_voided_and_the_request_signed_again(
    repository: RequestRepository,
):
    ca, key = counting_ca()
    transaction_id, csr = await validated(repository)
    voided_serial = await claimed_by_a_signer_that_died(repository, transaction_id, csr)

    signed = await handle_sign(
        transaction_id, deps(repository, ca, claim_timeout=dt.timedelta(seconds=0))
    )
    state = signed.state

    assert state is RequestState.SIGNED
    assert key.signatures == 1
    voided = await repository.get_certificate(voided_serial)
    assert voided is not None and voided.is_voided
    assert voided.is_revoked and voided.revocation_reason == CRL_REASON_SUPERSEDED
    assert voided.transaction_id == transaction_id
    request = await repository.get(transaction_id)
    assert request is not None and request.cert_serial != voided_serial
    recorded = await repository.get_certificate(request.cert_serial or "")
    assert recorded is not None and recorded.der == request.cert_der
    # The journal holds both signatures: one recorded, one voided.
    assert sorted(e.serial for e in await repository.journal()) == sorted(
        [voided_serial, recorded.serial]
    )
    # The next CRL lists the voided serial.
    assert voided_serial in [c.serial for c in await repository.revoked("CN=Dead signer's CA")]
    details = [e.detail for e in await repository.history(transaction_id)]
    assert any("abandoned" in d and f"serial {voided_serial} voided" in d for d in details)


async def test_a_claim_voided_while_the_key_signed_stores_nothing(
    repository: RequestRepository,
):
    """The slow signer's certificate goes nowhere: its serial is revoked already."""
    transaction_id, csr = await validated(repository)
    serial = await claimed_by_a_signer_that_died(repository, transaction_id, csr)
    voided = await repository.void_claim(
        transaction_id=transaction_id, serial=serial, why="took too long"
    )
    assert voided is not None and voided.state is RequestState.VALIDATED

    late = await repository.claim_signature(
        transaction_id=transaction_id,
        claim=SignatureClaim(
            serial="abc",
            issuer_key_id="0" * 64,
            issuer="CN=x",
            subject="CN=x",
            not_before=dt.datetime.now(dt.UTC),
            not_after=dt.datetime.now(dt.UTC),
            tbs_sha256="0" * 64,
        ),
    )
    assert late is not None  # a new claim is possible: the request is back in VALIDATED
    stored = await repository.get_certificate(serial)
    assert stored is not None and stored.is_voided and stored.is_revoked
