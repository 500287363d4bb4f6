"""Run one untrusted program under hard limits and get a typed result back; no daemon, one process tree per run.

A :class:`Sandbox` runs ``argv`` with some files in a private working directory, feeds it ``stdin``, reads at most
``Limits.output_bytes`` of stdout and of stderr, and kills the whole process tree at the wall-clock deadline.
How strongly the program is isolated depends on what the host allows; a probe at first use picks the strongest
level that works (:mod:`rewardflow.sandbox.probe`), and every :class:`RunResult` carries it. A sandbox built with
``require="bwrap"`` refuses to run below that level instead of silently running with less.

What comes back is never ambiguous:

* the program ran and ended: ``exit_code`` (and ``signal`` if a signal ended it), its output, ``limit=None``;
* the program hit a limit: ``limit`` is ``"time limit"`` (wall clock or CPU), or ``"output limit"``;
* the sandbox itself could not run the program (bwrap failed to set up, fork failed):
  :class:`~rewardflow.errors.SandboxError` is raised. That is an infrastructure failure, never a score.

``collect`` names files to read back from the working directory after the program ends (SandboxFusion's
``fetch_files``): ``RunResult.files`` holds those that exist there as regular files, each cut to
``Limits.output_bytes``; a name that resolves outside the directory (a symbolic link out of it) is not read. Under
bwrap the directory is the sandbox's own tmpfs, gone when it ends, so a small supervisor inside the same sandbox
runs the program, then writes the files to a descriptor the program itself never holds. A run stopped by its
time limit (wall clock or CPU) still brings back what it wrote before, as SandboxFusion does: under bwrap the
supervisor enforces the wall clock itself, kills the rest of the sandbox and reads the files, the host's deadline
(a few seconds later) staying the backstop. A run killed for its output brings none.

Limits of the design: at the ``rlimits`` and ``unshare`` levels the program sees the host's file system (as the
caller, or as uid 65534 when the caller is root); at ``rlimits`` a program that calls ``setsid`` and forks can
outlive the run. Only ``bwrap`` gives the full containment the tests in ``tests/sandbox`` check.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import IO

from rewardflow.errors import IsolationError, SandboxError
from rewardflow.sandbox.limits import Isolation, Limits
from rewardflow.sandbox.probe import probe_isolation, system_binds

__all__ = ["RunResult", "Sandbox"]

NOBODY = 65534
WORKDIR = "/work"
_CHUNK = 65536
#: The environment a program starts with (bwrap clears everything else); HOME and TMPDIR are its workdir.
DEFAULT_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


@dataclass(frozen=True)
class RunResult:
    """What one run produced. ``limit`` says which limit ended it, if any."""

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    limit: str | None
    wall_s: float
    isolation: Isolation
    info: dict[str, object] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # what ``collect`` asked for and found

    @property
    def ok(self) -> bool:
        """The program exited 0 within its limits."""
        return self.limit is None and self.exit_code == 0

    def describe(self) -> str:
        """One line for a reason: the limit hit, the signal, or the exit code."""
        if self.limit:
            return self.limit
        if self.signal:
            try:
                return f"killed by {signal.Signals(self.signal).name}"
            except ValueError:
                return f"killed by signal {self.signal}"
        return f"exit code {self.exit_code}"


def drop_privileges() -> None:
    """In a child before ``exec``: when running as root, become uid/gid 65534.

    Why: a sandbox whose user maps to host root is exempt from RLIMIT_NPROC (the kernel never limits root's
    processes), so a fork bomb would be unbounded. As uid 65534, bubblewrap runs unprivileged and the limit holds,
    counted per sandbox (each has its own user namespace).
    """
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)


def _interpreter_binds(exe: str) -> list[str]:
    """Read-only paths an interpreter outside /usr needs inside the sandbox (its installation prefix)."""
    prefix = os.path.dirname(os.path.dirname(exe))
    if prefix.startswith("/usr/") or prefix in ("/usr", "/", ""):
        return []
    return [prefix]


def python_executable() -> str:
    """The real path of the interpreter running rewardflow (not a venv symlink), used inside the sandbox."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _others_can_run(path: str) -> bool:
    """Whether a user with no special rights (uid 65534) can reach and execute ``path``."""
    import stat

    current = "/"
    for part in os.path.dirname(path).strip("/").split("/"):
        current = os.path.join(current, part)
        try:
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    try:
        return bool(os.stat(path).st_mode & stat.S_IXOTH)
    except OSError:
        return False


