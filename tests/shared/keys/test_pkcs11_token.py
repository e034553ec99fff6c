"""Pkcs11Token: configuration, one locked session, async, reconnect and fork.

SoftHSM2 under python-pkcs11 crashes the process on concurrent sessions
(docs/specs/hsm-and-cms.md, "One session at a time"); these tests are the evidence that it
does not here.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from pkcs11 import exceptions as p11e

from scepline_shared.keys.pkcs11 import (
    HsmError,
    Pkcs11Config,
    Pkcs11KeyRef,
    Pkcs11RsaPrivateKey,
    Pkcs11Token,
    TokenUnavailable,
    load_private_key,
)
from tests.fixtures.softhsm import SoftHsmKeys

MESSAGE = b"to be signed inside the token"


def verify_rsa_pkcs1(key: rsa.RSAPrivateKey, signature: bytes, data: bytes = MESSAGE) -> None:
    key.public_key().verify(signature, data, padding.PKCS1v15(), hashes.SHA256())


# -- configuration ---------------------------------------------------------------


def test_pin_never_appears_in_repr():
    config = Pkcs11Config(module="/x.so", token_label="ca", pin="s3cret-pin")
    assert "s3cret-pin" not in repr(config)
    assert "s3cret-pin" not in str(config)
    assert "s3cret-pin" not in repr(Pkcs11Token(config))


def test_key_ref_takes_hex_ids_and_needs_a_label_or_id():
    assert Pkcs11KeyRef(id="0a:1B").id == b"\x0a\x1b"
    assert Pkcs11KeyRef(label="ca", id=b"\x01").id == b"\x01"
    with pytest.raises(ValueError, match="label or an id"):
        Pkcs11KeyRef()
    with pytest.raises(ValueError, match="not hex"):
        Pkcs11KeyRef(id="xyz")


def test_unknown_token_label_is_unavailable(softhsm_config: Pkcs11Config):
    token = Pkcs11Token(replace(softhsm_config, token_label="no-such-token"))
    with pytest.raises(TokenUnavailable, match="no-such-token"):
        token.open()
    token.close()


def test_missing_module_is_a_configuration_error(softhsm_config: Pkcs11Config):
    token = Pkcs11Token(replace(softhsm_config, module="/nonexistent/libpkcs11.so"))
    with pytest.raises(HsmError, match="cannot load PKCS#11 module") as caught:
        token.open()
    assert not isinstance(caught.value, TokenUnavailable)
    token.close()


# -- threads, async, dropped sessions, fork --------------------------------------


def test_eight_threads_signing_concurrently_all_verify(softhsm_keys: SoftHsmKeys):
    """SoftHSM segfaults on concurrent sessions ("One session at a time"); the lock
    prevents it."""
    rsa_token_key = softhsm_keys.rsa()
    ec_token_key = softhsm_keys.ec()
    start = threading.Barrier(8)

    def worker(index: int) -> list[tuple[bytes, bytes, bool]]:
        start.wait()
        results = []
        for round_ in range(50):
            data = f"{index}-{round_}".encode()
            if index % 2:
                results.append((data, ec_token_key.sign(data, ec.ECDSA(hashes.SHA256())), False))
            else:
                results.append(
                    (data, rsa_token_key.sign(data, padding.PKCS1v15(), hashes.SHA256()), True)
                )
        return results

    with ThreadPoolExecutor(8) as pool:
        batches = list(pool.map(worker, range(8)))
    assert sum(len(batch) for batch in batches) == 400
    for batch in batches:
        for data, signature, is_rsa in batch:
            if is_rsa:
                verify_rsa_pkcs1(rsa_token_key, signature, data)
            else:
                ec_token_key.public_key().verify(signature, data, ec.ECDSA(hashes.SHA256()))


def test_two_token_objects_share_the_process_lock(
    softhsm_config: Pkcs11Config, softhsm_keys: SoftHsmKeys
):
    """Two Pkcs11Token objects mean two sessions on two worker threads: still serialised."""
    first = softhsm_keys.rsa()
    with Pkcs11Token(softhsm_config) as other_token:
        second = load_private_key(other_token, id=first.ref.id)

        def worker(key: Pkcs11RsaPrivateKey) -> list[bytes]:
            return [key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()) for _ in range(50)]

        with ThreadPoolExecutor(4) as pool:
            batches = list(pool.map(worker, [first, second, first, second]))
    for signature in (s for batch in batches for s in batch):
        verify_rsa_pkcs1(first, signature)
    # The second object opened its session without logging in, so closing it
    # did not log the first one out.
    verify_rsa_pkcs1(first, first.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))


async def test_async_sign_and_decrypt_keep_the_loop_free(softhsm_keys: SoftHsmKeys):
    key = softhsm_keys.rsa("rsa-3072")
    ec_token_key = softhsm_keys.ec()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    signatures = await asyncio.gather(
        *(key.async_sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()) for _ in range(20)),
        *(ec_token_key.async_sign(MESSAGE, ec.ECDSA(hashes.SHA256())) for _ in range(20)),
    )
    ciphertext = key.public_key().encrypt(b"k" * 16, padding.PKCS1v15())
    plaintext = await key.async_decrypt(ciphertext, padding.PKCS1v15())
    tick_task.cancel()
    assert plaintext == b"k" * 16
    for signature in signatures[:20]:
        verify_rsa_pkcs1(key, signature)
    for signature in signatures[20:]:
        ec_token_key.public_key().verify(signature, MESSAGE, ec.ECDSA(hashes.SHA256()))
    assert ticks > 20  # the loop kept running while the token worked


# python-pkcs11 finalises a search on the dead session in __del__ and reports
# that through sys.unraisablehook; the reconnect itself is what we check.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("operation", ["sign", "decrypt", "load"])
def test_a_session_closed_behind_our_back_is_reopened(
    softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys, operation
):
    """docs/specs/hsm-and-cms.md, "Lost sessions": close (and log out) the raw session; the
    next call reconnects."""
    key = softhsm_keys.rsa()
    key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())  # the handle is cached now
    softhsm_token.run(lambda session: session.close())
    if operation == "sign":
        verify_rsa_pkcs1(key, key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))
    elif operation == "decrypt":
        ciphertext = key.public_key().encrypt(b"after reconnect", padding.PKCS1v15())
        assert key.decrypt(ciphertext, padding.PKCS1v15()) == b"after reconnect"
    else:
        assert load_private_key(softhsm_token, id=key.ref.id).public_key() == key.public_key()


def test_a_session_that_stays_lost_is_token_unavailable(
    softhsm_token: Pkcs11Token, softhsm_keys: SoftHsmKeys
):
    calls = 0

    def always_lost(session: pkcs11.Session) -> None:
        nonlocal calls
        calls += 1
        raise p11e.SessionHandleInvalid()

    with pytest.raises(TokenUnavailable, match="after reconnecting"):
        softhsm_token.run(always_lost)
    assert calls == 2  # one retry, no more
    key = softhsm_keys.rsa()
    verify_rsa_pkcs1(key, key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))


def test_fork_child_opens_its_own_session(softhsm_config: Pkcs11Config, softhsm_keys: SoftHsmKeys):
    """docs/specs/hsm-and-cms.md, "After fork": a child may not reuse the parent's session; a
    new token works."""
    parent_key = softhsm_keys.rsa()
    parent_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())  # parent session open
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_end)
            try:
                parent_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256())
                report = b"inherited session was used"
            except HsmError as exc:
                assert "before a fork" in str(exc)
                with Pkcs11Token(softhsm_config) as token:
                    key = load_private_key(token, id=parent_key.ref.id)
                    verify_rsa_pkcs1(key, key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))
                report, code = b"ok", 0
            os.write(write_end, report)
        except BaseException as exc:
            os.write(write_end, repr(exc).encode()[:500])
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report == b"ok"
    verify_rsa_pkcs1(parent_key, parent_key.sign(MESSAGE, padding.PKCS1v15(), hashes.SHA256()))


def test_closed_token_refuses_work(softhsm_config: Pkcs11Config):
    token = Pkcs11Token(softhsm_config)
    token.close()
    token.close()  # idempotent
    with pytest.raises(HsmError, match="closed"):
        token.run(lambda session: None)
