"""KeySource: built from settings without opening the token, labels, keys.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scepline_shared.ca import CaMaterialError, KeySource, TokenKeyEntry
from scepline_shared.ca.keysource import (
    key_id_for_label,
    key_location,
    read_key_index,
    write_key_index,
)
from scepline_shared.configured import key_source
from scepline_shared.keys.pkcs11 import Pkcs11KeyRef, Pkcs11Token
from scepline_shared.settings import Settings
from tests.fixtures.softhsm import SoftHsmKeys
from tests.support.pki import rsa_key

PKCS11 = {"key_backend": "pkcs11", "pkcs11_module": "/nonexistent/libpkcs11.so"}


class TestFromSettings:
    def test_file_backend_has_no_token(self) -> None:
        keys = key_source(Settings())
        assert keys.backend == "file"
        assert keys.token is None
        assert not keys.in_token("ca")
        assert not keys.in_token("ra")

    def test_pkcs11_builds_the_token_from_a_pin_file_without_opening_it(
        self, tmp_path: Path
    ) -> None:
        pin_file = tmp_path / "pin"
        pin_file.write_text("s3cret-pin\n")
        settings = Settings(
            **PKCS11,
            pkcs11_token_label="prod-ca",
            pkcs11_pin_file=pin_file,
            pkcs11_ca_key_label="ca-key",
            pkcs11_ra_key_label="ra-key",
        )
        # The module path does not exist: building must not load it (after-fork rule).
        keys = key_source(settings)
        assert keys.backend == "pkcs11"
        assert isinstance(keys.token, Pkcs11Token)
        config = keys.token.config
        assert config.token_label == "prod-ca"
        assert config.pin == "s3cret-pin"
        assert config.ca_key == Pkcs11KeyRef(label="ca-key")
        assert config.ra_key == Pkcs11KeyRef(label="ra-key")
        assert (keys.ca_key_label, keys.ra_key_label, keys.ra_in_token) == (
            "ca-key",
            "ra-key",
            True,
        )
        assert "s3cret" not in repr(keys)
        assert "s3cret" not in repr(config)

    def test_ra_outside_the_token(self) -> None:
        settings = Settings(
            **PKCS11, pkcs11_token_label="t", pkcs11_pin="1234", pkcs11_ra_in_token=False
        )
        keys = key_source(settings)
        assert keys.in_token("ca")
        assert not keys.in_token("ra")
        assert keys.token is not None and keys.token.config.ra_key is None


class TestValidation:
    def test_pkcs11_needs_a_token(self) -> None:
        with pytest.raises(TypeError, match="Pkcs11Token"):
            KeySource(backend="pkcs11")

    def test_unknown_backend(self) -> None:
        with pytest.raises(ValueError, match="unknown key backend"):
            KeySource(backend="vault")  # type: ignore[arg-type]

    def test_empty_label(self) -> None:
        with pytest.raises(ValueError, match="labels"):
            KeySource(backend="file", ca_key_label="")

    def test_file_backend_refuses_token_keys(self) -> None:
        with pytest.raises(CaMaterialError, match="key backend is 'file'"):
            KeySource(backend="file").load(TokenKeyEntry("ca", b"\x01"), where=Path("keys.json"))


def test_key_location_names_token_keys_by_label_and_file_keys_as_files(
    softhsm_keys: SoftHsmKeys,
) -> None:
    assert key_location(rsa_key("a file key")) == "file"
    assert key_location(softhsm_keys.rsa()) == "pkcs11 label='test-rsa-2048' id=01"


def test_generation_labels() -> None:
    keys = KeySource(backend="file", ca_key_label="ca", ra_key_label="ra")
    assert keys.label("ca", 0) == "ca"
    assert keys.label("ra", 0) == "ra"
    assert keys.label("ca", 3) == "ca-g3"
    assert keys.label("ra", 12) == "ra-g12"


def test_key_ids_are_stable_8_bytes_per_label() -> None:
    assert key_id_for_label("scepline-ca") == key_id_for_label("scepline-ca")
    assert len(key_id_for_label("scepline-ca")) == 8
    assert key_id_for_label("scepline-ca") != key_id_for_label("scepline-ca-g1")


class TestKeyIndex:
    def test_round_trip(self, tmp_path: Path) -> None:
        path = tmp_path / "keys.json"
        index = {"ca": TokenKeyEntry("scepline-ca", b"\x0a\x1b"), "ra": TokenKeyEntry("r", None)}
        write_key_index(path, index)  # type: ignore[arg-type]
        assert json.loads(path.read_text()) == {
            "ca": {"pkcs11_label": "scepline-ca", "pkcs11_id": "0a1b"},
            "ra": {"pkcs11_label": "r", "pkcs11_id": None},
        }
        assert read_key_index(path) == index
        assert oct(path.stat().st_mode & 0o777) == "0o644"

    def test_absent_is_empty(self, tmp_path: Path) -> None:
        assert read_key_index(tmp_path / "keys.json") == {}

    @pytest.mark.parametrize(
        "content",
        [
            "not json",
            "[]",
            '{"ca": {"pkcs11_id": "01"}}',
            '{"ca": {"pkcs11_label": "x", "pkcs11_id": "zz"}}',
        ],
    )
    def test_malformed_is_a_material_error(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "keys.json"
        path.write_text(content)
        with pytest.raises(CaMaterialError) as info:
            read_key_index(path)
        assert info.value.path == path
