"""The commands of SCEP endpoints, as their own processes (docs/endpoints.md):
a configuration file with mistakes stops start-up with one line per mistake;
`challenge new` prints the challenges and nothing else on stdout; `request
list|approve|reject` find and decide requests awaiting approval."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.settings import Settings
from scepline_shared.store.challenges import challenge_sha256
from scepline_shared.store.models import RequestState
from tests.fixtures.scepline import data_dir_with_ca, running
from tests.support.commands import run_scepline
from tests.support.endpoints import ISSUE_EXAMPLE as EXAMPLE
from tests.support.pki import name, requester

MISTAKES = """
[endpoints.wifi]
challenge = "static"
static_challenge = "wifi-secret"
colour = "blue"

[endpoints.wifi.profile]
extended_key_usage = ["clientAuht"]

[endpoints.servers]
challenge = "one-time"
ca = "corp"
paths = ["/scep/wifi"]

[endpoints.wifi]
challenge = "manual"
"""


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def example(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "scepline.toml"
    config.write_text(EXAMPLE)
    data_dir = tmp_path / "var"
    done = run_scepline({"SCEPLINE_DATA_DIR": str(data_dir)}, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    return {"SCEPLINE_DATA_DIR": str(data_dir), "SCEPLINE_CONFIG": str(config)}


@pytest.mark.parametrize("command", [["up"], ["ingress"], ["validator"], ["signer"]])
def test_a_file_with_mistakes_stops_start_up_with_one_line_each(tmp_path: Path, command: list[str]):
    config = tmp_path / "scepline.toml"
    config.write_text(MISTAKES)
    done = run_scepline(
        {
            "SCEPLINE_DATA_DIR": str(tmp_path / "var"),
            "SCEPLINE_CONFIG": str(config),
            "SCEPLINE_HTTP_PORT": "1",  # never reached
        },
        *command,
    )

    assert done.returncode == 2, done.stdout + done.stderr
    found = lines(done.stderr)
    assert len(found) == 5, found
    assert all(line.startswith(f"scepline: {config}: endpoints.") for line in found), found
    said = "\n".join(found)
    for words in (
        "endpoints.wifi: duplicate endpoint name: declared again at line 15 (first at line 2)",
        "endpoints.wifi.colour: unknown key",
        "endpoints.wifi.profile.extended_key_usage[0]: unknown EKU 'clientAuht'",
        "endpoints.servers.ca: unknown CA 'corp'",
        "endpoints.servers.paths[0]: path '/scep/wifi' conflicts with endpoint wifi's path",
    ):
        assert words in said, said
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "var").exists()  # refused before creating anything


def test_a_missing_file_is_named(tmp_path: Path):
    done = run_scepline(
        {"SCEPLINE_DATA_DIR": str(tmp_path), "SCEPLINE_CONFIG": str(tmp_path / "no.toml")}, "up"
    )

    assert done.returncode == 2
    assert lines(done.stderr) == [
        f"scepline: {tmp_path / 'no.toml'}: cannot be read: No such file or directory"
    ]


def test_challenge_new_prints_only_the_challenges_and_stores_their_hash(example: dict[str, str]):
    done = run_scepline(example, "challenge", "new", "--endpoint", "servers", "--count", "3")
    listed = run_scepline(example, "challenge", "list", "--endpoint", "servers")

    assert done.returncode == 0, done.stderr
    challenges = done.stdout.splitlines()
    assert len(challenges) == 3 and len(set(challenges)) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", challenge) for challenge in challenges)
    assert "3 one-time challenge(s) for endpoint servers, valid until" in done.stderr
    assert listed.returncode == 0, listed.stderr
    assert "3 challenge(s)" in listed.stdout
    assert f"sha256:{challenge_sha256(challenges[0])[:16]}" in listed.stdout
    database = (Path(example["SCEPLINE_DATA_DIR"]) / "scepline.db").read_bytes()
    assert not any(challenge.encode() in database for challenge in challenges)
    assert not any(challenge in listed.stdout + listed.stderr for challenge in challenges)


def test_challenge_new_binds_and_times_them(example: dict[str, str]):
    done = run_scepline(
        example,
        "challenge", "new", "--endpoint", "servers", "--ttl", "2h",
        "--subject", "CN=web-1, O=Example", "--san", "DNS:Web-1.example.com", "--by", "carol",
    )  # fmt: skip
    listed = run_scepline(example, "challenge", "list")

    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    assert "bound: CN=web-1,O=Example, dns:web-1.example.com  by carol" in listed.stdout
    assert "unused, expires" in listed.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--endpoint", "wifi"], "endpoint 'wifi' has challenge = \"static\""),
        (["--endpoint", "nope"], "no endpoint named 'nope'; endpoints: default, wifi, servers"),
        (["--endpoint", "servers", "--ttl", "soon"], "'soon' is not a duration"),
        (["--endpoint", "servers", "--ttl", "400d"], "--ttl: at most 366 days"),
        (["--endpoint", "servers", "--count", "0"], "at least 1"),
        (["--endpoint", "servers", "--count", "5000"], "--count: at most 1000"),
        (["--endpoint", "servers", "--san", "x400:foo"], "the SAN type must be dns, email"),
        (["--endpoint", "servers", "--subject", "nonsense"], "not an RFC 4514 name"),
        ([], "the following arguments are required: --endpoint"),
    ],
)
def test_challenge_new_refuses_with_a_clear_answer(
    example: dict[str, str], args: list[str], says: str
):
    done = run_scepline(example, "challenge", "new", *args)

    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


async def test_an_operator_lists_approves_and_rejects_waiting_requests(
    tmp_path: Path, lab_ca_dir: Path
):

    config = tmp_path / "scepline.toml"
    config.write_text(EXAMPLE)
    settings = Settings(
        data_dir=data_dir_with_ca(tmp_path, lab_ca_dir),
        config=config,
        sync_wait_seconds=1,
        sweep_interval_seconds=0.2,
    )
    env = {"SCEPLINE_DATA_DIR": str(settings.data_dir), "SCEPLINE_CONFIG": str(config)}
    async with running(settings) as product:
        client = ScepClient("http://scepline/scep/gear", http=product.http)
        for label in ("cam-1", "cam-2"):
            who = requester(label)
            csr = build_csr(who.key, name(label), challenge=None)
            await client.enrol(csr, who, transaction_id=f"tx-{label}")

        listed = await asyncio.to_thread(
            run_scepline, env, "request", "list", "--state", "AWAITING_APPROVAL"
        )
        elsewhere = await asyncio.to_thread(
            run_scepline, env, "request", "list", "--state", "awaiting_approval",
            "--endpoint", "wifi",
        )  # fmt: skip
        approved = await asyncio.to_thread(
            run_scepline, env, "request", "approve", "tx-cam-1|at:gear", "--by", "alice"
        )
        rejected = await asyncio.to_thread(
            run_scepline, env, "request", "reject", "tx-cam-2", "--reason", "unknown camera"
        )
        again = await asyncio.to_thread(run_scepline, env, "request", "approve", "tx-cam-2")
        shown = await asyncio.to_thread(run_scepline, env, "request", "show", "tx-cam-2")
        repository = product.embedded.repository
        for _ in range(100):
            issued = await repository.get("tx-cam-1|at:gear")
            if issued is not None and issued.state is RequestState.ISSUED:
                break
            await asyncio.sleep(0.1)

    assert listed.returncode == 0, listed.stderr
    for label in ("cam-1", "cam-2"):
        [line] = [line for line in listed.stdout.splitlines() if f"tx-{label}|at:gear" in line]
        assert line.endswith(f"tx-{label}|at:gear  gear  CN={label}"), line
    assert "2 request(s) in AWAITING_APPROVAL" in listed.stdout
    assert "0 request(s) in AWAITING_APPROVAL at endpoint wifi" in elsewhere.stdout
    assert approved.returncode == 0, approved.stderr
    assert "approved tx-cam-1|at:gear (CN=cam-1) at endpoint gear: VALIDATED" in approved.stdout
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected tx-cam-2|at:gear" in rejected.stdout
    assert again.returncode == 1
    assert "no request awaiting approval with transaction id 'tx-cam-2'" in again.stderr
    assert "rejected by " in shown.stdout and "unknown camera" in shown.stdout
    assert "endpoint     gear" in shown.stdout
    assert issued is not None and issued.state is RequestState.ISSUED
