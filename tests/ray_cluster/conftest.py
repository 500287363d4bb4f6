"""One real multi-node Ray cluster on this machine, shared by the Ray tests (``ray.cluster_utils.Cluster``).

Three nodes of one CPU each (the head and two workers), each with the smallest object store Ray accepts, usage
statistics off (no network), on free ports (other Ray users on the machine are left alone). The driver (this
pytest process) connects to it; the fixture shuts the driver and every node down when the package's tests end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

ray = pytest.importorskip("ray")

OBJECT_STORE = 80 * 1024 * 1024  # Ray's minimum is 75 MiB
NODES = 3
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # inherited by every node's processes
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    head = {
        "num_cpus": 1,
        "object_store_memory": OBJECT_STORE,
        "include_dashboard": True,  # ray.util.state.list_actors asks the dashboard's API server
        "dashboard_port": free_port(),
        "gcs_server_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
    }
    address_before = os.environ.get("RAY_ADDRESS")  # ray.init sets it for its subprocesses; restored below
    c = Cluster(initialize_head=True, head_node_args=head)
    try:
        for _ in range(NODES - 1):
            c.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        c.wait_for_nodes()
        ray.init(address=c.address)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        # Cluster records its address for `ray.init()` to find; a stale record would make a later `ray.init()`
        # (other tests, the docs' examples) try to join this cluster, now gone
        _forget_address(c.address)
        if address_before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = address_before


def _forget_address(address: str) -> None:
    """Remove Ray's record of the current cluster if it is ours (other Ray users on the machine keep theirs)."""
    from ray._private.utils import get_ray_address_file

    path = get_ray_address_file(None)
    try:
        with open(path, encoding="utf-8") as f:
            recorded = f.read().strip()
        if recorded == address:
            os.remove(path)
    except OSError:
        pass


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def live_reward_actors() -> list[Any]:
    """rewardflow's actors that are not dead (alive, or still being created or restarted)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "!=", "DEAD")], limit=1000)
    return [a for a in actors if a.class_name in ("RewardActor", "ModelActor")]


def listed(ok: Callable[[list[Any]], bool], seconds: float = 60.0) -> bool:
    """Whether ``ok(live_reward_actors())`` holds within ``seconds``. Ray's state API is eventually consistent: on
    a loaded machine an actor that has just answered may not be listed yet (a loaded `make test` run saw an empty
    list once), so presence is polled, with a hang guard."""
    deadline = time.monotonic() + seconds
    while not ok(live_reward_actors()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def in_thread(fn: Callable[[], T], seconds: float) -> T:
    """Run ``fn`` with a hang guard: fail the test (instead of hanging CI) if it does not return in ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.fail(f"no answer in {seconds:g}s (hang guard)")
    if "error" in box:
        raise box["error"]
    return box["value"]
