"""The OCSP responder over the real store (SQLite and PostgreSQL): what it
answers for each certificate the CA issued, revoked or never saw, and how its
cache keeps answers fresh without signing each one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from scepline_shared.ocsp.codec import ResponseStatus, issuer_hashes
from scepline_shared.ocsp.responder import OcspIssuer, OcspResponder, ocsp_issuer
from scepline_shared.store import RequestRepository
from tests.shared.ocsp.pki import claim, make_ca, make_leaf, make_responder, ocsp_request, store

CA = make_ca()
RESPONDER = make_responder(CA)
OTHER_CA = make_ca("Somebody else's CA")


def responder(
    repository: RequestRepository,
    issuers: list[OcspIssuer] | None = None,
    *,
    check_interval: float = 60,
    cache_entries: int = 1000,
) -> OcspResponder:
    chosen = issuers or [
        ocsp_issuer(
            CA.certificate,
            responder=RESPONDER,
            ca_key=None,
            signing="delegated",
            our_ca_certificates=[CA.certificate],
        )
    ]
    return OcspResponder(
        repository,
        lambda: chosen,
        check_interval=timedelta(seconds=check_interval),
        response_validity=timedelta(hours=1),
        cache_entries=cache_entries,
    )


def parsed(body: bytes) -> ocsp.OCSPResponse:
    response = ocsp.load_der_ocsp_response(body)
    if response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        RESPONDER.certificate.public_key().verify(  # type: ignore[call-arg, union-attr]
            response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
        )
    return response


async def test_an_issued_certificate_is_good(repository: RequestRepository) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)

    answer = await responder(repository).respond(ocsp_request(leaf, CA.certificate))

    response = parsed(answer.body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
    assert response.serial_number == leaf.serial_number
    assert response.next_update_utc - response.this_update_utc == timedelta(hours=1)
    assert answer.etag is not None


async def test_a_revocation_shows_within_one_check_interval(
    repository: RequestRepository,
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository, check_interval=0.5)
    request = ocsp_request(leaf, CA.certificate)
    assert parsed((await answers.respond(request)).body).certificate_status.name == "GOOD"

    await repository.revoke(leaf.serial_number, reason=1)
    # Within the interval the cached answer stands (that is what the interval buys)...
    assert parsed((await answers.respond(request)).body).certificate_status.name == "GOOD"
    await asyncio.sleep(0.6)
    # ...after it the status is read again and the answer signed again.
    response = parsed((await answers.respond(request)).body)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.key_compromise
    assert response.revocation_time_utc is not None


async def test_an_unchanged_status_is_not_signed_again(repository: RequestRepository) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository, check_interval=0.2)
    request = ocsp_request(leaf, CA.certificate)
    first = await answers.respond(request)
    await asyncio.sleep(0.3)
    assert (await answers.respond(request)).body == first.body  # re-read, same signature


async def test_a_serial_never_issued_is_unknown(repository: RequestRepository) -> None:
    stranger = make_leaf(CA)  # signed, never recorded
    response = parsed(
        (await responder(repository).respond(ocsp_request(stranger, CA.certificate))).body
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


async def test_a_voided_serial_is_revoked_superseded(repository: RequestRepository) -> None:
    leaf = make_leaf(CA)
    transaction_id, record = await claim(repository, leaf, CA)
    assert await repository.void_claim(
        transaction_id=transaction_id, serial=record.serial, why="signer died"
    )

    response = parsed(
        (await responder(repository).respond(ocsp_request(leaf, CA.certificate))).body
    )
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is x509.ReasonFlags.superseded


async def test_the_ca_certificate_itself_is_good_under_itself(
    repository: RequestRepository,
) -> None:
    request = ocsp_request(CA.certificate, CA.certificate)
    response = parsed((await responder(repository).respond(request)).body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


async def test_a_certificate_of_another_of_our_cas_is_unknown_under_this_one(
    repository: RequestRepository,
) -> None:
    other = make_ca("Next generation")
    leaf = make_leaf(other)
    await store(repository, leaf, other)
    # Same serial asked about under CA: it is not CA's certificate.
    builder = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
        *issuer_hashes(CA.certificate, "sha1"), leaf.serial_number, hashes.SHA1()
    )
    request = builder.build().public_bytes(Encoding.DER)
    response = parsed((await responder(repository).respond(request)).body)
    assert response.certificate_status is ocsp.OCSPCertStatus.UNKNOWN


async def test_an_issuer_we_do_not_serve_is_unauthorized(repository: RequestRepository) -> None:
    answer = await responder(repository).respond(
        ocsp_request(make_leaf(OTHER_CA), OTHER_CA.certificate)
    )
    assert answer.status is ResponseStatus.UNAUTHORIZED
    assert ocsp.load_der_ocsp_response(answer.body).response_status.name == "UNAUTHORIZED"


async def test_without_a_responder_certificate_yet_the_answer_is_try_later(
    repository: RequestRepository,
) -> None:
    waiting = ocsp_issuer(
        CA.certificate, responder=None, ca_key=None, signing="delegated", our_ca_certificates=[]
    )
    answer = await responder(repository, [waiting]).respond(
        ocsp_request(make_leaf(CA), CA.certificate)
    )
    assert answer.status is ResponseStatus.TRY_LATER


async def test_the_ca_key_signs_when_asked_and_no_certificate_is_sent(
    repository: RequestRepository,
) -> None:
    direct = ocsp_issuer(
        CA.certificate, responder=None, ca_key=CA, signing="ca", our_ca_certificates=[]
    )
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    response = ocsp.load_der_ocsp_response(
        (await responder(repository, [direct]).respond(ocsp_request(leaf, CA.certificate))).body
    )
    assert response.certificates == []
    CA.certificate.public_key().verify(  # type: ignore[call-arg, union-attr]
        response.signature, response.tbs_response_bytes, ec.ECDSA(hashes.SHA256())
    )


async def test_a_nonce_gets_its_own_signature_every_time(repository: RequestRepository) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository)
    first = await answers.respond(ocsp_request(leaf, CA.certificate, nonce=b"a" * 32))
    second = await answers.respond(ocsp_request(leaf, CA.certificate, nonce=b"b" * 32))
    for answer, nonce in ((first, b"a" * 32), (second, b"b" * 32)):
        extension = parsed(answer.body).extensions.get_extension_for_class(x509.OCSPNonce)
        assert extension.value.nonce == nonce
        assert answer.etag is None  # never served to another client


async def test_a_burst_of_the_same_question_is_signed_once(
    repository: RequestRepository,
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    request = ocsp_request(leaf, CA.certificate)
    answers = (
        await asyncio.gather(*(responder_once.respond(request) for _ in range(20)))
        if (responder_once := responder(repository))
        else []
    )
    assert len({answer.body for answer in answers}) == 1


async def test_the_cache_is_bounded(repository: RequestRepository) -> None:
    answers = responder(repository, cache_entries=3)
    leaves = [make_leaf(CA, f"d{n}") for n in range(5)]
    for leaf in leaves:
        await store(repository, leaf, CA)
        await answers.respond(ocsp_request(leaf, CA.certificate))
    assert answers.cached_responses == 3


async def test_an_expired_certificate_keeps_its_status(repository: RequestRepository) -> None:
    """RFC 5019 allows either answer after expiry; the store's status is the truth."""
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    late = OcspResponder(
        repository,
        lambda: [
            ocsp_issuer(
                CA.certificate,
                responder=RESPONDER,
                ca_key=None,
                signing="delegated",
                our_ca_certificates=[],
            )
        ],
        check_interval=timedelta(seconds=60),
        response_validity=timedelta(hours=1),
        clock=lambda: datetime.now(UTC) + timedelta(days=60),
    )
    response = parsed((await late.respond(ocsp_request(leaf, CA.certificate))).body)
    assert response.certificate_status is ocsp.OCSPCertStatus.GOOD


async def test_each_ca_generation_is_answered_by_its_own_responder(
    repository: RequestRepository,
) -> None:
    """After a rollover the previous CA's certificates are still asked about."""
    previous, current = make_ca("Generation 0"), make_ca("Generation 1")
    responders = {id(previous): make_responder(previous), id(current): make_responder(current)}
    issuers = [
        ocsp_issuer(
            ca.certificate,
            responder=responders[id(ca)],
            ca_key=None,
            signing="delegated",
            our_ca_certificates=[],
        )
        for ca in (previous, current)
    ]
    answering = responder(repository, issuers)
    for ca in (previous, current):
        leaf = make_leaf(ca)
        await store(repository, leaf, ca)
        response = ocsp.load_der_ocsp_response(
            (await answering.respond(ocsp_request(leaf, ca.certificate))).body
        )
        assert response.certificate_status is ocsp.OCSPCertStatus.GOOD
        assert response.certificates == [responders[id(ca)].certificate]
