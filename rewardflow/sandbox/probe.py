"""Which isolation level this host allows: tried once per process, strongest first.

``bwrap`` is tried by running ``/usr/bin/true`` with exactly the options real runs use; ``unshare`` likewise;
``rlimits`` always works. A host without bubblewrap, or one where unprivileged user namespaces are off (some
containers, ``kernel.unprivileged_userns_clone=0``), falls back, and says so in every result. Set
``RF_SANDBOX_LEVEL`` to force a lower level (for testing the fallbacks), never a higher one.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess

from rewardflow.sandbox.limits import Isolation, Limits

__all__ = ["probe_isolation", "system_binds"]

logger = logging.getLogger(__name__)

# Host paths the sandbox sees read-only (when they exist). Not /etc as a whole: no shadow, no passwd.
_RO_DIRS = ("/usr", "/opt/rewardflow-toolchains")
_RO_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/alternatives")


@functools.lru_cache(maxsize=1)
def system_binds() -> tuple[str, ...]:
    """bwrap arguments that lay out a read-only system: /usr, the merged-/usr symlinks, a few /etc files."""
    args: list[str] = []
    for path in _RO_DIRS:
        if os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in _RO_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return tuple(args)


def _works(cmd: list[str]) -> bool:
    from rewardflow.sandbox.runner import drop_privileges

    try:  # as the runs will be: uid 65534 when the caller is root
        proc = subprocess.run(
            cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL, preexec_fn=drop_privileges, cwd="/"
        )
    except (OSError, subprocess.SubprocessError) as exc:
        logger.info("sandbox probe %s failed: %s", cmd[0], exc)
        return False
    if proc.returncode != 0:
        logger.info("sandbox probe %s failed: %s", cmd[0], proc.stderr.decode(errors="replace")[:300])
    return proc.returncode == 0


@functools.lru_cache(maxsize=1)
def probe_isolation() -> Isolation:
    """The strongest level that runs a trivial program here (cached for the process)."""
    from rewardflow.sandbox.runner import bwrap_args, unshare_args

    cap = os.environ.get("RF_SANDBOX_LEVEL")
    ceiling = Isolation.parse(cap) if cap else Isolation.BWRAP
    true = shutil.which("true") or "/usr/bin/true"
    bwrap = shutil.which("bwrap")
    if ceiling >= Isolation.BWRAP and bwrap and _works([bwrap, *bwrap_args((), Limits()), "--", true]):
        return Isolation.BWRAP
    if ceiling >= Isolation.UNSHARE and shutil.which("unshare") and shutil.which("prlimit"):
        if _works([*unshare_args(), true]):
            return Isolation.UNSHARE
    logger.warning("no namespace sandbox available: untrusted code runs with rlimits only")
    return Isolation.RLIMITS
