"""Running ``scepline`` commands as an operator would: their own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

__all__ = ["run_scepline"]


def run_scepline(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scepline ARGS`` with ``env`` over this process's environment; ``up``
    binds a free admin port unless ``env`` names one (never 8081, which tests
    running side by side would share)."""
    from tests.fixtures.processes import free_port

    return subprocess.run(
        [sys.executable, "-m", "scepline", *args],
        env={"SCEPLINE_ADMIN_PORT": str(free_port()), **os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
