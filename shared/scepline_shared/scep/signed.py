"""CMS SignedData: the SCEP pkiMessage wrapper and degenerate certs-only bags.

cryptography's PKCS7 builder cannot add the custom authenticated attributes
SCEP needs, and has no SignedData parser, so the structure is asn1crypto and
every cryptographic operation is cryptography (RFC 5652 §5).
"""

from __future__ import annotations

import datetime as dt
import functools
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, PSS, PKCS1v15
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding

from . import asn1
from .errors import BadAlg, BadMessageCheck, MalformedMessage
from .types import Digest

__all__ = [
    "SignedMessage",
    "build_degenerate",
    "parse_degenerate",
    "read_signed_data",
    "sign_data",
    "verify_signed_message",
]

PrivateSigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SignedMessage:
    """A parsed (not yet verified) single-signer SignedData."""

    signed_data: cms.SignedData
    signer_info: cms.SignerInfo
    signer_certificate: x509.Certificate
    certificates: tuple[x509.Certificate, ...]
    content: bytes | None
    attributes: dict[str, core.Asn1Value]
    digest: Digest | None  # None: the client used a digest we do not know


def read_signed_data(der: bytes) -> SignedMessage:
    """Parse a ContentInfo(SignedData) with exactly one signer.

    Raises MalformedMessage for anything that is not such a structure.
    """
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("not a CMS SignedData")
        signed_data: cms.SignedData = info["content"]
        signer_infos = list(signed_data["signer_infos"])
        if len(signer_infos) != 1:
            raise MalformedMessage("a pkiMessage must have exactly one signer")
        signer_info = signer_infos[0]
        certificates = tuple(
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in signed_data["certificates"] or []
            if choice.name == "certificate"
        )
        encap = signed_data["encap_content_info"]
        content = _content_bytes(encap["content"])
        attributes = _attributes(signer_info)
        digest = Digest.from_asn1_name(signer_info["digest_algorithm"]["algorithm"].native)
        signer_certificate = _find_signer(signer_info["sid"], certificates)
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise MalformedMessage("not a valid CMS SignedData") from exc
    return SignedMessage(
        signed_data=signed_data,
        signer_info=signer_info,
        signer_certificate=signer_certificate,
        certificates=certificates,
        content=content,
        attributes=attributes,
        digest=digest,
    )


def verify_signed_message(message: SignedMessage) -> None:
    """Check messageDigest and the signature with the embedded signer certificate."""
    if message.digest is None:
        name = message.signer_info["digest_algorithm"]["algorithm"].native
        raise BadAlg(f"unsupported digest algorithm {name}")
    signed_attrs = message.signer_info["signed_attrs"]
    if not signed_attrs:
        raise BadMessageCheck("the pkiMessage has no authenticated attributes")
    expected = message.attributes.get("message_digest")
    if expected is None:
        raise BadMessageCheck("the pkiMessage has no messageDigest attribute")
    actual = _hash(message.digest, message.content or b"")
    if not hmac.compare_digest(expected.native, actual):
        raise BadMessageCheck("messageDigest does not match the content")
    # Verify over the attributes exactly as received, re-tagged as SET OF
    # (RFC 5652 §5.4): re-encoding would break clients that sent non-DER sets.
    signed_bytes = b"\x31" + signed_attrs.dump()[1:]
    signature = message.signer_info["signature"].native
    try:
        public_key = message.signer_certificate.public_key()
    except (UnsupportedAlgorithm, ValueError) as exc:
        raise BadAlg("the signer certificate's key type is not supported") from exc
    try:
        _verify_signature(
            public_key,
            message.signer_info["signature_algorithm"],
            signature,
            signed_bytes,
            message.digest,
        )
    except InvalidSignature as exc:
        raise BadMessageCheck("the pkiMessage signature does not verify") from exc


# Some signers name the key's algorithm instead of a signature algorithm:
# rsaEncryption (asn1crypto's rsassa_pkcs1v15, what we send) and id-ecPublicKey.
_EC_PUBLIC_KEY = "1.2.840.10045.2.1"


