"""The ``scepline`` command: the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from scepline_shared.log import configure_logging
from scepline_shared.pipeline import Step
from scepline_shared.private_files import private_directory
from scepline_shared.settings import Settings
from scepline_shared.store.certificates import REVOCATION_REASON_NAMES
from scepline_shared.store.models import RequestState

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    # A CA writes nothing meant for other local users: whatever a library or a
    # later change creates without an explicit mode stays private too.
    os.umask(0o077)
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    use_uvloop()
    result: int = args.run(settings, args)
    return result


def use_uvloop() -> None:
    """uvloop's event loop (libuv) costs a fraction of asyncio's per I/O event,
    and every request crosses HTTP, the broker and the store several times."""
    try:
        import uvloop
    except ImportError:  # optional: a platform without wheels still runs
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scepline", description="SCEP (RFC 8894) CA front end for Intune fleets"
    )
    commands = parser.add_subparsers(title="commands")

    commands.add_parser("up", help="run every service in one process").set_defaults(run=_up)
    commands.add_parser("ingress", help="run the SCEP HTTP service").set_defaults(run=_ingress)
    for step, name in (
        (Step.VALIDATE, "validator"),
        (Step.SIGN, "signer"),
        (Step.NOTIFY, "notifier"),
    ):
        worker = commands.add_parser(name, help=f"run a {name} worker")
        worker.set_defaults(run=_worker, step=step)

    ca = commands.add_parser("ca", help="the certificate authority").add_subparsers()
    init = ca.add_parser(
        "init",
        help="create the CA and RA (keys in files, or in the token with SCEPLINE_KEY_BACKEND="
        "pkcs11); idempotent",
    )
    init.add_argument(
        "--import-ca-cert",
        type=Path,
        metavar="PEM",
        help="use this existing CA certificate, whose key is already in the token under "
        "SCEPLINE_PKCS11_CA_KEY_LABEL (or in ca/ca.key with file keys); only the RA is created",
    )
    init.set_defaults(run=_ca_init)
    ca.add_parser(
        "show", help="print every CA generation: active, previous and staged"
    ).set_defaults(run=_ca_show)
    rollover = ca.add_parser(
        "rollover",
        help="stage the next CA (served by GetNextCACert until it takes over at --switch-at)",
    )
    when = rollover.add_mutually_exclusive_group(required=True)
    when.add_argument("--switch-at", help="ISO-8601 time with a zone, e.g. 2027-01-31T00:00Z")
    when.add_argument("--switch-in-days", type=float, help="days from now")
    rollover.set_defaults(run=_ca_rollover)
    journal = ca.add_parser(
        "journal",
        help="every signature the CA keys made (certificates, CRLs, CA and RA certificates), "
        "one a line with its serial in hex, oldest first",
    )
    journal.add_argument(
        "--check",
        action="store_true",
        help="reconcile it with the certificates and CRLs the store holds; exit 1 on a mismatch",
    )
    journal.add_argument("--json", action="store_true", help="one JSON object a line")
    journal.set_defaults(run=_ca_journal)

    cert = commands.add_parser("cert", help="issued certificates").add_subparsers()
    revoke = cert.add_parser(
        "revoke", help="revoke a certificate; the signer publishes the CRL with it shortly"
    )
    revoke.add_argument("serial", help="serial number in hex (as `scepline request show` prints)")
    revoke.add_argument(
        "--reason",
        default="unspecified",
        choices=sorted(REVOCATION_REASON_NAMES),
        help="RFC 5280 CRLReason",
    )
    revoke.set_defaults(run=_cert_revoke)
    show = cert.add_parser("show", help="a certificate: subject, validity, revocation, request")
    show.add_argument("serial", help="serial number in hex")
    show.set_defaults(run=_cert_show)
    find = cert.add_parser("find", help="certificates whose subject contains TEXT, newest first")
    find.add_argument("text", help="part of the subject DN, e.g. a device name (any case)")
    find.set_defaults(run=_cert_find)

    sim = commands.add_parser(
        "intune-sim", help="run the Intune simulator (fake Entra ID, Graph and Intune) on loopback"
    )
    sim.add_argument("--host", default="127.0.0.1", help="a loopback address")
    sim.add_argument("--port", type=int, default=8443, help="0 picks a free port")
    sim.add_argument("--no-tls", action="store_true", help="plain HTTP (MSAL insists on HTTPS)")
    sim.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where sim-ca.pem and sim.json go (default: SCEPLINE_DATA_DIR/intune-sim)",
    )
    sim.set_defaults(run=_intune_sim)

    db = commands.add_parser("db", help="the state store").add_subparsers()
    db.add_parser("upgrade", help="apply the schema migrations").set_defaults(run=_db_upgrade)
    prune = db.add_parser(
        "prune",
        help="delete final requests and superseded CRLs older than N days (certificates stay)",
    )
    prune.add_argument("--older-than-days", type=_at_least_one, required=True, metavar="N")
    prune.set_defaults(run=_db_prune)

    request = commands.add_parser("request", help="enrolment requests").add_subparsers()
    request_show = request.add_parser("show", help="a request's state and history")
    request_show.add_argument("transaction_id")
    request_show.set_defaults(run=_request_show)
    request_list = request.add_parser(
        "list", help="requests in one state, most recently changed first"
    )
    request_list.add_argument(
        "--state", choices=[s.value for s in RequestState], default=RequestState.RECEIVED.value
    )
    request_list.add_argument("--limit", type=_at_least_one, default=50)
    request_list.set_defaults(run=_request_list)

    dlq = commands.add_parser("dlq", help="the dead-letter queues").add_subparsers()
    for name, helptext, takes_ids in (
        ("list", "list dead letters of every step (or --step)", False),
        ("show", "show dead letters in full", True),
        ("replay", "send dead letters back to their step (all, or the given ids)", True),
        ("purge", "delete dead letters (all, or the given ids)", True),
    ):
        command = dlq.add_parser(name, help=helptext)
        command.add_argument("--step", choices=[s.value for s in Step], default=None)
        if takes_ids:
            command.add_argument("ids", nargs="*", help="dead-letter ids (from `dlq list`)")
        command.set_defaults(run=_dlq, action=name)
    return parser


def _up(settings: Settings, _args: argparse.Namespace) -> int:
    from .processes import serve_on_every_core, workers_for
    from .runtime import prepare_embedded, serve_embedded, up_health_port

    workers = workers_for(settings)
    challenge_file = None

    def announce(processes: int = 1) -> None:
        url = f"http://{settings.http_host}:{settings.http_port}/scep"
        print(f"scepline serving SCEP at {url} ({processes} process(es))", flush=True)
        health = f"http://{settings.health_host}:{up_health_port(settings)}"
        print(f"Metrics and health checks at {health}/metrics, /healthz, /readyz", flush=True)
        print(f"CA certificate: {settings.data_dir / 'ca' / 'ca.crt'}", flush=True)
        if challenge_file is not None:
            # The path, not the challenge: the console may well be a log.
            print(f"Static challenge (generated): {challenge_file}", flush=True)

    if workers == 1:

        def announce_one(product: object) -> None:
            nonlocal challenge_file
            challenge_file = getattr(product, "challenge_file", None)
            announce()

        asyncio.run(serve_embedded(settings, announce_one))
        return 0

    def prepare() -> None:
        nonlocal challenge_file
        challenge_file = prepare_embedded(settings)

    return serve_on_every_core(
        settings,
        workers,
        prepare,
        lambda: announce(workers),
        (settings.health_host, up_health_port(settings)),
    )


def _ingress(settings: Settings, _args: argparse.Namespace) -> int:
    from .runtime import serve_ingress

    asyncio.run(serve_ingress(settings))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from .runtime import serve_worker

    asyncio.run(serve_worker(settings, args.step))
    return 0


def _intune_sim(settings: Settings, args: argparse.Namespace) -> int:
    # A developer tool from devtools/, not shipped in the product's wheel.
    try:
        from scepline_devtools.intune_sim import serve
    except ModuleNotFoundError as error:
        if error.name is None or not error.name.startswith("scepline_devtools"):
            raise
        print(
            "scepline intune-sim: the Intune simulator is a developer tool, not installed"
            " here; in a checkout of the repository, `uv sync` installs it",
            file=sys.stderr,
        )
        return 2

    data_dir = args.data_dir or settings.data_dir / "intune-sim"
    serve(args.host, args.port, tls=not args.no_tls, data_dir=data_dir)
    return 0


def _ca_init(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.ca import CaError, init_ca, load_certificate
    from scepline_shared.configured import key_source
    from scepline_shared.keys.pkcs11 import HsmError

    private_directory(settings.data_dir)
    try:
        imported = load_certificate(args.import_ca_cert) if args.import_ca_cert else None
        schedule = init_ca(
            settings.data_dir,
            key_source(settings),
            ca_key_type=settings.ca_key_type,
            ca_key_size=settings.ca_key_size,
            ca_common_name=settings.ca_common_name,
            ra_common_name=settings.ra_common_name,
            validity_days=settings.ca_validity_days,
            import_ca_certificate=imported,
        )
    except (CaError, HsmError, OSError, ValueError) as error:
        print(f"scepline ca init: {error}", file=sys.stderr)
        return 1
    _print_schedule(schedule)
    _journal_ca(settings, schedule)
    return 0


def _ca_show(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.ca import CaError, CaNotInitialised, load_ca_schedule
    from scepline_shared.configured import key_source
    from scepline_shared.keys.pkcs11 import HsmError

    try:
        schedule = load_ca_schedule(settings.data_dir, key_source(settings))
    except CaNotInitialised as missing:
        print(f"no CA under {settings.data_dir}: run `scepline ca init` ({missing})")
        return 1
    except (CaError, HsmError, ValueError) as error:
        print(f"scepline ca show: {error}", file=sys.stderr)
        return 1
    _print_schedule(schedule)
    return 0


def _ca_rollover(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from scepline_shared.ca import CaError, load_ca_schedule, stage_rollover
    from scepline_shared.configured import key_source
    from scepline_shared.keys.pkcs11 import HsmError

    if args.switch_at is not None:
        try:
            switch_at = datetime.fromisoformat(args.switch_at.replace("Z", "+00:00"))
        except ValueError:
            print(f"--switch-at: not an ISO-8601 time: {args.switch_at!r}", file=sys.stderr)
            return 2
        if switch_at.tzinfo is None:
            print("--switch-at needs a time zone (e.g. Z or +01:00)", file=sys.stderr)
            return 2
    else:
        switch_at = datetime.now(UTC) + timedelta(days=args.switch_in_days)
    keys = key_source(settings)
    try:
        stage_rollover(
            settings.data_dir,
            keys,
            switch_at=switch_at,
            ca_key_type=settings.ca_key_type,
            ca_key_size=settings.ca_key_size,
            ca_common_name=settings.ca_common_name,
            ra_common_name=settings.ra_common_name,
            validity_days=settings.ca_validity_days,
        )
        schedule = load_ca_schedule(settings.data_dir, keys)
    except (CaError, HsmError, ValueError) as error:
        print(f"scepline ca rollover: {error}", file=sys.stderr)
        return 1
    _print_schedule(schedule)
    _journal_ca(settings, schedule)
    print(
        "Running services pick the staged CA up within seconds: GetNextCACert serves it "
        "now and it issues from the switch time on."
    )
    return 0


def _ca_journal(settings: Settings, args: argparse.Namespace) -> int:
    from .journal import print_journal

    return asyncio.run(print_journal(settings, check=args.check, as_json=args.json))


def _journal_ca(settings: Settings, schedule: object) -> None:
    """Record the CA and RA certificates just made in the issuance journal; a
    store that cannot be reached now is caught up by the signer when it starts."""
    from scepline_signer.main import journal_ca_certificates

    from .runtime import runtime

    async def journal() -> int:
        async with runtime(settings, with_broker=False) as rt:
            return await journal_ca_certificates(rt.repository, schedule)  # type: ignore[arg-type]

    try:
        added = asyncio.run(asyncio.wait_for(journal(), timeout=30))
    except Exception as error:  # noqa: BLE001 - the CA exists; journaling can wait
        print(f"issuance journal not updated now ({error}); the signer records it at start")
        return
    if added:
        print(f"issuance journal: {added} CA/RA certificate(s) recorded")


def _print_schedule(schedule: object) -> None:
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import hashes

    from scepline_shared.ca import CaSchedule
    from scepline_shared.ca.keysource import key_location

    assert isinstance(schedule, CaSchedule)
    now = datetime.now(UTC)
    active = schedule.active(now)
    previous = {g.number for g in schedule.previous(now)}
    staged = schedule.staged(now)
    for generation in schedule.generations:
        if generation is active:
            status = "active"
        elif staged is not None and generation.number == staged.number:
            status = f"staged, takes over at {generation.switch_at.isoformat()}"  # type: ignore[union-attr]
        elif generation.number in previous:
            status = "previous (still in GetCACert's chain, signs its CRL)"
        else:
            status = "retired"
        print(f"generation {generation.number}: {status}")
        for role in ("ca", "ra"):
            pair = getattr(generation.material, role)
            certificate = pair.certificate
            print(f"  {role.upper()}: {certificate.subject.rfc4514_string()}")
            print(f"    key        {key_location(pair.key)}")
            print(f"    serial     {certificate.serial_number:x}")
            print(f"    not after  {certificate.not_valid_after_utc.isoformat()}")
            print(f"    sha256     {certificate.fingerprint(hashes.SHA256()).hex()}")


def _cert_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import revoke_certificate

    return asyncio.run(
        revoke_certificate(settings, args.serial, REVOCATION_REASON_NAMES[args.reason])
    )


def _cert_show(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import show_certificate

    return asyncio.run(show_certificate(settings, args.serial))


def _cert_find(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import find_certificates

    return asyncio.run(find_certificates(settings, args.text))


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.store.migrate import upgrade_to_head

    private_directory(settings.data_dir)
    asyncio.run(upgrade_to_head(settings.effective_database_url))
    print("database schema is at head")
    return 0


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


def _db_prune(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import prune_store

    return asyncio.run(prune_store(settings, args.older_than_days))


def _request_list(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import list_requests

    return asyncio.run(list_requests(settings, RequestState(args.state), args.limit))


def _request_show(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import show_request

    return asyncio.run(show_request(settings, args.transaction_id))


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import dead_letters

    steps = [Step(args.step)] if args.step else list(Step)
    ids = getattr(args, "ids", None) or None
    return asyncio.run(dead_letters(settings, args.action, steps, ids))


if __name__ == "__main__":
    sys.exit(main())
