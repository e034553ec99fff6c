"""CA rollover (RFC 8894 §4.7 / §2.10): stage the next generation ahead of its switch.

The new CA and RA are made now, in ``<data_dir>/ca/next/<n>/``, together with the
GetNextCACert response signed by the current CA, so that clients can fetch and
trust the next CA before it takes over at ``switch_at``.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from scepline_shared.ca._common import require_aware_utc
from scepline_shared.ca.errors import CaError, CaNotInitialised
from scepline_shared.ca.keysource import KeySource
from scepline_shared.ca.lab import ensure_generation
from scepline_shared.ca.material import CaPaths, load_certificate, locked
from scepline_shared.ca.schedule import BACKDATE, CaGeneration, read_generation, read_schedule
from scepline_shared.keys import write_file_atomic
from scepline_shared.log import get_logger
from scepline_shared.scep.nextca import build_next_ca_response

__all__ = ["RolloverRefused", "stage_rollover"]

_log = get_logger(__name__)


class RolloverRefused(CaError, ValueError):
    """A rollover cannot be staged now; ``reason`` says why (safe to print)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def stage_rollover(
    data_dir: Path,
    keys: KeySource,
    *,
    switch_at: datetime,
    ca_key_type: Literal["rsa", "ec"] = "rsa",
    ca_key_size: int | str | None = None,
    ca_common_name: str = "scepline lab CA",
    ra_common_name: str = "scepline lab RA",
    validity_days: int = 3650,
    now: datetime | None = None,
) -> CaGeneration:
    """Create generation n = latest + 1, active from ``switch_at``.

    The new CA key is generated where ``keys`` says (token label
    ``<ca_key_label>-g<n>``), its self-signed certificate is valid from now
    (minus the usual backdating) until ``validity_days`` after ``switch_at``
    and carries the same extensions as the first CA; a new RSA RA is issued by it.
    ``next-ca.p7`` (the GetNextCACert body: new RA and CA certificates) is signed
    by the CA key active at ``now``.

    Refused (:class:`RolloverRefused`) while another generation is still waiting
    for its switch, and for a ``switch_at`` in the past. The generation is built
    in a hidden directory and renamed into place, so readers (and
    :class:`~scepline_shared.ca.schedule.CaScheduleWatcher`) never see half of it.
    """
    switch_at = require_aware_utc(switch_at, "switch_at")
    at = datetime.now(UTC) if now is None else require_aware_utc(now, "now")
    if switch_at < at:
        raise RolloverRefused(f"switch time {switch_at.isoformat()} is in the past")
    if validity_days <= 0:
        raise ValueError(f"validity_days must be > 0, got {validity_days}")
    root = CaPaths.under(data_dir)
    if not root.directory.is_dir():
        raise CaNotInitialised(root.directory)
    with locked(root, exclusive=True):
        schedule = read_schedule(data_dir, keys, prove_keys=True)
        pending = schedule.staged(at)
        if pending is not None:
            assert pending.switch_at is not None
            raise RolloverRefused(
                f"generation {pending.number} is already staged to switch at "
                f"{pending.switch_at.isoformat()}; stage another once it is active"
            )
        current = schedule.active(at).material.ca
        number = schedule.latest.number + 1
        root.next_directory.mkdir(mode=0o700, exist_ok=True)
        staging_directory = root.next_directory / f".staging-{number}"
        # Left by an interrupted run: its token keys are found again by label.
        shutil.rmtree(staging_directory, ignore_errors=True)
        staging_directory.mkdir(mode=0o700)
        staging = CaPaths.in_directory(staging_directory, lock=root.lock)
        ensure_generation(
            staging,
            keys,
            generation=number,
            ca_key_type=ca_key_type,
            ca_key_size=ca_key_size,
            ca_common_name=ca_common_name,
            ra_common_name=ra_common_name,
            not_before=at - BACKDATE,
            not_after=switch_at + timedelta(days=validity_days),
        )
        # The same bag as GetCACert (a DER SET OF, so clients pick by key usage).
        response = build_next_ca_response(
            [load_certificate(staging.ra_cert), load_certificate(staging.ca_cert)],
            current.key,
            current.certificate,
        )
        write_file_atomic(staging.next_ca_response, response, mode=0o644)
        write_file_atomic(staging.switch_at, f"{switch_at.isoformat()}\n".encode(), mode=0o644)
        final = CaPaths.generation(data_dir, number)
        os.rename(staging_directory, final.directory)
        _fsync_directory(root.next_directory)
        generation = read_generation(final, keys, number, prove_keys=True)
    _log.info(
        "CA rollover staged",
        generation=number,
        switch_at=switch_at.isoformat(),
        ca_subject=generation.material.ca.certificate.subject.rfc4514_string(),
    )
    return generation


def _fsync_directory(directory: Path) -> None:
    # The rename must survive a crash, or the staged CA would silently vanish.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
