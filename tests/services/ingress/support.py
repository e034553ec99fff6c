"""A second ingress app beside a running product, with an identity of the test's
choosing (a rolled-over CA generation, an RA key in a token); the CA and RA
certificates such tests need come from the product's own builders
(:mod:`scepline_shared.ca.lab`) with :func:`lab_validity`."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import Requester, ScepClient, build_csr
from scepline_ingress.broker_pipeline import BrokerPipeline
from scepline_ingress.identity import IdentitySource, ScepIdentity
from scepline_ingress.main import build_ingress_app
from scepline_shared.scep import CertRep, MessageType, build_request, read_cert_rep
from tests.fixtures.scepline import CHALLENGE, RunningScepline
from tests.support.pki import name, requester

_hosts = itertools.count()


@dataclass
class Beside:
    http: httpx.AsyncClient
    url: str

    def client(self) -> ScepClient:
        """A new SCEP client: it has fetched nothing yet."""
        return ScepClient(self.url, http=self.http)


@contextlib.asynccontextmanager
async def ingress_beside(
    product: RunningScepline, identity: ScepIdentity | IdentitySource
) -> AsyncIterator[Beside]:
    """An ingress app on the product's store and broker, answering as ``identity``;
    the product's validator and signer process what it records."""
    pipeline = BrokerPipeline(broker=product.embedded.broker)
    await pipeline.start()
    app = build_ingress_app(
        product.settings,
        identity=identity,
        repository=product.embedded.repository,
        pipeline=pipeline,
    )
    host = f"ingress-{next(_hosts)}"
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
        yield Beside(http, f"http://{host}/scep")


def product_identity(product: RunningScepline) -> ScepIdentity:
    material = product.embedded.material
    assert isinstance(material.ra.key, rsa.RSAPrivateKey)
    return ScepIdentity(
        ra_key=material.ra.key,
        ra_certificate=material.ra.certificate,
        ca_certificate=material.ca.certificate,
    )


def lab_validity() -> dict[str, dt.datetime]:
    """``not_before``/``not_after`` for :mod:`scepline_shared.ca.lab`'s builders:
    valid from five minutes ago for 30 days."""
    now = dt.datetime.now(dt.UTC)
    return {"not_before": now - dt.timedelta(minutes=5), "not_after": now + dt.timedelta(days=30)}


@dataclass(frozen=True)
class PkcsReq:
    """A PKCSReq built by hand, encrypted to an RA of the test's choosing (one
    ScepClient would not pick), and the reading of its reply."""

    who: Requester
    nonce: bytes
    der: bytes

    @classmethod
    def to(cls, recipient: x509.Certificate, label: str, transaction_id: str) -> PkcsReq:
        """From requester ``label``, with a CSR that passes the challenge."""
        who = requester(label)
        nonce = os.urandom(16)
        csr = build_csr(who.key, name("x"), challenge=CHALLENGE)
        der = build_request(
            message_type=MessageType.PKCS_REQ,
            transaction_id=transaction_id,
            message_data=csr.public_bytes(Encoding.DER),
            signer_key=who.key,
            signer_certificate=who.certificate,
            recipient=recipient,
            sender_nonce=nonce,
        )
        return cls(who, nonce, der)

    def reply(self, response: httpx.Response, *, signed_by: x509.Certificate) -> CertRep:
        """The CertRep in ``response``, checked to be signed by ``signed_by``."""
        return read_cert_rep(
            response.content,
            expected_signer=signed_by,
            sender_nonce=self.nonce,
            client_key=self.who.key,
            client_certificate=self.who.certificate,
        )
