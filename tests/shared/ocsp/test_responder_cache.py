"""The responder's cache under load (bench/ocsp.py): a request seen before byte
for byte is answered without being parsed again, for as long as its answer is
fresh and the issuers it was found under stand; the statuses behind the answers
in use are re-read ahead, in the background, in one query, not one per answer,
so nobody waits for them; reads that requests do wait for share one query; and a
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
from scepline_shared.store.views import CertificateStatusView, serial_hex
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

    async def certificate_statuses(self, serials: list[str]) -> dict[str, CertificateStatusView]:
        if self.down:
            raise ConnectionError("the store is down")
        self.reads.append(serials)
        return await self.repository.certificate_statuses(serials)


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


def serials(leaves: list[x509.Certificate]) -> list[str]:
    return sorted(serial_hex(leaf.serial_number) for leaf in leaves)


async def test_answers_in_use_are_re_read_ahead_in_one_query_while_they_are_served(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 5, check_interval=0.4)
    assert len(store_reads.reads) == 5  # one per certificate, when first signed
    await asyncio.sleep(0.22)  # into the second half of their interval

    # Served at once from the cache: nothing read yet.
    assert [status((await answers.respond(r)).body) for r in requests] == [GOOD] * 5
    assert len(store_reads.reads) == 5
    await asyncio.sleep(0.05)  # the re-read ran in the background: one query for all
    assert len(store_reads.reads) == 6
    assert sorted(store_reads.reads[-1]) == serials(leaves)

    await asyncio.sleep(0.2)  # past the interval of their first reads
    assert [status((await answers.respond(r)).body) for r in requests] == [GOOD] * 5
    assert len(store_reads.reads) == 6  # still fresh: checked ahead


async def test_a_revocation_the_re_read_ahead_finds_is_signed_again_within_the_interval(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 3, check_interval=0.4)
    await repository.revoke(leaves[1].serial_number, reason=1)
    await asyncio.sleep(0.22)
    assert [status((await answers.respond(r)).body) for r in requests] == [GOOD] * 3
    await asyncio.sleep(0.05)

    assert status((await answers.respond(requests[0])).body) is GOOD
    assert status((await answers.respond(requests[1])).body) is REVOKED
    assert status((await answers.respond(requests[2])).body) is GOOD
    # The re-read ahead, then the revoked one's own read before its new signature.
    assert len(store_reads.reads) == 3 + 2


async def test_answers_not_asked_for_since_their_check_are_not_re_read(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 3, check_interval=0.4)
    await asyncio.sleep(0.22)
    for request in requests:  # all in use: all re-read ahead
        await answers.respond(request)
    await asyncio.sleep(0.22)
    assert sorted(store_reads.reads[-1]) == serials(leaves)

    await answers.respond(requests[0])  # the others have not been served since
    await asyncio.sleep(0.05)

    assert store_reads.reads[-1] == [serial_hex(leaves[0].serial_number)]


async def test_requests_that_wait_for_the_store_together_share_one_query(
    repository: RequestRepository,
) -> None:
    store_reads, answers, leaves, requests = await cached(repository, 5, check_interval=0.2)
    await asyncio.sleep(0.25)  # every answer has fallen due, none was re-read ahead

    got = await asyncio.gather(*(answers.respond(request) for request in requests))

    assert [status(answer.body) for answer in got] == [GOOD] * 5
    assert len(store_reads.reads) == 5 + 1
    assert sorted(store_reads.reads[-1]) == serials(leaves)


async def test_a_client_that_leaves_does_not_cancel_the_read_others_wait_for(
    repository: RequestRepository,
) -> None:
    _store_reads, answers, _leaves, requests = await cached(repository, 2, check_interval=0.2)
    await asyncio.sleep(0.25)
    leaving = asyncio.create_task(answers.respond(requests[0]))
    staying = asyncio.create_task(answers.respond(requests[1]))
    await asyncio.sleep(0)  # both wait on one read now

    leaving.cancel()

    assert status((await staying).body) is GOOD
    assert status((await answers.respond(requests[0])).body) is GOOD


async def test_a_store_outage_serves_the_cached_answers_within_their_next_update(
    repository: RequestRepository,
) -> None:
    store_reads, answers, _leaves, requests = await cached(repository, 2, check_interval=0.4)
    before = [(await answers.respond(request)).body for request in requests]
    store_reads.down = True
    await asyncio.sleep(0.22)
    # The re-read ahead fails...
    assert [(await answers.respond(request)).body for request in requests] == before
    await asyncio.sleep(0.25)

    # ...and so do the requests' own reads once the answers fell due.
    during = [await answers.respond(request) for request in requests]

    assert [answer.body for answer in during] == before  # within their nextUpdate
    store_reads.down = False
    assert status((await answers.respond(requests[0])).body) is GOOD
    assert len(store_reads.reads) == 2 + 1  # the first signatures, then the read just now


GOOD = ocsp.OCSPCertStatus.GOOD
REVOKED = ocsp.OCSPCertStatus.REVOKED
