"""Pytest fixtures running the Intune simulator over HTTPS on a free loopback port.

Reuse from another test package with ``pytest_plugins = ["tests.intune_sim.fixtures"]``
(or import the fixtures into a conftest). One server runs per test session; the
``intune_sim`` fixture resets it to its initial configuration before each test.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
import requests

from scepline_devtools.intune_sim import RunningSimulator, SimulatorAdmin, SimulatorState

__all__ = ["IntuneSim", "intune_sim", "intune_sim_server"]


@dataclass
class IntuneSim:
    """A running simulator, as a test sees it."""

    base_url: str  # also the Graph base URL and the authority host
    ca_bundle: Path  # trust this (sim-ca.pem) to talk HTTPS to the simulator
    admin: SimulatorAdmin
    state: SimulatorState  # the same state the server uses, for in-process tests
    tenant_id: str
    tenant_domain: str
    client_id: str
    client_secret: str

    @property
    def authority(self) -> str:
        """The MSAL authority: base URL + tenant (AUTH_AUTHORITY + TENANT)."""
        return f"{self.base_url}/{self.tenant_id}"

    @property
    def graph_url(self) -> str:
        return self.base_url

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_bundle))

    def http(self, **options: Any) -> httpx.Client:
        return httpx.Client(verify=self.ssl_context(), trust_env=False, **options)

    def requests_session(self) -> requests.Session:
        # trust_env=False: REQUESTS_CA_BUNDLE would otherwise override `verify`
        # (docs/specs/intune-api.md, "MSAL for Python against another authority").
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.ca_bundle)
        return session

    def msal_app(
        self, client_credential: Any = None, *, client_id: str | None = None, **options: Any
    ) -> msal.ConfidentialClientApplication:
        """A confidential client configured the way the product must configure it."""
        options.setdefault("instance_discovery", False)  # else it asks login.microsoftonline.com
        return msal.ConfidentialClientApplication(
            client_id or self.client_id,
            client_credential=client_credential or self.client_secret,
            authority=options.pop("authority", self.authority),
            http_client=self.requests_session(),
            **options,
        )


@pytest.fixture(scope="session")
def intune_sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSimulator]:
    data_dir = tmp_path_factory.mktemp("intune-sim")
    with RunningSimulator(SimulatorState(), data_dir=data_dir, tls=True) as running:
        yield running


@pytest.fixture
def intune_sim(intune_sim_server: RunningSimulator) -> Iterator[IntuneSim]:
    state = intune_sim_server.state
    state.reset()
    assert intune_sim_server.ca_bundle is not None
    app = state.default_app
    assert app.client_secret is not None
    with SimulatorAdmin(intune_sim_server.base_url, verify=intune_sim_server.ca_bundle) as admin:
        yield IntuneSim(
            base_url=intune_sim_server.base_url,
            ca_bundle=intune_sim_server.ca_bundle,
            admin=admin,
            state=state,
            tenant_id=state.tenant_id,
            tenant_domain=state.tenant_domain,
            client_id=app.client_id,
            client_secret=app.client_secret,
        )
