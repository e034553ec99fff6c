"""keys.file: PEM PKCS#8 round trips, 0600, atomic no-clobber writes, generation."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scepline_shared.keys import (
    KeyFileError,
    generate_private_key,
    load_private_key,
    save_private_key,
    spki_sha256_hex,
    write_file_atomic,
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return generate_private_key("rsa", 2048)  # type: ignore[return-value]


class TestGenerate:
    def test_rsa(self, rsa_key: rsa.RSAPrivateKey) -> None:
        assert isinstance(rsa_key, rsa.RSAPrivateKey)
        assert rsa_key.key_size == 2048
        assert rsa_key.public_key().public_numbers().e == 65537

    @pytest.mark.parametrize(
        ("spec", "curve"),
        [
            (256, "secp256r1"),
            ("P-256", "secp256r1"),
            ("prime256v1", "secp256r1"),
            ("P-384", "secp384r1"),
            ("secp521r1", "secp521r1"),
            (ec.SECP384R1(), "secp384r1"),
        ],
    )
    def test_ec(self, spec: int | str | ec.EllipticCurve, curve: str) -> None:
        key = generate_private_key("ec", spec)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == curve

    @pytest.mark.parametrize(
        ("kind", "spec", "error"),
        [
            ("rsa", 1024, ValueError),
            ("rsa", "2048", TypeError),
            ("ec", 255, ValueError),
            ("ec", "P-999", ValueError),
            ("dsa", 2048, ValueError),
        ],
    )
    def test_refused(self, kind: str, spec: object, error: type) -> None:
        with pytest.raises(error):
            generate_private_key(kind, spec)  # type: ignore[arg-type]


class TestSaveLoad:
    def test_round_trip_pkcs8_mode_0600(self, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
        path = tmp_path / "k.pem"
        old_umask = os.umask(0)  # even a permissive umask must not widen the mode
        try:
            save_private_key(path, rsa_key)
        finally:
            os.umask(old_umask)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
        loaded = load_private_key(path)
        assert spki_sha256_hex(loaded.public_key()) == spki_sha256_hex(rsa_key.public_key())
        assert list(tmp_path.iterdir()) == [path]  # no temp file left behind

    def test_ec_round_trip(self, tmp_path: Path) -> None:
        key = generate_private_key("ec", "P-256")
        save_private_key(tmp_path / "ec.pem", key)
        loaded = load_private_key(tmp_path / "ec.pem")
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        assert loaded.private_numbers() == key.private_numbers()

    def test_password(self, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
        path = tmp_path / "k.pem"
        save_private_key(path, rsa_key, password=b"s3cret")
        assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
        assert load_private_key(path, password=b"s3cret").key_size == 2048  # type: ignore[union-attr]
        with pytest.raises(KeyFileError):
            load_private_key(path, password=b"wrong")
        with pytest.raises(KeyFileError):
            load_private_key(path)

    def test_never_clobbers_by_default(self, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
        path = tmp_path / "k.pem"
        save_private_key(path, rsa_key)
        before = path.read_bytes()
        other = generate_private_key("ec", 256)
        with pytest.raises(FileExistsError):
            save_private_key(path, other)
        assert path.read_bytes() == before
        save_private_key(path, other, overwrite=True)
        assert isinstance(load_private_key(path), ec.EllipticCurvePrivateKey)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(list(tmp_path.iterdir())) == 1

    def test_racing_writers_leave_exactly_one_whole_key(self, tmp_path: Path) -> None:
        path = tmp_path / "race.pem"
        keys = [generate_private_key("ec", 256) for _ in range(8)]
        barrier = threading.Barrier(len(keys))
        outcomes: list[str] = []

        def write(key: ec.EllipticCurvePrivateKey) -> None:
            barrier.wait()
            try:
                save_private_key(path, key)
                outcomes.append(spki_sha256_hex(key.public_key()))
            except FileExistsError:
                outcomes.append("exists")

        threads = [threading.Thread(target=write, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes if o != "exists"]
        assert len(winners) == 1
        assert spki_sha256_hex(load_private_key(path).public_key()) == winners[0]
        assert list(tmp_path.iterdir()) == [path]

    def test_failed_write_leaves_nothing(self, tmp_path: Path) -> None:
        path = tmp_path / "k.pem"
        with (
            mock.patch("os.link", side_effect=OSError(errno.EIO, "I/O error")),
            pytest.raises(OSError, match="I/O error"),
        ):
            write_file_atomic(path, b"data")
        assert list(tmp_path.iterdir()) == []

    def test_filesystem_without_hard_links(self, tmp_path: Path) -> None:
        path = tmp_path / "f"
        with mock.patch("os.link", side_effect=OSError(errno.EPERM, "no links")):
            write_file_atomic(path, b"one", mode=0o644)
            with pytest.raises(FileExistsError):
                write_file_atomic(path, b"two")
        assert path.read_bytes() == b"one"
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


class TestLoadErrors:
    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError):
            load_private_key(tmp_path / "absent.pem")

    def test_garbage(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.pem"
        path.write_bytes(b"not a key")
        with pytest.raises(KeyFileError) as info:
            load_private_key(path)
        assert info.value.path == path
        assert isinstance(info.value, ValueError)

    def test_unsupported_key_type(self, tmp_path: Path) -> None:
        path = tmp_path / "ed.pem"
        path.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        with pytest.raises(KeyFileError, match="unsupported key type"):
            load_private_key(path)

    def test_traditional_rsa_pem_is_accepted(
        self, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
    ) -> None:
        path = tmp_path / "trad.pem"
        path.write_bytes(
            rsa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        assert load_private_key(path).public_key() == rsa_key.public_key()
