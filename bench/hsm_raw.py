"""Raw PKCS#11 signing rate: the ceiling any HSM-backed signer can reach.

``bench_raw_sign_rate`` runs C_Sign in a tight loop on the token's own worker
thread and session (CKM_RSA_PKCS over a SHA-256 DigestInfo, or CKM_ECDSA over a
SHA-256 digest): no executor hop, no hashing, no DER, single thread. Compare a
signer's throughput against it; ``bench_adapter_sign_rate`` shows what the
cryptography adapter adds on top.

With no arguments a throwaway SoftHSM2 token is created and RSA-2048, RSA-3072
and P-256 keys are generated in it; with ``--module`` an existing key is measured:

    uv run python bench/hsm_raw.py --seconds 3
    uv run python bench/hsm_raw.py --module /opt/vendor/libpkcs11.so \\
        --token-label scep-ca --pin-file /run/secrets/pin --key-label ca-rsa
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from pkcs11 import Mechanism, ObjectClass

from scepline_shared.keys.pkcs11 import (
    Pkcs11Config,
    Pkcs11EcPrivateKey,
    Pkcs11PrivateKey,
    Pkcs11Token,
    generate_ca_keys,
    load_private_key,
)
from scepline_shared.keys.pkcs11_keys import DIGEST_INFO_PREFIXES, find_key

__all__ = ["bench_adapter_sign_rate", "bench_raw_sign_rate"]

SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
_DIGEST = bytes(range(32))  # any 32 bytes: the token does not care what it signs


def bench_raw_sign_rate(token: Pkcs11Token, key: Pkcs11PrivateKey, seconds: float = 3) -> float:
    """C_Sign operations per second on one thread (one warm-up op not counted)."""
    if isinstance(key, Pkcs11EcPrivateKey):
        mechanism, payload = Mechanism.ECDSA, _DIGEST
    else:
        mechanism, payload = Mechanism.RSA_PKCS, DIGEST_INFO_PREFIXES["sha256"] + _DIGEST

    def loop(session: pkcs11.Session) -> float:
        private = find_key(token, session, ObjectClass.PRIVATE_KEY, key.ref)
        private.sign(payload, mechanism=mechanism)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            private.sign(payload, mechanism=mechanism)
            count += 1
            if count % 16 == 0 and time.perf_counter() >= deadline:
                break
        return count / (time.perf_counter() - start)

    return token.run(loop)


def bench_adapter_sign_rate(key: Pkcs11PrivateKey, seconds: float = 3) -> float:
    """``key.sign(...)`` per second from one caller thread (hash, hop, C_Sign, DER)."""
    data = b"x" * 256

    def sign() -> None:
        if isinstance(key, Pkcs11EcPrivateKey):
            key.sign(data, ec.ECDSA(hashes.SHA256()))
        else:
            key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    sign()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sign()
        count += 1
    return count / (time.perf_counter() - start)


def _softhsm_config(directory: Path) -> Pkcs11Config:
    # SOFTHSM2_CONF must be set before the first pkcs11.lib() in this process.
    (directory / "tokens").mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", "bench"),
            *("--so-pin", "5678", "--pin", "1234"),
        ],
        check=True,
        capture_output=True,
    )
    return Pkcs11Config(module=SOFTHSM_MODULE, token_label="bench", pin="1234")


def _report(name: str, token: Pkcs11Token, key: Pkcs11PrivateKey, seconds: float) -> None:
    raw = bench_raw_sign_rate(token, key, seconds)
    adapter = bench_adapter_sign_rate(key, seconds)
    print(f"{name:<10} raw C_Sign {raw:8.0f}/s   adapter key.sign {adapter:8.0f}/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--module", help="PKCS#11 module; default: a temporary SoftHSM2 token")
    parser.add_argument("--token-label")
    parser.add_argument("--pin-file", type=Path)
    parser.add_argument("--key-label")
    args = parser.parse_args()

    if args.module:
        config = Pkcs11Config(
            module=args.module,
            token_label=args.token_label,
            pin=args.pin_file.read_text().strip(),
        )
        with Pkcs11Token(config) as token:
            _report(args.key_label, token, load_private_key(token, args.key_label), args.seconds)
        return

    specs = [("RSA-2048", "rsa", 2048), ("RSA-3072", "rsa", 3072), ("P-256", "ec", 256)]
    with (
        tempfile.TemporaryDirectory() as directory,
        Pkcs11Token(_softhsm_config(Path(directory))) as token,
    ):
        for number, (name, kind, size) in enumerate(specs, start=1):
            key = generate_ca_keys(
                token, key_type=kind, size_or_curve=size, label=name, id=bytes([number])
            )
            _report(name, token, key, args.seconds)


if __name__ == "__main__":
    main()
