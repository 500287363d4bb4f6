"""The test harness that runs *inside* the sandbox, next to the program under test (stdlib only, no rewardflow).

It is sent to the sandbox as source (``python -I -S -c``) and reads its job from stdin as two length-prefixed
JSON frames: first the program and the number of tests, then the tests themselves. It answers on stdout with one
JSON line per test and, last, ``{"done": <nonce>}``, where the nonce arrives with the tests. The host refuses any
answer without that marker.

Why the program cannot fake a pass:

* **The program never runs in the harness's process.** Each test gets a child forked *before* the tests are read
  (assert-style), so the tests are not in its memory, on disk, or on any descriptor it holds. The harness makes
  itself non-dumpable, so ``/proc/<harness>/mem`` and ``/proc/<harness>/fd`` are closed to the child.
* **Values cross the boundary as plain data.** Calls into the program are proxied: arguments go to the child,
  the return value comes back as tagged JSON and is decoded into exact built-in types, so an object whose
  ``__eq__`` always says ``True`` cannot come back, and the test's own ``assert`` runs in the harness, where the
  program cannot monkeypatch builtins or helpers.
* **Exiting early is a failure, not a pass.** ``sys.exit`` or ``os._exit`` in the child ends the child; the
  harness reports that test as failed. Call-style and stdin/stdout tests never see their expected outputs at
  all: the host compares.
* **The harness cannot be killed from inside.** At the bwrap level it is PID 1 of the sandbox's PID namespace,
  which ignores signals from its own namespace; at any level, a harness that dies writes no marker, and no marker
  scores 0.

Protocol encoding of values (:func:`encode` / :func:`decode`) is shared with the host, which imports this module.
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import time

PROGRAM_NAME = "<solution>"
MAX_DEPTH = 100
MAX_FRAME = 64 << 20


# -- values across the boundary ---------------------------------------------------------------------------------


def encode(value, depth=0):
    """A JSON-able form of a plain Python value; exact types survive (tuple vs list, int vs bool, nan)."""
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return value if -(2**53) < value < 2**53 else {"$int": str(value)}
    if t is float:
        return value if value == value and value not in (float("inf"), float("-inf")) else {"$float": repr(value)}
    if t is list:
        return [encode(v, depth + 1) for v in value]
    if t is tuple:
        return {"$tuple": [encode(v, depth + 1) for v in value]}
    if t is dict:
        return {"$dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if t is set or t is frozenset:
        return {"$" + t.__name__: [encode(v, depth + 1) for v in value]}
    if t is bytes:
        return {"$bytes": value.hex()}
    if t is complex:
        return {"$complex": [value.real, value.imag]}
    # Subclasses of plain types pass as their plain value, read through the base type's own method.
    for base in (bool, int, float, str, bytes):
        if isinstance(value, base):
            return encode(_plain(base, value), depth + 1)
    if isinstance(value, dict):
        return encode(dict(dict.items(value)), depth + 1)
    if isinstance(value, (list, tuple)):
        return encode(list(value) if isinstance(value, list) else tuple(value), depth + 1)
    raise TypeError(f"a {t.__name__} cannot be passed across the sandbox boundary")


def _plain(base, value):
    if base is bool:
        return bool(int.__index__(value))
    if base is int:
        return int(int.__repr__(value))
    if base is float:
        return float(float.__repr__(value))
    if base is str:
        return "".join(str.__iter__(value))
    return bytes(bytes.__iter__(value))


def decode(data, depth=0):
    """The inverse of :func:`encode`; anything it cannot read raises ``ValueError``."""
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(v, depth + 1) for v in data]
    if isinstance(data, dict) and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "$int":
            return int(body)
        if tag == "$float":
            return float(body)
        if tag == "$tuple":
            return tuple(decode(v, depth + 1) for v in body)
        if tag == "$dict":
            return {decode(k, depth + 1): decode(v, depth + 1) for k, v in body}
        if tag == "$set":
            return {decode(v, depth + 1) for v in body}
        if tag == "$frozenset":
            return frozenset(decode(v, depth + 1) for v in body)
        if tag == "$bytes":
            return bytes.fromhex(body)
        if tag == "$complex":
            return complex(body[0], body[1])
    raise ValueError(f"not an encoded value: {str(data)[:80]}")


# -- framing -------------------------------------------------------------------------------------------------------


def frame(obj):
    """Length-prefixed JSON, as the host writes the job."""
    body = json.dumps(obj).encode()
    return len(body).to_bytes(4, "big") + body


def _read_exact(fd, n, deadline=None):
    chunks = []
    while n:
        if deadline is not None and not _wait_readable(fd, deadline):
            raise TimeoutError
        chunk = os.read(fd, n)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(fd, deadline=None):
    size = int.from_bytes(_read_exact(fd, 4, deadline), "big")
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes")
    return json.loads(_read_exact(fd, size, deadline))


def _wait_readable(fd, deadline):
    import select

    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    ready, _, _ = select.select([fd], [], [], remaining)
    return bool(ready)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def emit(obj):
    """One answer line to the host, straight to fd 1 (never through ``sys.stdout``, which test code may touch)."""
    _write_all(1, (json.dumps(obj) + "\n").encode())


def describe(exc):
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# -- the program's side ----------------------------------------------------------------------------------------------


def _isolate_fds(keep, stdin_fd=None, stdout_fd=None, stderr_fd=None):
    """In a fresh child: 0/1/2 to the given pipes (or /dev/null), every other descriptor but ``keep`` closed."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(stdin_fd if stdin_fd is not None else null, 0)
    os.dup2(stdout_fd if stdout_fd is not None else null, 1)
    os.dup2(stderr_fd if stderr_fd is not None else null, 2)
    keep = sorted(set(keep))
    low = 3
    for fd in [*keep, 1 << 16]:
        if fd > low:
            os.closerange(low, min(fd, 1 << 16))
        low = max(low, fd + 1)


