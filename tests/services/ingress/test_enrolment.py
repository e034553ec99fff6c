"""PKIOperation behaviour: enrolment, idempotent retransmission, polling,
renewal, GetCert/GetCRL, and a CertRep FAILURE with the right failInfo for every
kind of bad request."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from asn1crypto import algos
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import Requester, build_csr
from scepline_shared.ca import build_crl
from scepline_shared.keys import spki_sha256_hex
from scepline_shared.scep import (
    ContentEncryption,
    Digest,
    FailInfo,
    MessageType,
    PkiStatus,
    build_request,
    issuer_and_serial,
    issuer_and_subject,
    read_cert_rep,
)
from scepline_shared.settings import Settings
from tests.fixtures.scepline import CHALLENGE, RunningScepline, running
from tests.support.exchange import Exchange
from tests.support.pki import name, requester, resigned, rsa_key, rsassa_pss, self_signed


@pytest.fixture
def scep(scepline: RunningScepline) -> Exchange:
    return Exchange(scepline)


def ca_certificate(scep: Exchange) -> x509.Certificate:
    return scep.scepline.embedded.material.ca.certificate


async def test_enrolment_with_the_right_challenge_issues_a_certificate(scep: Exchange):
    sans = (
        x509.DNSName("device-1.example.com"),
        x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    )
    rep = await scep.enrol(requester("a"), cn="device-1", sans=sans)

    assert rep.status is PkiStatus.SUCCESS
    (certificate,) = rep.certificates
    assert certificate.subject == name("device-1")
    assert certificate.public_key() == requester("a").key.public_key()
    copied = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(copied) == list(sans)
    certificate.verify_directly_issued_by(ca_certificate(scep))


@pytest.mark.parametrize("challenge", ["wrong", None], ids=["wrong", "missing"])
async def test_wrong_or_missing_challenge_is_failure_bad_request(
    scep: Exchange, challenge: str | None
):
    rep = await scep.enrol(requester("b"), challenge=challenge)
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.fail_info_text and "challenge" in rep.fail_info_text.lower()
    assert CHALLENGE not in (rep.fail_info_text or "")


async def test_retransmitted_request_gets_the_same_certificate(scep: Exchange):
    first = await scep.enrol(requester("c"), transaction_id="tx-retransmit")
    again = await scep.enrol(requester("c"), transaction_id="tx-retransmit")
    assert first.status is again.status is PkiStatus.SUCCESS
    assert first.certificates[0].serial_number == again.certificates[0].serial_number


async def test_same_transaction_id_from_another_key_is_refused(scep: Exchange):
    await scep.enrol(requester("d"), transaction_id="tx-shared")
    rep = await scep.enrol(requester("e"), transaction_id="tx-shared")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST


async def test_cert_poll_returns_the_issued_certificate(scep: Exchange):
    issued = await scep.enrol(requester("f"), cn="polled", transaction_id="tx-poll")
    poll = issuer_and_subject(ca_certificate(scep).subject, name("polled"))
    rep = await scep.send(requester("f"), MessageType.CERT_POLL, poll, transaction_id="tx-poll")
    assert rep.status is PkiStatus.SUCCESS
    assert rep.certificates == issued.certificates


async def test_cert_poll_for_an_unknown_transaction_is_bad_cert_id(scep: Exchange):
    poll = issuer_and_subject(ca_certificate(scep).subject, name("nobody"))
    rep = await scep.send(requester("g"), MessageType.CERT_POLL, poll, transaction_id="nope")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_CERT_ID


async def test_cert_poll_from_another_key_is_refused(scep: Exchange):
    await scep.enrol(requester("h"), transaction_id="tx-owner")
    poll = issuer_and_subject(ca_certificate(scep).subject, name("device-1"))
    rep = await scep.send(requester("i"), MessageType.CERT_POLL, poll, transaction_id="tx-owner")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST
    assert rep.certificates == ()


async def test_pending_request_completes_after_polling(scepline_settings: Settings):
    no_wait = scepline_settings.model_copy(update={"sync_wait_seconds": 0})
    async with running(no_wait) as product:
        scep = Exchange(product)
        first = await scep.enrol(requester("j"), cn="slow", transaction_id="tx-pending")
        assert first.status is PkiStatus.PENDING
        poll = issuer_and_subject(ca_certificate(scep).subject, name("slow"))
        for _ in range(100):
            rep = await scep.send(
                requester("j"), MessageType.CERT_POLL, poll, transaction_id="tx-pending"
            )
            if rep.status is not PkiStatus.PENDING:
                break
            await _sleep(0.05)
        assert rep.status is PkiStatus.SUCCESS
        assert rep.certificates[0].subject == name("slow")


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_renewal_req_signed_with_the_old_certificate_needs_no_challenge(scep: Exchange):
    old = await scep.enrol(requester("k"), cn="renew-me", transaction_id="tx-old")
    signer = Requester(key=requester("k").key, certificate=old.certificates[0])
    new_key = Requester(key=rsa_key("k-new"), certificate=signer.certificate)
    csr = build_csr(new_key.key, name("renew-me"), challenge=None)
    rep = await scep.send(
        signer, MessageType.RENEWAL_REQ, csr.public_bytes(Encoding.DER), transaction_id="tx-new"
    )
    assert rep.status is PkiStatus.SUCCESS
    assert rep.certificates[0].public_key() == rsa_key("k-new").public_key()
    assert rep.certificates[0].serial_number != old.certificates[0].serial_number


async def test_pkcs_req_signed_with_the_old_certificate_is_a_renewal(scep: Exchange):
    """macOS and certmonger renew with a PKCSReq signed by the old certificate."""
    old = await scep.enrol(requester("l"), cn="mac", transaction_id="tx-mac-old")
    signer = Requester(key=requester("l").key, certificate=old.certificates[0])
    rep = await scep.enrol(signer, cn="mac", challenge=None, transaction_id="tx-mac-new")
    assert rep.status is PkiStatus.SUCCESS


async def test_renewal_req_signed_by_a_stranger_is_refused(scep: Exchange):
    rep = await scep.enrol(requester("m"), challenge=None, message_type=MessageType.RENEWAL_REQ)
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST


async def test_single_des_is_refused_with_bad_alg_by_default(scep: Exchange):
    rep = await scep.enrol(requester("n"), encryption=ContentEncryption.DES_CBC)
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_ALG


async def test_single_des_is_accepted_when_allowed(scepline_settings: Settings):
    allowed = scepline_settings.model_copy(update={"scep_allow_des": True})
    async with running(allowed) as product:
        rep = await Exchange(product).enrol(
            requester("o"), encryption=ContentEncryption.DES_CBC, digest=Digest.SHA1
        )
    assert rep.status is PkiStatus.SUCCESS


@pytest.mark.parametrize("encryption", [ContentEncryption.DES3_CBC, ContentEncryption.AES256_CBC])
@pytest.mark.parametrize("digest", [Digest.SHA1, Digest.SHA512])
async def test_legacy_and_strong_algorithms_are_answered_in_kind(
    scep: Exchange, encryption: ContentEncryption, digest: Digest
):
    rep = await scep.enrol(
        requester("p"),
        encryption=encryption,
        digest=digest,
        transaction_id=f"tx-{encryption.name}-{digest.name}",
    )
    assert rep.status is PkiStatus.SUCCESS


async def test_signing_time_far_from_our_clock_is_bad_time(scep: Exchange):
    rep = await scep.enrol(
        requester("q"), signing_time=dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    )
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_TIME


async def test_envelope_for_another_recipient_is_bad_message_check(scep: Exchange):
    stranger = self_signed(rsa_key("stranger-ra"), "stranger RA")
    rep = await scep.enrol(requester("r"), recipient=stranger)
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


async def test_signature_that_does_not_verify_is_bad_message_check(scep: Exchange):
    client = scep.scepline.client
    await client.get_ca_certs()
    who = requester("s")
    nonce = os.urandom(16)
    der = bytearray(
        build_request(
            message_type=MessageType.PKCS_REQ,
            transaction_id="tx-sig",
            message_data=build_csr(who.key, name("x"), challenge=CHALLENGE).public_bytes(
                Encoding.DER
            ),
            signer_key=who.key,
            signer_certificate=who.certificate,
            recipient=client.ra_certificate,
            sender_nonce=nonce,
        )
    )
    der[-10] ^= 0xFF  # inside the signature value, the last field of the message
    response = await client.send(bytes(der))
    rep = read_cert_rep(
        response.content,
        expected_signer=client.ra_certificate,
        sender_nonce=nonce,
        client_key=who.key,
        client_certificate=who.certificate,
    )
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_MESSAGE_CHECK


async def test_rsassa_pss_signed_pkcs_req_is_issued(scep: Exchange):
    """strongSwan pki --rsa-padding pss: SHA-256, MGF1 with SHA-256, 32 bytes of salt."""
    who = requester("pss")
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    rep = await scep.enrol(
        who,
        transaction_id="tx-pss",
        rewrite=lambda der: resigned(
            der, rsassa_pss(), lambda data: who.key.sign(data, pss, hashes.SHA256())
        ),
    )
    assert rep.status is PkiStatus.SUCCESS
    assert rep.certificates[0].public_key() == who.key.public_key()


@pytest.mark.parametrize(
    "algorithm",
    [rsassa_pss("sha3_256"), algos.SignedDigestAlgorithm({"algorithm": "1.3.6.1.4.1.55555.1.2"})],
    ids=["pss-with-sha3", "unknown-oid"],
)
async def test_signature_algorithm_we_do_not_support_is_failure_bad_alg(
    scep: Exchange, algorithm: algos.SignedDigestAlgorithm
):
    who = requester("alg")
    rep = await scep.enrol(
        who,
        transaction_id="tx-alg",
        rewrite=lambda der: resigned(
            der, algorithm, lambda data: who.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        ),
    )
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_ALG


@pytest.mark.parametrize("message_type", [18, 99, int(MessageType.CERT_REP)])
async def test_unknown_message_type_is_bad_request(scep: Exchange, message_type: int):
    rep = await scep.send(requester("t"), message_type, b"\x30\x00")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST


async def test_messagedata_that_is_not_a_csr_is_bad_request(scep: Exchange):
    rep = await scep.send(requester("u"), MessageType.PKCS_REQ, b"not a csr")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_REQUEST


async def test_get_cert_returns_an_issued_certificate(scep: Exchange):
    issued = (await scep.enrol(requester("v"), transaction_id="tx-getcert")).certificates[0]
    data = issuer_and_serial(issued.issuer, issued.serial_number)
    rep = await scep.send(requester("w"), MessageType.GET_CERT, data, transaction_id="tx-gc")
    assert rep.status is PkiStatus.SUCCESS
    assert rep.certificates == (issued,)


async def test_get_cert_for_an_unknown_serial_is_bad_cert_id(scep: Exchange):
    data = issuer_and_serial(ca_certificate(scep).subject, 12345)
    rep = await scep.send(requester("w"), MessageType.GET_CERT, data, transaction_id="tx-gc2")
    assert rep.status is PkiStatus.FAILURE
    assert rep.fail_info is FailInfo.BAD_CERT_ID


async def test_get_crl_returns_the_latest_published_crl(scep: Exchange):
    issued = (await scep.enrol(requester("x"), transaction_id="tx-crl")).certificates[0]
    data = issuer_and_serial(issued.issuer, issued.serial_number)
    material = scep.scepline.embedded.material
    issuer_key_id = spki_sha256_hex(material.ca.certificate.public_key())
    first = await scep.scepline.embedded.repository.latest_crl(issuer_key_id)
    assert first is not None  # the signer publishes one when it starts
    before = await scep.send(requester("x"), MessageType.GET_CRL, data, transaction_id="c1")
    assert before.status is PkiStatus.SUCCESS
    assert before.crls == (x509.load_der_x509_crl(first.der),)

    now = dt.datetime.now(dt.UTC)
    crl = build_crl(
        ca=material.ca,
        revoked=[],
        number=first.number + 1,
        this_update=now,
        next_update=now + dt.timedelta(days=1),
    )
    await scep.scepline.embedded.repository.store_crl(
        number=first.number + 1,
        issuer_key_id=issuer_key_id,
        this_update=now,
        next_update=now + dt.timedelta(days=1),
        der=crl.public_bytes(Encoding.DER),
    )
    after = await scep.send(requester("x"), MessageType.GET_CRL, data, transaction_id="c2")
    assert after.status is PkiStatus.SUCCESS
    assert after.crls == (crl,)


async def test_renewal_with_the_same_key_and_transaction_id_gets_a_new_certificate(
    scep: Exchange,
):
    """scepclient and certmonger renew with the same key, so the same transactionID
    (RFC 8894 derives it from the key); that is a new request, not a retransmission."""
    old = await scep.enrol(requester("y"), cn="same-key", transaction_id="tx-same-key")
    signer = Requester(key=requester("y").key, certificate=old.certificates[0])
    renewed = await scep.enrol(
        signer,
        cn="same-key",
        challenge=None,
        transaction_id="tx-same-key",
        message_type=MessageType.RENEWAL_REQ,
    )
    assert renewed.status is PkiStatus.SUCCESS
    assert renewed.certificates[0].serial_number != old.certificates[0].serial_number
    # Retransmitting either request still gets its own answer.
    again = await scep.enrol(requester("y"), cn="same-key", transaction_id="tx-same-key")
    assert again.certificates == old.certificates
    poll = issuer_and_subject(ca_certificate(scep).subject, name("same-key"))
    polled = await scep.send(signer, MessageType.CERT_POLL, poll, transaction_id="tx-same-key")
    assert polled.certificates == renewed.certificates
