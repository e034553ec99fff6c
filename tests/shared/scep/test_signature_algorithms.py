"""A pkiMessage's signature is verified with the scheme its SignerInfo names:
PKCS#1 v1.5, RSASSA-PSS with the parameters it carries (strongSwan's
``--rsa-padding pss``), or ECDSA. A scheme or parameter we do not support is
badAlg, so the client learns why; a signature that does not verify under the
named scheme is badMessageCheck."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from asn1crypto import algos, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from scepline_shared.scep import (
    BadAlg,
    BadMessageCheck,
    ContentEncryption,
    Digest,
    FailInfo,
    MessageType,
    ScepError,
    build_request,
    open_envelope,
    parse_message_data,
    read_pki_message,
)
from scepline_shared.scep.signed import PrivateSigningKey
from tests.support.pki import csr_for, requester, resigned, rsa_key, rsassa_pss, self_signed

RA_KEY = rsa_key("ra")
RA = self_signed(RA_KEY, "test RA")
CLIENT = requester("pss-client")


def pkcs_req(
    digest: Digest = Digest.SHA256,
    signer_key: PrivateSigningKey = CLIENT.key,
    signer_certificate: x509.Certificate = CLIENT.certificate,
) -> bytes:
    return build_request(
        message_type=MessageType.PKCS_REQ,
        transaction_id="tx-sig",
        message_data=csr_for(CLIENT).public_bytes(Encoding.DER),
        signer_key=signer_key,
        signer_certificate=signer_certificate,
        recipient=RA,
        encryption=ContentEncryption.AES128_CBC,
        digest=digest,
        sender_nonce=b"s" * 16,
    )


def pss_signer(
    hash_algorithm: hashes.HashAlgorithm, salt_length: int, key: rsa.RSAPrivateKey = CLIENT.key
) -> Callable[[bytes], bytes]:
    pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=salt_length)
    return lambda data: key.sign(data, pss, hash_algorithm)


def pkcs1_signer(hash_algorithm: hashes.HashAlgorithm) -> Callable[[bytes], bytes]:
    return lambda data: CLIENT.key.sign(data, padding.PKCS1v15(), hash_algorithm)


def ecdsa_signer(key: ec.EllipticCurvePrivateKey) -> Callable[[bytes], bytes]:
    return lambda data: key.sign(data, ec.ECDSA(hashes.SHA256()))


def assert_refused(der: bytes, error: type[ScepError], fail_info: FailInfo) -> None:
    """Refused with ``fail_info``, and addressed: the client still gets a CertRep."""
    with pytest.raises(error) as refused:
        read_pki_message(der)
    assert type(refused.value).fail_info is fail_info
    assert refused.value.header is not None
    assert refused.value.header.transaction_id == "tx-sig"


@pytest.mark.parametrize(
    ("digest", "hash_algorithm", "salt_length"),
    [
        (Digest.SHA256, hashes.SHA256(), 32),  # strongSwan pki --rsa-padding pss
        (Digest.SHA256, hashes.SHA256(), 0),
        (Digest.SHA384, hashes.SHA384(), 48),
        (Digest.SHA512, hashes.SHA512(), 64),
        (Digest.SHA1, hashes.SHA1(), 20),
    ],
)
def test_rsassa_pss_signed_message_is_read(
    digest: Digest, hash_algorithm: hashes.HashAlgorithm, salt_length: int
):
    der = resigned(
        pkcs_req(digest=digest),
        rsassa_pss(digest.asn1_name, salt_length=salt_length),
        pss_signer(hash_algorithm, salt_length),
    )
    message = read_pki_message(der)
    assert message.signer_certificate == CLIENT.certificate
    data, _ = open_envelope(
        message, recipient_key=RA_KEY, recipient=RA, allowed=tuple(ContentEncryption)
    )
    assert parse_message_data(message, data).csr == csr_for(CLIENT)  # type: ignore[union-attr]


def test_the_rsassa_pss_message_of_these_tests_verifies_with_openssl(tmp_path: Path):
    """The test construction is real RSASSA-PSS CMS, not an agreement with ourselves."""
    der = resigned(pkcs_req(), rsassa_pss(), pss_signer(hashes.SHA256(), 32))
    (tmp_path / "message.der").write_bytes(der)
    verify = subprocess.run(
        ["openssl", "cms", "-verify", "-noverify", "-inform", "DER", "-in", "message.der"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert verify.returncode == 0, verify.stderr


@pytest.mark.parametrize(
    ("signature_algorithm", "sign"),
    [
        # PSS signed, but a different salt length declared.
        (rsassa_pss(salt_length=32), pss_signer(hashes.SHA256(), 20)),
        # PSS declared, PKCS#1 v1.5 signed.
        (rsassa_pss(), pkcs1_signer(hashes.SHA256())),
        # PKCS#1 v1.5 declared, PSS signed.
        (
            algos.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}),
            pss_signer(hashes.SHA256(), 32),
        ),
        # Signed by another key.
        (rsassa_pss(), pss_signer(hashes.SHA256(), 32, rsa_key("stranger"))),
    ],
    ids=[
        "pss-salt-mismatch",
        "pss-declared-pkcs1-signed",
        "pkcs1-declared-pss-signed",
        "other-key",
    ],
)
def test_signature_that_does_not_verify_under_the_named_scheme_is_bad_message_check(
    signature_algorithm: algos.SignedDigestAlgorithm, sign: Callable[[bytes], bytes]
):
    der = resigned(pkcs_req(), signature_algorithm, sign)
    assert_refused(der, BadMessageCheck, FailInfo.BAD_MESSAGE_CHECK)


def _pss_parameters(**fields: object) -> algos.SignedDigestAlgorithm:
    return algos.SignedDigestAlgorithm(
        {"algorithm": "rsassa_pss", "parameters": algos.RSASSAPSSParams(fields)}
    )


UNSUPPORTED = {
    "dsa": algos.SignedDigestAlgorithm({"algorithm": "sha256_dsa"}),
    "unknown-oid": algos.SignedDigestAlgorithm({"algorithm": "1.3.6.1.4.1.55555.1.2"}),
    "ed25519": algos.SignedDigestAlgorithm({"algorithm": "ed25519"}),
    "ecdsa-with-an-rsa-key": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
    "pss-md5": rsassa_pss("md5"),
    "pss-sha3": rsassa_pss("sha3_256"),
    "pss-mgf1-md5": rsassa_pss("sha256", mgf_hash_name="md5"),
    "pss-unknown-mgf": _pss_parameters(
        hash_algorithm={"algorithm": "sha256"},
        mask_gen_algorithm={"algorithm": "1.3.6.1.4.1.55555.9", "parameters": core.Null()},
    ),
    "pss-trailer-field-2": _pss_parameters(hash_algorithm={"algorithm": "sha256"}, trailer_field=2),
    "pss-negative-salt": rsassa_pss(salt_length=-1),
    "pss-salt-longer-than-the-key": rsassa_pss(salt_length=10**30),
    "pss-without-parameters": algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss"}),
}


@pytest.mark.parametrize("signature_algorithm", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_signature_algorithm_we_do_not_support_is_bad_alg(
    signature_algorithm: algos.SignedDigestAlgorithm,
):
    der = resigned(pkcs_req(), signature_algorithm, pkcs1_signer(hashes.SHA256()))
    assert_refused(der, BadAlg, FailInfo.BAD_ALG)


def test_ecdsa_signer_is_verified_with_ecdsa():
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "EC signer")
    message = read_pki_message(pkcs_req(signer_key=key, signer_certificate=certificate))
    assert message.signer_certificate == certificate


def test_ecdsa_signature_named_by_the_key_algorithm_is_read():
    """Some CMS signers name the key's algorithm (id-ecPublicKey) instead of
    ecdsa-with-SHA256, as rsaEncryption names PKCS#1 v1.5."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "EC signer")
    der = resigned(
        pkcs_req(signer_key=key, signer_certificate=certificate),
        algos.SignedDigestAlgorithm({"algorithm": "1.2.840.10045.2.1"}),
        ecdsa_signer(key),
    )
    assert read_pki_message(der).signer_certificate == certificate


def test_rsassa_pss_with_an_ec_signer_is_bad_alg():
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed(key, "EC signer")
    der = resigned(
        pkcs_req(signer_key=key, signer_certificate=certificate), rsassa_pss(), ecdsa_signer(key)
    )
    assert_refused(der, BadAlg, FailInfo.BAD_ALG)
