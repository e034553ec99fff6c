"""Which CAs the responder answers for, read from the CA directory.

Every generation on disk (``ca/`` and ``ca/next/<n>/``) whose CA certificate
is still valid is an issuer; it signs with its delegated responder
(``ocsp.key``/``ocsp.crt``, issued by the signer) or, with
``SCEPLINE_OCSP_SIGNING=ca``, with the CA key. The files are checked every few
seconds and read again when one changes, so a renewed responder certificate or
a staged rollover is served without a restart. Only certificates are needed for
the delegated mode: a standalone responder never touches the CA key.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from scepline_shared.ca.keysource import KeySource
from scepline_shared.ca.material import CaPaths, load_certificate
from scepline_shared.ca.ocsp_responder import load_responder
from scepline_shared.ca.schedule import generation_numbers, load_key_pair
from scepline_shared.log import get_logger
from scepline_shared.ocsp.responder import OcspIssuer, ocsp_issuer

__all__ = ["ResponderDirectory"]

log = get_logger(__name__)

_Snapshot = tuple[tuple[str, int, int], ...]


class ResponderDirectory:
    """Callable: the issuers now (the same tuple object until something changed)."""

    def __init__(
        self,
        data_dir: Path,
        keys: KeySource,
        *,
        signing: Literal["delegated", "ca"] = "delegated",
        recheck_seconds: float = 5.0,
    ) -> None:
        self._data_dir = data_dir
        self._keys = keys
        self._signing = signing
        self._recheck = recheck_seconds
        self._checked = float("-inf")
        self._snapshot: _Snapshot | None = None
        self._issuers: tuple[OcspIssuer, ...] = ()

    def __call__(self) -> Sequence[OcspIssuer]:
        now = time.monotonic()
        if now - self._checked >= self._recheck:
            self._checked = now
            snapshot = self._files()
            if snapshot != self._snapshot or any(i.signer is None for i in self._issuers):
                self._issuers = self._load()
                self._snapshot = snapshot
        return self._issuers

    def _paths(self) -> list[CaPaths]:
        return [CaPaths.generation(self._data_dir, n) for n in generation_numbers(self._data_dir)]

    def _files(self) -> _Snapshot:
        found = []
        for paths in self._paths():
            for path in (paths.ca_cert, paths.ocsp_cert, paths.keys_index):
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                found.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(found)

    def _load(self) -> tuple[OcspIssuer, ...]:
        now = datetime.now(UTC)
        generations = [p for p in self._paths() if p.ca_cert.exists()]
        certificates = [load_certificate(p.ca_cert) for p in generations]
        # Certificates of ours the store does not hold: answered good under their CA.
        ours = certificates + [
            load_certificate(p.ra_cert) for p in generations if p.ra_cert.exists()
        ]
        issuers = []
        for paths, ca in zip(generations, certificates, strict=True):
            if ca.not_valid_after_utc <= now:
                continue
            try:
                responder = (
                    load_responder(paths, self._keys) if self._signing == "delegated" else None
                )
                ca_key = load_key_pair(paths, self._keys, "ca") if self._signing == "ca" else None
            except Exception:  # a key that cannot be read now: tryLater, read again soon
                log.exception("OCSP signing key unavailable", directory=str(paths.directory))
                responder = ca_key = None
            issuers.append(
                ocsp_issuer(
                    ca,
                    responder=responder,
                    ca_key=ca_key,
                    signing=self._signing,
                    our_ca_certificates=ours,
                )
            )
        return tuple(issuers)