class Sandbox:
    """Runs programs at the strongest available isolation level (or a forced one) under :class:`Limits`.

    Thread-safe and cheap: the probe runs once per process (cached), and each :meth:`run` is one process tree.
    ``bind`` adds read-only host paths (a toolchain outside ``/usr``); the running interpreter's prefix is bound
    automatically so :attr:`python` works inside.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        level: Isolation | str | None = None,
        require: Isolation | str = Isolation.RLIMITS,
        bind: Sequence[str] = (),
    ) -> None:
        self.limits = limits or Limits()
        self.require = Isolation.parse(require)
        self._forced = Isolation.parse(level) if level is not None else None
        self.bind = tuple(bind)
        self._level: Isolation | None = None
        self._lock = threading.Lock()

    @property
    def level(self) -> Isolation:
        """The level runs use; raises :class:`IsolationError` when it is below ``require``."""
        with self._lock:
            if self._level is None:
                self._level = self._forced if self._forced is not None else probe_isolation()
        if self._level < self.require:
            raise IsolationError(
                f"sandbox isolation {self._level} is below the required {self.require}"
                + ("; install bubblewrap (apt-get install bubblewrap)" if self.require is Isolation.BWRAP else "")
            )
        return self._level

    @property
    def python(self) -> str:
        """An interpreter the program can run at this sandbox's level.

        The running interpreter is bound into bwrap sandboxes. When the caller is root, the sandbox runs as uid
        65534 (see :func:`drop_privileges`), which may not reach an interpreter under ``/root`` (pyenv): then the
        system's ``python3`` is used (the harness needs only the standard library).
        """
        exe = python_executable()
        if os.geteuid() != 0 or _others_can_run(exe):
            return exe
        for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.path.exists(candidate) and _others_can_run(os.path.realpath(candidate)):
                return candidate
        raise SandboxError(f"no Python interpreter that uid {NOBODY} can run (tried {exe} and /usr/bin/python3)")

    def run(
        self,
        argv: Sequence[str],
        *,
        files: Mapping[str, bytes | str] | None = None,
        stdin: bytes | str = b"",
        limits: Limits | None = None,
        env: Mapping[str, str] | None = None,
        as_pid1: bool = False,
        collect: Sequence[str] = (),
    ) -> RunResult:
        """Run ``argv`` in a fresh working directory holding ``files``; see the module docstring.

        ``as_pid1`` (bwrap level) makes the program PID 1 of its namespace, so nothing it starts can signal it
        (the code harness uses it so the program under test cannot kill the harness). ``collect``: files to read
        back from the working directory afterwards (``RunResult.files``).
        """
        level = self.level
        limits = limits or self.limits
        data = {name: (v.encode() if isinstance(v, str) else bytes(v)) for name, v in (files or {}).items()}
        for name in [*data, *collect]:
            if name.startswith("/") or ".." in name.split("/") or not name:
                raise ValueError(f"file names are relative to the working directory, got {name!r}")
        stdin_bytes = stdin.encode() if isinstance(stdin, str) else bytes(stdin)
        environment = dict(DEFAULT_ENV)
        environment.update(env or {})
        wanted = list(dict.fromkeys(collect))
        if level is Isolation.BWRAP:
            return self._run_bwrap(list(argv), data, stdin_bytes, limits, environment, as_pid1, wanted)
        return self._run_host(level, list(argv), data, stdin_bytes, limits, environment, wanted)

    # -- bwrap ---------------------------------------------------------------------------------------------------

    def bwrap_command(
        self,
        argv: Sequence[str],
        files: Mapping[str, bytes],
        limits: Limits,
        env: Mapping[str, str],
        as_pid1: bool,
        status_fd: int | None = None,
    ) -> tuple[list[str], list[int]]:
        """The full bubblewrap command line for ``argv``, and the descriptors it must inherit (file contents)."""
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            raise SandboxError("bwrap disappeared after the probe")
        fds: list[int] = []
        binds = (*_interpreter_binds(self.python), *self.bind)
        cmd = [bwrap, *bwrap_args(binds, limits)]
        if status_fd is not None:
            cmd += ["--json-status-fd", str(status_fd)]
        if as_pid1:
            cmd.append("--as-pid-1")
        home = dict(env, HOME=WORKDIR, TMPDIR=WORKDIR)
        for key, value in home.items():
            cmd += ["--setenv", key, value]
        for name, content in files.items():
            fd = os.memfd_create("rf-file", 0)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view) :]
            os.lseek(fd, 0, os.SEEK_SET)
            fds.append(fd)
            cmd += ["--file", str(fd), f"{WORKDIR}/{name}"]
        cmd += ["--remount-ro", "/"]  # the sandbox's own root too: only /work and /tmp are writable
        # RLIMIT_NPROC is set inside the new user namespace, where it counts this sandbox's processes only.
        cmd += ["--", "/usr/bin/prlimit", f"--nproc={limits.nproc}:{limits.nproc}", "--", *argv]
        return cmd, fds

    def _run_bwrap(
        self,
        argv: list[str],
        files: dict[str, bytes],
        stdin: bytes,
        limits: Limits,
        env: dict[str, str],
        as_pid1: bool,
        collect: Sequence[str] = (),
    ) -> RunResult:
        if collect and "--unshare-pid" not in bwrap_args((), limits):  # the supervisor's kill(-1) stays inside
            raise SandboxError("refusing to collect files: the bwrap command has no PID namespace")
        status_r, status_w = os.pipe()
        channel: IO[bytes] | None = None
        extra: list[int] = []
        if collect:  # the collector's output: a host file the program cannot reach (closed for it, see below)
            channel = tempfile.TemporaryFile()
            extra.append(os.dup(channel.fileno()))  # its own number inside too; _execute closes what it passes
            argv, env = _with_collector(argv, env, collect, extra[0], self.python, limits)
        cmd, fds = self.bwrap_command(argv, files, limits, env, as_pid1, status_fd=status_w)
        fds += [status_w, *extra]
        # a collecting supervisor stops the program at the wall-clock limit itself, then reads the files back
        deadline = replace(limits, wall_s=limits.wall_s + _COLLECT_GRACE_S) if collect else limits
        try:
            result = _execute(cmd, stdin, deadline, fds, preexec=lambda: limited(limits), cwd="/")
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            status = _read_all(status_r)
            collected, timed_out = _read_channel(channel)
        docs = _json_docs(status)
        child = next((d for d in docs if "child-pid" in d), None)
        exited = next((d for d in docs if "exit-code" in d), None)
        exit_code, sig, stdout, stderr, limit, wall = result
        if timed_out and limit is None:  # the supervisor killed the program at the limit, then collected
            return RunResult(None, signal.SIGKILL, stdout, stderr, "time limit", wall, Isolation.BWRAP, files=collected)
        if child is None and limit is None:
            raise SandboxError(f"bwrap could not start the program: {stderr.decode(errors='replace').strip()[:500]}")
        if exited is not None and limit is None:
            exit_code, sig = _shell_status(int(exited["exit-code"]))
        elif limit is None:
            detail = stderr.decode(errors="replace").strip()[:500]
            raise SandboxError(
                f"bwrap ended without the program's status ({_describe_status(exit_code, sig)}): {detail}"
            )
        if sig == signal.SIGXCPU:
            limit = "time limit"
        # files the supervisor read after the program ended, however it ended (the CPU limit included); none when
        # the host had to kill the whole sandbox (output limit, or the supervisor missed its deadline)
        return RunResult(exit_code, sig, stdout, stderr, limit, wall, Isolation.BWRAP, files=collected)

    # -- unshare / rlimits -----------------------------------------------------------------------------------------

    def _run_host(
        self,
        level: Isolation,
        argv: list[str],
        files: dict[str, bytes],
        stdin: bytes,
        limits: Limits,
        env: dict[str, str],
        collect: Sequence[str] = (),
    ) -> RunResult:
        root = os.geteuid() == 0
        collected: dict[str, bytes] = {}
        workdir = tempfile.mkdtemp(prefix="rf-sandbox-")
        try:
            for name, content in files.items():
                path = os.path.join(workdir, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(content)
            if root:  # the program runs as nobody: give it its working directory
                for dirpath, _, names in os.walk(workdir):
                    os.chown(dirpath, NOBODY, NOBODY)
                    for n in names:
                        os.chown(os.path.join(dirpath, n), NOBODY, NOBODY)

            def preexec() -> None:
                limits.apply(nproc=level is Isolation.RLIMITS)
                drop_privileges()

            cmd = list(argv)
            if level is Isolation.UNSHARE:
                # A shell is the namespace's PID 1, not the program: PID 1 ignores the signals sent to it from
                # inside its namespace, so a program there that killed itself ran on and reported exit code 0.
                # The shell reports a signal's death as 128 + N, read back below as under bwrap.
                cmd = [
                    *unshare_args(),
                    "/bin/sh",
                    "-c",
                    '"$@"; exit $?',
                    "sh",
                    "/usr/bin/prlimit",
                    f"--nproc={limits.nproc}:{limits.nproc}",
                    "--",
                    *argv,
                ]
            environment = dict(env, HOME=workdir, TMPDIR=workdir)
            exit_code, sig, stdout, stderr, limit, wall = _execute(
                cmd, stdin, limits, [], preexec=preexec, cwd=workdir, env=environment
            )
            # read back however the program ended, a time limit included (as SandboxFusion does), except after
            # the output limit, where bwrap's supervisor dies with the sandbox: the levels agree. The process
            # group is dead by now (unshare: its whole PID namespace)
            if limit != "output limit":
                collected = _read_back(workdir, collect, limits.output_bytes)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if exit_code == 127 and level is Isolation.UNSHARE and b"unshare failed" in stderr:
            raise SandboxError(f"unshare could not start the program: {stderr.decode(errors='replace')[:500]}")
        if level is Isolation.UNSHARE and exit_code is not None:
            exit_code, sig = _shell_status(exit_code)
        if sig == signal.SIGXCPU:
            limit = "time limit"
        return RunResult(exit_code, sig, stdout, stderr, limit, wall, level, files=collected)


def _shell_status(code: int) -> tuple[int | None, int | None]:
    """``(exit_code, signal)`` from a status in the shell's form, where a death by signal N reads as 128 + N.

    bwrap and the ``unshare`` level's shell report that way, so a program that itself exits with 128 + N reads as
    killed by N. Only 129 up to 128 + SIGRTMAX can be a signal: 193-255 (255 is ``exit(-1)``) stay exit codes.
    """
    if 0 < code - 128 <= signal.SIGRTMAX:
        return None, code - 128
    return code, None


#: Runs the program inside the sandbox, then reads the files named in RF_COLLECT that resolve inside the working
#: directory and writes them, as a JSON object ``{"files": {name: base64}, "timeout": bool}``, to descriptor
#: RF_COLLECT_FD, which the program never holds (``subprocess`` closes every descriptor above 2 in it). It enforces
#: the wall-clock limit itself (RF_COLLECT_WALL seconds): at the limit it kills every other process of the PID
#: namespace (``kill(-1)`` spares the caller and the namespace's init) and still collects, as SandboxFusion returns
#: ``fetch_files`` after a timeout; the host's own deadline, a little later, stays the backstop. Exits with the
#: program's status, a signal's death as 128 + N (how bwrap reports it anyway).
_SUPERVISOR = """import base64, json, os, signal, subprocess, sys
fd = int(os.environ.pop('RF_COLLECT_FD'))
names = json.loads(os.environ.pop('RF_COLLECT'))
cap = int(os.environ.pop('RF_COLLECT_MAX'))
wall = float(os.environ.pop('RF_COLLECT_WALL'))
timeout = False
try:
    child = subprocess.Popen(sys.argv[1:])
