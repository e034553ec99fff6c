"""The console's deployments: ``scepline up`` (two serving processes under
its supervisor, which serves the admin port) and the pipeline on RabbitMQ +
PostgreSQL with ``scepline admin-api`` beside it; both with the Intune
provider on the simulator, so that Intune can be made to fail.

One of each per test package run (``scope="package"``): the API tests and the
browser tests share them, so everything here must leave the simulator without
faults and must not assume it is alone on the deployment.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scepline_devtools.intune_sim import RunningSimulator, SimulatorAdmin
from scepline_devtools.scep_client import ScepClient, build_csr
from scepline_shared.scep import CertRep, PkiStatus
from tests.fixtures.processes import ProcessGroup, free_port, scepline_cluster, scepline_up
from tests.intune.support import GRAPH_RESOURCE
from tests.intune_sim.fixtures import intune_sim_server
from tests.support.commands import run_scepline
from tests.support.loops import run_in_fresh_loop
from tests.support.pki import name, requester

__all__ = ["Deployment", "console_deployment", "intune_sim_server", "sim_admin"]


@pytest.fixture(scope="package")
def sim_admin(intune_sim_server: RunningSimulator) -> Iterator[SimulatorAdmin]:
    """The simulator's admin client (no reset: the deployments hold its tokens)."""
    assert intune_sim_server.ca_bundle is not None
    with SimulatorAdmin(intune_sim_server.base_url, verify=intune_sim_server.ca_bundle) as admin:
        yield admin


def intune_env(sim: RunningSimulator) -> dict[str, str]:
    app = sim.state.default_app
    assert app.client_secret is not None and sim.ca_bundle is not None
    return {
        "SCEPLINE_CHALLENGE_PROVIDER": "intune",
        "SCEPLINE_INTUNE_TENANT": sim.state.tenant_id,
        "SCEPLINE_INTUNE_CLIENT_ID": app.client_id,
        "SCEPLINE_INTUNE_CLIENT_SECRET": app.client_secret,
        "SCEPLINE_INTUNE_AUTHORITY_URL": sim.base_url,
        "SCEPLINE_INTUNE_GRAPH_URL": sim.base_url,
        "SCEPLINE_INTUNE_GRAPH_RESOURCE_URL": GRAPH_RESOURCE,
        "SCEPLINE_INTUNE_CA_BUNDLE": str(sim.ca_bundle),
        "SCEPLINE_INTUNE_TIMEOUT_SECONDS": "5",
        "SCEPLINE_INTUNE_RETRY_BUDGET_SECONDS": "0.5",
        "SCEPLINE_INTUNE_REVOCATION_INTERVAL_SECONDS": "0",
    }


# What both deployments share: quick retries and dead letters, a sweep and CRL
# checks every second, and a wrong-token limit the tests never reach (it is
# specified in-process, tests/console/test_security.py).
SETTINGS = {
    "SCEPLINE_SYNC_WAIT_SECONDS": "3",
    "SCEPLINE_RETRY_MAX_ATTEMPTS": "2",
    "SCEPLINE_RETRY_BASE_DELAY_SECONDS": "0.05",
    "SCEPLINE_SWEEP_STALE_AFTER_SECONDS": "6",
    "SCEPLINE_SWEEP_INTERVAL_SECONDS": "1",
    "SCEPLINE_CRL_CHECK_INTERVAL_SECONDS": "1",
    "SCEPLINE_QUEUE_METRICS_INTERVAL_SECONDS": "1",
    "SCEPLINE_ADMIN_AUTH_FAILURES_ALLOWED": "10000",
    "SCEPLINE_LOG_FORMAT": "console",
}


