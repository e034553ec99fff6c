"""ensure_lab_ca / load_ca_material: created once, reused, race-safe, exact extensions."""

from __future__ import annotations

import multiprocessing
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

from scepline_shared.ca import (
    CERTIFICATE_REQUEST_AGENT,
    CaMaterial,
    CaMaterialError,
    CaNotInitialised,
    CaPaths,
    ensure_lab_ca,
    load_ca_material,
)
from scepline_shared.keys import generate_private_key, save_private_key, spki_sha256_hex

from ._pki import openssl, write_pem


def _fingerprint(material: CaMaterial) -> tuple[str, str, str, str]:
    return (
        spki_sha256_hex(material.ca.key.public_key()),
        spki_sha256_hex(material.ra.key.public_key()),
        material.ca.certificate.fingerprint(hashes.SHA256()).hex(),
        material.ra.certificate.fingerprint(hashes.SHA256()).hex(),
    )


def _ext(cert: x509.Certificate, cls: type[x509.ExtensionType]) -> x509.Extension:
    return cert.extensions.get_extension_for_class(cls)


class TestCreateAndReuse:
    def test_default_ca_is_rsa_3072_and_second_call_reuses_it(self, tmp_path: Path) -> None:
        first = ensure_lab_ca(tmp_path)
        assert isinstance(first.ca.key, rsa.RSAPrivateKey)
        assert first.ca.key.key_size == 3072
        assert first.chain == ()

        second = ensure_lab_ca(tmp_path, ca_key_type="ec")  # parameters ignored on reuse
        assert _fingerprint(second) == _fingerprint(first)
        assert _fingerprint(load_ca_material(tmp_path)) == _fingerprint(first)

    def test_files_and_modes(self, tmp_path: Path) -> None:
        ensure_lab_ca(tmp_path, ca_key_size=2048)
        paths = CaPaths.under(tmp_path)
        assert stat.S_IMODE(paths.directory.stat().st_mode) == 0o700
        for key in (paths.ca_key, paths.ra_key):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
        for cert in (paths.ca_cert, paths.ra_cert):
            assert stat.S_IMODE(cert.stat().st_mode) == 0o644
            assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        leftovers = {p.name for p in paths.directory.iterdir()} - {
            "ca.key", "ca.crt", "ra.key", "ra.crt", ".lock"
        }  # fmt: skip
        assert leftovers == set()

    def test_concurrent_creation_by_four_processes_yields_one_ca(self, tmp_path: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(4)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_create_in_child, args=(tmp_path, barrier, results))
            for _ in range(4)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
            assert proc.exitcode == 0
        seen = {results.get(timeout=5) for _ in procs}
        assert len(seen) == 1
        assert seen == {_fingerprint(load_ca_material(tmp_path))}

    def test_ec_ca_keeps_an_rsa_2048_ra(self, ec_lab: CaMaterial) -> None:
        assert isinstance(ec_lab.ca.key, ec.EllipticCurvePrivateKey)
        assert ec_lab.ca.key.curve.name == "secp256r1"
        assert isinstance(ec_lab.ra.key, rsa.RSAPrivateKey)
        assert ec_lab.ra.key.key_size == 2048
        ec_lab.ra.certificate.verify_directly_issued_by(ec_lab.ca.certificate)

    def test_ec_curve_can_be_chosen(self, tmp_path: Path) -> None:
        material = ensure_lab_ca(tmp_path, ca_key_type="ec", ca_key_size="P-384")
        assert material.ca.key.curve.name == "secp384r1"  # type: ignore[union-attr]

    def test_unknown_key_type_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="unknown CA key type"):
            ensure_lab_ca(tmp_path, ca_key_type="dsa")  # type: ignore[arg-type]


