"""init_ca / load_ca_schedule with file keys and with keys inside SoftHSM2.

One SoftHSM token per pytest process (tests/fixtures/softhsm.py), so every test
uses key labels of its own.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pkcs11
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, ObjectClass
from structlog.testing import capture_logs

from scepline_shared.ca import (
    CaMaterialError,
    CaNotInitialised,
    CaPaths,
    CaSchedule,
    KeySource,
    init_ca,
    load_ca_material,
    load_ca_schedule,
)
from scepline_shared.ca.keysource import key_id_for_label
from scepline_shared.ca.lab import ca_certificate
from scepline_shared.keys import SigningKey, generate_private_key, save_private_key
from scepline_shared.keys.pkcs11 import (
    KeyNotExtractable,
    Pkcs11EcPrivateKey,
    Pkcs11RsaPrivateKey,
    Pkcs11Token,
    generate_ca_keys,
)
from tests.support.pkcs11 import assert_never_leaves_the_token, private_key_attributes

from ._pki import openssl, token_keys, write_pem

NOW = datetime.now(UTC)


def certificate_for(key: SigningKey | None, common_name: str, *, days: int = 1) -> x509.Certificate:
    """A self-signed CA certificate valid from NOW for ``days``; for a fresh P-256
    key (in no token and no key file) when ``key`` is None."""
    return ca_certificate(
        generate_private_key("ec", "P-256") if key is None else key,
        common_name,
        not_before=NOW,
        not_after=NOW + timedelta(days=days),
    )


def fingerprints(schedule: CaSchedule) -> list[tuple[bytes, bytes]]:
    return [
        (
            g.material.ca.certificate.fingerprint(hashes.SHA256()),
            g.material.ra.certificate.fingerprint(hashes.SHA256()),
        )
        for g in schedule.generations
    ]


def assert_ra_verifies(schedule: CaSchedule, tmp_path: Path) -> None:
    material = schedule.material()
    ca_pem = write_pem(tmp_path / "ca.pem", material.ca.certificate)
    ra_pem = write_pem(tmp_path / "ra.pem", material.ra.certificate)
    result = openssl("verify", "-CAfile", ca_pem, ra_pem)
    assert result.returncode == 0, result.stderr


class TestFileBackend:
    def test_init_is_the_lab_ca_and_idempotent(self, tmp_path: Path) -> None:
        first = init_ca(tmp_path, KeySource(backend="file"), ca_key_size=2048)
        assert [g.number for g in first.generations] == [0]
        generation = first.active()
        assert generation.switch_at is None and generation.next_ca_response is None
        assert not isinstance(generation.material.ca.key, Pkcs11RsaPrivateKey)
        paths = CaPaths.under(tmp_path)
        assert paths.ca_key.exists() and paths.ra_key.exists()
        assert not paths.keys_index.exists()
        again = init_ca(tmp_path, KeySource(backend="file"), ca_key_type="ec")
        assert fingerprints(again) == fingerprints(first)
        assert load_ca_material(tmp_path).ca.certificate == generation.material.ca.certificate

    def test_token_keys_need_the_pkcs11_backend(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        init_ca(tmp_path, token_keys(softhsm_token), ca_key_size=2048)
        with pytest.raises(CaMaterialError, match="key backend is 'file'"):
            load_ca_schedule(tmp_path, KeySource(backend="file"))

    def test_not_initialised(self, tmp_path: Path) -> None:
        with pytest.raises(CaNotInitialised):
            load_ca_schedule(tmp_path, KeySource(backend="file"))


class TestTokenInit:
    def test_rsa_ca_and_ra_are_generated_in_the_token(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        schedule = init_ca(tmp_path, keys, ca_key_type="rsa", ca_key_size=2048)
        material = schedule.material()
        assert isinstance(material.ca.key, Pkcs11RsaPrivateKey)
        assert material.ca.key.key_size == 2048
        assert isinstance(material.ra.key, Pkcs11RsaPrivateKey)
        assert material.ra.key.key_size == 2048
        paths = CaPaths.under(tmp_path)
        # No private key touches the disk; keys.json says where they are.
        assert not paths.ca_key.exists() and not paths.ra_key.exists()
        assert json.loads(paths.keys_index.read_text()) == {
            "ca": {
                "pkcs11_label": keys.ca_key_label,
                "pkcs11_id": key_id_for_label(keys.ca_key_label).hex(),
            },
            "ra": {
                "pkcs11_label": keys.ra_key_label,
                "pkcs11_id": key_id_for_label(keys.ra_key_label).hex(),
            },
        }
        assert_ra_verifies(schedule, tmp_path)

    def test_ec_ca_gets_an_rsa_ra(self, tmp_path: Path, softhsm_token: Pkcs11Token) -> None:
        schedule = init_ca(tmp_path, token_keys(softhsm_token), ca_key_type="ec", ca_key_size=384)
        material = schedule.material()
        assert isinstance(material.ca.key, Pkcs11EcPrivateKey)
        assert material.ca.key.curve.name == "secp384r1"
        assert isinstance(material.ca.certificate.public_key(), ec.EllipticCurvePublicKey)
        assert isinstance(material.ra.key, Pkcs11RsaPrivateKey)
        assert material.ra.key.key_size == 2048
        assert_ra_verifies(schedule, tmp_path)

    def test_reinit_and_reload_give_the_same_ca(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        first = init_ca(tmp_path, keys, ca_key_size=2048)
        again = init_ca(tmp_path, keys, ca_key_type="ec")  # parameters ignored on reuse
        assert fingerprints(again) == fingerprints(first)
        # Another process: a new KeySource, same token; keys found through keys.json.
        fresh = KeySource(backend="pkcs11", token=softhsm_token)
        assert fingerprints(load_ca_schedule(tmp_path, fresh)) == fingerprints(first)

    def test_ra_key_in_a_file_when_not_in_the_token(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token, ra_in_token=False)
        material = init_ca(tmp_path, keys, ca_key_size=2048).material()
        assert isinstance(material.ca.key, Pkcs11RsaPrivateKey)
        assert isinstance(material.ra.key, rsa.RSAPrivateKey)
        assert not isinstance(material.ra.key, Pkcs11RsaPrivateKey)
        paths = CaPaths.under(tmp_path)
        assert paths.ra_key.exists() and not paths.ca_key.exists()
        assert set(json.loads(paths.keys_index.read_text())) == {"ca"}

    def test_interrupted_before_keys_json_reuses_the_token_key(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        first = init_ca(tmp_path, keys, ca_key_size=2048).material()
        paths = CaPaths.under(tmp_path)
        for path in (paths.keys_index, paths.ca_cert, paths.ra_cert):
            path.unlink()
        second = init_ca(tmp_path, keys, ca_key_size=2048).material()
        assert second.ca.key.public_key() == first.ca.key.public_key()
        assert second.ra.key.public_key() == first.ra.key.public_key()


class TestLogging:
    def test_labels_are_logged_and_the_pin_never(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        with capture_logs() as logs:
            init_ca(tmp_path, keys, ca_key_size=2048)
        labels = {entry.get("hsm_label") for entry in logs}
        assert {keys.ca_key_label, keys.ra_key_label} <= labels
        pin = softhsm_token.config.pin
        assert all(pin not in str(value) for entry in logs for value in entry.values())


class TestTokenKeyProtection:
    def test_ca_private_key_is_sensitive_and_never_extractable(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        material = init_ca(tmp_path, keys, ca_key_size=2048).material()

        assert_never_leaves_the_token(private_key_attributes(softhsm_token, keys.ca_key_label))
        with pytest.raises(KeyNotExtractable):
            material.ca.key.private_numbers()


class TestImport:
    def ceremony(self, token: Pkcs11Token, keys: KeySource) -> x509.Certificate:
        """A key made by a ceremony under the CA label (id = its label), and its certificate."""
        key = generate_ca_keys(
            token,
            key_type="ec",
            size_or_curve=256,
            label=keys.ca_key_label,
            id=keys.ca_key_label.encode(),
        )
        return ca_certificate(
            key,
            "Imported CA",
            not_before=NOW - timedelta(hours=1),
            not_after=NOW + timedelta(days=90),
        )

    def test_existing_token_key_and_certificate(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        certificate = self.ceremony(softhsm_token, keys)
        schedule = init_ca(tmp_path, keys, import_ca_certificate=certificate)
        material = schedule.material()
        assert material.ca.certificate == certificate
        assert isinstance(material.ra.key, Pkcs11RsaPrivateKey)
        material.ra.certificate.verify_directly_issued_by(certificate)
        # The RA never outlives the CA it was issued under.
        assert material.ra.certificate.not_valid_after_utc <= certificate.not_valid_after_utc
        index = json.loads(CaPaths.under(tmp_path).keys_index.read_text())
        assert index["ca"] == {
            "pkcs11_label": keys.ca_key_label,
            "pkcs11_id": keys.ca_key_label.encode().hex(),
        }
        again = init_ca(tmp_path, keys, import_ca_certificate=certificate)
        assert fingerprints(again) == fingerprints(schedule)

    def test_certificate_of_another_key_is_refused(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        self.ceremony(softhsm_token, keys)
        other = certificate_for(None, "Other CA")
        with pytest.raises(CaMaterialError, match=f"hsm_label='{keys.ca_key_label}'"):
            init_ca(tmp_path, keys, import_ca_certificate=other)
        assert not CaPaths.under(tmp_path).ca_cert.exists()

    def test_missing_token_key_is_named(self, tmp_path: Path, softhsm_token: Pkcs11Token) -> None:
        keys = token_keys(softhsm_token)
        certificate = certificate_for(None, "Orphan CA")
        with pytest.raises(CaMaterialError, match=f"no private key labelled '{keys.ca_key_label}'"):
            init_ca(tmp_path, keys, import_ca_certificate=certificate)

    def test_a_different_ca_already_there_is_not_replaced(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        init_ca(tmp_path, keys, ca_key_size=2048)
        certificate = self.ceremony(softhsm_token, token_keys(softhsm_token))
        with pytest.raises(CaMaterialError, match="different CA certificate"):
            init_ca(tmp_path, keys, import_ca_certificate=certificate)


class TestLoadChecks:
    def test_key_of_another_ca_is_refused_naming_its_label(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys_a, keys_b = token_keys(softhsm_token), token_keys(softhsm_token)
        init_ca(tmp_path / "a", keys_a, ca_key_size=2048)
        init_ca(tmp_path / "b", keys_b, ca_key_size=2048)
        index_a = CaPaths.under(tmp_path / "a").keys_index
        index_b = CaPaths.under(tmp_path / "b").keys_index
        swapped = json.loads(index_a.read_text())
        swapped["ca"] = json.loads(index_b.read_text())["ca"]
        index_a.write_text(json.dumps(swapped))
        with pytest.raises(CaMaterialError) as info:
            load_ca_schedule(tmp_path / "a", keys_a)
        assert info.value.path == CaPaths.under(tmp_path / "a").ca_cert
        assert f"hsm_label='{keys_b.ca_key_label}'" in str(info.value)

    def test_key_missing_from_the_token_is_named(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        keys = token_keys(softhsm_token)
        init_ca(tmp_path, keys, ca_key_size=2048)
        index = CaPaths.under(tmp_path).keys_index
        data = json.loads(index.read_text())
        data["ra"]["pkcs11_label"] = "nobody-has-this-label"
        index.write_text(json.dumps(data))
        with pytest.raises(CaMaterialError, match="hsm_label='nobody-has-this-label'"):
            load_ca_schedule(tmp_path, keys)

    def test_public_object_paired_with_another_private_key_fails_the_proof(
        self, tmp_path: Path, softhsm_token: Pkcs11Token
    ) -> None:
        """The public objects agree with the certificate; only a signature tells."""
        keys = token_keys(softhsm_token)
        init_ca(tmp_path, keys, ca_key_size=2048)
        ca_id = key_id_for_label(keys.ca_key_label)
        impostor_label = f"impostor-{uuid.uuid4().hex[:8]}"
        impostor = generate_ca_keys(
            softhsm_token,
            key_type="rsa",
            size_or_curve=2048,
            label=impostor_label,
            id=key_id_for_label(impostor_label),
        )
        # The CA's public object now holds the impostor's key: a mispaired token.
        impostor_certificate = certificate_for(impostor, "Impostor")

        def mispair(session: pkcs11.Session) -> None:
            rw = session.token.open(rw=True)
            try:
                rw.get_key(object_class=ObjectClass.PUBLIC_KEY, id=ca_id).destroy()
                public = rw.get_key(object_class=ObjectClass.PUBLIC_KEY, label=impostor_label)
                public[Attribute.ID] = ca_id
                public[Attribute.LABEL] = keys.ca_key_label
            finally:
                rw.close()

        softhsm_token.run(mispair)
        write_pem(CaPaths.under(tmp_path).ca_cert, impostor_certificate)
        with pytest.raises(CaMaterialError, match="does not sign for this certificate") as info:
            load_ca_schedule(tmp_path, KeySource(backend="pkcs11", token=softhsm_token))
        assert f"hsm_label='{keys.ca_key_label}'" in str(info.value)


class TestFileImport:
    def test_certificate_for_a_key_placed_in_ca_key(self, tmp_path: Path) -> None:
        paths = CaPaths.under(tmp_path)
        paths.directory.mkdir(parents=True)
        key = generate_private_key("ec", "P-256")
        save_private_key(paths.ca_key, key)
        certificate = certificate_for(key, "Enterprise CA", days=10)
        material = init_ca(tmp_path, KeySource(backend="file"), import_ca_certificate=certificate)
        assert material.material().ca.certificate == certificate
        material.material().ra.certificate.verify_directly_issued_by(certificate)

    def test_without_the_key_file(self, tmp_path: Path) -> None:
        certificate = certificate_for(None, "Enterprise CA", days=10)
        with pytest.raises(CaMaterialError, match="put the CA key there"):
            init_ca(tmp_path, KeySource(backend="file"), import_ca_certificate=certificate)

    def test_a_leaf_certificate_is_not_imported(self, tmp_path: Path) -> None:
        material = init_ca(tmp_path / "lab", KeySource(backend="file"), ca_key_size=2048)
        with pytest.raises(CaMaterialError, match="not a CA certificate"):
            init_ca(
                tmp_path / "new",
                KeySource(backend="file"),
                import_ca_certificate=material.material().ra.certificate,
            )