@dataclass
class Deployment:
    kind: str  # "up" or "pipeline"
    scep_url: str
    admin_url: str
    env: dict[str, str]  # the settings every process has (for operator commands)
    sim: SimulatorAdmin
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token

    def cli(self, *args: str) -> str:
        done = run_scepline(self.env, *args)
        assert done.returncode == 0, f"scepline {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def new_token(self, role: str, *extra: str) -> str:
        """``scepline admin token create``: the token is the last line of its output."""
        return self.cli("admin", "token", "create", "--role", role, *extra).splitlines()[-1]

    def api(self, role: str | None = "operator") -> httpx.Client:
        headers = {} if role is None else {"authorization": f"Bearer {self.tokens[role]}"}
        return httpx.Client(base_url=self.admin_url, headers=headers, timeout=30)

    def enrol(self, label: str, *, transaction_id: str | None = None) -> CertRep:
        """Device ``label`` enrols with a challenge the simulator minted for it."""
        challenge = self.sim.mint_challenge(subject=f"CN={label}").challenge
        who = requester(label)
        csr = build_csr(who.key, name(label), challenge=challenge)

        async def exchange() -> CertRep:
            client = ScepClient(self.scep_url)
            try:
                return await client.enrol(csr, who, transaction_id=transaction_id or f"tx-{label}")
            finally:
                await client.aclose()

        return run_in_fresh_loop(exchange())

    def issued(self, label: str) -> CertRep:
        rep = self.enrol(label)
        assert rep.status is PkiStatus.SUCCESS, rep
        return rep

    def wait_for(self, what: str, check: object, timeout: float = 60) -> object:
        """Poll ``check()`` until it returns something true."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()  # type: ignore[operator]
            if found:
                return found
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}")

    def request_state(self, transaction_id: str) -> str | None:
        with self.api("viewer") as api:
            answer = api.get(f"/api/v1/requests/{transaction_id}")
        if answer.status_code != 200:
            return None
        return answer.json()["request"]["state"]

    def parked(self, transaction_id: str) -> dict[str, object] | None:
        with self.api("viewer") as api:
            letters = api.get("/api/v1/dead-letters").json()["dead_letters"]
        waiting = [
            letter
            for letter in letters
            if letter["transaction_id"] == transaction_id and not letter["resolved"]
        ]
        return waiting[0] if waiting else None


def wait_for_admin(url: str, process: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/v1/openapi.json", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"no admin port at {url}: {getattr(process, 'log', '')[-3000:]}")


@contextlib.contextmanager
def up_deployment(base: Path, sim: RunningSimulator, admin: SimulatorAdmin) -> Iterator[Deployment]:
    settings = {**SETTINGS, **intune_env(sim), "SCEPLINE_WORKERS": "2"}
    lowered = {key.removeprefix("SCEPLINE_").lower(): value for key, value in settings.items()}
    with scepline_up(base / "var", **lowered) as (url, process):
        admin_url = process.admin_url
        wait_for_admin(admin_url, process)
        env = {**settings, "SCEPLINE_DATA_DIR": str(base / "var")}
        yield Deployment("up", url, admin_url, env, admin)


@contextlib.contextmanager
def pipeline_deployment(
    base: Path,
    sim: RunningSimulator,
    admin: SimulatorAdmin,
    *,
    rabbitmq_url: str,
    postgres_admin_dsn: str,
) -> Iterator[Deployment]:
    settings = {**SETTINGS, **intune_env(sim)}
    lowered = {key.removeprefix("SCEPLINE_").lower(): value for key, value in settings.items()}
    with scepline_cluster(
        base,
        rabbitmq_url=rabbitmq_url,
        postgres_admin_dsn=postgres_admin_dsn,
        settings=lowered,
        ingress_sync_wait={"main": settings["SCEPLINE_SYNC_WAIT_SECONDS"]},
    ) as cluster:
        group = ProcessGroup(cluster.env, base)
        port = free_port()
        process = group.start("admin-api", "admin-api", env={"SCEPLINE_ADMIN_PORT": str(port)})
        try:
            wait_for_admin(process.admin_url, process)
            yield Deployment(
                "pipeline", cluster.urls["main"], process.admin_url, cluster.env, admin
            )
        finally:
            group.stop_all()


DEPLOYMENTS = [
    pytest.param("up"),
    pytest.param("pipeline", marks=[pytest.mark.postgres, pytest.mark.rabbitmq]),
]


@pytest.fixture(scope="package", params=DEPLOYMENTS)
def console_deployment(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    intune_sim_server: RunningSimulator,
    sim_admin: SimulatorAdmin,
) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "up":
        running = up_deployment(base, intune_sim_server, sim_admin)
    else:
        running = pipeline_deployment(
            base,
            intune_sim_server,
            sim_admin,
            rabbitmq_url=request.getfixturevalue("rabbitmq_url"),
            postgres_admin_dsn=request.getfixturevalue("postgres_admin_dsn"),
        )
    with running as deployment:
        deployment.tokens = {
            "viewer": deployment.new_token("viewer", "--name", "on-call viewer"),
            "operator": deployment.new_token("operator", "--name", "pki operator"),
        }
        yield deployment
