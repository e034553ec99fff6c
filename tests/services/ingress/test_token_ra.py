"""An RA key held in a PKCS#11 token (SoftHSM2): full PKCSReq→CertRep through the
app, its token calls made off the event loop, and the RFC 3218 path for a
corrupted content key."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import pytest

from scepline_devtools.scep_client import build_csr
from scepline_ingress.identity import ScepIdentity, blocks_in_token
from scepline_shared.ca.lab import ra_certificate
from scepline_shared.keys.pkcs11 import Pkcs11RsaPrivateKey, Pkcs11Token, generate_ca_keys
from scepline_shared.scep import FailInfo, PkiStatus
from scepline_shared.scep import message as scep_message
from tests.fixtures.scepline import CHALLENGE, RunningScepline
from tests.services.ingress.support import PkcsReq, ingress_beside, lab_validity
from tests.support.pki import name, requester


@pytest.fixture
def token_ra_key(softhsm_token: Pkcs11Token) -> Pkcs11RsaPrivateKey:
    """A fresh RSA key in the session token (one token per pytest process)."""
    unique = uuid.uuid4().hex[:8]
    key = generate_ca_keys(
        softhsm_token, key_type="rsa", size_or_curve=2048, label=f"ingress-ra-{unique}", id=unique
    )
    assert isinstance(key, Pkcs11RsaPrivateKey)
    return key


def token_identity(product: RunningScepline, key: Pkcs11RsaPrivateKey) -> ScepIdentity:
    material = product.embedded.material
    certificate = ra_certificate(material.ca, key, "scepline token RA", **lab_validity())
    return ScepIdentity(
        ra_key=key, ra_certificate=certificate, ca_certificate=material.ca.certificate
    )


@pytest.fixture
def calling_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """(operation, thread id) of every decrypt and sign made with a token RSA key."""
    calls: list[tuple[str, int]] = []
    decrypt, sign = Pkcs11RsaPrivateKey.decrypt, Pkcs11RsaPrivateKey.sign

    def recording_decrypt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(("decrypt", threading.get_ident()))
        return decrypt(self, *args, **kwargs)

    def recording_sign(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(("sign", threading.get_ident()))
        return sign(self, *args, **kwargs)

    monkeypatch.setattr(Pkcs11RsaPrivateKey, "decrypt", recording_decrypt)
    monkeypatch.setattr(Pkcs11RsaPrivateKey, "sign", recording_sign)
    yield calls


async def test_enrolment_with_a_token_ra_key_off_the_event_loop(
    scepline: RunningScepline,
    token_ra_key: Pkcs11RsaPrivateKey,
    calling_threads: list[tuple[str, int]],
):
    identity = token_identity(scepline, token_ra_key)
    assert blocks_in_token(identity.ra_key) and identity.decrypt_blocks
    async with ingress_beside(scepline, identity) as ingress:
        client = ingress.client()
        await client.get_ca_certs()
        assert client.ra_certificate == identity.ra_certificate
        who = requester("token-ra")
        csr = build_csr(who.key, name("token-ra"), challenge=CHALLENGE)
        rep = await client.enrol(csr, who, transaction_id="tx-token-ra")
        loop_thread = threading.get_ident()

    assert rep.status is PkiStatus.SUCCESS  # read_cert_rep verified the token RA's signature
    rep.certificates[0].verify_directly_issued_by(scepline.embedded.material.ca.certificate)
    operations = [operation for operation, _ in calling_threads]
    assert "decrypt" in operations and "sign" in operations
    assert all(thread != loop_thread for _, thread in calling_threads)


async def test_concurrent_enrolments_with_a_token_ra_key(
    scepline: RunningScepline, token_ra_key: Pkcs11RsaPrivateKey
):
    async with ingress_beside(scepline, token_identity(scepline, token_ra_key)) as ingress:
        client = ingress.client()
        await client.get_ca_certs()

        async def one(index: int) -> PkiStatus:
            who = requester(f"token-many-{index % 4}")
            csr = build_csr(who.key, name(f"token-many-{index}"), challenge=CHALLENGE)
            rep = await client.enrol(csr, who, transaction_id=f"tx-token-many-{index}")
            return rep.status

        statuses = await asyncio.gather(*(one(index) for index in range(12)))
    assert set(statuses) == {PkiStatus.SUCCESS}


async def test_a_corrupted_content_key_for_a_token_ra_is_a_generic_failure(
    scepline: RunningScepline,
    token_ra_key: Pkcs11RsaPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
):
    """SoftHSM reports bad PKCS#1 padding as CKR_GENERAL_ERROR; the client must
    still get the one generic answer (RFC 3218), never a 5xx."""
    identity = token_identity(scepline, token_ra_key)
    encrypt = scep_message.encrypt_enveloped_data

    def corrupting(*args, **kwargs):  # type: ignore[no-untyped-def]
        envelope = bytearray(encrypt(*args, **kwargs))
        start = envelope.index(b"\x04\x82\x01\x00") + 4  # the 256-byte encrypted key
        envelope[start + 100] ^= 0xFF
        return bytes(envelope)

    async with ingress_beside(scepline, identity) as ingress:
        monkeypatch.setattr(scep_message, "encrypt_enveloped_data", corrupting)
        request = PkcsReq.to(identity.ra_certificate, "token-corrupt", "tx-token-corrupt")
        monkeypatch.undo()
        response = await ingress.client().send(request.der)
    rep = request.reply(response, signed_by=identity.ra_certificate)
    assert rep.status is PkiStatus.FAILURE
    # Random content key: almost always a padding error, 1 in ~256 garbage that is no CSR.
    assert rep.fail_info in (FailInfo.BAD_MESSAGE_CHECK, FailInfo.BAD_REQUEST)


def test_file_keys_stay_inline(scepline: RunningScepline):
    material = scepline.embedded.material
    assert not blocks_in_token(material.ra.key)
    assert not blocks_in_token(material.ca.key)
