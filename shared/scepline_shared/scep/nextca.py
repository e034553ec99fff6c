"""GetNextCACert (RFC 8894 §4.7): the next CA's certificates, signed by the current CA.

The response is a SignedData whose eContent (id-data) is the DER of a degenerate
certs-only SignedData with the new CA and RA certificates, signed with the
contentType, messageDigest and signingTime attributes. A client that trusts the
current CA can then trust the next one before the switch, without asking anyone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from .errors import BadMessageCheck, MalformedMessage
from .signed import (
    PrivateSigningKey,
    build_degenerate,
    parse_degenerate,
    read_signed_data,
    sign_data,
    verify_signed_message,
)
from .types import Digest

__all__ = ["build_next_ca_response", "read_next_ca_response"]


def build_next_ca_response(
    certificates: Sequence[x509.Certificate],
    signer_key: PrivateSigningKey,
    signer_certificate: x509.Certificate,
    *,
    digest: Digest = Digest.SHA256,
    signing_time: dt.datetime | None = None,
) -> bytes:
    """The GetNextCACert body: ``certificates`` in a certs-only bag, signed.

    ``signer_key`` is the current CA key (any cryptography RSA/EC private key,
    token keys included); ``signer_certificate`` travels in the SignedData so
    that a client holding the current CA certificate can verify it directly.
    """
    if not certificates:
        raise ValueError("a GetNextCACert response needs at least one certificate")
    if signer_key.public_key() != signer_certificate.public_key():
        raise ValueError("signer_key does not belong to signer_certificate")
    # No SCEP attributes: sign_data then adds exactly contentType (id-data),
    # signingTime and messageDigest over the degenerate bag.
    return sign_data(
        content=build_degenerate(certificates),
        attributes=(),
        signer_key=signer_key,
        signer_certificate=signer_certificate,
        digest=digest,
        signing_time=signing_time,
    )


def read_next_ca_response(der: bytes, current_ca: x509.Certificate) -> list[x509.Certificate]:
    """The certificates announced by a GetNextCACert body, after verifying it.

    The signer must be ``current_ca`` itself, or a certificate it issued directly
    (an RA signing on the CA's behalf). Raises :class:`MalformedMessage` for a
    structure that is not such a response and :class:`BadMessageCheck` when the
    signature or signer does not check out.
    """
    message = read_signed_data(der)
    verify_signed_message(message)
    signer = message.signer_certificate
    if signer != current_ca:
        try:
            signer.verify_directly_issued_by(current_ca)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise BadMessageCheck("the response is not signed by the current CA") from exc
    content_type = message.attributes.get("content_type")
    if content_type is None or content_type.native != "data":
        raise MalformedMessage("the response's contentType attribute is not id-data")
    if not message.content:
        raise MalformedMessage("the response carries no certificates")
    certificates, _ = parse_degenerate(message.content)
    if not certificates:
        raise MalformedMessage("the response carries no certificates")
    return certificates
