"""The ``scepline`` command: the only place that reads the environment."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from scepline_shared.log import configure_logging
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
    result: int = args.run(settings, args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scepline", description="SCEP (RFC 8894) CA front end for Intune fleets"
    )
    commands = parser.add_subparsers(title="commands")

    up = commands.add_parser("up", help="run every service in one process")
    up.set_defaults(run=_up)

    ca = commands.add_parser("ca", help="the certificate authority").add_subparsers()
    ca_init = ca.add_parser("init", help="create the CA and RA under SCEPLINE_DATA_DIR")
    ca_init.set_defaults(run=_ca_init)
    ca_show = ca.add_parser("show", help="print the CA and RA certificates")
    ca_show.set_defaults(run=_ca_show)

    db = commands.add_parser("db", help="the state store").add_subparsers()
    db_upgrade = db.add_parser("upgrade", help="apply the schema migrations")
    db_upgrade.set_defaults(run=_db_upgrade)

    request = commands.add_parser("request", help="enrolment requests").add_subparsers()
    request_show = request.add_parser("show", help="a request's state and history")
    request_show.add_argument("transaction_id")
    request_show.set_defaults(run=_request_show)
    return parser


def _up(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from .embedded import build_embedded_app

    embedded = asyncio.run(build_embedded_app(settings))
    url = f"http://{settings.http_host}:{settings.http_port}/scep"
    print(f"scepline serving SCEP at {url}", flush=True)
    print(f"CA certificate: {settings.data_dir / 'ca' / 'ca.crt'}", flush=True)
    if embedded.challenge is not None:
        # Printed for the operator, never logged (logs must not carry challenges).
        print(f"Generated static challenge: {embedded.challenge}", flush=True)
    config = uvicorn.Config(
        embedded.app,
        host=settings.http_host,
        port=settings.http_port,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0


def _ca_init(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.ca import ensure_lab_ca

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    material = ensure_lab_ca(settings.data_dir)
    _print_material(material)
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
    from scepline_shared.store.database import create_engine_for, session_factory
    from scepline_shared.store.repository import RequestRepository

    async def show() -> int:
        engine = create_engine_for(settings.effective_database_url)
        try:
            repository = RequestRepository(session_factory(engine))
            request = await repository.get(args.transaction_id)
            if request is None:
                print(f"no request with transaction id {args.transaction_id!r}")
                return 1
            print(f"transaction  {request.transaction_id}")
            print(f"state        {request.state}  (notify: {request.notify_state})")
            print(f"subject      {request.subject}")
            if request.cert_serial:
                print(f"certificate  serial {request.cert_serial}")
            if request.fail_reason:
                print(f"failure      {request.fail_reason} (failInfo {request.fail_info})")
            for event in await repository.history(args.transaction_id):
                print(
                    f"  {event.at.isoformat()}  {event.from_state} -> {event.to_state}"
                    f"  {event.detail}"
                )
            return 0
        finally:
            await engine.dispose()

    return asyncio.run(show())


if __name__ == "__main__":
    sys.exit(main())
