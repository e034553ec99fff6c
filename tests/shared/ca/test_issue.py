"""issue_certificate: what is copied from the CSR, what the profile adds, what is refused."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import (
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from scepline_shared.ca import (
    CaMaterial,
    CaMaterialError,
    CertificateProfile,
    PolicyViolation,
    issue_certificate,
    new_serial,
)
from scepline_shared.keys import KeyPair

from ._pki import INTUNE_SID_URI, make_csr, name, openssl, rsa_key, upn, write_pem

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PROFILE = CertificateProfile()


def _issue(lab: CaMaterial, csr: x509.CertificateSigningRequest, **kw: object) -> x509.Certificate:
    profile = kw.pop("profile", PROFILE)
    return issue_certificate(
        csr=csr,
        ca=lab.ca,
        profile=profile,  # type: ignore[arg-type]
        serial=kw.pop("serial", new_serial()),  # type: ignore[arg-type]
        now=kw.pop("now", datetime.now(UTC)),  # type: ignore[arg-type]
        # As after Intune's validation: the names are the profile's question here.
        names_vouched=kw.pop("names_vouched", True),  # type: ignore[arg-type]
    )


def _sans(cert: x509.Certificate) -> x509.Extension[x509.SubjectAlternativeName]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


class TestOpenSslAcceptsIssuedCerts:
    @pytest.mark.parametrize("lab", ["rsa_lab", "ec_lab"])
    @pytest.mark.parametrize("leaf_key", ["rsa", "p256"])
    def test_openssl_verify(
        self, lab: str, leaf_key: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        material: CaMaterial = request.getfixturevalue(lab)
        key = rsa_key() if leaf_key == "rsa" else ec.generate_private_key(ec.SECP256R1())
        cert = _issue(material, make_csr(key=key, sans=[x509.DNSName("device-1.example")]))
        ca_pem = write_pem(tmp_path / "ca.pem", material.ca.certificate)
        leaf_pem = write_pem(tmp_path / "leaf.pem", cert)
        result = openssl("verify", "-CAfile", ca_pem, leaf_pem)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{leaf_pem}: OK"
        # clientAuth EKU: usable for 802.1X / VPN client authentication.
        result = openssl("verify", "-purpose", "sslclient", "-CAfile", ca_pem, leaf_pem)
        assert result.returncode == 0, result.stderr

    def test_signature_algorithms(self, rsa_lab: CaMaterial, ec_lab: CaMaterial) -> None:
        csr = make_csr()
        rsa_cert = _issue(rsa_lab, csr)
        ec_cert = _issue(ec_lab, csr)
        assert rsa_cert.signature_algorithm_oid == SignatureAlgorithmOID.RSA_WITH_SHA256
        assert ec_cert.signature_algorithm_oid == SignatureAlgorithmOID.ECDSA_WITH_SHA256
        ec_cert.verify_directly_issued_by(ec_lab.ca.certificate)


class TestContent:
    def test_extensions_from_profile(self, rsa_lab: CaMaterial) -> None:
        csr = make_csr(sans=[x509.DNSName("a.example")])
        cert = _issue(rsa_lab, csr, serial=0x1234567890ABCDEF1)
        assert cert.serial_number == 0x1234567890ABCDEF1
        assert cert.issuer == rsa_lab.ca.certificate.subject
        assert cert.public_key() == csr.public_key()
        exts = cert.extensions
        assert {e.oid for e in exts} == {
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        }
        bc = exts.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca is False
        ku = exts.get_extension_for_class(x509.KeyUsage)
        assert ku.critical and ku.value == PROFILE.key_usage
        assert ku.value.digital_signature and ku.value.key_encipherment
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage)
        assert list(eku.value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        ski = exts.get_extension_for_class(x509.SubjectKeyIdentifier).value
        assert ski == x509.SubjectKeyIdentifier.from_public_key(csr.public_key())  # type: ignore[arg-type]
        ca_ski = rsa_lab.ca.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        aki = exts.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ca_ski.digest

    def test_subject_copied_as_is_including_multi_valued_rdns(self, rsa_lab: CaMaterial) -> None:
        subject = x509.Name(
            [
                x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "DE")]),
                x509.RelativeDistinguishedName(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, "device-7"),
                        x509.NameAttribute(NameOID.USER_ID, "u-42"),
                    ]
                ),
                x509.RelativeDistinguishedName(
                    [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Fleet")]
                ),
            ]
        )
        csr = make_csr(subject=subject)
        cert = _issue(rsa_lab, csr)
        assert cert.subject == csr.subject
        assert [len(rdn) for rdn in cert.subject.rdns] == [1, 2, 1]
        assert cert.subject.public_bytes() == csr.subject.public_bytes()

    def test_sans_copied_including_intune_sid_uri_and_upn(self, rsa_lab: CaMaterial) -> None:
        requested: list[x509.GeneralName] = [
            x509.DNSName("laptop-17.corp.example"),
            x509.RFC822Name("alice@contoso.example"),
            x509.UniformResourceIdentifier(INTUNE_SID_URI),
            upn("alice@contoso.example"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        ]
        cert = _issue(rsa_lab, make_csr(sans=requested))
        san = _sans(cert)
        assert not san.critical  # the subject is not empty
        assert list(san.value) == requested
        assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [INTUNE_SID_URI]
        (other,) = san.value.get_values_for_type(x509.OtherName)
        assert other.type_id == ObjectIdentifier("1.3.6.1.4.1.311.20.2.3")
        assert other.value == b"\x0c\x15alice@contoso.example"  # UTF8String, as Windows expects

    def test_no_san_requested_means_no_san_extension(self, rsa_lab: CaMaterial) -> None:
        cert = _issue(rsa_lab, make_csr())
        with pytest.raises(x509.ExtensionNotFound):
            _sans(cert)

    def test_other_requested_extensions_are_ignored(self, rsa_lab: CaMaterial) -> None:
        csr = make_csr(extra=[x509.BasicConstraints(ca=True, path_length=None)])
        cert = _issue(rsa_lab, csr)
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca is False

    def test_profile_without_eku_emits_none(self, rsa_lab: CaMaterial) -> None:
        cert = _issue(rsa_lab, make_csr(), profile=CertificateProfile(extended_key_usage=()))
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)

    def test_empty_subject_with_san_gets_a_critical_san(self, rsa_lab: CaMaterial) -> None:
        cert = _issue(
            rsa_lab, make_csr(subject=x509.Name([]), sans=[x509.DNSName("only-san.example")])
        )
        assert list(cert.subject) == []
        assert _sans(cert).critical

    def test_copy_subject_false_leaves_subject_empty(self, rsa_lab: CaMaterial) -> None:
        csr = make_csr(subject=name("ignored"), sans=[upn("bob@contoso.example")])
        cert = _issue(rsa_lab, csr, profile=CertificateProfile(copy_subject=False))
        assert list(cert.subject) == []
        assert _sans(cert).critical


class TestValidity:
    def test_backdated_and_profile_lifetime(self, rsa_lab: CaMaterial) -> None:
        now = datetime.now(UTC).replace(microsecond=0)
        cert = _issue(rsa_lab, make_csr(), now=now)
        assert cert.not_valid_before_utc == now - timedelta(seconds=300)
        assert cert.not_valid_after_utc == now + timedelta(days=365)

    def test_not_after_capped_at_ca_not_after(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile(validity_days=100_000)
        cert = _issue(rsa_lab, make_csr(), profile=profile)
        assert cert.not_valid_after_utc == rsa_lab.ca.certificate.not_valid_after_utc

    def test_expired_ca_refuses_to_issue(self, rsa_lab: CaMaterial) -> None:
        later = rsa_lab.ca.certificate.not_valid_after_utc + timedelta(seconds=1)
        with pytest.raises(CaMaterialError, match="expired"):
            _issue(rsa_lab, make_csr(), now=later)

    def test_naive_now_refused(self, rsa_lab: CaMaterial) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            _issue(rsa_lab, make_csr(), now=datetime(2026, 1, 1))


class TestRefusals:
    def test_rsa_1024_refused(self, rsa_lab: CaMaterial) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        with pytest.raises(PolicyViolation, match="RSA key size 1024") as info:
            _issue(rsa_lab, make_csr(key=key))
        assert isinstance(info.value, ValueError)
        assert "1024" in info.value.reason

    @pytest.mark.parametrize(
        ("key_factory", "label"),
        [
            (lambda: ec.generate_private_key(ec.SECP521R1()), "P-521"),
            (lambda: ec.generate_private_key(ec.SECP256K1()), "ec:secp256k1"),
            (ed25519.Ed25519PrivateKey.generate, "Ed25519"),
        ],
    )
    def test_other_key_types_refused(self, rsa_lab: CaMaterial, key_factory, label: str) -> None:  # type: ignore[no-untyped-def]
        with pytest.raises(PolicyViolation, match=f"key type {label} not allowed"):
            _issue(rsa_lab, make_csr(key=key_factory()))

    def test_p384_allowed_and_p521_when_profile_says_so(self, rsa_lab: CaMaterial) -> None:
        _issue(rsa_lab, make_csr(key=ec.generate_private_key(ec.SECP384R1())))
        profile = CertificateProfile(allowed_key_types=frozenset({"P-521"}))
        _issue(rsa_lab, make_csr(key=ec.generate_private_key(ec.SECP521R1())), profile=profile)

    def test_bad_signature_refused(self, rsa_lab: CaMaterial) -> None:
        der = bytearray(make_csr().public_bytes(serialization.Encoding.DER))
        der[-1] ^= 0x01  # last octet of the signature BIT STRING
        tampered = x509.load_der_x509_csr(bytes(der))
        with pytest.raises(PolicyViolation, match="signature does not verify"):
            _issue(rsa_lab, tampered)

    def test_empty_subject_and_no_san_refused(self, rsa_lab: CaMaterial) -> None:
        with pytest.raises(PolicyViolation, match="empty subject"):
            _issue(rsa_lab, make_csr(subject=x509.Name([])))

    def test_empty_subject_whose_only_sans_are_dropped_refused(self, rsa_lab: CaMaterial) -> None:
        csr = make_csr(subject=x509.Name([]), sans=[x509.RegisteredID(ObjectIdentifier("1.2.3"))])
        with pytest.raises(PolicyViolation, match="no allowed subjectAltName"):
            _issue(rsa_lab, csr)


class TestSanPolicy:
    DISALLOWED: tuple[x509.GeneralName, ...] = (
        x509.RegisteredID(ObjectIdentifier("1.2.3.4")),
        x509.OtherName(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x0c\x01x"),
        x509.DirectoryName(name("dir")),
    )

    def test_disallowed_types_dropped_by_default(self, rsa_lab: CaMaterial) -> None:
        kept = [x509.DNSName("ok.example"), upn("carol@contoso.example")]
        csr = make_csr(sans=[*self.DISALLOWED[:2], kept[0], self.DISALLOWED[2], kept[1]])
        cert = _issue(rsa_lab, csr)
        assert list(_sans(cert).value) == kept

    def test_type_removed_from_profile_is_dropped(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile(allowed_san_types=frozenset({"uri"}))
        csr = make_csr(
            sans=[x509.DNSName("x.example"), x509.UniformResourceIdentifier(INTUNE_SID_URI)]
        )
        cert = _issue(rsa_lab, csr, profile=profile)
        assert list(_sans(cert).value) == [x509.UniformResourceIdentifier(INTUNE_SID_URI)]

    def test_refuse_mode_rejects_disallowed_types(self, rsa_lab: CaMaterial) -> None:
        profile = CertificateProfile(on_disallowed_san="refuse")
        csr = make_csr(sans=[x509.DNSName("ok.example"), self.DISALLOWED[0]])
        with pytest.raises(PolicyViolation, match="registered_id"):
            _issue(rsa_lab, csr, profile=profile)


class _HsmLikeRsaKey(rsa.RSAPrivateKey):
    """Stand-in for a PKCS#11 key: implements only the ABC, refuses export."""

    def __init__(self, inner: rsa.RSAPrivateKey) -> None:
        self._inner = inner
        self.sign_calls = 0

    def sign(self, data, padding_, algorithm):  # type: ignore[no-untyped-def]
        self.sign_calls += 1
        assert isinstance(padding_, padding.PKCS1v15)
        return self._inner.sign(data, padding_, algorithm)

    def decrypt(self, ciphertext, padding_):  # type: ignore[no-untyped-def]
        return self._inner.decrypt(ciphertext, padding_)

    @property
    def key_size(self) -> int:
        return self._inner.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._inner.public_key()

    def private_numbers(self):  # type: ignore[no-untyped-def]
        raise TypeError("non-extractable")

    def private_bytes(self, encoding, format, encryption_algorithm):  # type: ignore[no-untyped-def]
        raise TypeError("non-extractable")

    def __copy__(self) -> _HsmLikeRsaKey:
        return self

    def __deepcopy__(self, memo: dict) -> _HsmLikeRsaKey:  # type: ignore[type-arg]
        return self