def _verify_signature(
    public_key: CertificatePublicKeyTypes,
    algorithm: algos.SignedDigestAlgorithm,
    signature: bytes,
    data: bytes,
    digest: Digest,
) -> None:
    """Verify with the scheme the SignerInfo names; BadAlg for one we do not support.

    PKCS#1 v1.5 and ECDSA hash with the SignerInfo's digest algorithm,
    RSASSA-PSS with the hash its parameters name.
    """
    oid = algorithm["algorithm"].dotted
    try:
        scheme = "ecdsa" if oid == _EC_PUBLIC_KEY else algorithm.signature_algo
    except ValueError:
        raise BadAlg(f"unsupported signature algorithm {oid}") from None
    if isinstance(public_key, rsa.RSAPublicKey) and scheme == "rsassa_pkcs1v15":
        public_key.verify(signature, data, PKCS1v15(), digest.hash_algorithm())
    elif isinstance(public_key, rsa.RSAPublicKey) and scheme == "rsassa_pss":
        pss, hash_algorithm = _pss_padding(algorithm, public_key.key_size)
        public_key.verify(signature, data, pss, hash_algorithm)
    elif isinstance(public_key, ec.EllipticCurvePublicKey) and scheme == "ecdsa":
        public_key.verify(signature, data, ec.ECDSA(digest.hash_algorithm()))
    else:
        raise BadAlg(f"signature algorithm {scheme} is not supported for the signer's key")


def _pss_padding(
    algorithm: algos.SignedDigestAlgorithm, key_size: int
) -> tuple[PSS, hashes.HashAlgorithm]:
    """The padding and message hash of id-RSASSA-PSS's parameters (RFC 4055 §3.1)."""
    try:
        parameters = algorithm["parameters"]
        if not isinstance(parameters, algos.RSASSAPSSParams):
            raise BadAlg("RSASSA-PSS without parameters")
        mask = parameters["mask_gen_algorithm"]
        if mask["algorithm"].native != "mgf1":
            raise BadAlg(f"unsupported RSASSA-PSS mask generation {mask['algorithm'].native}")
        mask_hash_name = mask["parameters"]["algorithm"].native
        hash_name = parameters["hash_algorithm"]["algorithm"].native
        salt_length = parameters["salt_length"].native
        trailer = parameters["trailer_field"].native
    except (ValueError, TypeError, KeyError) as exc:
        raise BadAlg("malformed RSASSA-PSS parameters") from exc
    hash_digest = Digest.from_asn1_name(hash_name)
    mask_digest = Digest.from_asn1_name(mask_hash_name)
    if hash_digest is None or mask_digest is None:
        raise BadAlg(f"unsupported RSASSA-PSS hash {hash_name} or MGF1 hash {mask_hash_name}")
    if trailer != "trailer_field_bc":
        raise BadAlg(f"unsupported RSASSA-PSS trailer field {trailer}")
    if not 0 <= salt_length <= key_size // 8:
        raise BadAlg(f"RSASSA-PSS salt length {salt_length} does not fit the key")
    pss = PSS(mgf=MGF1(mask_digest.hash_algorithm()), salt_length=salt_length)
    return pss, hash_digest.hash_algorithm()


def sign_data(
    *,
    content: bytes | None,
    attributes: Sequence[cms.CMSAttribute],
    signer_key: PrivateSigningKey,
    signer_certificate: x509.Certificate,
    digest: Digest,
    certificates: Iterable[x509.Certificate] = (),
    signing_time: dt.datetime | None = None,
) -> bytes:
    """Sign ``content`` (None: no eContent) with the SCEP ``attributes`` added.

    Each level is built once, from children that already hold their encoding
    (see ``asn1``): asn1crypto 1.5.1 re-encodes nested built values again and again.
    """
    hash_algorithm = digest.hash_algorithm()
    now = signing_time or dt.datetime.now(dt.UTC)
    to_sign = cms.CMSAttributes(
        [
            asn1.constant_attribute("content_type", cms.ContentType("data")),
            asn1.attribute("signing_time", cms.Time({"utc_time": now})),
            asn1.attribute("message_digest", core.OctetString(_hash(digest, content or b""))),
            *attributes,
        ]
    ).dump()
    if isinstance(signer_key, rsa.RSAPrivateKey):
        signature = signer_key.sign(to_sign, PKCS1v15(), hash_algorithm)
        # strongSwan accepts only rsaEncryption here, not sha*WithRSAEncryption.
        signature_algorithm = "rsassa_pkcs1v15"
    else:
        signature = signer_key.sign(to_sign, ec.ECDSA(hash_algorithm))
        signature_algorithm = f"{digest.asn1_name}_ecdsa"
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number", value=_issuer_and_serial(signer_certificate)
            ),
            "digest_algorithm": _digest_algorithm(digest),
            # Loaded from the signed bytes: tagging it [0] copies no children.
            "signed_attrs": cms.CMSAttributes.load(to_sign),
            "signature_algorithm": asn1.constant(
                algos.SignedDigestAlgorithm, algorithm=signature_algorithm
            ),
            "signature": signature,
        }
    )
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": asn1.frozen(cms.DigestAlgorithms([_digest_algorithm(digest)])),
            "encap_content_info": _data_content(content),
            "certificates": _certificate_set((signer_certificate, *certificates)),
            "signer_infos": asn1.frozen(cms.SignerInfos([asn1.frozen(signer_info)])),
        }
    )
    return asn1.content_info("signed_data", signed_data)


