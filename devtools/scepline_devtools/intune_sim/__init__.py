"""A faithful fake of Entra ID, Microsoft Graph and Intune's SCEP validation API.

Real HTTP(S) on loopback, so the product's real Intune client (MSAL + httpx)
talks to it exactly as to Microsoft; see docs in each module and
``tests/intune_sim`` for the behaviour, written as a specification.
"""

from .admin_client import AsyncSimulatorAdmin, SimulatorAdmin
from .app import create_simulator
from .models import (
    AppRegistration,
    ChallengeSpec,
    FaultKind,
    FaultSpec,
    Knobs,
    MintedChallenge,
    RecordedCall,
    RecordedNotification,
    RevocationSeed,
    Route,
)
from .server import RunningSimulator, serve
from .state import (
    GRAPH_SCOPE,
    INTUNE_APP_ID,
    INTUNE_SCOPE,
    INTUNE_SCOPE_SINGLE_SLASH,
    SimulatorState,
)

__all__ = [
    "GRAPH_SCOPE",
    "INTUNE_APP_ID",
    "INTUNE_SCOPE",
    "INTUNE_SCOPE_SINGLE_SLASH",
    "AppRegistration",
    "AsyncSimulatorAdmin",
    "ChallengeSpec",
    "FaultKind",
    "FaultSpec",
    "Knobs",
    "MintedChallenge",
    "RecordedCall",
    "RecordedNotification",
    "RevocationSeed",
    "Route",
    "RunningSimulator",
    "SimulatorAdmin",
    "SimulatorState",
    "create_simulator",
    "serve",
]
