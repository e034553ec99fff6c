"""build_crl: verifies with openssl, lists the revoked serials, carries CRLNumber and AKI."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtensionOID

from scepline_shared.ca import (
    CaMaterial,
    CertificateProfile,
    build_crl,
    issue_certificate,
    new_serial,
)
from scepline_shared.ca.crl import crl_distribution_url
from scepline_shared.keys import spki_sha256_hex

from ._pki import make_csr, openssl, write_pem

THIS_UPDATE = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
NEXT_UPDATE = THIS_UPDATE + timedelta(days=7)
REVOKED_AT = THIS_UPDATE - timedelta(hours=2)


def _crl(lab: CaMaterial, revoked: list[tuple[int, datetime, int | None]], number: int = 7):
    return build_crl(
        ca=lab.ca,
        revoked=revoked,
        number=number,
        this_update=THIS_UPDATE,
        next_update=NEXT_UPDATE,
    )


@pytest.mark.parametrize("lab", ["rsa_lab", "ec_lab"])
def test_openssl_verifies_and_lists_serials(
    lab: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    material: CaMaterial = request.getfixturevalue(lab)
    serials = [new_serial(), new_serial(), 0x01]
    crl = _crl(material, [(serials[0], REVOKED_AT, None), (serials[1], REVOKED_AT, 1),
                          (serials[2], REVOKED_AT, 4)])  # fmt: skip
    ca_pem = write_pem(tmp_path / "ca.pem", material.ca.certificate)
    crl_pem = write_pem(tmp_path / "crl.pem", crl)

    result = openssl("crl", "-in", crl_pem, "-CAfile", ca_pem, "-noout", "-verify")
    assert result.returncode == 0, result.stderr
    assert "verify OK" in result.stdout + result.stderr

    text = openssl("crl", "-in", crl_pem, "-noout", "-text").stdout
    for serial in serials:
        hex_serial = format(serial, "X")
        assert f"Serial Number: {'0' * (len(hex_serial) % 2)}{hex_serial}" in text
    assert re.search(r"CRL Number:\s*\n\s*7\n", text)
    assert "Key Compromise" in text and "Superseded" in text


def test_extensions_and_entries(rsa_lab: CaMaterial) -> None:
    a, b = new_serial(), new_serial()
    crl = _crl(rsa_lab, [(a, REVOKED_AT, 0), (b, REVOKED_AT, 1)], number=42)
    assert crl.is_signature_valid(rsa_lab.ca.certificate.public_key())  # type: ignore[arg-type]
    assert crl.issuer == rsa_lab.ca.certificate.subject
    assert crl.last_update_utc == THIS_UPDATE
    assert crl.next_update_utc == NEXT_UPDATE
    assert {e.oid for e in crl.extensions} == {
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 42
    ca_ski = rsa_lab.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.value.digest

    entry_a = crl.get_revoked_certificate_by_serial_number(a)
    entry_b = crl.get_revoked_certificate_by_serial_number(b)
    assert entry_a is not None and entry_b is not None
    assert entry_a.revocation_date_utc == REVOKED_AT
    assert len(entry_a.extensions) == 0  # unspecified (0) is written as no reason
    reason = entry_b.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_empty_crl_is_valid(rsa_lab: CaMaterial) -> None:
    crl = _crl(rsa_lab, [])
    assert len(crl) == 0
    assert crl.is_signature_valid(rsa_lab.ca.certificate.public_key())  # type: ignore[arg-type]


def test_openssl_crl_check_reports_issued_cert_revoked(rsa_lab: CaMaterial, tmp_path: Path) -> None:
    cert = issue_certificate(
        csr=make_csr(), ca=rsa_lab.ca, profile=CertificateProfile(), serial=new_serial()
    )
    crl = _crl(rsa_lab, [(cert.serial_number, REVOKED_AT, 1)])
    ca_pem = write_pem(tmp_path / "ca.pem", rsa_lab.ca.certificate)
    leaf_pem = write_pem(tmp_path / "leaf.pem", cert)
    crl_pem = write_pem(tmp_path / "crl.pem", crl)
    result = openssl("verify", "-crl_check", "-CRLfile", crl_pem, "-CAfile", ca_pem, leaf_pem)
    assert result.returncode != 0
    assert "certificate revoked" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"revoked": [(5, REVOKED_AT, 7)]}, "invalid CRLReason"),
        ({"revoked": [(5, REVOKED_AT, None), (5, REVOKED_AT, 1)]}, "listed twice"),
        ({"revoked": [(0, REVOKED_AT, None)]}, "out of range"),
        ({"revoked": [(5, datetime(2026, 1, 1), None)]}, "timezone-aware"),
        ({"next_update": THIS_UPDATE}, "after this_update"),
        ({"this_update": datetime(2026, 1, 1)}, "timezone-aware"),
        ({"number": -1}, "CRL number"),
    ],
)
def test_invalid_input_refused(rsa_lab: CaMaterial, kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "ca": rsa_lab.ca,
        "revoked": [],
        "number": 1,
        "this_update": THIS_UPDATE,
        "next_update": NEXT_UPDATE,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        build_crl(**args)  # type: ignore[arg-type]


def test_distribution_url_names_the_ca_key(rsa_lab: CaMaterial, ec_lab: CaMaterial) -> None:
    key_id = spki_sha256_hex(rsa_lab.ca.certificate.public_key())
    expected = f"https://scep.example.com/base/crl/{key_id}.crl"
    for base in ("https://scep.example.com/base", "https://scep.example.com/base/"):
        assert crl_distribution_url(base, rsa_lab.ca.certificate) == expected
    assert crl_distribution_url("http://h", ec_lab.ca.certificate) != crl_distribution_url(
        "http://h", rsa_lab.ca.certificate
    )
    with pytest.raises(ValueError, match="empty"):
        crl_distribution_url("/", rsa_lab.ca.certificate)