def _create_in_child(data_dir: Path, barrier: object, results: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    results.put(_fingerprint(ensure_lab_ca(data_dir, ca_key_size=2048)))  # type: ignore[attr-defined]


class TestRecovery:
    def test_interrupted_first_start_reuses_the_key_already_written(self, tmp_path: Path) -> None:
        paths = CaPaths.under(tmp_path)
        paths.directory.mkdir(parents=True)
        key = generate_private_key("rsa", 2048)
        save_private_key(paths.ca_key, key)  # crash happened before ca.crt was written
        material = ensure_lab_ca(tmp_path)
        assert spki_sha256_hex(material.ca.key.public_key()) == spki_sha256_hex(key.public_key())

    def test_certificate_without_its_key_is_not_replaced(self, tmp_path: Path) -> None:
        ensure_lab_ca(tmp_path, ca_key_size=2048)
        paths = CaPaths.under(tmp_path)
        before = paths.ca_cert.read_bytes()
        paths.ca_key.unlink()
        with pytest.raises(CaMaterialError, match="refusing to replace"):
            ensure_lab_ca(tmp_path)
        assert paths.ca_cert.read_bytes() == before
        with pytest.raises(CaNotInitialised) as info:
            load_ca_material(tmp_path)
        assert info.value.path == paths.ca_key

    def test_missing_ra_is_recreated_under_the_same_ca(self, tmp_path: Path) -> None:
        first = ensure_lab_ca(tmp_path, ca_key_size=2048)
        paths = CaPaths.under(tmp_path)
        paths.ra_cert.unlink()
        paths.ra_key.unlink()
        second = ensure_lab_ca(tmp_path)
        assert second.ca.certificate == first.ca.certificate
        assert second.ra.key_id != first.ra.key_id
        second.ra.certificate.verify_directly_issued_by(second.ca.certificate)


class TestLoad:
    def test_absent_material_raises_not_initialised(self, tmp_path: Path) -> None:
        with pytest.raises(CaNotInitialised) as info:
            load_ca_material(tmp_path)
        assert info.value.path == tmp_path / "ca"

    def test_mismatched_certificate_is_reported(self, tmp_path: Path) -> None:
        ensure_lab_ca(tmp_path, ca_key_size=2048)
        paths = CaPaths.under(tmp_path)
        paths.ra_cert.write_bytes(paths.ca_cert.read_bytes())
        with pytest.raises(CaMaterialError) as info:
            load_ca_material(tmp_path)
        assert info.value.path == paths.ra_cert


class TestCaCertificate:
    def test_extensions_exactly(self, rsa_lab: CaMaterial) -> None:
        cert = rsa_lab.ca.certificate
        assert {e.oid for e in cert.extensions} == {
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        }
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical
        assert bc.value == x509.BasicConstraints(ca=True, path_length=0)
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical
        assert ku.value == x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        ski = _ext(cert, x509.SubjectKeyIdentifier)
        assert not ski.critical
        assert ski.value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]
        aki = _ext(cert, x509.AuthorityKeyIdentifier)
        assert aki.value.key_identifier == ski.value.digest

    def test_self_signed_names_and_validity(self, tmp_path: Path) -> None:
        before = datetime.now(UTC)
        cert = ensure_lab_ca(tmp_path, ca_key_size=2048, validity_days=30).ca.certificate
        after = datetime.now(UTC)
        cert.verify_directly_issued_by(cert)
        assert cert.subject == cert.issuer
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
            "scepline lab CA"
        )
        slack = timedelta(seconds=1)
        assert before - timedelta(hours=1) - slack <= cert.not_valid_before_utc
        assert cert.not_valid_before_utc <= after - timedelta(hours=1)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(days=30, hours=1)
        assert 64 <= cert.serial_number.bit_length() <= 159


class TestRaCertificate:
    def test_extensions_exactly(self, rsa_lab: CaMaterial) -> None:
        cert, ca = rsa_lab.ra.certificate, rsa_lab.ca.certificate
        assert {e.oid for e in cert.extensions} == {
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        }
        bc = _ext(cert, x509.BasicConstraints)
        assert bc.critical
        assert bc.value.ca is False
        ku = _ext(cert, x509.KeyUsage)
        assert ku.critical
        assert ku.value == x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=True,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=False,
            crl_sign=False,
            encipher_only=False,
            decipher_only=False,
        )
        eku = _ext(cert, x509.ExtendedKeyUsage)
        assert list(eku.value) == [CERTIFICATE_REQUEST_AGENT]
        assert ExtendedKeyUsageOID.SERVER_AUTH not in eku.value
        assert _ext(cert, x509.SubjectKeyIdentifier).value == (
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key())  # type: ignore[arg-type]
        )
        assert (
            _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier
            == _ext(ca, x509.SubjectKeyIdentifier).value.digest
        )
        assert cert.issuer == ca.subject
        assert cert.not_valid_after_utc <= ca.not_valid_after_utc

    @pytest.mark.parametrize("lab", ["rsa_lab", "ec_lab"])
    def test_openssl_verifies_ra_against_ca(
        self, lab: str, request: pytest.FixtureRequest, tmp_path: Path
    ) -> None:
        material: CaMaterial = request.getfixturevalue(lab)
        ca_pem = write_pem(tmp_path / "ca.pem", material.ca.certificate)
        ra_pem = write_pem(tmp_path / "ra.pem", material.ra.certificate)
        result = openssl("verify", "-CAfile", ca_pem, ra_pem)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().endswith("OK")
