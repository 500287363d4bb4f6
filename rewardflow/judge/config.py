"""The identity and limits of one judge endpoint (:class:`ClientConfig`).

Equal configs share one :class:`~rewardflow.judge.client.JudgeClient` (see
:func:`~rewardflow.judge.client.shared_client`), so every reward pointing at one endpoint with the same limits
shares one connection pool and one concurrency limit. The API key is part of the identity but never of the repr.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from rewardflow.errors import ConfigError

__all__ = ["ABORTING_SERVERS", "SERVERS", "ClientConfig"]

#: Server kinds a judge endpoint can be declared as (``server=``); "unknown" is the default.
SERVERS = ("unknown", "vllm", "sglang", "llama.cpp", "openai")
#: Servers known to stop generating when the client goes away, so a retry after a timeout adds no load.
#: vLLM and SGLang abort a request on disconnect; llama-server, busy, went on generating an abandoned request for
#: 72-85 s (measured in issue 16); OpenAI's capacity is not ours to protect, so a retry costs money,
#: not our judge's throughput.
ABORTING_SERVERS = frozenset({"vllm", "sglang", "openai"})


@dataclass(frozen=True)
class ClientConfig:
    """Everything that identifies an endpoint and its limits. Equal configs share one :class:`JudgeClient`."""

    base_url: str
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 30.0
    max_retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 8.0
    max_retry_after: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()
    cache: bool = True
    cache_size: int = 10_000
    cache_path: str | None = None
    http_backend: Literal["aiohttp", "httpx"] = "aiohttp"
    adaptive: bool = True
    server: str = "unknown"
    retry_timeouts: bool | None = None

    def __post_init__(self) -> None:
        checks = [
            (bool(self.base_url) and self.base_url.startswith(("http://", "https://")), "base_url must be http(s)"),
            (self.concurrency >= 1, "concurrency must be >= 1"),
            (self.rpm is None or self.rpm > 0, "rpm must be positive"),
            (self.tpm is None or self.tpm > 0, "tpm must be positive"),
            (self.timeout > 0, "timeout must be positive"),
            (0 <= self.max_retries <= 20, "max_retries must be between 0 and 20"),
            (self.backoff >= 0 and self.backoff_max >= 0, "backoff must be >= 0"),
            (self.max_retry_after >= 0, "max_retry_after must be >= 0"),
            (self.cache_size >= 1, "cache_size must be >= 1"),
            (self.http_backend in ("aiohttp", "httpx"), "http_backend must be 'aiohttp' or 'httpx'"),
            (self.server in SERVERS, f"server must be one of {list(SERVERS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"judge client: {message} (base_url={self.base_url!r})")

    @property
    def url(self) -> str:
        """The chat-completions URL (``base_url`` is the ``.../v1`` root, as for the OpenAI client)."""
        base = self.base_url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    @property
    def retries_after_timeout(self) -> bool:
        """Whether a timed-out attempt is retried: ``retry_timeouts`` if set, else only for servers known to abort
        abandoned requests (:data:`ABORTING_SERVERS`). Elsewhere each retry would add a request the server keeps
        computing for nobody, on the very server that was too slow to answer."""
        if self.retry_timeouts is not None:
            return self.retry_timeouts
        return self.server in ABORTING_SERVERS

    @property
    def call_budget(self) -> float:
        """Worst-case seconds one call can take once it holds a slot: every attempt timing out, every wait maxed."""
        waits = self.max_retries * max(self.backoff_max, self.max_retry_after)
        return (self.max_retries + 1) * self.timeout + waits

    @property
    def loopback(self) -> bool:
        host = urlsplit(self.base_url).hostname or ""
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