def _child_serve(program, req_r, resp_w):
    """Run the program's definitions, then answer calls until the pipe closes. Never returns."""
    try:
        _isolate_fds([req_r, resp_w])
        g = {"__name__": "solution", "__builtins__": builtins}
        try:
            exec(compile(program, PROGRAM_NAME, "exec"), g)
        except BaseException as exc:  # SystemExit included: the program did not load
            _write_all(resp_w, frame({"error": describe(exc), "type": type(exc).__name__}))
            os._exit(0)
        names = {}
        for name, value in list(g.items()):
            if name.startswith("__"):
                continue
            if type(value).__name__ == "module":
                names[name] = ["module", getattr(value, "__name__", "")]
            elif callable(value):
                names[name] = ["callable"]
            else:
                try:
                    names[name] = ["value", encode(value)]
                except Exception:
                    continue
        _write_all(resp_w, frame({"names": names}))
        while True:
            try:
                req = read_frame(req_r)
            except EOFError:
                os._exit(0)
            try:
                fn = _resolve(g, req["fn"])
                args = decode(req["args"])
                kwargs = decode(req.get("kwargs", {"$dict": []}))
                result = encode(fn(*args, **kwargs))
                reply = {"value": result}
            except BaseException as exc:
                reply = {"error": describe(exc), "type": type(exc).__name__}
            _write_all(resp_w, frame(reply))
    finally:
        os._exit(1)


def _resolve(g, name):
    if name in g:
        return g[name]
    solution = g.get("Solution")
    if solution is not None:  # LeetCode style: a method of class Solution
        return getattr(solution(), name)
    raise NameError(f"the program defines no {name!r}")


