"""The ``scepline`` command's own surface: usage and help of every command,
the version, choices in any case, and what it imports to answer.

How fast it answers is a benchmark (``bench/cli.py``), not a test."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from scepline.cli import REQUEST_STATES, REVOCATION_REASONS, STEPS, build_parser
from scepline_shared.pipeline import Step
from scepline_shared.settings import Settings
from scepline_shared.store.certificates import REVOCATION_REASON_NAMES
from scepline_shared.store.models import RequestState
from tests.support.commands import run_scepline


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every command and group under ``parser``, with the words that name it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


ALL_COMMANDS = [" ".join(path) for path, _ in commands(build_parser())]
LEAF_COMMANDS = [
    " ".join(path)
    for path, parser in commands(build_parser())
    if not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
]


def test_the_parser_spells_the_states_steps_and_reasons_the_store_knows():
    assert tuple(state.value for state in RequestState) == REQUEST_STATES
    assert tuple(step.value for step in Step) == STEPS
    assert set(REVOCATION_REASONS) == set(REVOCATION_REASON_NAMES)


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_every_option_and_argument_has_help(command: str):
    parser = dict((" ".join(p), c) for p, c in commands(build_parser()))[command]

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            assert all(choice.description for choice in action.choices.values())
            continue
        assert action.help, f"scepline {command}: {action.option_strings or action.dest}"


@pytest.mark.parametrize("command", LEAF_COMMANDS)
def test_every_command_answers_help_with_its_own_usage(command: str):
    done = run_scepline({}, *command.split(), "--help")

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: scepline {command} "), done.stdout


@pytest.mark.parametrize("command", ["request list", "cert find x", "dlq replay", "ca show"])
def test_an_unknown_option_gets_the_command_s_own_usage(command: str):
    done = run_scepline({}, *command.split(), "--bogus")

    assert done.returncode == 2
    words = " ".join(w for w in command.split() if w != "x")
    assert done.stderr.startswith(f"usage: scepline {words} "), done.stderr
    assert f"scepline {words}: error: unrecognized arguments: --bogus" in done.stderr


@pytest.mark.parametrize("group", ["ca", "cert", "db", "request", "dlq"])
def test_a_group_alone_prints_its_commands(group: str):
    done = run_scepline({}, group)

    assert done.returncode == 2
    assert done.stderr.startswith(f"usage: scepline {group} "), done.stderr


def test_the_services_help_points_to_their_settings():
    for command in ["up", "ingress", "validator", "signer", "notifier"]:
        done = run_scepline({}, command, "--help")
        assert "SCEPLINE_HTTP_PORT" in done.stdout and "README.md" in done.stdout, command
    named = {
        word.strip(".,;()`")
        for word in build_parser().epilog.split()  # type: ignore[union-attr]
        if word.startswith("SCEPLINE_") and word != "SCEPLINE_*"
    }
    assert named and {n.removeprefix("SCEPLINE_").lower() for n in named} <= set(
        Settings.model_fields
    )


def test_version():
    done = run_scepline({}, "--version")

    assert done.returncode == 0
    assert done.stdout.strip() == f"scepline {version('scepline')}"


@pytest.mark.parametrize(
    ("args", "parsed"),
    [
        (["request", "list", "--state", "issued"], ("state", "ISSUED")),
        (["request", "list", "--state", "Signing"], ("state", "SIGNING")),
        (["dlq", "list", "--step", "SIGN"], ("step", "sign")),
        (["cert", "revoke", "1f", "--reason", "keyCompromise"], ("reason", "key-compromise")),
        (["cert", "revoke", "1f", "--reason", "KEY_COMPROMISE"], ("reason", "key-compromise")),
        (["cert", "revoke", "1f"], ("reason", "unspecified")),
        (["cert", "show", "0A:1F"], ("serial", 0xA1F)),
    ],
)
def test_choices_are_read_in_any_case(args: list[str], parsed: tuple[str, object]):
    namespace = build_parser().parse_args(args)

    assert getattr(namespace, parsed[0]) == parsed[1]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["cert", "revoke", "00"], "serial '00' is 0, which is not a valid serial"),
        (["cert", "show", "0:0"], "is 0, which is not a valid serial"),
        (["cert", "show", "xyz"], "not a hexadecimal serial number: 'xyz'"),
        (["cert", "revoke", "1f", "--reason", "stolen"], "invalid choice: 'stolen'"),
        (["request", "list", "--state", "PENDING"], "invalid choice: 'PENDING'"),
        (["request", "list", "--limit", "0"], "at least 1"),
    ],
)
def test_bad_arguments_say_what_is_wrong_with_the_command_s_usage(args: list[str], says: str):
    done = run_scepline({}, *args)

    assert done.returncode == 2
    assert says in done.stderr, done.stderr
    assert done.stderr.startswith(f"usage: scepline {args[0]} {args[1]} ")


def test_help_and_usage_errors_import_nothing_but_argparse(tmp_path: Path):
    """What ``--help`` costs is Python's start-up: the settings, the store, the
    web stack and the services stay unloaded until a command runs."""
    probe = (
        "import sys, contextlib, io\n"
        "from scepline.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['request', 'list', '--help'])\n"
        "heavy = ['pydantic', 'sqlalchemy', 'fastapi', 'cryptography', 'structlog', "
        "'scepline_shared', 'uvicorn', 'aio_pika']\n"
        "print(' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    )

    assert done.stdout.strip() == ""


def test_operator_commands_do_not_load_the_services_or_the_web_stack(tmp_path: Path):
    setup = run_scepline({"SCEPLINE_DATA_DIR": str(tmp_path)}, "db", "upgrade")
    assert setup.returncode == 0, setup.stderr
    probe = (
        "import sys, os\n"
        "from scepline.cli import main\n"
        "status = main(['request', 'list']) + main(['dlq', 'list'])\n"
        "heavy = ['fastapi', 'uvicorn', 'aio_pika', 'msal', 'scepline_ingress', "
        "'scepline_signer', 'scepline_validator', 'scepline_notifier', 'scepline.runtime', "
        "'scepline_shared.scep', 'scepline_shared.intune', 'scepline_shared.ca']\n"
        "print(status, ' '.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SCEPLINE_DATA_DIR": str(tmp_path)},
    )

    assert done.stdout.splitlines()[-1].strip() == "0", done.stdout + done.stderr
