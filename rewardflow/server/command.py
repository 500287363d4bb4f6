"""The ``rewardflow serve`` command (registered in :mod:`rewardflow.cli`); imports nothing heavy until run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["serve"]


def serve(
    spec: Annotated[Path, typer.Argument(help="Spec file (.yaml), the same the CLI takes.")],
    host: Annotated[str, typer.Option(help="Address to bind; non-loopback needs $REWARDFLOW_TOKEN.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int | None, typer.Option(help="Reward worker processes (overrides the spec).")] = None,
    executor: Annotated[
        str | None, typer.Option(help="Where sync rewards run: process or ray (overrides the spec's `executor`).")
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Ray cluster for --executor ray: auto, ray://host:10001 (overrides the spec).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most samples per request (else 413).")] = 4096,
    max_queue: Annotated[int, typer.Option(help="Most samples waiting (else 429).")] = 16384,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MiB (else 413).")] = 16.0,
    request_timeout: Annotated[float, typer.Option(help="Deadline per request, seconds.")] = 300.0,
    grace: Annotated[float, typer.Option(help="Seconds to finish in-flight requests on SIGTERM.")] = 30.0,
    batch_wait_ms: Annotated[
        float, typer.Option(help="Cross-request batching window for model rewards; 0: no merging of requests at all.")
    ] = (5.0),
    failure_value: Annotated[
        float | None, typer.Option(help="OpenRLHF/slime: value sent for a failed sample (flagged); unset: 424.")
    ] = None,
    label_column: Annotated[str, typer.Option(help="Column that OpenRLHF labels / slime label fill.")] = "answer",
    run_code_isolation: Annotated[
        str, typer.Option(help="/run_code: least sandbox isolation (rlimits, unshare, bwrap); else SandboxError.")
    ] = "unshare",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve the spec over HTTP: /v1/score, /get_reward (OpenRLHF), /rm (slime), /run_code (SandboxFusion), /metrics."""
    from rich.console import Console
    from rich.markup import escape

    from rewardflow.errors import RewardflowError
    from rewardflow.spec import load_spec

    err = Console(stderr=True)
    try:
        from rewardflow.errors import MissingDependencyError
        from rewardflow.server.config import ServerConfig
        from rewardflow.server.run import serve as run

        for package, module in (
            ("fastapi", "fastapi"),
            ("uvicorn", "uvicorn"),
            ("prometheus-client", "prometheus_client"),
        ):
            try:  # checked before anything starts: a missing extra is a usage error (exit 2) with its fix
                __import__(module)
            except ImportError as exc:
                raise MissingDependencyError(package, "server") from exc

        config = ServerConfig.from_env(
            host=host,
            port=port,
            workers=workers,
            executor=executor,
            ray_address=ray_address,
            max_batch=max_batch,
            max_queue=max_queue,
            max_body_bytes=int(max_body_mb * 1024 * 1024),
            request_timeout=request_timeout,
            grace=grace,
            batch_wait_ms=batch_wait_ms,
            failure_value=failure_value,
            label_column=label_column,
            run_code_isolation=run_code_isolation,
        ).check()
        loaded = load_spec(spec)
    except (RewardflowError, ImportError, ValueError) as exc:
        err.print(f"[red]error:[/red] {escape(_one_line(exc))}", soft_wrap=True)  # escape: keep `[server]`
        raise typer.Exit(2) from exc
    run(loaded, config, log_level=log_level)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ImportError) and "pip install" not in str(exc):
        return f"{exc}; pip install 'rewardflow[server]'"
    return " ".join(str(exc).split())