class Child:
    """The harness's handle on one forked program process that serves calls."""

    def __init__(self, program):
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(req_w)
            os.close(resp_r)
            _child_serve(program, req_r, resp_w)
        os.close(req_r)
        os.close(resp_w)
        self.pid, self.req_w, self.resp_r = pid, req_w, resp_r
        self.loaded = None  # {"names": ...} or {"error": ...} once read
        self.dead = None  # reason the child can no longer answer

    def load(self, deadline):
        if self.loaded is None:
            self.loaded = self._recv(deadline)
        return self.loaded

    def _recv(self, deadline):
        try:
            return read_frame(self.resp_r, deadline)
        except TimeoutError:
            self.kill("time limit")
        except (EOFError, ValueError, OSError):
            self.kill("the program exited")
        return {"error": self.dead, "limit": self.dead == "time limit"}

    def call(self, fn, args, kwargs, deadline):
        if self.dead:
            return {"error": self.dead, "limit": self.dead == "time limit"}
        try:
            _write_all(self.req_w, frame({"fn": fn, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}))
        except OSError:
            self.kill("the program exited")
            return {"error": self.dead}
        return self._recv(deadline)

    def kill(self, reason="killed"):
        if self.dead is None:
            self.dead = reason
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        for fd in (self.req_w, self.resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        _reap()


def _reap():
    """Collect exited children (and orphans reparented to us as PID 1) without blocking."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class ProgramFailed(Exception):
    """A proxied call did not return a value; the test fails with this message."""


class TimeLimit(ProgramFailed):
    pass


class Remote:
    """Stands for a callable of the program inside the test's namespace; calls go to the child."""

    def __init__(self, child, name, clock):
        self._child, self._name, self._clock = child, name, clock

    def __call__(self, *args, **kwargs):
        reply = self._child.call(self._name, args, kwargs, self._clock())
        if "value" in reply:
            return decode(reply["value"])
        if reply.get("limit"):
            raise TimeLimit("time limit")
        exc_type = getattr(builtins, str(reply.get("type", "")), None)
        message = reply.get("error", "the program failed")
        if isinstance(exc_type, type) and issubclass(exc_type, Exception) and exc_type.__module__ == "builtins":
            raise exc_type(message)  # tests that expect e.g. a ValueError still see one
        raise ProgramFailed(message)

    def __repr__(self):
        return f"<program function {self._name}>"


def _namespace(child, names, clock, entry=None):
    """The test's globals: the program's functions as proxies, its stdlib modules, its plain values.

    A program name that shadows a builtin (``abs``, ``len``) is left out, unless it is the entry point: the test's
    ``abs`` is always the real one.
    """
    import importlib

    ns = {"__name__": "__rf_test__", "__builtins__": builtins}
    for name, info in names.items():
        if name in builtins.__dict__ and name != entry:
            continue
        if info[0] == "callable":
            ns[name] = Remote(child, name, clock)
        elif info[0] == "module":
            top = str(info[1]).split(".")[0]
            if top in sys.stdlib_module_names:  # never import a module the program may have written
                try:
                    ns[name] = importlib.import_module(info[1])
                except Exception:
                    pass
        elif info[0] == "value":
            try:
                ns[name] = decode(info[1])
            except ValueError:
                pass
    return ns


def _failure_line(exc, source):
    import traceback

    lines = source.splitlines()
    for fs in reversed(traceback.extract_tb(exc.__traceback__)):
        if fs.filename == "<test>" and fs.lineno and 0 < fs.lineno <= len(lines):
            return lines[fs.lineno - 1].strip()[:200]
    return ""


# -- modes -----------------------------------------------------------------------------------------------------------


def run_assert(setup):
    """Assert-style tests (HumanEval, MBPP): each test is code run in the harness against proxies."""
    import contextlib
    import io

    count = int(setup["count"])
    case_s = float(setup["case_s"])
    children = [Child(setup["program"]) for _ in range(count)]  # forked before the tests exist here
    job = read_frame(0)
    prelude = job.get("setup") or ""
    for index, (child, test) in enumerate(zip(children, job["tests"], strict=False)):
        deadline = time.monotonic() + case_s

        def clock(deadline=deadline):
            return deadline

        loaded = child.load(deadline)
        if "names" not in loaded:
            limit = bool(loaded.get("limit"))
            emit({"case": index, "ok": False, "limit": limit, "error": "the program did not load: " + loaded["error"]})
            child.kill()
            if setup.get("stop"):
                break
            continue
        entry = job.get("entry")
        ns = _namespace(child, loaded["names"], clock, entry)
        if job.get("trusted"):
            # The problem's own code (HumanEval's prompt: helpers such as poly or encode_cyclic) runs here, so
            # the program cannot redefine what the test uses to check it; then the entry point is the program's.
            exec(compile(job["trusted"], "<problem>", "exec"), ns)
        if entry:
            ns[entry] = Remote(child, entry, clock)
        source = prelude + "\n" + test if prelude else test
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exec(compile(source, "<test>", "exec"), ns)
        except TimeLimit:
            emit({"case": index, "ok": False, "limit": True, "error": "time limit"})
        except AssertionError as exc:
            line = _failure_line(exc, source)
            emit({"case": index, "ok": False, "error": ("failed: " + line) if line else describe(exc)})
        except BaseException as exc:
            line = _failure_line(exc, source)
            emit({"case": index, "ok": False, "error": describe(exc) + (f" at: {line}" if line else "")})
        else:
            emit({"case": index, "ok": True})
            child.kill()
            continue
        child.kill()
        if setup.get("stop"):  # all-or-nothing scoring: the first failure decides
            break
    for child in children:
        child.kill()
    emit({"done": job["nonce"]})


def run_call(setup):
    """Call tests (LiveCodeBench functional, APPS fn_name): return values go back to the host to compare."""
    case_s = float(setup["case_s"])
    job = read_frame(0)
    child = None
    for index, args in enumerate(job["inputs"]):
        if child is None or child.dead:
            child = Child(setup["program"])
        deadline = time.monotonic() + case_s
        loaded = child.load(deadline)
        if "names" not in loaded:
            emit(
                {
                    "case": index,
                    "limit": bool(loaded.get("limit")),
                    "error": "the program did not load: " + loaded["error"],
                }
            )
            child.kill()
            if setup.get("stop"):
                break
            continue
        reply = child.call(setup["fn"], decode(args), {}, deadline)
        if "value" in reply:
            emit({"case": index, "value": reply["value"]})
        else:
            emit({"case": index, "limit": bool(reply.get("limit")), "error": reply.get("error", "failed")})
            if setup.get("stop"):
                break
    if child is not None:
        child.kill()
    emit({"done": job["nonce"]})


def _run_stdio_case(target, data, case_s, out_cap):
    """Fork one process for one stdin/stdout case; returns its stdout, stderr tail, exit status and limit."""
    import select

    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            _isolate_fds([], in_r, out_w, err_w)
            if target[0] == "exec":
                os.execv(target[1], [target[1]])
            sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            code = 0
            try:
                exec(compile(target[1], PROGRAM_NAME, "exec"), {"__name__": "__main__", "__builtins__": builtins})
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                code = code or 1
            os._exit(code & 0xFF)
        finally:
            os._exit(1)
    for fd in (in_r, out_w, err_w):
        os.close(fd)
    deadline = time.monotonic() + case_s
    out, err = bytearray(), bytearray()
    pending = memoryview(data)
    readers = {out_r: out, err_r: err}
    os.set_blocking(in_w, False)
    writers = [in_w] if pending else []
    if not pending:
        os.close(in_w)
    limit = None
    status = None
    while readers:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            limit = "time limit"
            break
        r, w, _ = select.select(list(readers), writers, [], min(remaining, 0.1))
        if not r and not w:
            # Quiet for a while: if the program has exited, whatever still holds its pipes (a daemon it left)
            # does not keep the case open.
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
                for fd, buf in readers.items():
                    os.set_blocking(fd, False)
                    try:
                        chunk = os.read(fd, 65536)
                    except OSError:
                        chunk = b""
                    buf += chunk[: max((out_cap if fd == out_r else 4096) - len(buf), 0)]
                break
            continue
        if w:
            try:
                pending = pending[os.write(in_w, pending[:65536]) :]
            except OSError:
                pending = pending[:0]
            if not pending:
                os.close(in_w)
                writers = []
        for fd in r:
            chunk = os.read(fd, 65536)
            if not chunk:
                os.close(fd)
                del readers[fd]
                continue
            buf = readers[fd]
            cap = out_cap if fd == out_r else 4096
            buf += chunk[: max(cap - len(buf), 0)]
            if fd == out_r and len(buf) >= out_cap and len(chunk) > 0 and len(out) >= out_cap:
                limit = "output limit"
        if limit:
            break
    if limit is None and status is None:
        remaining = deadline - time.monotonic()
        while remaining > 0:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(min(0.002, remaining))
            remaining = deadline - time.monotonic()
        else:
            limit = "time limit"
    if status is None or limit:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
    for fd in list(readers) + writers:
        try:
            os.close(fd)
        except OSError:
            pass
    _reap()
    reply = {"stdout": out.decode("utf-8", errors="replace"), "stderr": err.decode("utf-8", errors="replace")}
    if limit:
        reply["limit"] = limit
    elif os.WIFSIGNALED(status):
        reply["signal"] = os.WTERMSIG(status)
        if reply["signal"] == 24:  # SIGXCPU: the CPU-seconds limit
            reply["limit"] = "time limit"
    else:
        reply["exit"] = os.WEXITSTATUS(status)
    return reply


def run_stdio(setup):
    """stdin/stdout tests (APPS, CodeContests): one fresh process per case; the host compares the output."""
    import subprocess

    case_s = float(setup["case_s"])
    out_cap = int(setup.get("output_bytes", 1 << 20))
    if setup.get("language") == "cpp":
        with open("main.cpp", "w", encoding="utf-8") as f:
            f.write(setup["program"])
        cmd = ["g++", *setup.get("cflags", ["-O2", "-std=c++17"]), "-o", "main", "main.cpp"]
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=float(setup.get("compile_s", 30)))
        except subprocess.TimeoutExpired:
            emit({"compile_error": "compilation time limit"})
            emit({"done": read_frame(0)["nonce"]})
            return
        if proc.returncode != 0:
            emit({"compile_error": proc.stderr.decode(errors="replace")[-2000:]})
            emit({"done": read_frame(0)["nonce"]})
            return
        target = ("exec", os.path.abspath("main"))
    else:
        target = ("python", setup["program"])
    job = read_frame(0)
    for index, data in enumerate(job["inputs"]):
        reply = _run_stdio_case(target, data.encode("utf-8"), case_s, out_cap)
        reply["case"] = index
        emit(reply)
        if setup.get("stop") and (reply.get("limit") or reply.get("signal") or reply.get("exit")):
            break
    emit({"done": job["nonce"]})


