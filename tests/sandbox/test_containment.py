"""Each attack from issue 15 against the bwrap sandbox: it ends with a typed result, the host is untouched, and no
process is left behind (the ``py`` fixture checks /proc for the run's marker after every test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rewardflow.errors import IsolationError
from rewardflow.sandbox import Isolation, Limits, Sandbox
from tests.sandbox.conftest import processes_with_cmdline


def _host_still_works(sandbox: Sandbox) -> None:
    """After an attack, the host can start processes and the next sample runs normally."""
    assert subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True).stdout == "42\n"
    after = sandbox.run([sandbox.python, "-I", "-S", "-c", "print(6 * 7)"])
    assert after.ok and after.stdout == b"42\n"


def test_a_plain_program_runs_as_nobody_in_a_private_workdir(py) -> None:
    result = py.run(
        "import os, sys; print(os.getuid(), os.getcwd(), open('in.txt').read(), sys.stdin.read())",
        files={"in.txt": "file"},
        stdin=b"stdin",
    )
    assert result.ok, result
    assert result.stdout.split() == [b"65534", b"/work", b"file", b"stdin"]
    assert result.isolation is Isolation.BWRAP


def test_fork_bomb_is_capped_and_cleaned_up(py) -> None:
    code = textwrap.dedent(
        """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
    )
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, len(processes_with_cmdline(py.marker)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = py.run(code, limits=py.sandbox.limits.with_(wall_s=3))
    finally:
        done.set()
        watcher.join()
    assert result.limit == "time limit"
    assert 2 <= peak <= py.sandbox.limits.nproc + 2  # RLIMIT_NPROC held (the bwrap init is not counted here)
    _host_still_works(py.sandbox)


def test_allocating_8_gb_fails_inside(py) -> None:
    result = py.run("x = bytearray(8 * 1024**3)\nprint('allocated')")
    assert result.limit is None and result.exit_code == 1
    assert b"MemoryError" in result.stderr and b"allocated" not in result.stdout
    _host_still_works(py.sandbox)


def test_endless_print_of_1_gb_is_cut_at_the_output_cap(py) -> None:
    result = py.run("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(1024 * 1024): sys.stdout.write(line)")
    assert result.limit == "output limit"
    assert len(result.stdout) == py.sandbox.limits.output_bytes


def test_no_network_loopback_or_outside(py) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    code = textwrap.dedent(
        f"""
        import socket
        for host, port in (("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)):
            try:
                socket.create_connection((host, port), timeout=2)
                print("connected", host)
            except OSError as exc:
                print("blocked", host, type(exc).__name__)
        """
    )
    try:
        result = py.run(code)
        with pytest.raises(TimeoutError):
            server.accept()  # nothing reached the host's loopback
    finally:
        server.close()
    assert result.ok, result
    assert b"connected" not in result.stdout
    assert result.stdout.count(b"blocked") == 3


def test_no_writes_outside_the_workdir_and_no_secrets(py, tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    code = textwrap.dedent(
        f"""
        import os
        for path in ("/usr/rf_evil", "/etc/rf_evil", "/rf_evil", {str(tmp_path / "evil")!r}, "/root/rf_evil"):
            try:
                open(path, "w").write("x")
                print("wrote", path)
            except OSError as exc:
                print("denied", type(exc).__name__)
        for path in ("/etc/shadow", {str(secret)!r}, os.path.expanduser("~root") + "/.bashrc"):
            try:
                print("read", open(path).read()[:20])
            except OSError as exc:
                print("unreadable", type(exc).__name__)
        try:
            print("home", os.listdir("/root"))
        except OSError as exc:
            print("no home", type(exc).__name__)
        open("inside.txt", "w").write("fine")  # the private workdir is writable
        print("workdir ok")
        """
    )
    result = py.run(code)
    assert result.ok, result
    out = result.stdout.decode()
    assert "wrote" not in out and out.count("denied") == 5
    assert "read" not in out.replace("unreadable", "") and out.count("unreadable") == 3
    assert "host secret" not in out and "workdir ok" in out
    assert not (tmp_path / "evil").exists()
    assert not os.path.exists("/rf_evil")


def test_filling_the_disk_stops_at_the_caps(py) -> None:
    """Every writable place is a size-capped tmpfs (/dev itself is read-only): the host's memory is not the limit."""
    code = textwrap.dedent(
        """
        import os
        chunk = b"x" * (1 << 20)
        for root in ("/work", "/tmp", "/dev/shm", "/dev"):
            written = 0
            try:
                for i in range(10_000):
                    with open(f"{root}/fill{i}", "wb") as f:
                        for _ in range(8):
                            f.write(chunk)
                            written += 1
            except OSError:
                pass
            print(root, written)
        """
    )
    result = py.run(code)
    assert result.ok, result
    written = {line.split()[0]: int(line.split()[1]) for line in result.stdout.decode().splitlines()}
    limits = py.sandbox.limits
    assert 0 < written["/work"] <= limits.tmpfs_bytes >> 20
    assert 0 < written["/tmp"] <= limits.tmpfs_bytes >> 20
    assert 0 < written["/dev/shm"] <= 16
    assert written["/dev"] == 0


def test_killing_the_parent_does_not_reach_the_host(py) -> None:
    result = py.run("import os, signal\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)\nprint('still here')")
    assert result.limit is None  # typed result whatever the program's fate
    assert result.exit_code is not None or result.signal is not None
    _host_still_works(py.sandbox)


def test_setsid_double_fork_daemon_dies_with_the_run(py) -> None:
    code = textwrap.dedent(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(3600)
            os._exit(0)
        print("parent done")
        """
    )
    result = py.run(code)
    assert result.ok and result.stdout == b"parent done\n"
    assert result.wall_s < py.sandbox.limits.wall_s  # the daemon did not hold the run open
    # the fixture checks that the sleeping grandchild is gone


def test_sleep_3600_hits_the_wall_clock(py) -> None:
    result = py.run("import time\ntime.sleep(3600)", limits=py.sandbox.limits.with_(wall_s=1.5))
    assert result.limit == "time limit"
    assert result.wall_s < 10


def test_cpu_spin_hits_the_cpu_limit(py) -> None:
    result = py.run("while True:\n    pass", limits=py.sandbox.limits.with_(cpu_s=1, wall_s=30))
    assert result.limit == "time limit"


def test_attacks_in_threads_do_not_disturb_a_neighbour(bwrap_sandbox: Sandbox) -> None:
    """Two runs at once: a fork bomb next to an honest program; the honest one gets its answer."""
    results = {}

    def run(name: str, code: str) -> None:
        results[name] = bwrap_sandbox.run(
            [bwrap_sandbox.python, "-I", "-S", "-c", code], limits=bwrap_sandbox.limits.with_(wall_s=3)
        )

    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    threads = [threading.Thread(target=run, args=("bomb", bomb)), threading.Thread(target=run, args=("ok", "print(1)"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["bomb"].limit == "time limit"
    assert results["ok"].ok and results["ok"].stdout == b"1\n"


def test_required_level_is_refused_below_it() -> None:
    sandbox = Sandbox(level="rlimits", require="bwrap")
    with pytest.raises(IsolationError, match="below the required bwrap"):
        sandbox.run(["/bin/true"])


@pytest.mark.parametrize("level", [Isolation.RLIMITS, Isolation.UNSHARE])
def test_fallback_levels_run_and_say_so(level: Isolation) -> None:
    if level is Isolation.UNSHARE:
        probe = subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("unshare cannot create a user namespace here")
    sandbox = Sandbox(Limits(wall_s=5), level=level)
    result = sandbox.run(["/bin/sh", "-c", "cat in.txt; cat"], files={"in.txt": "a"}, stdin=b"b")
    assert result.ok, result
    assert result.stdout == b"ab" and result.isolation is level
    slow = sandbox.run(["/bin/sh", "-c", "sleep 30"], limits=Limits(wall_s=0.5))
    assert slow.limit == "time limit"


def test_a_broken_bwrap_is_an_infrastructure_error(bwrap_sandbox: Sandbox) -> None:
    from rewardflow.errors import SandboxError

    sandbox = Sandbox(level="bwrap", bind=["/nonexistent/rf-path"])
    with pytest.raises(SandboxError, match=r"bwrap.*rf-path"):
        sandbox.run(["/bin/true"])


def test_signal_results_are_typed(py) -> None:
    result = py.run("import os\nos.kill(os.getpid(), 11)")
    assert result.signal == signal.SIGSEGV and result.exit_code is None
    assert result.describe() == "killed by SIGSEGV"


def _levels() -> list[Isolation]:
    """Every level this host can run (bwrap where bubblewrap works, unshare where user namespaces do)."""
    from rewardflow.sandbox import probe_isolation

    found = [Isolation.RLIMITS]
    if subprocess.run(["unshare", "--user", "--map-root-user", "true"], capture_output=True).returncode == 0:
        found.append(Isolation.UNSHARE)
    if probe_isolation() >= Isolation.BWRAP:
        found.append(Isolation.BWRAP)
    return found


@pytest.mark.parametrize("level", _levels())
def test_a_program_that_signals_itself_dies_of_it_at_every_level(level: Isolation) -> None:
    """Under ``unshare`` the program used to be its PID namespace's init, which ignores signals sent from inside:
    ``os.kill(os.getpid(), 9)`` was survived and reported as exit code 0. Every level now reports the signal."""
    sandbox = Sandbox(Limits(wall_s=10), level=level)
    for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV):
        result = sandbox.run([sandbox.python, "-c", f"import os\nos.kill(os.getpid(), {int(sig)})\nprint('survived')"])
        assert (result.exit_code, result.signal, result.stdout) == (None, sig, b""), (level, result)
    plain = sandbox.run([sandbox.python, "-c", "raise SystemExit(5)"])
    assert (plain.exit_code, plain.signal) == (5, None)
    for code, want in ((-1, 255), (255, 255), (200, 200)):  # past 128 + SIGRTMAX: no signal can read as these
        result = sandbox.run([sandbox.python, "-c", f"raise SystemExit({code})"])
        assert (result.exit_code, result.signal) == (want, None), (level, code, result)
        assert result.describe() == f"exit code {want}"


@pytest.mark.parametrize("level", _levels())
def test_collect_reads_files_back_from_the_working_directory(level: Isolation) -> None:
    sandbox = Sandbox(Limits(wall_s=10, output_bytes=1000), level=level)
    code = (
        "import os\nos.makedirs('d')\nopen('out.txt', 'w').write('hello')\n"
        "open('d/x.bin', 'wb').write(bytes(range(256)) * 10)\nos.symlink('/etc/hostname', 'escape')\n"
        "import sys\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'forged')\n        sys.exit(9)\n"
        "    except OSError:\n        pass\nsys.exit(3)\n"
    )
    result = sandbox.run(
        [sandbox.python, "-c", code], files={"given.txt": "in"}, collect=["out.txt", "d/x.bin", "missing", "escape",
                                                                        "given.txt"]
    )  # fmt: skip
    assert result.exit_code == 3, result  # no descriptor of the collector's was open to the program
    assert result.files == {"out.txt": b"hello", "d/x.bin": (bytes(range(256)) * 10)[:1000], "given.txt": b"in"}
    with pytest.raises(ValueError, match="relative"):
        sandbox.run(["/bin/true"], collect=["/etc/passwd"])


@pytest.mark.parametrize("level", _levels())
def test_collect_reads_files_back_after_a_time_limit_too(level: Isolation) -> None:
    """As SandboxFusion returns ``fetch_files`` after a timeout: the files written before the limit come back, the
    program and what it started are dead, and the result says it was the time limit."""
    sandbox = Sandbox(Limits(wall_s=10, cpu_s=1), level=level)
    marker = "sleep 3141"
    slow = sandbox.run(
        ["/bin/sh", "-c", f"echo x > out.txt; ({marker} &); sleep 30"],
        limits=sandbox.limits.with_(wall_s=2),  # room for the shell to start on a loaded machine
        collect=["out.txt"],
    )
    assert (slow.limit, slow.exit_code, slow.signal) == ("time limit", None, signal.SIGKILL), slow
    assert slow.files == {"out.txt": b"x\n"}
    assert slow.wall_s < 10
    deadline = time.monotonic() + 5
    while processes_with_cmdline(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with_cmdline(marker) == [] or level is Isolation.RLIMITS  # rlimits: a daemon can escape
    loud = sandbox.run(  # killed for its output: no files at any level (bwrap's collector dies with the sandbox)
        ["/bin/sh", "-c", "echo x > out.txt; yes"], limits=sandbox.limits.with_(output_bytes=1000), collect=["out.txt"]
    )
    assert loud.limit == "output limit" and loud.files == {}, (level, loud)
    spin = sandbox.run([sandbox.python, "-c", "open('out.txt', 'w').write('y')\nwhile True:\n    pass"],
                       collect=["out.txt"])  # fmt: skip
    assert spin.limit == "time limit" and spin.files == {"out.txt": b"y"}, spin
