"""One SCEP exchange at a time against a running product, built by hand so a
test controls every field an attacker or an odd client would."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_devtools.scep_client import Requester, build_csr
from scepline_shared.scep import (
    CertRep,
    ContentEncryption,
    Digest,
    MessageType,
    build_request,
    read_cert_rep,
)
from tests.fixtures.scepline import CHALLENGE, RunningScepline
from tests.support.pki import name

__all__ = ["Exchange"]


@dataclass
class Exchange:
    scepline: RunningScepline

    async def send(
        self,
        who: Requester,
        message_type: MessageType | int,
        data: bytes,
        *,
        transaction_id: str = "tx",
        encryption: ContentEncryption = ContentEncryption.AES128_CBC,
        digest: Digest = Digest.SHA256,
        recipient: x509.Certificate | None = None,
        signing_time: dt.datetime | None = None,
        method: str = "POST",
        rewrite: Callable[[bytes], bytes] | None = None,
    ) -> CertRep:
        """Send a pkiMessage and read the answer; ``rewrite`` changes the
        message before it goes out."""
        client = self.scepline.client
        await client.get_ca_certs()
        nonce = os.urandom(16)
        der = build_request(
            message_type=message_type,
            transaction_id=transaction_id,
            message_data=data,
            signer_key=who.key,
            signer_certificate=who.certificate,
            recipient=recipient or client.ra_certificate,
            encryption=encryption,
            digest=digest,
            sender_nonce=nonce,
            signing_time=signing_time,
        )
        response = await client.send(rewrite(der) if rewrite else der, method=method)
        return read_cert_rep(
            response.content,
            expected_signer=client.ra_certificate,
            sender_nonce=nonce,
            client_key=who.key,
            client_certificate=who.certificate,
        )

    async def enrol(
        self,
        who: Requester,
        *,
        cn: str = "device-1",
        challenge: str | None = CHALLENGE,
        sans: tuple[x509.GeneralName, ...] = (),
        transaction_id: str = "tx",
        message_type: MessageType = MessageType.PKCS_REQ,
        **options: object,
    ) -> CertRep:
        csr = build_csr(who.key, name(cn), challenge=challenge, sans=sans)
        return await self.send(
            who,
            message_type,
            csr.public_bytes(Encoding.DER),
            transaction_id=transaction_id,
            **options,  # type: ignore[arg-type]
        )
