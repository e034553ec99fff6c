"""A second ingress app beside a running product, with an identity of the test's
choosing (a rolled-over CA generation, an RA key in a token), and the small
CA/RA certificates such tests need."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scepline_ingress.identity import IdentitySource, ScepIdentity
from scepline_ingress.main import build_ingress_app
from scepline_shared.broker_pipeline import BrokerPipeline
from scepline_shared.scep_client import ScepClient
from tests.fixtures.scepline import RunningScepline
from tests.support.pki import name

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


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(minutes=5), now + dt.timedelta(days=30)


def ca_certificate(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    not_before, not_after = _validity()
    return (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )


def ra_certificate(
    public_key: rsa.RSAPublicKey,
    common_name: str,
    *,
    ca_key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
) -> x509.Certificate:
    not_before, not_after = _validity()
    return (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
