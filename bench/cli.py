"""How long the ``scepline`` command takes to answer, per command: the wall time
and the CPU time (user + system) of each run, median over ``--runs``.

Each command runs as its own process (``python -m scepline``), as an operator
runs it, against a fresh data directory holding a lab CA and an empty database
(made first, not timed). On a shared machine the wall time varies with the
load; the CPU time much less. Not a test: it prints figures.

    uv run python bench/cli.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: list[list[str]] = [
    ["--help"],
    ["--version"],
    ["request", "list", "--help"],
    ["up", "--help"],
    ["request", "list", "--bogus"],
    ["request", "list"],
    ["request", "show", "no-such-transaction"],
    ["cert", "find", "device"],
    ["cert", "show", "1f"],
    ["dlq", "list"],
    ["ca", "show"],
]


def _run(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one ``scepline ARGS``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "scepline", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (median)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SCEPLINE_")},
            "SCEPLINE_DATA_DIR": str(Path(scratch) / "var"),
            "SCEPLINE_LOG_LEVEL": "WARNING",
        }
        for setup in (["ca", "init"], ["db", "upgrade"]):
            subprocess.run(
                [sys.executable, "-m", "scepline", *setup],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
        _run(["--version"], env)  # warm the file cache
        print(f"{'command':<42} {'wall s':>7} {'cpu s':>7}  exit   (median of {options.runs})")
        for args in COMMANDS:
            runs = [_run(args, env) for _ in range(options.runs)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"{'scepline ' + ' '.join(args):<42} {wall:7.2f} {cpu:7.2f}  {runs[0][2]:>4}")
    load = os.getloadavg()[0]
    print(f"(load average {load:.1f} on {os.cpu_count()} cores while measuring)")


if __name__ == "__main__":
    main()
