"""The service's settings: one typed, documented model, filled from ``rewardflow serve`` options.

Each field's description is what ``rewardflow serve --help`` and the docs say about it. The token is never a
field of its own on the command line: it is read from ``$REWARDFLOW_TOKEN`` so it does not show in ``ps``.
"""

from __future__ import annotations

import ipaddress
import math
import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rewardflow.errors import ConfigError

__all__ = ["TOKEN_ENV", "ServerConfig", "is_loopback"]

#: Environment variable holding the bearer token (server side and client side).
TOKEN_ENV = "REWARDFLOW_TOKEN"


class ServerConfig(BaseModel):
    """Settings of one ``rewardflow serve`` process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to bind; anything but loopback needs a token.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port (0: pick a free one).")
    workers: int | None = Field(default=None, ge=1, description="Reward worker processes; overrides the spec's.")
    executor: Literal["process", "ray"] | None = Field(
        default=None, description="Where sync rewards run (`process` or `ray`); overrides the spec's `executor`."
    )
    ray_address: str | None = Field(
        default=None, description="Ray cluster for the `ray` executor (`auto`, `ray://...`); overrides the spec's."
    )
    token: str | None = Field(default=None, description="Bearer token required on every route but the probes.")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Largest request body; else 413.")
    max_batch: int = Field(default=4096, ge=1, description="Most samples in one request; else 413.")
    max_queue: int = Field(
        default=16384, ge=1, description="Most samples accepted and not yet answered; beyond it 429 + Retry-After."
    )
    retry_after: float = Field(default=1.0, gt=0, description="Seconds sent in Retry-After with 429/503.")
    request_timeout: float = Field(
        default=300.0, gt=0, description="Deadline of one request in seconds; samples not done by then get timeout."
    )
    grace: float = Field(default=30.0, ge=0, description="On SIGTERM, seconds to finish in-flight requests.")
    batch_wait_ms: float = Field(
        default=5.0,
        ge=0,
        description="Cross-request batching of model rewards: longest wait; 0 disables all merging of requests "
        "(model rewards, and the merging of per-sample rewards' requests into shared engine calls).",
    )
    batch_max_samples: int = Field(
        default=256, ge=1, description="Most samples merged into one model call, or into one merged engine call."
    )
    label_column: str = Field(default="answer", description="Row column that OpenRLHF `labels` / slime `label` fill.")
    failure_value: float | None = Field(
        default=None,
        description="OpenRLHF/slime dialects: reward sent for a failed sample (flagged in the reply); "
        "unset: the request fails with 424 instead.",
    )
    run_code_isolation: str = Field(
        default="unshare",
        pattern="^(rlimits|unshare|bwrap)$",
        description="/run_code (SandboxFusion): the least sandbox isolation a program may run at; "
        "below it the reply is SandboxError.",
    )

    def check(self) -> ServerConfig:
        """Refuse to expose an unauthenticated service beyond this machine."""
        if not self.token and not is_loopback(self.host):
            raise ConfigError(
                f"binding {self.host!r} exposes the service beyond this machine: set {TOKEN_ENV} "
                "(clients send it as `Authorization: Bearer ...`), or bind 127.0.0.1"
            )
        for name in ("failure_value", "retry_after", "request_timeout", "grace", "batch_wait_ms"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                # JSON has no NaN/Infinity: a non-finite stand-in reward would break every reply that carries it.
                raise ConfigError(f"{name} must be a finite number, got {value}")
        if self.max_queue < self.max_batch:
            raise ConfigError(f"max_queue ({self.max_queue}) must be >= max_batch ({self.max_batch})")
        return self

    @classmethod
    def from_env(cls, **fields: object) -> ServerConfig:
        """A config whose token comes from ``$REWARDFLOW_TOKEN`` (unset or empty: no token)."""
        token = os.environ.get(TOKEN_ENV, "").strip() or None
        return cls(token=token, **{k: v for k, v in fields.items() if v is not None})


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.x`` and ``::1`` are loopback; ``0.0.0.0`` and names are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