def _make_nondumpable():
    """PR_SET_DUMPABLE 0: the program, same uid, cannot read our memory or descriptors through /proc."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")
    except OSError:
        raise
    except Exception as exc:  # no ctypes: refuse to run rather than run weaker
        raise OSError(f"cannot make the harness non-dumpable: {exc}") from exc


def run_job():
    """One job: the setup frame, then the mode's own frames, answers on fd 1."""
    setup = read_frame(0)
    runner = {"assert": run_assert, "call": run_call, "stdio": run_stdio}[setup["mode"]]
    runner(setup)


def _wipe(root):
    import shutil

    for name in os.listdir(root):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            for dirpath, dirnames, _ in os.walk(path):  # a program may have locked its directories
                for d in dirnames:
                    os.chmod(os.path.join(dirpath, d), 0o700)
            os.chmod(path, 0o700)
            shutil.rmtree(path)
        else:
            os.unlink(path)


def zygote():
    """PID 1 of a reusable sandbox: fork a harness per job, then kill everything else and wipe the disk."""
    import resource
    import signal

    while True:
        try:
            header = read_frame(0)
        except EOFError:
            os._exit(0)
        pid = os.fork()
        if pid == 0:
            try:
                cpu = int(header.get("cpu_s", 10))
                resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
                run_job()
            except BaseException as exc:
                emit({"harness_error": describe(exc)})
            os._exit(0)
        os.waitpid(pid, 0)
        try:
            os.kill(-1, signal.SIGKILL)  # everything but PID 1: daemons, stragglers
        except ProcessLookupError:
            pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
        dirty = False
        for root in ("/work", "/tmp", "/dev/shm"):
            try:
                _wipe(root)
            except OSError:
                dirty = True
        os.chdir("/work")
        _write_all(1, b"\n")  # ends any line a killed harness left half-written
        emit({"ready": header["job"], "dirty": dirty})


def main():
    try:
        _make_nondumpable()
        if sys.argv[1:] == ["zygote"]:
            zygote()
        setup = read_frame(0)
        mode = setup["mode"]
        runner = {"assert": run_assert, "call": run_call, "stdio": run_stdio}[mode]
    except BaseException as exc:
        emit({"harness_error": describe(exc)})
        os._exit(2)
    try:
        runner(setup)
    except BaseException as exc:
        emit({"harness_error": describe(exc)})
        os._exit(2)
    os._exit(0)


if __name__ == "__main__":
    main()
