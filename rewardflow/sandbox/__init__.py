"""Running untrusted programs: a daemonless runner with bubblewrap, namespaces and rlimits.

``Sandbox().run(argv, files=..., stdin=...)`` returns a :class:`RunResult` (exit code, signal, capped output,
the limit hit, the isolation level); :class:`Session` keeps one sandbox alive for many jobs. The code rewards
(:mod:`rewardflow.code`) are built on them; so can anything else that has to run model-written code, such as a
SandboxFusion-style ``/run_code`` route (one ``Sandbox().run`` per request).
"""

from __future__ import annotations

from rewardflow.sandbox.limits import Isolation, Limits
from rewardflow.sandbox.probe import probe_isolation
from rewardflow.sandbox.runner import RunResult, Sandbox, python_executable
from rewardflow.sandbox.session import Session

__all__ = ["Isolation", "Limits", "RunResult", "Sandbox", "Session", "probe_isolation", "python_executable"]
