"""CA generations on disk and the schedule of which one is active when.

::

    <data_dir>/ca/               generation 0: ca.crt ra.crt [ca.key ra.key] [keys.json]
    <data_dir>/ca/next/<n>/      generation n >= 1 (``stage_rollover``): the same files
                                 plus switch-at (ISO-8601 UTC) and next-ca.p7
    <data_dir>/ca/.lock          flock: exclusive to create, shared to read

Generation n is active from its switch-at on (generation 0 from the start): the
active generation at t is the highest n with switch_at <= t. Older generations
whose CA certificate has not expired are *previous*: their CA certificates stay
in GetCACert's chain, their RA keys still decrypt requests addressed to them and
their CA keys still sign their CRLs. A generation with switch_at > t is *staged*:
GetNextCACert serves its next-ca.p7.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import rsa

from scepline_shared.ca._common import require_aware_utc
from scepline_shared.ca.errors import CaError, CaMaterialError, CaNotInitialised
from scepline_shared.ca.keysource import KeySource, Role, TokenKeyEntry, read_key_index
from scepline_shared.ca.lab import ensure_generation
from scepline_shared.ca.material import CaMaterial, CaPaths, load_certificate, locked
from scepline_shared.keys import KeyFileError, KeyPair, SigningKey, load_private_key
from scepline_shared.keys.pkcs11 import HsmError, key_matches_certificate
from scepline_shared.log import get_logger
from scepline_shared.metrics import CA_NOT_AFTER, clear_labels

__all__ = [
    "BACKDATE",
    "CaGeneration",
    "CaSchedule",
    "CaScheduleWatcher",
    "ensure_lab_ca",
    "export_expiries",
    "generation_numbers",
    "init_ca",
    "load_ca_material",
    "load_ca_schedule",
    "load_key_pair",
    "read_generation",
    "read_schedule",
]

#: Certificates start this long before they are made: covers clock skew between
#: the host that creates them and the first clients.
BACKDATE = timedelta(hours=1)

_log = get_logger(__name__)


@dataclass(frozen=True)
class CaGeneration:
    """One CA + RA pair and when it takes over."""

    number: int
    material: CaMaterial  # ca + ra key pairs, chain empty
    switch_at: datetime | None  # None for generation 0
    next_ca_response: bytes | None  # the GetNextCACert body (None for generation 0)

    def __post_init__(self) -> None:
        if (self.number == 0) != (self.switch_at is None):
            raise ValueError("generation 0, and only it, has no switch time")
        if self.switch_at is not None:
            object.__setattr__(self, "switch_at", require_aware_utc(self.switch_at, "switch_at"))

    def starts_by(self, now: datetime) -> bool:
        return self.switch_at is None or self.switch_at <= now


@dataclass(frozen=True)
class CaSchedule:
    """All generations, and which is active, previous or staged at a given time.

    Pure and cheap: ``now`` is evaluated on each call, so a switch time passing
    needs no reload. ``now`` defaults to the current time.
    """

    generations: tuple[CaGeneration, ...]  # by number, starting with 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "generations", tuple(self.generations))
        numbers = [generation.number for generation in self.generations]
        if not numbers or numbers[0] != 0 or numbers != sorted(set(numbers)):
            raise ValueError(f"generations must be 0 first, then ascending: {numbers}")

    def active(self, now: datetime | None = None) -> CaGeneration:
        at = _now(now)
        return max((g for g in self.generations if g.starts_by(at)), key=lambda g: g.number)

    def previous(self, now: datetime | None = None) -> tuple[CaGeneration, ...]:
        """Generations older than the active one whose CA has not expired, newest first."""
        at = _now(now)
        active = self.active(at).number
        return tuple(
            g
            for g in reversed(self.generations)
            if g.number < active and g.material.ca.certificate.not_valid_after_utc > at
        )

    def staged(self, now: datetime | None = None) -> CaGeneration | None:
        """The next generation to take over after ``now``, if one is staged."""
        at = _now(now)
        waiting = [g for g in self.generations if not g.starts_by(at)]
        return min(waiting, key=lambda g: g.switch_at or at) if waiting else None

    def material(self, now: datetime | None = None) -> CaMaterial:
        """The active CA and RA; ``chain`` holds the previous CA certificates."""
        at = _now(now)
        active = self.active(at).material
        chain = tuple(g.material.ca.certificate for g in self.previous(at))
        return replace(active, chain=chain)

    def decryptors(self, now: datetime | None = None) -> tuple[KeyPair, ...]:
        """RA key pairs that may receive requests: active, previous, then staged."""
        at = _now(now)
        pairs = [self.active(at).material.ra]
        pairs += [g.material.ra for g in self.previous(at)]
        staged = self.staged(at)
        if staged is not None:
            pairs.append(staged.material.ra)
        return tuple(pairs)

    def generation(self, number: int) -> CaGeneration:
        for generation in self.generations:
            if generation.number == number:
                return generation
        raise KeyError(number)

    @property
    def latest(self) -> CaGeneration:
        return self.generations[-1]


def init_ca(
    data_dir: Path,
    keys: KeySource,
    *,
    ca_key_type: Literal["rsa", "ec"] = "rsa",
    ca_key_size: int | str | None = None,
    ca_common_name: str = "scepline lab CA",
    ra_common_name: str = "scepline lab RA",
    validity_days: int = 3650,
    import_ca_certificate: x509.Certificate | None = None,
) -> CaSchedule:
    """Create generation 0 where missing and return the schedule.

    File backend: keys in PEM files (the lab CA). pkcs11: the CA key (and the RA
    key when ``keys.ra_in_token``) generated inside the token, sensitive and never
    extractable, or taken from the token when a key already has the label.
    ``import_ca_certificate``: an existing CA certificate whose key is already in
    the token under ``keys.ca_key_label`` (or in ``ca.key`` for files); only the
    RA is created. ``ca_key_size``: RSA bits (default 3072) or EC curve (default
    P-256; also 384/521 or a curve name). Key parameters and names apply only on
    creation; an existing CA is reused as is.

    Safe when several processes start at once: creation runs under an exclusive
    flock on ``data_dir/ca/.lock`` and re-checks what exists after acquiring it.
    """
    if validity_days <= 0:
        raise ValueError(f"validity_days must be > 0, got {validity_days}")
    paths = CaPaths.under(data_dir)
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with locked(paths, exclusive=True):
        if import_ca_certificate is not None or not _complete(paths):
            ensure_generation(
                paths,
                keys,
                generation=0,
                ca_key_type=ca_key_type,
                ca_key_size=ca_key_size,
                ca_common_name=ca_common_name,
                ra_common_name=ra_common_name,
                not_before=now - BACKDATE,
                not_after=now + timedelta(days=validity_days),
                import_ca_certificate=import_ca_certificate,
            )
        # Re-read what is on disk: the same code path as every later start.
        return read_schedule(data_dir, keys, prove_keys=True)


def ensure_lab_ca(
    data_dir: Path,
    *,
    ca_key_type: Literal["rsa", "ec"] = "rsa",
    ca_key_size: int | str | None = None,
    ca_common_name: str = "scepline lab CA",
    ra_common_name: str = "scepline lab RA",
    validity_days: int = 3650,
) -> CaMaterial:
    """:func:`init_ca` with file keys, returning the active material (the lab CA)."""
    if ca_key_type not in ("rsa", "ec"):
        raise ValueError(f"unknown CA key type {ca_key_type!r} (expected 'rsa' or 'ec')")
    schedule = init_ca(
        data_dir,
        KeySource(backend="file"),
        ca_key_type=ca_key_type,
        ca_key_size=ca_key_size,
        ca_common_name=ca_common_name,
        ra_common_name=ra_common_name,
        validity_days=validity_days,
    )
    return schedule.material()


def load_ca_schedule(data_dir: Path, keys: KeySource, *, prove_keys: bool = True) -> CaSchedule:
    """Every generation under ``data_dir/ca``, cross-checked.

    Raises :class:`CaNotInitialised` (naming the first missing path) if the CA
    was never created and :class:`CaMaterialError` if it is unusable: a key that
    is not where ``keys.json`` says, a certificate that does not match its key,
    an RA not issued by its CA. Each token key must match its certificate; with
    ``prove_keys`` it also signs a challenge that the certificate's key verifies,
    so a signer never starts with a wrong key. Token errors (unreachable, wrong
    PIN) propagate as :class:`~scepline_shared.keys.pkcs11.HsmError`.

    Waits (shared lock) for a creation in progress in another process.
    """
    paths = CaPaths.under(data_dir)
    if not paths.directory.is_dir():
        raise CaNotInitialised(paths.directory)
    with locked(paths, exclusive=False):
        return read_schedule(data_dir, keys, prove_keys=prove_keys)


def load_ca_material(data_dir: Path) -> CaMaterial:
    """The active material of a file-backed CA (see :func:`load_ca_schedule`)."""
    return load_ca_schedule(data_dir, KeySource(backend="file")).material()


def read_generation(
    paths: CaPaths, keys: KeySource, number: int, *, prove_keys: bool = True
) -> CaGeneration:
    """Load one generation directory; the caller holds the lock (shared or exclusive)."""
    if not paths.directory.is_dir():
        raise CaNotInitialised(paths.directory)
    index = read_key_index(paths.keys_index)
    ca = _load_pair(paths, keys, index, "ca", prove_keys)
    ra = _load_pair(paths, keys, index, "ra", prove_keys)
    if not isinstance(ra.key, rsa.RSAPrivateKey):
        raise CaMaterialError(paths.ra_cert, "RA key must be RSA (SCEP key transport)")
    try:
        ra.certificate.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaMaterialError(paths.ra_cert, f"RA certificate not issued by the CA: {exc}") from exc
    switch_at: datetime | None = None
    response: bytes | None = None
    if number > 0:
        switch_at = _read_switch_at(paths.switch_at)
        try:
            response = paths.next_ca_response.read_bytes()
        except FileNotFoundError as exc:
            raise CaMaterialError(paths.next_ca_response, "missing") from exc
    return CaGeneration(
        number=number,
        material=CaMaterial(ca=ca, ra=ra),
        switch_at=switch_at,
        next_ca_response=response,
    )


def read_schedule(data_dir: Path, keys: KeySource, *, prove_keys: bool) -> CaSchedule:
    """Every generation, like :func:`load_ca_schedule`; the caller holds the CA lock."""
    generations = [
        read_generation(CaPaths.generation(data_dir, n), keys, n, prove_keys=prove_keys)
        for n in generation_numbers(data_dir)
    ]
    return CaSchedule(tuple(generations))


def generation_numbers(data_dir: Path) -> list[int]:
    """0 and the numbers of the directories under ``ca/next`` (others are ignored)."""
    next_directory = CaPaths.under(data_dir).next_directory
    try:
        names = os.listdir(next_directory)
    except FileNotFoundError:
        names = []
    # Staging happens in dot-directories that are renamed into place when complete.
    staged = sorted(int(name) for name in names if name.isdigit() and int(name) > 0)
    return [0, *staged]


def _complete(paths: CaPaths) -> bool:
    """Each role has a certificate and a key file or ``keys.json`` entry."""
    index = read_key_index(paths.keys_index)
    return all(
        paths.certificate(role).exists() and (role in index or paths.key(role).exists())
        for role in ("ca", "ra")
    )


def load_key_pair(paths: CaPaths, keys: KeySource, role: Role) -> KeyPair:
    """One role's key and certificate in a generation directory, without the
    signature that proves a token key (the OCSP responder signing with the CA key)."""
    return _load_pair(paths, keys, read_key_index(paths.keys_index), role, prove=False)


def _load_pair(
    paths: CaPaths,
    keys: KeySource,
    index: dict[Role, TokenKeyEntry],
    role: Role,
    prove: bool,
) -> KeyPair:
    entry = index.get(role)
    key: SigningKey
    if entry is not None:
        key = keys.load(entry, where=paths.keys_index)
        what = f"the token key {entry}"
    else:
        key_path = paths.key(role)
        if not key_path.exists():
            raise CaNotInitialised(key_path)
        try:
            key = load_private_key(key_path)
        except KeyFileError as exc:
            raise CaMaterialError(key_path, exc.reason) from exc
        what = key_path.name
    cert_path = paths.certificate(role)
    if not cert_path.exists():
        raise CaNotInitialised(cert_path)
    certificate = load_certificate(cert_path)
    try:
        pair = KeyPair(key=key, certificate=certificate)
    except ValueError as exc:
        raise CaMaterialError(cert_path, f"does not match {what}") from exc
    # A token's public key object could be paired with another private key; only
    # a signature proves the pairing (file keys carry their own public key).
    if entry is not None and prove and not key_matches_certificate(key, certificate, prove=True):
        raise CaMaterialError(cert_path, f"{what} does not sign for this certificate")
    return pair


def _read_switch_at(path: Path) -> datetime:
    try:
        text = path.read_text().strip()
    except FileNotFoundError as exc:
        raise CaMaterialError(path, "missing") from exc
    try:
        value = datetime.fromisoformat(text)
        return require_aware_utc(value, "switch-at")
    except ValueError as exc:
        raise CaMaterialError(path, f"not an ISO-8601 time with a UTC offset: {text!r}") from exc


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else require_aware_utc(now, "now")


def export_expiries(schedule: CaSchedule) -> None:
    """Each generation's CA and RA notAfter as the CA_NOT_AFTER gauge (only the
    generations this schedule holds)."""
    clear_labels(CA_NOT_AFTER)
    for generation in schedule.generations:
        for role, pair in (("ca", generation.material.ca), ("ra", generation.material.ra)):
            expiry = pair.certificate.not_valid_after_utc.timestamp()
            CA_NOT_AFTER.labels(str(generation.number), role).set(expiry)


class CaScheduleWatcher:
    """The schedule a long-running process holds, reloaded when the files change.

    Construction loads the schedule (blocking; raises what
    :func:`load_ca_schedule` raises, so a process does not start with a broken
    CA). :meth:`run` then polls the generation directories every
    ``check_interval`` seconds and reloads in a thread when their listing or
    modification times change; a failed reload keeps the previous schedule and
    logs a warning (retried at the next check). :meth:`current` is cheap; each
    reload returns a new object, so callers may cache derived data by identity.
    """

    def __init__(
        self,
        data_dir: Path,
        keys: KeySource,
        *,
        check_interval: float = 5.0,
        prove_keys: bool = True,
    ) -> None:
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval}")
        self._data_dir = Path(data_dir)
        self._keys = keys
        self._interval = check_interval
        self._prove = prove_keys
        self._snapshot = _snapshot(self._data_dir)
        self._schedule = load_ca_schedule(self._data_dir, keys, prove_keys=prove_keys)
        export_expiries(self._schedule)
        self._failure: str | None = None
        self._stopping = threading.Event()
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def current(self) -> CaSchedule:
        return self._schedule

    def check(self) -> bool:
        """One poll, synchronously: reload if the files changed. True if reloaded."""
        snapshot = _snapshot(self._data_dir)
        if snapshot == self._snapshot:
            return False
        try:
            schedule = load_ca_schedule(self._data_dir, self._keys, prove_keys=self._prove)
        except (CaError, HsmError, OSError, ValueError) as exc:  # keep serving what we have
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self._failure:
                _log.warning("CA reload failed; keeping the previous CA schedule", error=reason)
            self._failure = reason
            return False
        self._snapshot, self._schedule, self._failure = snapshot, schedule, None
        export_expiries(schedule)
        _log.info(
            "CA schedule reloaded",
            generations=len(schedule.generations),
            active=schedule.active().number,
        )
        return True

    async def run(self) -> None:
        """Poll until :meth:`stop` (or cancellation)."""
        wake = asyncio.Event()
        self._wake = (asyncio.get_running_loop(), wake)
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=self._interval)
                if self._stopping.is_set():
                    break
                await asyncio.to_thread(self.check)
        finally:
            self._wake = None

    def stop(self) -> None:
        """Ask :meth:`run` to return; safe from any thread."""
        self._stopping.set()
        wake = self._wake
        if wake is not None:
            loop, event = wake
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)


def _snapshot(data_dir: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Name, inode, size and mtime of every file in every generation directory.

    Files are replaced by rename, so a changed file has a new inode even when
    its mtime resolution hides the change.
    """
    root = CaPaths.under(data_dir)
    directories = [root.directory, root.next_directory]
    entries: list[tuple[str, int, int, int]] = []
    while directories:
        directory = directories.pop()
        try:
            children = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for child in children:
            # .lock, atomic writes' temp files and rollover staging directories.
            if child.name.startswith("."):
                continue
            try:
                info = child.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            entries.append((child.path, info.st_ino, info.st_size, info.st_mtime_ns))
            if (
                child.is_dir(follow_symlinks=False)
                and Path(child.path).parent == root.next_directory
            ):
                directories.append(Path(child.path))
    return tuple(sorted(entries))
