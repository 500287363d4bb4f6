"""Judge usage accounting: running totals per client (:class:`UsageTotals`) and sums over results.

Per call, usage travels in ``RewardResult.info["judge"]`` (see :meth:`~rewardflow.judge.client.JudgeReply.info`):
HTTP ``requests``, ``retries``, ``prompt_tokens``, ``completion_tokens``, ``latency``, ``cached``, ``cost_usd``
when prices are set, ``failed`` for a failed call. :func:`usage_summary` adds those up over a batch of results;
:class:`UsageTotals` is what a client keeps since its creation, including failures by kind, time spent waiting
for rate limits and the peak number of requests in flight.

Counting rules: ``calls`` counts every call a reward made, ``requests`` every HTTP request sent (retries
included, cache hits excluded), ``failures`` every chain of attempts that ended in an error (callers that shared
a deduplicated request share its failure).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["UsageTotals", "usage_summary"]


class UsageTotals:
    """Thread-safe running totals for one client."""

    _FIELDS = ("calls", "requests", "retries", "failures", "cache_hits", "prompt_tokens", "completion_tokens")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(self._FIELDS, 0)
        self.errors: dict[str, int] = {}
        self.latency_total = 0.0
        self.latency_max = 0.0
        self.limit_wait = 0.0
        self.cost = 0.0
        self.inflight = 0
        self.peak_inflight = 0

    def add(self, **values: float) -> None:
        with self._lock:
            for key, value in values.items():
                if key == "latency":
                    self.latency_total += value
                    self.latency_max = max(self.latency_max, value)
                elif key == "limit_wait":
                    self.limit_wait += value
                elif key == "cost":
                    self.cost += value
                else:
                    self.counts[key] += int(value)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def enter(self) -> None:
        with self._lock:
            self.inflight += 1
            self.peak_inflight = max(self.peak_inflight, self.inflight)

    def leave(self) -> None:
        with self._lock:
            self.inflight -= 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counts)
            calls = out["calls"]
            out["errors"] = dict(self.errors)
            out["latency_total"] = round(self.latency_total, 6)
            out["latency_mean"] = round(self.latency_total / calls, 6) if calls else 0.0
            out["latency_max"] = round(self.latency_max, 6)
            out["limit_wait"] = round(self.limit_wait, 6)
            out["peak_concurrency"] = self.peak_inflight
            out["cost_usd"] = round(self.cost, 8)
            return out


_SUMMED = ("requests", "retries", "prompt_tokens", "completion_tokens", "cost_usd")


def usage_summary(results: Sequence[Any]) -> dict[str, Any]:
    """Judge usage summed over engine results (single- or multi-component), for logs and reports.

    Counts calls, cache hits and failed calls, and sums requests, retries, tokens and cost. Group rewards carry
    their usage on one sample per group, so the sums are exact.
    """
    totals: dict[str, Any] = dict.fromkeys(("calls", "cached", "failed", *_SUMMED), 0)
    totals["cost_usd"] = 0.0
    for result in results:
        info = getattr(result, "info", None) or {}
        if "judge" in info:
            found = [info["judge"]]
        else:
            found = [v["judge"] for v in info.values() if isinstance(v, Mapping) and "judge" in v]
        for judge in found:
            if not isinstance(judge, Mapping):
                continue
            totals["calls"] += 1
            totals["cached"] += bool(judge.get("cached"))
            totals["failed"] += bool(judge.get("failed"))
            for key in _SUMMED:
                totals[key] += judge.get(key, 0) or 0
    totals["cost_usd"] = round(totals["cost_usd"], 8)
    return totals
