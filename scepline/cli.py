"""The ``scepline`` command: the only place that reads the environment.

Each command imports what it uses when it runs: ``--help`` and usage errors
load nothing but argparse, and the operator commands never load the web stack
or the services (``bench/cli.py`` times them). What any command reports as a
:class:`CommandError` (bad settings, a busy port, a missing CA or database) is
one line per problem on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CommandError

if TYPE_CHECKING:
    from scepline_shared.settings import Settings

__all__ = [
    "REQUEST_STATES",
    "REVOCATION_REASONS",
    "STEPS",
    "TOKEN_ROLES",
    "build_parser",
    "main",
]

# The parser's choices, spelled here so that building it imports nothing
# (tests/scepline/test_cli.py checks them against RequestState, Step and
# REVOCATION_REASON_NAMES).
REQUEST_STATES = (
    "RECEIVED",
    "AWAITING_APPROVAL",
    "VALIDATED",
    "REJECTED",
    "SIGNING",
    "SIGNED",
    "ISSUED",
    "FAILED",
)
STEPS = ("validate", "sign", "notify")
REVOCATION_REASONS = (
    "unspecified",
    "key-compromise",
    "ca-compromise",
    "affiliation-changed",
    "superseded",
    "cessation-of-operation",
    "certificate-hold",
    "privilege-withdrawn",
)

TOKEN_ROLES = ("viewer", "operator")

# Whether a command may create the store, needs one to exist, or uses none.
CREATES_STORE, NEEDS_STORE, NO_STORE = "creates", "needs", "none"

_SERVICE_SETTINGS = (
    "settings: SCEPLINE_* environment variables, every one listed in README.md "
    '("Settings"); most often set: SCEPLINE_DATA_DIR (default ./var), SCEPLINE_HTTP_HOST '
    "and SCEPLINE_HTTP_PORT (127.0.0.1, 8080), SCEPLINE_HEALTH_HOST and SCEPLINE_HEALTH_PORT "
    "(/metrics, /healthz, /readyz; `up` serves them on 9100), SCEPLINE_ADMIN_HOST and "
    "SCEPLINE_ADMIN_PORT (the console and /api/v1; 127.0.0.1, 8081), SCEPLINE_DATABASE_URL, "
    "SCEPLINE_BROKER_URL, SCEPLINE_CHALLENGE_PROVIDER, SCEPLINE_STATIC_CHALLENGE, "
    "SCEPLINE_SCEP_ALLOW_DES; SCEPLINE_CONFIG names a TOML file of SCEP endpoints "
    "(docs/endpoints.md)"
)
_OPERATOR_SETTINGS = (
    "The store is found from SCEPLINE_DATA_DIR (default ./var of the current directory) or "
    "SCEPLINE_DATABASE_URL: run it with the settings the services run with."
)


def main(argv: Sequence[str] | None = None) -> int:
    # A CA writes nothing meant for other local users: whatever a library or a
    # later change creates without an explicit mode stays private too.
    os.umask(0o077)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    if unknown:
        command.error(f"unrecognized arguments: {' '.join(unknown)}")  # exits 2
    if getattr(args, "run", None) is None:  # `scepline` or `scepline ca` alone
        command.print_help(sys.stderr)
        return 2
    try:
        status: int = args.run(_settings(args), args)
        sys.stdout.flush()  # inside the try: a reader gone away is handled below
    except CommandError as failed:
        sys.stdout.flush()
        for line in str(failed).splitlines():
            print(f"scepline: {line}", file=sys.stderr)
        return failed.status
    except BrokenPipeError:
        # The reader went away (`scepline request list | head`): stop quietly,
        # as other commands do, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for such a command
    except KeyboardInterrupt:
        return 130
    return status


def _settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment, or a CommandError with one line per bad
    setting; then logging, the event loop, and the store the command needs."""
    from pydantic import ValidationError

    from scepline_shared.log import configure_logging
    from scepline_shared.settings import Settings, describe_problems

    try:
        settings = Settings()
    except ValidationError as error:
        raise CommandError("\n".join(describe_problems(error)), status=2) from None
    if args.checks_profile:
        _check_profile(settings)
    if args.needs_config:
        args.endpoints = _endpoints(settings)
    if args.store == NEEDS_STORE:
        _require_store(settings)
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    use_uvloop()
    return settings


