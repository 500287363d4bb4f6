"""Resource limits for one sandboxed program, and the isolation levels it can run at.

Defaults are sized for competitive-programming style code (one solution, a few test cases): 10 s of wall clock,
10 s of CPU, 1 GiB of address space, 64 processes, 16 MiB per written file, 64 MiB of private tmpfs, 64 open
files, and 1 MiB of stdout and of stderr read back by the parent. ``RLIMIT_CORE`` is always 0.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, replace
from enum import IntEnum

__all__ = ["Isolation", "Limits"]

_MIB = 1024 * 1024


class Isolation(IntEnum):
    """How strongly a program is isolated; higher is stronger. Every result says which level it ran at.

    * ``RLIMITS``: resource limits, a new session and a wall-clock kill only. The program sees the host's
      files and network with the caller's (or, for root, nobody's) permissions. A fallback, not a sandbox.
    * ``UNSHARE``: ``unshare`` user, PID, network, IPC and UTS namespaces plus rlimits; no network, no
      signals to the host's processes, every descendant dies with the namespace; the file system is the host's.
    * ``BWRAP``: bubblewrap: the namespaces above plus a new mount namespace with a read-only ``/usr``, a
      private size-capped tmpfs working directory, no ``/etc`` secrets, no home, uid 65534, ``--die-with-parent``.
    """

    RLIMITS = 1
    UNSHARE = 2
    BWRAP = 3

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Isolation) -> Isolation:
        if isinstance(value, Isolation):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(str(level) for level in cls)
            raise ValueError(f"unknown isolation level {value!r}; one of {names}") from None


@dataclass(frozen=True, slots=True)
class Limits:
    """Hard limits for one run. Sizes in bytes, times in seconds."""

    wall_s: float = 10.0  # wall clock, whole process tree killed at the deadline
    cpu_s: int = 10  # RLIMIT_CPU (SIGXCPU at the soft limit, SIGKILL one second later)
    memory_bytes: int = 1024 * _MIB  # RLIMIT_AS, per process
    nproc: int = 64  # RLIMIT_NPROC, counted per sandbox (its own user namespace)
    file_bytes: int = 16 * _MIB  # RLIMIT_FSIZE, largest file the program may write
    nofile: int = 64  # RLIMIT_NOFILE
    output_bytes: int = 1 * _MIB  # read back per stream (stdout, stderr); more kills the program
    tmpfs_bytes: int = 64 * _MIB  # size of the private working directory (bwrap level)

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_bytes", "nproc", "file_bytes", "nofile", "output_bytes", "tmpfs_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {getattr(self, name)}")

    def with_(self, **changes: float) -> Limits:
        """A copy with some fields changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def apply(self, *, nproc: bool = True) -> None:
        """Set the rlimits on the calling process (a ``preexec_fn`` in the child, before ``exec``)."""
        cpu = max(1, int(self.cpu_s))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (self.file_bytes, self.file_bytes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