def build_degenerate(
    certificates: Iterable[x509.Certificate],
    crls: Iterable[x509.CertificateRevocationList] = (),
) -> bytes:
    """A certs-only SignedData: no signers, no content (RFC 8894 §3.4)."""
    signed_data = cms.SignedData.load(_certs_only_skeleton())
    signed_data["certificates"] = _certificate_set(certificates)
    revocation_info = [
        cms.RevocationInfoChoice(
            name="crl", value=asn1_crl.CertificateList.load(c.public_bytes(Encoding.DER))
        )
        for c in crls
    ]
    if revocation_info:
        signed_data["crls"] = asn1.frozen(cms.RevocationInfoChoices(revocation_info))
    return asn1.content_info("signed_data", signed_data)


@functools.lru_cache(maxsize=1)
def _certs_only_skeleton() -> bytes:
    """A certs-only SignedData with the fixed fields; each call adds its SETs."""
    return cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "signer_infos": [],
        }
    ).dump()


def parse_degenerate(
    der: bytes,
) -> tuple[list[x509.Certificate], list[x509.CertificateRevocationList]]:
    try:
        info = cms.ContentInfo.load(der, strict=True)
        if info["content_type"].native != "signed_data":
            raise MalformedMessage("not a certs-only SignedData")
        signed_data = info["content"]
        certificates = [
            x509.load_der_x509_certificate(choice.chosen.dump())
            for choice in signed_data["certificates"] or []
            if choice.name == "certificate"
        ]
        crls = [
            x509.load_der_x509_crl(choice.chosen.dump())
            for choice in signed_data["crls"] or []
            if choice.name == "crl"
        ]
    except MalformedMessage:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise MalformedMessage("not a valid certs-only SignedData") from exc
    return certificates, crls


def _certificate_set(certificates: Iterable[x509.Certificate]) -> cms.CertificateSet:
    """The SignedData ``certificates`` SET, frozen, with each certificate as loaded.

    A loaded asn1crypto certificate is placed as-is (no copy, no re-encoding).
    """
    return asn1.frozen(
        cms.CertificateSet(
            [
                cms.CertificateChoices(
                    name="certificate",
                    value=asn1_x509.Certificate.load(c.public_bytes(Encoding.DER)),
                )
                for c in certificates
            ]
        )
    )


def _data_content(content: bytes | None) -> cms.ContentInfo:
    """encapContentInfo: id-data with ``content``, or none.

    A v1 SignedData takes asn1crypto's PKCS#7-compatible ContentInfo form here.
    """
    if content is None:
        return asn1.constant(cms.ContentInfo, content_type="data")
    return asn1.frozen(cms.ContentInfo({"content_type": "data", "content": content}))


def _issuer_and_serial(certificate: x509.Certificate) -> cms.IssuerAndSerialNumber:
    return asn1.issuer_and_serial(certificate.issuer.public_bytes(), certificate.serial_number)


def _digest_algorithm(digest: Digest) -> algos.DigestAlgorithm:
    return asn1.constant(algos.DigestAlgorithm, algorithm=digest.asn1_name)


def _hash(digest: Digest, data: bytes) -> bytes:
    hasher = hashes.Hash(digest.hash_algorithm())
    hasher.update(data)
    return hasher.finalize()


def _content_bytes(content: core.Asn1Value) -> bytes | None:
    if isinstance(content, core.Void) or content is None:
        return None
    if isinstance(content, core.ParsableOctetString | core.OctetString):
        return content.native if content.native is not None else b""
    return content.dump()


def _attributes(signer_info: cms.SignerInfo) -> dict[str, core.Asn1Value]:
    attributes: dict[str, core.Asn1Value] = {}
    for attribute in signer_info["signed_attrs"] or []:
        name = attribute["type"].native
        values = attribute["values"]
        if len(values) != 1:
            raise MalformedMessage(f"attribute {name} must have exactly one value")
        if name in attributes:
            raise MalformedMessage(f"attribute {name} appears twice")
        attributes[name] = values[0]
    return attributes


def _find_signer(
    sid: cms.SignerIdentifier, certificates: tuple[x509.Certificate, ...]
) -> x509.Certificate:
    if sid.name == "issuer_and_serial_number":
        wanted_serial = sid.chosen["serial_number"].native
        wanted_issuer = sid.chosen["issuer"]
        for certificate in certificates:
            if certificate.serial_number == wanted_serial and (
                asn1.names_equal(certificate.issuer.public_bytes(), wanted_issuer)
            ):
                return certificate
    else:
        wanted_ski = sid.chosen.native
        for certificate in certificates:
            try:
                ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ski.value.digest == wanted_ski:
                return certificate
    raise MalformedMessage("the signer certificate is not included in the pkiMessage")