def _check_profile(settings: Settings) -> None:
    """The certificate profile's names (SCEPLINE_CERT_*), checked before a service
    that issues or validates starts, with the settings' own exit status."""
    from scepline_shared.configured import profile_from

    try:
        profile_from(settings)
    except ValueError as error:
        raise CommandError(str(error), status=2) from None


def _endpoints(settings: Settings) -> Any:
    """The SCEP endpoints (SCEPLINE_CONFIG and the settings), or a CommandError
    with one line per mistake of the file and the settings' exit status."""
    from scepline_shared.config_file import ConfigError
    from scepline_shared.configured import endpoints_from

    try:
        return endpoints_from(settings)
    except ConfigError as error:
        raise CommandError("\n".join(error.problems), status=2) from None
    except ValueError as error:
        raise CommandError(str(error), status=2) from None


def _require_store(settings: Settings) -> None:
    """Refuse to work on a SQLite database that is not there: creating one
    belongs to `ca init`, `db upgrade` and `up`, and an empty one made in the
    wrong directory answers every question with "nothing"."""
    path = _sqlite_path(settings.effective_database_url)
    if path is None or path.exists():
        return
    if "database_url" in settings.model_fields_set:
        origin = "SCEPLINE_DATABASE_URL"
    elif "data_dir" in settings.model_fields_set:
        origin = f"SCEPLINE_DATA_DIR={settings.data_dir}"
    else:
        origin = f"SCEPLINE_DATA_DIR unset: ./var of {Path.cwd()}"
    raise CommandError(
        f"no scepline database at {path} ({origin}); run from the directory whose ./var "
        "`scepline up` uses, or set SCEPLINE_DATA_DIR or SCEPLINE_DATABASE_URL to the one "
        "in use (`scepline db upgrade` creates an empty one)"
    )


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy import make_url

    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database)


def use_uvloop() -> None:
    """uvloop's event loop (libuv) costs a fraction of asyncio's per I/O event,
    and every request crosses HTTP, the broker and the store several times."""
    try:
        import uvloop
    except ImportError:  # optional: a platform without wheels still runs
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the parser ----------------------------------------------------------------


