"""The ``scepline`` command: the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from scepline_shared.log import configure_logging
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    settings = Settings()
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    _use_uvloop()
    result: int = args.run(settings, args)
    return result


def _use_uvloop() -> None:
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
    ca.add_parser("init", help="create the CA and RA under SCEPLINE_DATA_DIR").set_defaults(
        run=_ca_init
    )
    ca.add_parser("show", help="print the CA and RA certificates").set_defaults(run=_ca_show)

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

    request = commands.add_parser("request", help="enrolment requests").add_subparsers()
    request_show = request.add_parser("show", help="a request's state and history")
    request_show.add_argument("transaction_id")
    request_show.set_defaults(run=_request_show)

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
    from .runtime import Embedded, serve_embedded

    def announce(product: Embedded) -> None:
        url = f"http://{settings.http_host}:{settings.http_port}/scep"
        print(f"scepline serving SCEP at {url}", flush=True)
        print(f"CA certificate: {settings.data_dir / 'ca' / 'ca.crt'}", flush=True)
        if product.challenge is not None:
            # Printed for the operator, never logged (logs must not carry challenges).
            print(f"Generated static challenge: {product.challenge}", flush=True)

    asyncio.run(serve_embedded(settings, announce))
    return 0


def _ingress(settings: Settings, _args: argparse.Namespace) -> int:
    from .runtime import serve_ingress

    asyncio.run(serve_ingress(settings))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from .runtime import serve_worker

    asyncio.run(serve_worker(settings, args.step))
    return 0


def _intune_sim(settings: Settings, args: argparse.Namespace) -> int:
    from .intune_sim import serve

    data_dir = args.data_dir or settings.data_dir / "intune-sim"
    serve(args.host, args.port, tls=not args.no_tls, data_dir=data_dir)
    return 0


def _ca_init(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.ca import ensure_lab_ca

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _print_material(
        ensure_lab_ca(
            settings.data_dir, ca_key_type=settings.ca_key_type, ca_key_size=settings.ca_key_size
        )
    )
    return 0


def _ca_show(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.ca import CaNotInitialised, load_ca_material

    try:
        material = load_ca_material(settings.data_dir)
    except CaNotInitialised as missing:
        print(f"no CA under {settings.data_dir}: run `scepline ca init` ({missing})")
        return 1
    _print_material(material)
    return 0


def _print_material(material: object) -> None:
    from cryptography.hazmat.primitives import hashes

    for role in ("ca", "ra"):
        certificate = getattr(material, role).certificate
        print(f"{role.upper()}: {certificate.subject.rfc4514_string()}")
        print(f"  serial     {certificate.serial_number:x}")
        print(f"  not after  {certificate.not_valid_after_utc.isoformat()}")
        print(f"  sha256     {certificate.fingerprint(hashes.SHA256()).hex()}")


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.store.migrate import upgrade_to_head

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(upgrade_to_head(settings.effective_database_url))
    print("database schema is at head")
    return 0


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