except OSError as exc:
    sys.stderr.write(f'{sys.argv[1]}: {exc}\\n')
    code = 127
else:
    try:
        code = child.wait(timeout=wall)
    except subprocess.TimeoutExpired:
        timeout = True
        os.kill(-1, signal.SIGKILL)
        code = child.wait()
root = os.path.realpath('.')
out = {}
for name in names:
    path = os.path.realpath(name)
    if path.startswith(root + os.sep) and os.path.isfile(path):
        with open(path, 'rb') as f:
            out[name] = base64.b64encode(f.read(cap)).decode()
data = memoryview(json.dumps({'files': out, 'timeout': timeout}).encode())
while data:
    data = data[os.write(fd, data):]
sys.exit(128 - code if code < 0 else code)
"""

#: how much longer than the wall-clock limit the host waits for a collecting supervisor to kill, read and report
_COLLECT_GRACE_S = 3.0


def _with_collector(
    argv: list[str], env: dict[str, str], collect: Sequence[str], fd: int, python: str, limits: Limits
) -> tuple[list[str], dict[str, str]]:
    """``argv`` run under :data:`_SUPERVISOR`, which collects the files after it and writes them to ``fd``."""
    extra = {
        "RF_COLLECT": json.dumps(list(collect)),
        "RF_COLLECT_MAX": str(limits.output_bytes),
        "RF_COLLECT_FD": str(fd),
        "RF_COLLECT_WALL": repr(float(limits.wall_s)),
    }
    return [python, "-I", "-S", "-c", _SUPERVISOR, *argv], dict(env, **extra)


def _read_channel(channel: IO[bytes] | None) -> tuple[dict[str, bytes], bool]:
    """The supervisor's report, decoded: ``(files, whether it stopped the program at the wall-clock limit)``;
    nothing when it did not run to the end (the host killed the sandbox)."""
    if channel is None:
        return {}, False
    with channel:
        channel.seek(0)
        raw = channel.read()
    try:
        report = json.loads(raw or b"{}")
        files = {str(k): base64.b64decode(v) for k, v in report.get("files", {}).items()}
        return files, report.get("timeout") is True
    except (ValueError, TypeError, AttributeError):
        return {}, False


def _read_back(workdir: str, names: Sequence[str], cap: int) -> dict[str, bytes]:
    """Files from a host working directory that resolve inside it (no link out of it is followed)."""
    root = os.path.realpath(workdir)
    out: dict[str, bytes] = {}
    for name in names:
        path = os.path.realpath(os.path.join(root, name))
        if not path.startswith(root + os.sep):
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            if stat.S_ISREG(os.fstat(fd).st_mode):  # not a FIFO or a directory
                out[name] = f.read(cap)
    return out


def bwrap_args(extra_binds: Sequence[str], limits: Limits) -> list[str]:
    """The bubblewrap options shared by runs and the probe (everything but the status fd and the program)."""
    args = [
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--disable-userns",
        "--die-with-parent",
        "--new-session",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    args += system_binds()
    for path in extra_binds:
        args += ["--ro-bind", path, path]
    # /dev is bubblewrap's own tmpfs, without a size cap: made read-only, with a small capped /dev/shm on it.
    args += ["--proc", "/proc", "--dev", "/dev", "--size", str(16 << 20), "--tmpfs", "/dev/shm", "--remount-ro", "/dev"]
    args += ["--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp"]
    args += ["--size", str(limits.tmpfs_bytes), "--tmpfs", WORKDIR, "--chdir", WORKDIR]
    return args


def unshare_args() -> list[str]:
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--net",
        "--ipc",
        "--uts",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
    ]


def limited(limits: Limits) -> None:
    limits.apply(nproc=False)
    drop_privileges()


def _execute(
    cmd: list[str],
    stdin: bytes,
    limits: Limits,
    pass_fds: list[int],
    *,
    preexec: object,
    cwd: str,
    env: dict[str, str] | None = None,
) -> tuple[int | None, int | None, bytes, bytes, str | None, float]:
    """Start ``cmd`` in a new session, pump stdin/stdout/stderr with caps, kill the group at the deadline."""
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=pass_fds,
            start_new_session=True,
            preexec_fn=preexec,  # type: ignore[arg-type]
            cwd=cwd,
            env=env if env is not None else {"PATH": "/usr/bin:/bin"},
        )
    except OSError as exc:
        raise SandboxError(f"could not start the sandbox: {exc}") from exc
    for fd in pass_fds:  # the child has its copies; ours would keep the status pipe open
        with contextlib.suppress(OSError):
            os.close(fd)
    pass_fds.clear()
    deadline = start + limits.wall_s
    limit: str | None = None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()  # type: ignore[union-attr]
    out = {out_fd: bytearray(), err_fd: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in out:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pending = memoryview(stdin)
    stdin_fd = proc.stdin.fileno()  # type: ignore[union-attr]
    if pending:
        os.set_blocking(stdin_fd, False)
        sel.register(stdin_fd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()  # type: ignore[union-attr]
    try:
        while len(sel.get_map()) > 0:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                limit = "time limit"
                break
            for key, _ in sel.select(min(remaining, 0.5)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        n = os.write(fd, pending[:_CHUNK])
                        pending = pending[n:]
                    except (BrokenPipeError, OSError):
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()  # type: ignore[union-attr]
                    continue
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = out[fd]
                room = limits.output_bytes - len(buf)
                buf += chunk[: max(room, 0)]
                if len(chunk) > room:
                    limit = "output limit"
            if limit:
                break
        if limit:
            _kill_group(proc)
        remaining = max(deadline - time.perf_counter(), 0.05)
        try:
            proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            limit = limit or "time limit"
            _kill_group(proc)
            proc.wait()
    finally:
        sel.close()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        if proc.poll() is None:
            _kill_group(proc)
            proc.wait()
    wall = time.perf_counter() - start
    code = proc.returncode
    stdout, stderr = bytes(out[out_fd]), bytes(out[err_fd])
    if code is not None and code < 0:
        return None, -code, stdout, stderr, limit, wall
    return code, None, stdout, stderr, limit, wall


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _read_all(fd: int) -> bytes:
    chunks = []
    try:
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


def _json_docs(raw: bytes) -> list[dict[str, object]]:
    """bwrap's status fd holds several JSON objects back to back."""
    docs = []
    decoder = json.JSONDecoder()
    text = raw.decode(errors="replace")
    i = 0
    while i < len(text):
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            break
        if isinstance(doc, dict):
            docs.append(doc)
    return docs


def _describe_status(code: int | None, sig: int | None) -> str:
    return f"signal {sig}" if sig else f"exit code {code}"
