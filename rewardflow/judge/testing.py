"""A deterministic OpenAI-compatible judge server on loopback, for tests, docs examples and benchmarks.

:class:`FakeJudgeServer` is a real HTTP/1.1 server (keep-alive, ``Content-Length`` bodies) on ``127.0.0.1`` and an
ephemeral port, run by a small asyncio loop on a background thread; ``with FakeJudgeServer() as server:`` gives
``server.base_url`` to point a judge at. Each request sleeps ``latency`` seconds (``asyncio.sleep``, so hundreds
can wait at once) and answers deterministically from its content:

* ``[[reply:TEXT]]`` anywhere in the messages: the reply is ``TEXT`` verbatim (it must not contain ``]]``);
* otherwise, markers ``[[name=value]]`` fill the fields of that name: with a ``response_format`` JSON schema the
  reply is an object that follows the schema, fields without a marker get a value derived from a hash of the
  request (within the schema's ``minimum``/``maximum``/``enum``); a repeated marker fills an array in order
  (``[[scores=7]]`` in each response of a group). Without a schema the reply is the JSON object of the markers,
  or ``{"score": <hash-derived 0..10>}`` when there are none.

Faults, per request, from a marker ``[[fault:KIND]]`` (every attempt) or ``[[fault:KIND*N]]`` (the first ``N``
attempts of an identical request, then normal), or from ``faults=[...]`` (the first requests the server receives,
in order): an HTTP status code (``500``, ``503``, ``400``...), ``429`` (with ``Retry-After``), ``hang`` (no reply
for ``hang`` seconds, then the connection closes), ``drop`` (the connection closes without a reply), ``garbage``
(200 with a body that is not JSON), ``nochoices`` (200 JSON without choices) and ``length`` (200 with the reply
cut short and ``finish_reason: "length"``). ``structured_output=False`` answers 400 to any request with a
``response_format``, like a server without guided decoding. ``context=N`` answers a request whose prompt has more
than ``N`` tokens with llama.cpp's 400 (``exceed_context_size_error`` with ``n_prompt_tokens`` and ``n_ctx``).

Overload: ``capacity=C`` makes the server share its compute like a real one: each request needs ``latency``
seconds of work at full speed and ``n`` requests in progress each get ``C / n`` of it when ``n > C``, so latency
grows with load and goodput is capped at ``C / latency`` per second. An abandoned request (the client timed out
and closed the connection) keeps its share until it is done, as llama-server does, unless
``abort_on_disconnect=True`` (as vLLM and SGLang do).

Usage is deterministic too: tokens are whitespace-separated words. :meth:`FakeJudgeServer.stats` reports requests,
connections, peak concurrency and faults served; ``GET /stats`` returns the same over HTTP.

Only loopback addresses are accepted; header and body sizes are bounded. Run it standalone (for demos and the
benchmark, in its own process) with ``python -m rewardflow.judge.testing --latency 0.1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["FakeJudgeServer", "spawn_fake_server"]

_REPLY = re.compile(r"\[\[reply:(.*?)\]\]", re.DOTALL)
_MARK = re.compile(r"\[\[([A-Za-z_][A-Za-z0-9_]*)=([^\]\n]*)\]\]")
_FAULT = re.compile(r"\[\[fault:([A-Za-z0-9]+)(?:\*(\d+))?\]\]")
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_MAX_HEAD = 64 * 1024
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Payload Too Large"}
_DROP = object()  # close the connection without replying


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _value(text: str) -> Any:
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def markers(text: str) -> dict[str, Any]:
    """``[[name=value]]`` markers of a text: one value per name, or a list when a name repeats."""
    out: dict[str, Any] = {}
    for name, raw in _MARK.findall(text):
        value = _value(raw)
        if name in out:
            out[name] = out[name] + [value] if isinstance(out[name], list) else [out[name], value]
        else:
            out[name] = value
    return out


def generate(schema: Mapping[str, Any], marks: Mapping[str, Any], seed: str, name: str = "") -> Any:
    """A value following ``schema``: from the marker called ``name`` if any, else derived from ``seed``."""
    kind = schema.get("type")
    given = marks.get(name) if name else None
    if kind == "object":
        props = schema.get("properties", {})
        return {key: generate(sub, marks, f"{seed}/{key}", key) for key, sub in props.items()}
    if kind == "array":
        items = schema.get("items", {})
        if given is not None:
            return list(given) if isinstance(given, list) else [given]
        count = int(schema.get("minItems", 1))
        lo, hi = items.get("minimum"), items.get("maximum")
        if schema.get("uniqueItems") and lo is not None and hi is not None and hi - lo + 1 == count:
            return sorted(range(int(lo), int(hi) + 1), key=lambda i: _digest(f"{seed}#{i}"))
        return [generate(items, {}, f"{seed}[{i}]") for i in range(count)]
    if given is not None:
        return given[0] if isinstance(given, list) else given
    h = _digest(seed)
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 10)
        return int(lo) + h % (int(hi) - int(lo) + 1)
    if kind == "boolean":
        return h % 2 == 0
    if kind == "string":
        return "fake judge: deterministic reply"
    return None


class FakeJudgeServer:
    """See the module docstring. Thread-safe to read; start/stop from one thread."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        faults: Sequence[str] = (),
        retry_after: float = 0.05,
        hang: float = 30.0,
        structured_output: bool = True,
        context: int | None = None,
        capacity: int | None = None,
        abort_on_disconnect: bool = False,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body: int = 4 * 1024 * 1024,
        log_size: int = 10_000,
    ) -> None:
        if host not in _LOOPBACK:
            raise ValueError(f"the fake judge server only listens on loopback, not {host!r}")
        self.latency = latency
        self.faults = list(faults)
        self.retry_after = retry_after
        self.hang = hang
        self.structured_output = structured_output
        self.context = context
        self.capacity = capacity
        self.abort_on_disconnect = abort_on_disconnect
        self._working = 0  # requests using compute (capacity mode), abandoned ones included
        self.api_key = api_key
        self.host, self.port = host, port
        self.max_body = max_body
        self.bodies: deque[dict[str, Any]] = deque(maxlen=log_size)  # chat request bodies, in arrival order
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {
            "requests": 0,
            "connections": 0,
            "inflight": 0,
            "peak_inflight": 0,
            "completed": 0,  # replies computed in full (capacity mode), whether anyone was still waiting or not
            "aborted": 0,  # requests stopped because the client went away (abort_on_disconnect)
        }
        self._served: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        """The API root to give a judge (``http://127.0.0.1:PORT/v1``)."""
        if self._server is None:
            raise RuntimeError("the fake judge server is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> FakeJudgeServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_HEAD)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-judge-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or errors:
            raise RuntimeError(f"the fake judge server did not start: {errors[0] if errors else 'timeout'}")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._loop = self._thread = None

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        self._server = None

    def __enter__(self) -> FakeJudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Requests and connections served, peak concurrent requests, faults served by kind."""
        with self._lock:
            return {**self._counts, "faults": dict(self._served)}

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._count("connections")
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                parts = lines[0].split(" ")
                if len(parts) != 3:
                    break
                method, path, _ = parts
                headers = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > self.max_body:
                    await self._write(writer, 413, {"error": {"message": "body too large"}}, close=True)
                    break
                body = await reader.readexactly(length) if length else b""
                answer = await self._route(method, path.split("?")[0], headers, body, reader)
                if answer is _DROP:
                    break
                status, payload, extra = answer  # type: ignore[misc]
                close = headers.get("connection", "").lower() == "close"
                await self._write(writer, status, payload, extra=extra, close=close)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # server shutdown: a connection handler has no one to report to
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        *,
        extra: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        if isinstance(payload, bytes):
            data, ctype = payload, "text/plain"
        else:
            data, ctype = json.dumps(payload).encode("utf-8"), "application/json"
        reason = _REASONS.get(status, "Error")
        head = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {ctype}", f"Content-Length: {len(data)}"]
        head.append("Connection: close" if close else "Connection: keep-alive")
        head.extend(f"{k}: {v}" for k, v in (extra or {}).items())
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)
        await writer.drain()

    async def _route(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, reader: asyncio.StreamReader
    ) -> Any:
        if method == "GET" and path == "/stats":
            return 200, self.stats(), None
        if method == "GET" and path in ("/v1/models", "/models"):
            return 200, {"object": "list", "data": [{"id": "fake-judge", "object": "model"}]}, None
        if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
            return 404, {"error": {"message": f"no route {method} {path}"}}, None
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"error": {"message": "invalid api key"}}, None
        try:
            request = json.loads(body)
            messages = request["messages"]
            text = "\n".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return 400, {"error": {"message": "not a chat completion request"}}, None
        with self._lock:
            index = self._counts["requests"]
            self._counts["requests"] += 1
            self._counts["inflight"] += 1
            self._counts["peak_inflight"] = max(self._counts["peak_inflight"], self._counts["inflight"])
            self.bodies.append(request)
        try:
            return await self._chat(request, text, self._fault(index, text), reader)
        finally:
            with self._lock:
                self._counts["inflight"] -= 1

    def _fault(self, index: int, text: str) -> str | None:
        if index < len(self.faults):
            return self.faults[index]
        match = _FAULT.search(text)
        if match is None:
            return None
        kind, times = match.group(1), match.group(2)
        if times is None:
            return kind
        key = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._lock:
            self._attempts[key] = seen = self._attempts.get(key, 0) + 1
        return kind if seen <= int(times) else None

    async def _work(self, reader: asyncio.StreamReader) -> bool:
        """Spend ``latency`` seconds of compute shared with the other requests; False if aborted on disconnect."""
        capacity = self.capacity or 1
        step = max(self.latency / 20.0, 0.002)
        done = 0.0
        with self._lock:
            self._working += 1
        try:
            while done < self.latency:
                await asyncio.sleep(step)
                with self._lock:
                    share = min(1.0, capacity / max(1, self._working))
                done += step * share
                if self.abort_on_disconnect and reader.at_eof():
                    self._count("aborted")
                    return False
        finally:
            with self._lock:
                self._working -= 1
        self._count("completed")
        return True

    async def _chat(self, request: dict[str, Any], text: str, fault: str | None, reader: asyncio.StreamReader) -> Any:
        if self.capacity:
            if not await self._work(reader):
                return _DROP
        elif self.latency > 0:
            await asyncio.sleep(self.latency)
        if fault is not None:
            with self._lock:
                self._served[fault] = self._served.get(fault, 0) + 1
            if fault == "hang":
                await asyncio.sleep(self.hang)
                return _DROP
            if fault == "drop":
                return _DROP
            if fault == "garbage":
                return 200, b"<html>upstream hiccup: this is not JSON", None
            if fault == "nochoices":
                return 200, {"id": "fake", "object": "chat.completion", "choices": []}, None
            if fault == "length":
                cut = self._content(text, request.get("response_format"))[:12]
                choice = {"index": 0, "message": {"role": "assistant", "content": cut}, "finish_reason": "length"}
                return 200, {"id": "fake", "object": "chat.completion", "choices": [choice]}, None
            if fault == "429":
                wait = f"{self.retry_after:g}"
                headers = {"Retry-After": wait, "retry-after-ms": f"{self.retry_after * 1000:g}"}
                return 429, {"error": {"message": "rate limited (fake)"}}, headers
            if fault.isdigit():
                return int(fault), {"error": {"message": f"injected {fault} (fake)"}}, None
            return 400, {"error": {"message": f"unknown fault {fault!r}"}}, None
        words = sum(len(str(m.get("content", "")).split()) for m in request["messages"])
        if self.context is not None and words > self.context:
            message = (
                f"request ({words} tokens) exceeds the available context size ({self.context} tokens), "
                "try increasing it"
            )
            error = {
                "code": 400,
                "message": message,
                "type": "exceed_context_size_error",
                "n_prompt_tokens": words,
                "n_ctx": self.context,
            }
            return 400, {"error": error}, None
        response_format = request.get("response_format")
        if response_format is not None and not self.structured_output:
            return 400, {"error": {"message": "response_format is not supported by this server (fake)"}}, None
        content = self._content(text, response_format)
        return (
            200,
            {
                "id": f"fake-{_digest(text) % 10**12}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": request.get("model", "fake-judge"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": words,
                    "completion_tokens": len(content.split()),
                    "total_tokens": words + len(content.split()),
                },
            },
            None,
        )

    @staticmethod
    def _content(text: str, response_format: Any) -> str:
        reply = _REPLY.search(text)
        if reply is not None:
            return reply.group(1)
        marks = markers(text)
        schema = None
        if isinstance(response_format, Mapping):
            schema = (response_format.get("json_schema") or {}).get("schema")
        if isinstance(schema, Mapping):
            return json.dumps(generate(schema, marks, text))
        return json.dumps(marks or {"score": _digest(text) % 11})

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1


@contextlib.contextmanager
def spawn_fake_server(
    *, latency: float = 0.0, startup_timeout: float = 30.0, args: Sequence[str] = ()
) -> Iterator[str]:
    """Run the fake server in its own process (so it does not share the caller's GIL); yield its base URL.

    ``args`` are more command-line options (``["--capacity", "8"]``).
    """
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "rewardflow.judge.testing", "--latency", str(latency), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline() if proc.stdout else ""))
        reader.start()
        reader.join(startup_timeout)
        if not line or not line[0].startswith("READY "):
            raise RuntimeError(f"the fake judge server did not start (got {line[0] if line else 'nothing'!r})")
        yield line[0].split()[1]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deterministic OpenAI-compatible judge server on loopback.")
    parser.add_argument("--host", default="127.0.0.1", choices=_LOOPBACK)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--fault", action="append", default=[], help="fault for the next request, in order")
    parser.add_argument("--retry-after", type=float, default=0.05)
    parser.add_argument("--hang", type=float, default=30.0)
    parser.add_argument("--no-structured-output", action="store_true")
    parser.add_argument("--capacity", type=int, default=None, help="requests computed at full speed at once")
    parser.add_argument("--context", type=int, default=None, help="largest prompt in tokens (words)")
    parser.add_argument("--abort-on-disconnect", action="store_true")
    args = parser.parse_args(argv)
    server = FakeJudgeServer(
        latency=args.latency,
        faults=args.fault,
        retry_after=args.retry_after,
        hang=args.hang,
        structured_output=not args.no_structured_output,
        context=args.context,
        capacity=args.capacity,
        abort_on_disconnect=args.abort_on_disconnect,
        host=args.host,
        port=args.port,
    )
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"READY {server.base_url}", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
