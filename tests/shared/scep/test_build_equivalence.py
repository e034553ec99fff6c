"""The fast builders encode exactly what plain asn1crypto nested dicts encode.

The codec builds CMS level by level from already-encoded parts and caches
constant parts (``scep/asn1.py``), to dodge asn1crypto 1.5.1's repeated
re-encoding. These tests pin that the bytes are unchanged: each builder is
compared with the straightforward nested-dict construction it replaced.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from asn1crypto import cms, core
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.scep import ContentEncryption, Digest, build_degenerate
from scepline_shared.scep import asn1 as scep_asn1
from scepline_shared.scep.envelope import encrypt_enveloped_data
from scepline_shared.scep.signed import sign_data
from tests.support.pki import requester, rsa_key, self_signed

RA_KEY = rsa_key("ra")
RA = self_signed(RA_KEY, "test RA")
SIGNING_TIME = dt.datetime(2026, 11, 26, 12, 0, 0, tzinfo=dt.UTC)


def _certificate_choices(certificates: list[x509.Certificate]) -> list[cms.CertificateChoices]:
    return [
        cms.CertificateChoices(
            name="certificate", value=asn1_x509.Certificate.load(c.public_bytes(Encoding.DER))
        )
        for c in certificates
    ]


def _hash(digest: Digest, data: bytes) -> bytes:
    hasher = hashes.Hash(digest.hash_algorithm())
    hasher.update(data)
    return hasher.finalize()


def reference_signed_data(
    *,
    content: bytes | None,
    attributes: list[tuple[str, core.Asn1Value]],
    signer_certificate: x509.Certificate,
    digest: Digest,
    signature: bytes,
    signature_algorithm: str,
    certificates: list[x509.Certificate],
) -> tuple[bytes, bytes]:
    """(signedAttrs DER, ContentInfo DER), built with nested dicts only."""
    signed_attrs = cms.CMSAttributes(
        [
            cms.CMSAttribute({"type": "content_type", "values": ["data"]}),
            cms.CMSAttribute(
                {"type": "signing_time", "values": [cms.Time({"utc_time": SIGNING_TIME})]}
            ),
            cms.CMSAttribute({"type": "message_digest", "values": [_hash(digest, content or b"")]}),
            *(cms.CMSAttribute({"type": name, "values": [value]}) for name, value in attributes),
        ]
    )
    signer_info = cms.SignerInfo(
        {
            "version": "v1",
            "sid": cms.SignerIdentifier(
                name="issuer_and_serial_number",
                value={
                    "issuer": asn1_x509.Name.load(signer_certificate.issuer.public_bytes()),
                    "serial_number": signer_certificate.serial_number,
                },
            ),
            "digest_algorithm": {"algorithm": digest.asn1_name},
            "signed_attrs": signed_attrs,
            "signature_algorithm": {"algorithm": signature_algorithm},
            "signature": signature,
        }
    )
    encap: dict[str, object] = {"content_type": "data"}
    if content is not None:
        encap["content"] = content
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [{"algorithm": digest.asn1_name}],
            "encap_content_info": encap,
            "certificates": _certificate_choices([signer_certificate, *certificates]),
            "signer_infos": [signer_info],
        }
    )
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return signed_attrs.dump(), info.dump()


def scep_attributes() -> list[tuple[str, core.Asn1Value]]:
    return [
        (scep_asn1.MESSAGE_TYPE, core.PrintableString("3")),
        (scep_asn1.PKI_STATUS, core.PrintableString("2")),
        (scep_asn1.FAIL_INFO, core.PrintableString("2")),
        (scep_asn1.FAIL_INFO_TEXT, core.UTF8String("nicht erlaubt \u2013 \u00fc")),
        (scep_asn1.TRANSACTION_ID, core.PrintableString("tx-" + "7" * 60)),
        (scep_asn1.SENDER_NONCE, core.OctetString(os.urandom(16))),
        (scep_asn1.RECIPIENT_NONCE, core.OctetString(os.urandom(16))),
    ]


def fast_attributes(attributes: list[tuple[str, core.Asn1Value]]) -> list[cms.CMSAttribute]:
    constant = {scep_asn1.MESSAGE_TYPE, scep_asn1.PKI_STATUS, scep_asn1.FAIL_INFO}
    return [
        scep_asn1.constant_attribute(name, value)
        if name in constant
        else scep_asn1.attribute(name, value)
        for name, value in attributes
    ]


@pytest.mark.parametrize("digest", list(Digest))
@pytest.mark.parametrize("content", [None, b"", os.urandom(1500)])
def test_sign_data_rsa_matches_nested_dicts(digest: Digest, content: bytes | None):
    attributes = scep_attributes()
    extra = [requester().certificate]
    # Twice: the second build runs on warm caches.
    for _ in range(2):
        built = sign_data(
            content=content,
            attributes=fast_attributes(attributes),
            signer_key=RA_KEY,
            signer_certificate=RA,
            digest=digest,
            certificates=extra,
            signing_time=SIGNING_TIME,
        )
        to_sign, _ = reference_signed_data(
            content=content,
            attributes=attributes,
            signer_certificate=RA,
            digest=digest,
            signature=b"",
            signature_algorithm="rsassa_pkcs1v15",
            certificates=extra,
        )
        _, expected = reference_signed_data(
            content=content,
            attributes=attributes,
            signer_certificate=RA,
            digest=digest,
            signature=RA_KEY.sign(to_sign, PKCS1v15(), digest.hash_algorithm()),
            signature_algorithm="rsassa_pkcs1v15",
            certificates=extra,
        )
        assert built == expected


def test_sign_data_ecdsa_matches_nested_dicts():
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "EC signer")
    attributes = scep_attributes()
    built = sign_data(
        content=b"payload",
        attributes=fast_attributes(attributes),
        signer_key=key,
        signer_certificate=certificate,
        digest=Digest.SHA384,
        signing_time=SIGNING_TIME,
    )
    # ECDSA signatures are randomised: take ours, rebuild everything around it.
    signer_info = cms.ContentInfo.load(built)["content"]["signer_infos"][0]
    _, expected = reference_signed_data(
        content=b"payload",
        attributes=attributes,
        signer_certificate=certificate,
        digest=Digest.SHA384,
        signature=signer_info["signature"].native,
        signature_algorithm="sha384_ecdsa",
        certificates=[],
    )
    assert built == expected


def reference_degenerate(
    certificates: list[x509.Certificate], crls: list[x509.CertificateRevocationList]
) -> bytes:
    signed_data = cms.SignedData(
        {
            "version": "v1",
            "digest_algorithms": [],
            "encap_content_info": {"content_type": "data"},
            "certificates": _certificate_choices(certificates),
            "crls": [
                cms.RevocationInfoChoice(
                    name="crl", value=asn1_crl.CertificateList.load(c.public_bytes(Encoding.DER))
                )
                for c in crls
            ]
            or None,
            "signer_infos": [],
        }
    )
    return cms.ContentInfo({"content_type": "signed_data", "content": signed_data}).dump()


def test_degenerate_matches_nested_dicts():
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(RA.subject)
        .last_update(SIGNING_TIME)
        .next_update(SIGNING_TIME + dt.timedelta(days=1))
        .sign(RA_KEY, hashes.SHA256())
    )
    client = requester().certificate
    for certificates, crls in [
        ([], []),
        ([RA], []),
        ([client, RA], []),
        ([RA], [crl]),
        ([], [crl, crl]),
    ]:
        for _ in range(2):
            assert build_degenerate(certificates, crls) == reference_degenerate(certificates, crls)


@pytest.mark.parametrize("encryption", list(ContentEncryption))
def test_envelope_matches_nested_dicts(encryption: ContentEncryption):
    recipient = requester().certificate
    built = encrypt_enveloped_data(os.urandom(700), recipient=recipient, encryption=encryption)
    # Key, IV and the RSA padding are random: take ours, rebuild around them.
    enveloped = cms.ContentInfo.load(built)["content"]
    content_info = enveloped["encrypted_content_info"]
    recipient_info = cms.RecipientInfo(
        name="ktri",
        value=cms.KeyTransRecipientInfo(
            {
                "version": "v0",
                "rid": cms.RecipientIdentifier(
                    name="issuer_and_serial_number",
                    value=cms.IssuerAndSerialNumber(
                        {
                            "issuer": asn1_x509.Name.load(recipient.issuer.public_bytes()),
                            "serial_number": recipient.serial_number,
                        }
                    ),
                ),
                "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
                "encrypted_key": enveloped["recipient_infos"][0].chosen["encrypted_key"].native,
            }
        ),
    )
    expected = cms.EnvelopedData(
        {
            "version": "v0",
            "recipient_infos": [recipient_info],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {
                    "algorithm": encryption.asn1_name,
                    "parameters": core.OctetString(
                        content_info["content_encryption_algorithm"].encryption_iv
                    ),
                },
                "encrypted_content": content_info["encrypted_content"].native,
            },
        }
    )
    assert built == cms.ContentInfo({"content_type": "enveloped_data", "content": expected}).dump()


def _name(common_name: str, *, printable: bool = False) -> asn1_x509.Name:
    return asn1_x509.Name.build({"common_name": common_name}, use_printable=printable)


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (_name("Test RA"), _name("Test RA")),
        # RFC 5280 §7.1: other string type, case and inner whitespace still match.
        (_name("Test RA"), _name("test  ra", printable=True)),
        (_name("Test RA"), _name("Other RA")),
    ],
)
def test_names_equal_is_asn1crypto_name_equality(left: asn1_x509.Name, right: asn1_x509.Name):
    parsed = asn1_x509.Name.load(right.dump())
    expected = asn1_x509.Name.load(left.dump()) == parsed
    for _ in range(2):  # cold, then cached
        assert scep_asn1.names_equal(left.dump(), parsed) is expected


def _outcome(compare: Callable[[], bool]) -> tuple[str, object]:
    try:
        return ("equal", compare())
    except Exception as exc:
        return ("raises", type(exc))


def _name_with(value: core.Asn1Value, type_: str = "common_name") -> asn1_x509.Name:
    type_and_value = asn1_x509.NameTypeAndValue({"type": type_, "value": value})
    rdn = asn1_x509.RelativeDistinguishedName([type_and_value])
    return asn1_x509.Name(name="", value=asn1_x509.RDNSequence([rdn]))


@pytest.mark.parametrize(
    "name",
    [
        _name("Test RA"),
        _name("Test RA", printable=True),
        _name("RA\x01\x7f\t"),
        _name("Zürich RA"),
        asn1_x509.Name.build({}),
        # RFC 4518 preparation refuses these: asn1crypto raises ValueError,
        # even when comparing a name with an identical one.
        _name("RA \ue000"),  # private use
        _name("RA \U0001f600"),  # unassigned in Unicode 3.2
        _name("abc \u05d0"),  # mixed bidirectional text
        # A value that is not text: the preparation raises TypeError.
        _name_with(core.Integer(5), "1.2.3.4"),
    ],
    ids=lambda name: repr(name.dump()),
)
def test_names_equal_for_identical_bytes_answers_like_asn1crypto(name: asn1_x509.Name):
    encoded = name.dump()
    expected = _outcome(lambda: asn1_x509.Name.load(encoded) == asn1_x509.Name.load(encoded))
    for _ in range(2):  # cold, then cached; an error is never cached as an answer
        assert _outcome(lambda: scep_asn1.names_equal(encoded, asn1_x509.Name.load(encoded))) == (
            expected
        )


def test_scep_attributes_resolve_when_asn1crypto_was_used_first():
    # asn1crypto builds CMSAttributeType's name → OID map once, on first use;
    # registering the SCEP names afterwards must still make them resolve.
    code = (
        "from asn1crypto import cms\n"
        "cms.CMSAttributeType('content_type')\n"
        "from scepline_shared.scep import asn1\n"
        "print(cms.CMSAttributeType(asn1.TRANSACTION_ID).dotted)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2.16.840.1.113733.1.9.7"
