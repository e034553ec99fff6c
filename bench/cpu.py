"""CPU accounting for the benchmarks: CPU seconds spent by each process group
during a measured window, read from /proc/<pid>/stat (utime + stime).

Wall-clock throughput on a shared 2-core machine is noisy; the CPU one request
costs, summed over every process that serves it, is not (much): 2 cores divided
by it is the ceiling on issued/s. Groups are re-resolved at both ends of the
window, so a process that started during it (a new PostgreSQL backend) counts
with all of its CPU; one that exited during it is lost (pools keep theirs).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CpuMeter", "children_of", "matching", "py_spy"]

_TICK = os.sysconf("SC_CLK_TCK")

# A group: label -> the pids it holds right now.
PidSource = Callable[[], set[int]]


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, utime + stime in ticks, start time) of ``pid``, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is 4, utime 14, stime 15, starttime 22.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def children_of(root: int) -> PidSource:
    """``root`` and all its descendants."""

    def pids() -> set[int]:
        parents = {}
        for pid in _all_pids():
            stat = _stat(pid)
            if stat is not None:
                parents[pid] = stat[0]
        found = {root} if root in parents else set()
        grew = True
        while grew:
            grew = False
            for pid, ppid in parents.items():
                if ppid in found and pid not in found:
                    found.add(pid)
                    grew = True
        return found

    return pids


def matching(comm: str, contains: str = "", excluding: str | None = None) -> PidSource:
    """Processes named ``comm`` whose command line contains ``contains``
    (and not ``excluding``)."""

    def pids() -> set[int]:
        found = set()
        for pid in _all_pids():
            if _comm(pid) != comm:
                continue
            line = _cmdline(pid)
            if contains in line and (excluding is None or excluding not in line):
                found.add(pid)
        return found

    return pids


@dataclass
class CpuMeter:
    """Snapshot every group at ``window()`` entry and exit; ``seconds`` per group."""

    groups: dict[str, PidSource]
    seconds: dict[str, float] = field(default_factory=dict)

    def _snapshot(self) -> dict[str, dict[tuple[int, int], int]]:
        taken: dict[str, dict[tuple[int, int], int]] = {}
        for label, source in self.groups.items():
            taken[label] = {}
            for pid in source():
                stat = _stat(pid)
                if stat is not None:
                    taken[label][(pid, stat[2])] = stat[1]  # (pid, start) survives pid reuse
        return taken

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        before = self._snapshot()
        try:
            yield
        finally:
            after = self._snapshot()
            for label in self.groups:
                ticks = sum(
                    value - before[label].get(key, 0) for key, value in after[label].items()
                )
                self.seconds[label] = ticks / _TICK


@contextlib.contextmanager
def py_spy(targets: dict[str, int], directory: Path, rate: int = 100) -> Iterator[None]:
    """``py-spy record`` (raw collapsed stacks) of each target pid for the window."""
    directory.mkdir(parents=True, exist_ok=True)
    recorders = [
        subprocess.Popen(
            [
                "py-spy",
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(directory / f"{label}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for label, pid in targets.items()
    ]
    try:
        yield
    finally:
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
        for recorder in recorders:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
