"""``rewardflow serve``: one reward service that every trainer can call.

Layers: :mod:`~rewardflow.server.config` (settings), :mod:`~rewardflow.server.schemas` (the dialects' bodies),
:mod:`~rewardflow.server.service` (the engine, admission, the dialects), :mod:`~rewardflow.server.guard`
(auth, size limits, request metrics, the fast path of the scoring routes), :mod:`~rewardflow.server.app`
(FastAPI: OpenAPI, probes), :mod:`~rewardflow.server.batching` (cross-request batching of model rewards),
:mod:`~rewardflow.server.metrics` (Prometheus), :mod:`~rewardflow.server.run`
(uvicorn, SIGTERM). Needs the ``server`` extra (fastapi, uvicorn, prometheus-client); importing this package does
not import them. The client is :class:`rewardflow.client.RemoteEngine`.
"""

from __future__ import annotations

from rewardflow._lazy import lazy_exports

__all__ = ["ServerConfig", "create_app", "serve"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "ServerConfig": "rewardflow.server.config",
        "create_app": "rewardflow.server.app",
        "serve": "rewardflow.server.run",
    },
    globals(),
)