class _Version(argparse.Action):
    """``--version``, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import version

        print(f"scepline {version('scepline')}")
        parser.exit()


Commands = Any  # argparse's _SubParsersAction, which it does not export


def _group(commands: Commands, name: str, help: str) -> Commands:
    """A command with subcommands (`scepline ca ...`); alone, it prints its help."""
    group = commands.add_parser(name, help=help, description=help)
    group.set_defaults(run=None, command_parser=group)
    return group.add_subparsers(title="commands", metavar="COMMAND")


def _command(
    commands: Commands,
    name: str,
    help: str,
    run: Callable[[Settings, argparse.Namespace], int],
    *,
    store: str,
    epilog: str | None = None,
    checks_profile: bool = False,
    needs_config: bool = False,
) -> argparse.ArgumentParser:
    """``needs_config``: the command reads the SCEP endpoints (SCEPLINE_CONFIG),
    checked before it does anything else."""
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=help, description=help, epilog=epilog
    )
    command.set_defaults(
        run=run,
        command_parser=command,
        store=store,
        checks_profile=checks_profile,
        needs_config=needs_config,
    )
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scepline",
        description="SCEP (RFC 8894) CA front end for Intune fleets",
        epilog=_SERVICE_SETTINGS,
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    _command(
        commands,
        "up",
        "run every service in one process (SQLite and an in-process queue unless set "
        "otherwise); creates the lab CA and the database on first run",
        _up,
        store=CREATES_STORE,
        epilog=_SERVICE_SETTINGS,
        checks_profile=True,
        needs_config=True,
    )
    _command(
        commands,
        "ingress",
        "run the SCEP HTTP service (after `scepline ca init` and `db upgrade`)",
        _ingress,
        store=NEEDS_STORE,
        epilog=_SERVICE_SETTINGS,
        needs_config=True,
    )
    _command(
        commands,
        "ocsp",
        "run the OCSP responder alone (POST/GET /ocsp on SCEPLINE_HTTP_PORT; ingress and "
        "`up` serve it too); any number of replicas on the same store and CA directory",
        _ocsp,
        store=NEEDS_STORE,
        epilog=_SERVICE_SETTINGS,
        needs_config=True,
    )
    for step, name in (("validate", "validator"), ("sign", "signer"), ("notify", "notifier")):
        worker = _command(
            commands,
            name,
            f"run a {name} worker (after `scepline db upgrade`)",
            _worker,
            store=NEEDS_STORE,
            epilog=_SERVICE_SETTINGS,
            checks_profile=step in ("validate", "sign"),
            needs_config=True,
        )
        worker.set_defaults(step=step)

    _command(
        commands,
        "admin-api",
        "run the management API (/api/v1) and the operator console (/) alone on "
        "SCEPLINE_ADMIN_HOST:SCEPLINE_ADMIN_PORT (`up` serves them too), on the store and "
        "broker the services use",
        _admin_api,
        store=NEEDS_STORE,
        epilog=_SERVICE_SETTINGS,
    )
    admin = _group(commands, "admin", "the management API and the operator console")
    token = _group(admin, "token", "API tokens (Authorization: Bearer, or the console's login)")
    create = _command(
        token,
        "create",
        "make an API token; it is printed once, as the last line (only its hash is kept)",
        _token_create,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    create.add_argument(
        "--role",
        type=str.lower,
        choices=TOKEN_ROLES,
        required=True,
        metavar="ROLE",
        help="viewer (reads everything) or operator (also revokes, replays, purges)",
    )
    create.add_argument(
        "--name", default=None, help="who or what it is for (default: the role and the date)"
    )
    create.add_argument(
        "--expires-in-days",
        type=_days,
        default=90.0,
        metavar="DAYS",
        help="valid this many days (decimals allowed; 0: never expires; default: %(default)g)",
    )
    _command(
        token,
        "list",
        "every token: id, name, role, status, expiry, last use (never the secret)",
        _token_list,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    revoke_token = _command(
        token,
        "revoke",
        "revoke a token now: its API calls and console sessions stop at once",
        _token_revoke,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    revoke_token.add_argument(
        "token_id", type=_at_least_one, metavar="ID", help="the token's id, as `token list` prints"
    )

    ca = _group(commands, "ca", "the certificate authority")
    init = _command(
        ca,
        "init",
        "create the CA and RA (keys in files, or in the token with SCEPLINE_KEY_BACKEND="
        "pkcs11), every named CA of SCEPLINE_CONFIG, and the database; idempotent",
        _ca_init,
        store=CREATES_STORE,
        needs_config=True,
    )
    init.add_argument(
        "--ca", metavar="NAME", help="only this CA: default, or a [cas.NAME] of SCEPLINE_CONFIG"
    )
    init.add_argument(
        "--import-ca-cert",
        type=Path,
        metavar="PEM",
        help="use this existing CA certificate, whose key is already in the token under "
        "SCEPLINE_PKCS11_CA_KEY_LABEL (or in ca/ca.key with file keys); only the RA is created",
    )
    show = _command(
        ca,
        "show",
        "print every CA generation: active, previous and staged (of every CA)",
        _ca_show,
        store=NO_STORE,
        needs_config=True,
    )
    show.add_argument("--ca", metavar="NAME", help="only this CA")
    rollover = _command(
        ca,
        "rollover",
        "stage the next CA (served by GetNextCACert until it takes over at --switch-at)",
        _ca_rollover,
        store=NO_STORE,
        needs_config=True,
    )
    rollover.add_argument(
        "--ca", metavar="NAME", help="the CA to roll over (default: default, the settings' CA)"
    )
    when = rollover.add_mutually_exclusive_group(required=True)
    when.add_argument("--switch-at", help="ISO-8601 time with a zone, e.g. 2027-01-31T00:00Z")
    when.add_argument(
        "--switch-in-days", type=float, metavar="DAYS", help="days from now (decimals allowed)"
    )
    journal = _command(
        ca,
        "journal",
        "every signature the CA keys made (certificates, CRLs, CA and RA certificates), "
        "one a line with its serial in hex, oldest first",
        _ca_journal,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    journal.add_argument(
        "--check",
        action="store_true",
        help="reconcile it with the certificates and CRLs the store holds; exit 1 on a mismatch",
    )
    journal.add_argument("--json", action="store_true", help="one JSON object a line")

    cert = _group(commands, "cert", "issued certificates")
    revoke = _command(
        cert,
        "revoke",
        "revoke a certificate; the signers publish a CRL with it within "
        "SCEPLINE_CRL_CHECK_INTERVAL_SECONDS",
        _cert_revoke,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    revoke.add_argument(
        "serial", type=_serial, help="serial number in hex, as `cert find` and `cert show` print"
    )
    revoke.add_argument(
        "--reason",
        type=_reason,
        default="unspecified",
        choices=REVOCATION_REASONS,
        metavar="REASON",
        help="RFC 5280 CRLReason, any case, also as keyCompromise: "
        + ", ".join(REVOCATION_REASONS)
        + " (default: unspecified)",
    )
    show = _command(
        cert,
        "show",
        "a certificate: subject, validity, revocation, request",
        _cert_show,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    show.add_argument("serial", type=_serial, help="serial number in hex")
    find = _command(
        cert,
        "find",
        "certificates whose subject contains TEXT (and issued at --endpoint), newest first",
        _cert_find,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    find.add_argument(
        "text",
        nargs="?",
        default=None,
        help="part of the subject DN, e.g. a device name (any case); optional with --endpoint",
    )
    find.add_argument(
        "--endpoint", metavar="NAME", help="only certificates issued at this SCEP endpoint"
    )

    sim = _command(
        commands,
        "intune-sim",
        "run the Intune simulator (fake Entra ID, Graph and Intune) on loopback",
        _intune_sim,
        store=NO_STORE,
    )
    sim.add_argument(
        "--host", default="127.0.0.1", help="a loopback address (default: %(default)s)"
    )
    sim.add_argument(
        "--port", type=int, default=8443, help="0 picks a free port (default: %(default)s)"
    )
    sim.add_argument("--no-tls", action="store_true", help="plain HTTP (MSAL insists on HTTPS)")
    sim.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="where sim-ca.pem and sim.json go (default: SCEPLINE_DATA_DIR/intune-sim)",
    )

    db = _group(commands, "db", "the state store")
    _command(
        db,
        "upgrade",
        "create the database or apply the schema migrations (services also do at start)",
        _db_upgrade,
        store=CREATES_STORE,
    )
    prune = _command(
        db,
        "prune",
        "delete final requests and superseded CRLs older than N days (certificates stay)",
        _db_prune,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    prune.add_argument(
        "--older-than-days",
        type=_at_least_one,
        required=True,
        metavar="N",
        help="untouched for at least N days (whole days, at least 1)",
    )

    request = _group(commands, "request", "enrolment requests")
    request_show = _command(
        request,
        "show",
        "a request's state and history, or why it was refused before it was recorded",
        _request_show,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    request_show.add_argument(
        "transaction_id", help="the SCEP transactionID, as the logs and `request list` print"
    )
    request_list = _command(
        request,
        "list",
        "requests in one state, most recently changed first",
        _request_list,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    request_list.add_argument(
        "--state",
        type=str.upper,
        choices=REQUEST_STATES,
        default="RECEIVED",
        metavar="STATE",
        help="any case: " + ", ".join(REQUEST_STATES) + " (default: RECEIVED)",
    )
    request_list.add_argument(
        "--limit",
        type=_at_least_one,
        default=50,
        metavar="N",
        help="at most N requests (default: %(default)s)",
    )
    request_list.add_argument(
        "--endpoint", metavar="NAME", help="only requests that arrived at this SCEP endpoint"
    )
    for action, helptext in (
        ("approve", 'approve a request AWAITING_APPROVAL (a "manual" endpoint\'s): it is signed'),
        ("reject", "reject a request AWAITING_APPROVAL: it ends FAILED (failInfo badRequest)"),
    ):
        decision = _command(
            request, action, helptext, _request_decide, store=NEEDS_STORE, epilog=_OPERATOR_SETTINGS
        )
        decision.add_argument(
            "transaction_id",
            metavar="TXID",
            help="as `request list --state AWAITING_APPROVAL` prints it, or the client's "
            "transactionID",
        )
        decision.add_argument("--reason", help="why (kept in the request's history)")
        decision.add_argument(
            "--by", metavar="WHO", help="who decides (default: the account running the command)"
        )
        decision.set_defaults(approve=action == "approve")

    challenge = _group(commands, "challenge", 'one-time challenges ("one-time" endpoints)')
    new = _command(
        challenge,
        "new",
        "make one-time challenges and print them on stdout, one a line; each works once "
        "and is stored only as its SHA-256",
        _challenge_new,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
        needs_config=True,
    )
    new.add_argument("--endpoint", required=True, metavar="NAME", help="a one-time endpoint")
    new.add_argument(
        "--ttl",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="how long they stay valid: 30m, 24h, 7d... (default: the endpoint's challenge_ttl)",
    )
    new.add_argument(
        "--count", type=_at_least_one, default=1, metavar="N", help="how many (default: 1)"
    )
    new.add_argument(
        "--subject",
        type=_subject,
        metavar="DN",
        help="only a request with this subject may use them (RFC 4514: CN=host,O=Example)",
    )
    new.add_argument(
        "--san",
        action="append",
        default=[],
        type=_san,
        metavar="TYPE:VALUE",
        help="only a request whose SANs are all among these may use them "
        "(dns:, email:, ip:, uri:; repeat for several)",
    )
    new.add_argument("--by", metavar="WHO", help="recorded as who made them")
    challenges = _command(
        challenge,
        "list",
        "challenges made, newest first: hash prefix, endpoint, whether used (never the "
        "challenge itself)",
        _challenge_list,
        store=NEEDS_STORE,
        epilog=_OPERATOR_SETTINGS,
    )
    challenges.add_argument("--endpoint", metavar="NAME", help="only this endpoint's")
    challenges.add_argument(
        "--limit", type=_at_least_one, default=50, metavar="N", help="at most N (default: 50)"
    )

    dlq = _group(commands, "dlq", "the dead-letter queues")
    for name, helptext, takes_ids in (
        ("list", "list dead letters of every step (or --step)", False),
        ("show", "show dead letters in full (all, or the given ids)", True),
        ("replay", "send dead letters back to their step (all, or the given ids)", True),
        ("purge", "give up on dead letters: their requests end FAILED (all, or the ids)", True),
    ):
        command = _command(dlq, name, helptext, _dlq, store=NEEDS_STORE, epilog=_OPERATOR_SETTINGS)
        command.add_argument(
            "--step",
            type=str.lower,
            choices=STEPS,
            default=None,
            metavar="STEP",
            help="only this step's queue: " + ", ".join(STEPS) + " (default: all)",
        )
        if takes_ids:
            command.add_argument(
                "ids",
                nargs="*",
                metavar="ID",
                help="dead-letter ids from `dlq list` (with `scepline up`: transaction ids)",
            )
        command.set_defaults(action=name)
    return parser


def _serial(text: str) -> int:
    from scepline_shared.ca.issue import parse_serial

    serial = parse_serial(text)
    if serial is not None:
        return serial
    if text.strip() and set(text.strip()) <= set("0: -"):
        raise argparse.ArgumentTypeError(
            f"serial {text.strip()!r} is 0, which is not a valid serial (serials are positive)"
        )
    raise argparse.ArgumentTypeError(f"not a hexadecimal serial number: {text!r}")


def _reason(text: str) -> str:
    """``Key-Compromise``, ``keyCompromise`` and ``key_compromise`` are key-compromise."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"-\1", text.strip()).lower().replace("_", "-")


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= days <= 36500:
        raise argparse.ArgumentTypeError("from 0 (never expires) to 36500")
    return days


