"""Who holds a lease: the process that claimed a row, named so that another one on its machine can tell it died.

A claim records its owner as host name, boot, pid namespace, pid and the process's start time
(/proc/PID/stat, field 22: clock ticks since boot). The start time tells a pid the kernel gave to a new
process from the owner; the boot and the namespace tell whether a pid and a start time mean the same thing
here as they did for the owner (a machine booted again, a container with its own pids). Only an owner
of this very machine, boot and pid namespace can be known to be dead; any other (another host, a system
without /proc) is taken to be alive, and its lease is waited out.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from newsletter.models import OWNER_MAX_CHARS

PROC = Path("/proc")
BOOT_ID = PROC / "sys" / "kernel" / "random" / "boot_id"
START_FIELD = 22  # proc(5): /proc/PID/stat, (22) starttime
GONE_STATES = {"Z", "X"}  # proc(5): a zombie or a dead process holds nothing
HOST_MAX_CHARS = 64  # Linux's HOST_NAME_MAX


@dataclass(frozen=True)
class Owner:
    """A process as its claims name it: where it runs (host, boot, pid namespace), its pid and start time."""

    host: str
    boot: str
    namespace: str
    pid: int
    started: int

    def __str__(self) -> str:
        return f"{self.host} {self.boot} {self.namespace} {self.pid} {self.started}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """The owner a claim names, or None for one this version cannot read."""
        parts = text.split(" ")
        if len(parts) != 5 or not parts[3].isdigit() or not parts[4].isdigit():
            return None
        return cls(parts[0], parts[1], parts[2], int(parts[3]), int(parts[4]))

    def same_machine(self, other: Owner) -> bool:
        """Whether pids and start times of `other` mean here what they meant for it."""
        return (self.host, self.boot, self.namespace) == (other.host, other.boot, other.namespace)


def this_process() -> str | None:
    """The owner this process writes in its claims, or None where /proc cannot tell (its leases are waited out)."""
    return _name(os.getpid())  # by pid: a forked child is another owner


@functools.lru_cache(maxsize=1)
def _name(pid: int) -> str | None:
    return of(pid)


def of(pid: int) -> str | None:
    """The owner name of process `pid` of this machine, or None when it does not run or /proc cannot tell."""
    try:
        boot = BOOT_ID.read_text().strip()
        namespace = os.readlink(PROC / "self" / "ns" / "pid").removeprefix("pid:[").removesuffix("]")
        # /proc mounted for another pid namespace would name other processes by our pids.
        if int(os.readlink(PROC / "self")) != os.getpid():
            return None
    except (OSError, ValueError):
        return None
    started = _started(pid)
    if started is None:
        return None
    name = str(Owner(socket.gethostname()[:HOST_MAX_CHARS].replace(" ", "_"), boot, namespace, pid, started))
    return name if len(name) <= OWNER_MAX_CHARS else None


def dead(names: Iterable[str | None]) -> list[str]:
    """The owners among `names` that ran on this machine and run no longer: their rows may be taken at once."""
    here = this_process()
    mine = Owner.parse(here) if here is not None else None
    if mine is None:
        return []
    gone = []
    for name in set(names):
        owner = Owner.parse(name) if name else None
        if owner is not None and owner.same_machine(mine) and _started(owner.pid) != owner.started:
            gone.append(str(name))
    return sorted(gone)


def _started(pid: int) -> int | None:
    """When process `pid` started (clock ticks after boot), or None when it no longer runs."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name, field 2, is in parentheses and may hold spaces and parentheses itself.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in GONE_STATES:
        return None
    return int(fields[START_FIELD - 3])