def test_hsm_style_key_behind_the_abc_issues(rsa_lab: CaMaterial, tmp_path: Path) -> None:
    hsm_key = _HsmLikeRsaKey(rsa_lab.ca.key)  # type: ignore[arg-type]
    ca = KeyPair(key=hsm_key, certificate=rsa_lab.ca.certificate)
    cert = issue_certificate(csr=make_csr(), ca=ca, profile=PROFILE, serial=new_serial())
    assert hsm_key.sign_calls == 1
    cert.verify_directly_issued_by(rsa_lab.ca.certificate)
    assert cert.signature_hash_algorithm is not None
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


class TestCrlDistributionPoint:
    URL = "http://scep.example.com/crl/" + "ab" * 32 + ".crl"

    def test_absent_unless_asked_for(self, rsa_lab: CaMaterial) -> None:
        with pytest.raises(x509.ExtensionNotFound):
            _issue(rsa_lab, make_csr()).extensions.get_extension_for_class(
                x509.CRLDistributionPoints
            )

    def test_one_full_name_uri(self, rsa_lab: CaMaterial, tmp_path: Path) -> None:
        cert = issue_certificate(
            csr=make_csr(),
            ca=rsa_lab.ca,
            profile=PROFILE,
            serial=new_serial(),
            crl_distribution_point=self.URL,
        )
        extension = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints)
        assert not extension.critical
        (point,) = extension.value
        assert point.full_name == [x509.UniformResourceIdentifier(self.URL)]
        assert (point.relative_name, point.reasons, point.crl_issuer) == (None, None, None)
        text = openssl("x509", "-in", write_pem(tmp_path / "leaf.pem", cert), "-noout", "-text")
        assert f"URI:{self.URL}" in text.stdout

    @pytest.mark.parametrize("url", ["/crl/x.crl", "scep.example.com/crl/x.crl", ""])
    def test_relative_urls_refused_before_signing(self, rsa_lab: CaMaterial, url: str) -> None:
        with pytest.raises(ValueError, match="absolute URL"):
            issue_certificate(
                csr=make_csr(),
                ca=rsa_lab.ca,
                profile=PROFILE,
                serial=new_serial(),
                crl_distribution_point=url,
            )
