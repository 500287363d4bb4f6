"""What the worker forkserver does with the caller's ``__main__``, so a worker never pays for the caller's imports.

The problem: every process that :mod:`multiprocessing` starts with ``spawn`` or ``forkserver`` first re-runs the
parent's main script (as ``__mp_main__``) so that functions defined there can be unpickled. For a training
script that means importing torch, transformers and the trainer again, in every reward worker and in every
replacement of a killed one: measured with a real TRL ``GRPOTrainer`` on 2 cores, the first reward step took
61-63 s instead of 3.9 s inline.

The fix, done once in the forkserver (this module is in its preload list, see
:class:`~rewardflow.executors.process.ProcessPool`):

* ``__main__`` becomes a **lazy module** that carries the parent's main path (or module name). The standard
  start-up code of each worker sees that the main script is "already there" and skips it. The script is only
  run when something actually looks a name up in it, i.e. when a reward defined in the script is unpickled.
* When a reward *is* defined in the script, the pool asks for it to be loaded **eagerly, once, in the
  forkserver** (the same as ``set_forkserver_preload(["__main__"])``), so workers inherit it loaded and a
  replacement worker starts in milliseconds. If running the script fails there, the forkserver stays up and
  the module stays lazy: each worker then fails to load its rewards with the script's own error, as before.

The script still runs as ``__mp_main__`` with multiprocessing's "bootstrapping" flag set, exactly as the
standard library does it, so a script without an ``if __name__ == "__main__":`` guard gets the usual error
instead of starting a second training run.

Not covered: a forkserver that someone else started first in this process keeps its own behaviour (Python
runs one forkserver per process); with ``start_method="spawn"`` every worker still runs the script.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
import types
from typing import Any

#: Environment variable through which the pool tells the forkserver it starts about the parent's main.
MAIN_ENV = "_REWARDFLOW_FORKSERVER_MAIN"


def describe_main(eager: bool) -> str | None:
    """The value of :data:`MAIN_ENV` for this process: its pid, how multiprocessing would re-run its main, and
    whether to load it eagerly. ``None`` when workers would not run a main at all (interactive, ``-c``)."""
    from multiprocessing import spawn

    data = spawn.get_preparation_data("rewardflow-worker")
    path, name = data.get("init_main_from_path"), data.get("init_main_from_name")
    if path is None and name is None:
        return None
    argv = data.get("sys_argv", sys.argv)
    return json.dumps({"pid": os.getpid(), "path": path, "name": name, "eager": eager, "argv": argv})


class LazyMain(types.ModuleType):
    """A stand-in for ``__main__`` that runs the real script on the first lookup of a name it lacks."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or self.__dict__.get("_rewardflow_loaded"):
            raise AttributeError(f"module '__main__' has no attribute {attr!r}")
        load(self)
        return getattr(self, attr)


def load(module: LazyMain) -> None:
    """Run the main script into ``module`` (once), as multiprocessing's own start-up code would."""
    from multiprocessing import process

    module.__dict__["_rewardflow_loaded"] = True
    path, name = module.__dict__.get("_rewardflow_path"), module.__dict__.get("_rewardflow_name")
    current = process.current_process()
    current._inheriting = True  # type: ignore[attr-defined]  # a guard-less script gets the standard error
    argv, sys.argv = sys.argv, list(module.__dict__.get("_rewardflow_argv") or sys.argv)  # the script's own argv
    try:
        if path is not None:
            content = runpy.run_path(path, run_name="__mp_main__")
        else:
            content = runpy.run_module(name, run_name="__mp_main__", alter_sys=True)
    finally:
        del current._inheriting  # type: ignore[attr-defined]
        sys.argv = argv
    module.__dict__.update(content)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module


def _lazy_main(info: dict[str, Any]) -> LazyMain:
    module = LazyMain("__mp_main__")
    module.__dict__["_rewardflow_path"] = info.get("path")
    module.__dict__["_rewardflow_name"] = info.get("name")
    module.__dict__["_rewardflow_argv"] = info.get("argv")
    if info.get("path") is not None:
        module.__file__ = info["path"]  # multiprocessing skips a main whose __file__ is the parent's
    else:  # ``python -m pkg.mod``: it skips a main whose spec has the parent's module name
        module.__spec__ = types.SimpleNamespace(name=info["name"])  # type: ignore[assignment]
    return module


def _in_forkserver() -> bool:
    """Whether this import runs inside ``multiprocessing.forkserver.main`` (its preload step)."""
    forkserver = sys.modules.get("multiprocessing.forkserver")
    main = getattr(forkserver, "main", None)
    code = getattr(main, "__code__", None)
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


def install() -> None:
    """In the forkserver the pool started: put the lazy main in place, and load it now if asked to."""
    raw = os.environ.get(MAIN_ENV)
    if not raw:
        return
    try:
        info = json.loads(raw)
    except ValueError:
        return
    if info.get("pid") != os.getppid() or not _in_forkserver():  # another process that inherited the variable
        return
    module = _lazy_main(info)
    sys.modules["__main__"] = sys.modules["__mp_main__"] = module
    if not info.get("eager"):
        return
    try:
        load(module)
    except BaseException as exc:
        print(
            f"rewardflow: running the main script in the worker forkserver failed ({type(exc).__name__}: {exc}); "
            "workers will load it themselves",
            file=sys.stderr,
        )
        fresh = _lazy_main(info)
        sys.modules["__main__"] = sys.modules["__mp_main__"] = fresh


install()
