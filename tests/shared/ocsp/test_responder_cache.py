"""The responder's cache under load (bench/ocsp.py): a request seen before byte
for byte is answered without being parsed again, for as long as its answer is
fresh and the issuers it was found under stand; the statuses behind the cached
answers are re-read in one query per check interval, not one per answer, and a
revocation still shows within one interval."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

import scepline_shared.ocsp.responder as responder_module
from scepline_shared.keys import KeyPair
from scepline_shared.ocsp.codec import OcspRequest, ResponseStatus
from scepline_shared.ocsp.responder import OcspIssuer, OcspResponder, ocsp_issuer
from scepline_shared.store import RequestRepository
from scepline_shared.store.views import CertificateView, serial_hex
from tests.shared.ocsp.pki import make_ca, make_leaf, make_responder, ocsp_request, store

CA = make_ca()
RESPONDER = make_responder(CA)
OTHER_CA = make_ca("Somebody else's CA")


def issuer_for(ca: KeyPair, responder: KeyPair) -> OcspIssuer:
    return ocsp_issuer(
        ca.certificate,
        responder=responder,
        ca_key=None,
        signing="delegated",
        our_ca_certificates=[ca.certificate],
    )


class CountedStore:
    """The store, counting the status reads the responder makes (and failing them
    on demand)."""

    def __init__(self, repository: RequestRepository) -> None:
        self.repository = repository
        self.reads: list[list[str]] = []
        self.down = False

    async def certificates_by_serial(self, serials: list[str]) -> dict[str, CertificateView]:
        if self.down:
            raise ConnectionError("the store is down")
        self.reads.append(serials)
        return await self.repository.certificates_by_serial(serials)


def responder(
    repository: RequestRepository | CountedStore,
    issuers: list[list[OcspIssuer]] | None = None,
    *,
    check_interval: float = 60,
    cache_entries: int = 1000,
) -> OcspResponder:
    """``issuers[0]`` is what the directory returns now (the same list object
    until a test puts another there, as ResponderDirectory does)."""
    chosen = issuers or [[issuer_for(CA, RESPONDER)]]
    return OcspResponder(
        repository,
        lambda: chosen[0],
        check_interval=timedelta(seconds=check_interval),
        response_validity=timedelta(hours=1),
        cache_entries=cache_entries,
    )


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The requests the responder parses from now on."""
    seen: list[bytes] = []
    parse = responder_module.parse_request

    def counted(der: bytes) -> OcspRequest:
        seen.append(der)
        return parse(der)

    monkeypatch.setattr(responder_module, "parse_request", counted)
    return seen


def status(body: bytes) -> ocsp.OCSPCertStatus:
    return ocsp.load_der_ocsp_response(body).certificate_status


async def test_a_repeated_request_is_answered_without_parsing_it_again(
    repository: RequestRepository, parses: list[bytes]
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository)
    request = ocsp_request(leaf, CA.certificate)

    first = await answers.respond(request)
    again = await answers.respond(request)

    assert parses == [request]
    assert again.body == first.body
    assert again.etag == first.etag


async def test_the_same_question_in_other_bytes_is_parsed_and_finds_the_same_answer(
    repository: RequestRepository, parses: list[bytes]
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository)
    request = ocsp_request(leaf, CA.certificate)
    first = await answers.respond(request)
    # The same CertID with a request extension the responder ignores: other bytes.
    variant = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(leaf, CA.certificate, hashes.SHA1())
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=False,
        )
        .build()
        .public_bytes(Encoding.DER)
    )

    again = await answers.respond(variant)

    assert parses == [request, variant]
    assert again.body == first.body


async def test_a_request_with_a_nonce_is_parsed_and_signed_every_time(
    repository: RequestRepository, parses: list[bytes]
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository)
    request = ocsp_request(leaf, CA.certificate, nonce=b"0123456789abcdef")

    first = await answers.respond(request)
    again = await answers.respond(request)

    assert parses == [request, request]
    assert first.etag is None and again.etag is None  # never cached
    assert status(again.body) is ocsp.OCSPCertStatus.GOOD