def _duration(text: str) -> Any:
    from scepline_shared.config_file import parse_duration

    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _subject(text: str) -> str:
    from cryptography import x509

    # "CN=web-1, O=Example" as people write it: spaces around unescaped commas go.
    compact = re.sub(r"\s*(?<!\\),\s*", ",", text.strip())
    try:
        name = x509.Name.from_rfc4514_string(compact)
    except ValueError as error:
        why = f" ({error})" if str(error) else ""
        raise argparse.ArgumentTypeError(
            f"not an RFC 4514 name{why}: {text!r} (e.g. CN=web-1,O=Example)"
        ) from None
    if not list(name):
        raise argparse.ArgumentTypeError("an empty subject binds nothing")
    return name.rfc4514_string()


def _san(text: str) -> str:
    from .endpoint_admin import normal_san

    try:
        return normal_san(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _at_least_one(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return number


# --- the services ----------------------------------------------------------------


def _up(settings: Settings, args: argparse.Namespace) -> int:
    from .processes import serve_on_every_core, workers_for
    from .runtime import Embedded, prepare_embedded, serve_embedded, up_health_port

    workers = workers_for(settings)
    challenge_file = None
    endpoints = args.endpoints

    def announce() -> None:
        # Printed once everything has started: nothing after it fails at start-up.
        base = f"http://{settings.http_host}:{settings.http_port}"
        health = f"http://{settings.health_host}:{up_health_port(settings)}"
        served = [e for e in endpoints if e.paths]
        first = next((e for e in served if "/scep" in e.paths), served[0] if served else None)
        url = base + (first.paths[0] if first else "/scep")
        print(f"scepline serving SCEP at {url} ({workers} serving process(es))", flush=True)
        if len(served) > 1:
            for endpoint in served:
                paths = ", ".join(base + path for path in endpoint.paths)
                print(f"  endpoint {endpoint.name} ({endpoint.provider}): {paths}", flush=True)
        print(f"Metrics and health checks at {health}/metrics, /healthz, /readyz", flush=True)
        admin = f"http://{settings.admin_host}:{settings.admin_port}"
        print(
            f"Console at {admin}/ and management API at {admin}/api/v1 "
            "(tokens: scepline admin token create --role viewer|operator)",
            flush=True,
        )
        print(
            f"Data directory: {settings.data_dir} (CA, database, store key; "
            "back it up, keep it private)",
            flush=True,
        )
        print(f"CA certificate: {settings.data_dir / 'ca' / 'ca.crt'}", flush=True)
        for name in endpoints.cas:
            if name != "default":
                where = settings.data_dir / "cas" / name / "ca" / "ca.crt"
                print(f"CA certificate of CA {name}: {where}", flush=True)
        if challenge_file is not None:
            # The path, not the challenge: the console may well be a log.
            print(f"Static challenge (generated): {challenge_file}", flush=True)

    if workers == 1:

        def announce_one(product: Embedded) -> None:
            nonlocal challenge_file
            challenge_file = product.challenge_file
            announce()

        return _serve(settings, lambda: serve_embedded(settings, announce_one))

    def prepare() -> None:
        nonlocal challenge_file
        challenge_file = prepare_embedded(settings)

    return _serve_now(
        settings,
        lambda: serve_on_every_core(settings, workers, prepare, announce, up_health_port(settings)),
    )


def _admin_api(settings: Settings, _args: argparse.Namespace) -> int:
    from .runtime import serve_admin_api

    def announce() -> None:
        url = f"http://{settings.admin_host}:{settings.admin_port}"
        print(f"scepline console at {url}/ and management API at {url}/api/v1", flush=True)
        print("Tokens: scepline admin token create --role viewer|operator", flush=True)

    return _serve(settings, lambda: serve_admin_api(settings, announce))


def _token_create(settings: Settings, args: argparse.Namespace) -> int:
    from .admin_tokens import create_token

    return asyncio.run(create_token(settings, args.role, args.name, args.expires_in_days))


def _token_list(settings: Settings, _args: argparse.Namespace) -> int:
    from .admin_tokens import list_tokens

    return asyncio.run(list_tokens(settings))


def _token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .admin_tokens import revoke_token

    return asyncio.run(revoke_token(settings, args.token_id))


def _ingress(settings: Settings, _args: argparse.Namespace) -> int:
    from .runtime import serve_ingress

    return _serve(settings, lambda: serve_ingress(settings))


def _ocsp(settings: Settings, _args: argparse.Namespace) -> int:
    from .runtime import serve_ocsp

    return _serve(settings, lambda: serve_ocsp(settings))


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.pipeline import Step

    from .runtime import serve_worker

    return _serve(settings, lambda: serve_worker(settings, Step(args.step)))


def _serve(settings: Settings, serve: Callable[[], Any]) -> int:
    """Run a service; what stops it at start-up is one line, not a traceback."""
    return _serve_now(settings, lambda: asyncio.run(serve()))


def _serve_now(settings: Settings, serve: Callable[[], Any]) -> int:
    from scepline_shared.ca import CaError, CaNotInitialised
    from scepline_shared.keys.pkcs11 import HsmError

    try:
        serve()
    except CaNotInitialised as missing:
        raise CommandError(
            f"no CA: {missing} (SCEPLINE_DATA_DIR={settings.data_dir}); create it with "
            "`scepline ca init` and the same settings first"
        ) from None
    except (CaError, HsmError) as error:
        raise CommandError(f"the CA cannot be used: {error}") from None
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


# --- the CA ------------------------------------------------------------------------


def _chosen_cas(settings: Settings, args: argparse.Namespace) -> list[Any]:
    """The CAs a `ca` command acts on: --ca NAME, or every CA of the deployment
    (the settings' ``default`` and each ``[cas.NAME]`` of SCEPLINE_CONFIG)."""
    cas = args.endpoints.cas
    if args.ca is None:
        return list(cas.values())
    if args.ca not in cas:
        raise CommandError(f"--ca: no CA named {args.ca!r}; CAs: {', '.join(cas)}", status=2)
    return [cas[args.ca]]


def _ca_heading(spec: Any, every: list[Any]) -> None:
    """A heading before each CA's schedule, once there is more than the default one."""
    if len(every) > 1 or spec.name != "default":
        print(f"CA {spec.name}:")


def _ca_init(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.ca import CaError, init_ca, load_certificate
    from scepline_shared.configured import ca_root, key_source
    from scepline_shared.keys.pkcs11 import HsmError
    from scepline_shared.private_files import private_directory

    chosen = _chosen_cas(settings, args)
    if args.import_ca_cert and len(chosen) > 1:
        args.command_parser.error("--import-ca-cert imports one CA: name it with --ca")
    private_directory(settings.data_dir)
    for spec in chosen:
        root = ca_root(settings.data_dir, spec.name)
        try:
            private_directory(root)
            imported = load_certificate(args.import_ca_cert) if args.import_ca_cert else None
            schedule = init_ca(
                root,
                key_source(settings, spec.name),
                ca_key_type=spec.key_type,
                ca_key_size=spec.key_size,
                ca_common_name=spec.common_name,
                ra_common_name=spec.ra_common_name,
                validity_days=spec.validity_days,
                import_ca_certificate=imported,
            )
        except (CaError, HsmError, OSError, ValueError) as error:
            raise CommandError(f"ca init: CA {spec.name}: {error}") from None
        _ca_heading(spec, chosen)
        _print_schedule(schedule)
        _journal_ca(settings, schedule, create_store=True)
    return 0


def _ca_show(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.ca import CaError, CaNotInitialised, load_ca_schedule
    from scepline_shared.configured import ca_root, key_source
    from scepline_shared.keys.pkcs11 import HsmError

    chosen = _chosen_cas(settings, args)
    for spec in chosen:
        root = ca_root(settings.data_dir, spec.name)
        try:
            schedule = load_ca_schedule(root, key_source(settings, spec.name))
        except CaNotInitialised as missing:
            raise CommandError(
                f"no CA {spec.name} under {root}: run `scepline ca init` ({missing})"
                if spec.name != "default"
                else f"no CA under {settings.data_dir}: run `scepline ca init` ({missing})"
            ) from None
        except (CaError, HsmError, ValueError) as error:
            raise CommandError(f"ca show: {error}") from None
        _ca_heading(spec, chosen)
        _print_schedule(schedule)
    return 0


def _ca_rollover(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime, timedelta

    from scepline_shared.ca import CaError, load_ca_schedule, stage_rollover
    from scepline_shared.configured import ca_root, key_source
    from scepline_shared.keys.pkcs11 import HsmError

    if args.switch_at is not None:
        try:
            switch_at = datetime.fromisoformat(args.switch_at.replace("Z", "+00:00"))
        except ValueError:
            args.command_parser.error(f"--switch-at: not an ISO-8601 time: {args.switch_at!r}")
        if switch_at.tzinfo is None:
            args.command_parser.error("--switch-at needs a time zone (e.g. Z or +01:00)")
    else:
        switch_at = datetime.now(UTC) + timedelta(days=args.switch_in_days)
    if args.ca is None:
        args.ca = "default"
    [spec] = _chosen_cas(settings, args)
    root = ca_root(settings.data_dir, spec.name)
    keys = key_source(settings, spec.name)
    try:
        stage_rollover(
            root,
            keys,
            switch_at=switch_at,
            ca_key_type=spec.key_type,
            ca_key_size=spec.key_size,
            ca_common_name=spec.common_name,
            ra_common_name=spec.ra_common_name,
            validity_days=spec.validity_days,
        )
        schedule = load_ca_schedule(root, keys)
    except (CaError, HsmError, ValueError) as error:
        raise CommandError(f"ca rollover: {error}") from None
    _ca_heading(spec, [spec])
    _print_schedule(schedule)
    _journal_ca(settings, schedule, create_store=False)
    print(
        "Running services pick the staged CA up within seconds: GetNextCACert serves it "
        "now and it issues from the switch time on."
    )
    return 0


def _ca_journal(settings: Settings, args: argparse.Namespace) -> int:
    from .journal import print_journal

    return asyncio.run(print_journal(settings, check=args.check, as_json=args.json))


def _journal_ca(settings: Settings, schedule: object, *, create_store: bool) -> None:
    """Record the CA and RA certificates just made in the issuance journal; a
    store that cannot be reached now (or does not exist yet) is caught up by the
    signer when it starts."""
    from scepline_signer.main import journal_ca_certificates

    from .connections import runtime

    if not create_store:
        path = _sqlite_path(settings.effective_database_url)
        if path is not None and not path.exists():
            print(f"issuance journal: no database at {path} yet; the signer records them at start")
            return

    async def journal() -> int:
        async with runtime(settings, with_broker=False, patience=0) as rt:
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


# --- certificates, requests, the store, dead letters --------------------------------


def _cert_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import revoke_certificate

    return asyncio.run(revoke_certificate(settings, args.serial, args.reason))


def _cert_show(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import show_certificate

    return asyncio.run(show_certificate(settings, args.serial))


def _cert_find(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import find_certificates

    if args.text is None and args.endpoint is None:
        args.command_parser.error("give TEXT (part of a subject), --endpoint NAME, or both")
    return asyncio.run(find_certificates(settings, args.text or "", endpoint=args.endpoint))


def _db_upgrade(settings: Settings, _args: argparse.Namespace) -> int:
    from scepline_shared.private_files import private_directory
    from scepline_shared.store.migrate import upgrade_to_head

    from .connections import redacted

    private_directory(settings.data_dir)
    url = settings.effective_database_url
    try:
        asyncio.run(upgrade_to_head(url))
    except Exception as error:  # noqa: BLE001 - the database said no: one line
        raise CommandError(f"could not migrate the database {redacted(url)}: {error}") from None
    print(f"database schema is at head: {redacted(url)}")
    return 0


def _db_prune(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import prune_store

    return asyncio.run(prune_store(settings, args.older_than_days))


def _request_list(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.store.models import RequestState

    from .admin import list_requests

    return asyncio.run(
        list_requests(settings, RequestState(args.state), args.limit, endpoint=args.endpoint)
    )


def _request_decide(settings: Settings, args: argparse.Namespace) -> int:
    from .endpoint_admin import decide

    return asyncio.run(
        decide(settings, args.transaction_id, approve=args.approve, by=args.by, reason=args.reason)
    )


def _challenge_new(settings: Settings, args: argparse.Namespace) -> int:
    from .endpoint_admin import MAX_CHALLENGES, new_challenges

    if args.count > MAX_CHALLENGES:
        args.command_parser.error(f"--count: at most {MAX_CHALLENGES} at a time")
    return asyncio.run(
        new_challenges(
            settings,
            args.endpoints,
            endpoint_name=args.endpoint,
            ttl=args.ttl,
            count=args.count,
            subject=args.subject,
            sans=args.san,
            by=args.by,
        )
    )


def _challenge_list(settings: Settings, args: argparse.Namespace) -> int:
    from .endpoint_admin import list_challenges

    return asyncio.run(list_challenges(settings, args.endpoint, args.limit))


def _request_show(settings: Settings, args: argparse.Namespace) -> int:
    from .admin import show_request

    return asyncio.run(show_request(settings, args.transaction_id))


def _dlq(settings: Settings, args: argparse.Namespace) -> int:
    from scepline_shared.pipeline import Step

    from .admin import dead_letters

    steps = [Step(args.step)] if args.step else list(Step)
    ids = getattr(args, "ids", None) or None
    return asyncio.run(dead_letters(settings, args.action, steps, ids))


if __name__ == "__main__":
    sys.exit(main())