async def test_a_known_request_is_refused_once_its_issuer_is_no_longer_served(
    repository: RequestRepository,
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    issuers = [[issuer_for(CA, RESPONDER)]]
    answers = responder(repository, issuers)
    request = ocsp_request(leaf, CA.certificate)
    assert status((await answers.respond(request)).body) is ocsp.OCSPCertStatus.GOOD

    issuers[0] = [issuer_for(OTHER_CA, make_responder(OTHER_CA))]  # the directory changed

    answer = await answers.respond(request)
    assert answer.status is ResponseStatus.UNAUTHORIZED


async def test_a_known_request_answers_try_later_while_its_responder_is_missing(
    repository: RequestRepository,
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    issuers = [[issuer_for(CA, RESPONDER)]]
    answers = responder(repository, issuers)
    request = ocsp_request(leaf, CA.certificate)
    await answers.respond(request)

    issuers[0] = [
        ocsp_issuer(
            CA.certificate,
            responder=None,
            ca_key=None,
            signing="delegated",
            our_ca_certificates=[CA.certificate],
        )
    ]

    assert (await answers.respond(request)).status is ResponseStatus.TRY_LATER


async def test_a_revocation_shows_within_one_check_interval_for_a_known_request(
    repository: RequestRepository, parses: list[bytes]
) -> None:
    leaf = make_leaf(CA)
    await store(repository, leaf, CA)
    answers = responder(repository, check_interval=0.3)
    request = ocsp_request(leaf, CA.certificate)
    assert status((await answers.respond(request)).body) is ocsp.OCSPCertStatus.GOOD

    await repository.revoke(leaf.serial_number, reason=1)
    assert status((await answers.respond(request)).body) is ocsp.OCSPCertStatus.GOOD
    await asyncio.sleep(0.4)

    assert status((await answers.respond(request)).body) is ocsp.OCSPCertStatus.REVOKED
    assert len(parses) == 2  # the first time, and once the interval had passed


async def test_as_many_requests_are_known_as_responses_are_cached(
    repository: RequestRepository, parses: list[bytes]
) -> None:
    answers = responder(repository, cache_entries=3)
    leaves = [make_leaf(CA, f"d{n}") for n in range(5)]
    requests = [ocsp_request(leaf, CA.certificate) for leaf in leaves]
    for leaf, request in zip(leaves, requests, strict=True):
        await store(repository, leaf, CA)
        await answers.respond(request)

    # The oldest is forgotten: parsed again, answered right all the same.
    assert status((await answers.respond(requests[0])).body) is ocsp.OCSPCertStatus.GOOD
    assert parses.count(requests[0]) == 2
    # The newest is still known.
    await answers.respond(requests[-1])
    assert parses.count(requests[-1]) == 1


async def cached(
    repository: RequestRepository, count: int, *, check_interval: float
) -> tuple[CountedStore, OcspResponder, list[x509.Certificate], list[bytes]]:
    """``count`` certificates, each asked about twice (signed, then served from
    the cache), and the responder that answered."""
    store_reads = CountedStore(repository)
    answers = responder(store_reads, check_interval=check_interval)
    leaves = [make_leaf(CA, f"d{n}") for n in range(count)]
    requests = [ocsp_request(leaf, CA.certificate) for leaf in leaves]
    for leaf, request in zip(leaves, requests, strict=True):
        await store(repository, leaf, CA)
        await answers.respond(request)
        await answers.respond(request)
    return store_reads, answers, leaves, requests


async def test_one_query_re_reads_every_answer_due(repository: RequestRepository) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 5, check_interval=0.3)
    assert len(store_reads.reads) == 5  # one per certificate, when first signed
    await asyncio.sleep(0.35)

    statuses = [status((await answers.respond(request)).body) for request in requests]

    assert statuses == [ocsp.OCSPCertStatus.GOOD] * 5
    assert len(store_reads.reads) == 6
    assert sorted(store_reads.reads[-1]) == sorted(
        serial_hex(leaf.serial_number) for leaf in leaves
    )


async def test_a_revocation_the_batch_finds_is_signed_again_within_the_interval(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 3, check_interval=0.3)
    await repository.revoke(leaves[1].serial_number, reason=1)
    assert status((await answers.respond(requests[1])).body) is ocsp.OCSPCertStatus.GOOD
    await asyncio.sleep(0.35)

    assert status((await answers.respond(requests[0])).body) is ocsp.OCSPCertStatus.GOOD
    assert status((await answers.respond(requests[1])).body) is ocsp.OCSPCertStatus.REVOKED
    assert status((await answers.respond(requests[2])).body) is ocsp.OCSPCertStatus.GOOD
    # The batch, then the revoked one's own read before its new signature.
    assert len(store_reads.reads) == 3 + 2


async def test_answers_not_asked_for_since_their_check_are_not_re_read(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 3, check_interval=0.3)
    await asyncio.sleep(0.35)
    # One answer is asked for again: the others have not been served since.
    await answers.respond(requests[0])
    await asyncio.sleep(0.35)

    await answers.respond(requests[0])

    batch = store_reads.reads[-1]
    assert batch == [serial_hex(leaves[0].serial_number)]


async def test_a_store_outage_during_the_re_read_serves_the_cached_answers(
    repository: RequestRepository,
) -> None:
    store_reads, answers, _leaves, requests = await cached(repository, 2, check_interval=0.3)
    before = [(await answers.respond(request)).body for request in requests]
    store_reads.down = True
    await asyncio.sleep(0.35)

    during = [await answers.respond(request) for request in requests]

    assert [answer.body for answer in during] == before  # within their nextUpdate
    store_reads.down = False
    await asyncio.sleep(0.35)  # the next batch may come half an interval on
    assert status((await answers.respond(requests[0])).body) is ocsp.OCSPCertStatus.GOOD
