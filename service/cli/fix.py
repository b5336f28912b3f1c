"""``dreamfix fix FILE.rs``: fix one program in-process (model + sandbox loop), or through a server.

Also ``build_loop`` that ``dreamfix eval`` shares: the daemon's loop builder over the database's active versions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.diagnostics import Diagnostic, parse_client_output
from agent.koans import EDITIONS, MODES
from agent.loop import FixLoop, Problem
from agent.sandbox import Sandbox
from service.cli import CliError
from service.cli.check import build_sandbox
from service.compose import build_fix_loop, serving_strategy
from service.compose import load_runtime as compose_load_runtime
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    from agent.episodes import ProblemRecord
    from learner.runtime import ModelRuntime
    from learner.share.bank import BankSnapshot


def load_runtime(settings: Settings) -> ModelRuntime:
    """The model from settings (``DREAMFIX_MODEL``: a provisioned name, a folder, a hub id or a .gguf)."""
    from learner.provision import ProvisionError

    try:
        return compose_load_runtime(settings)
    except (ProvisionError, ValueError, OSError) as exc:
        raise CliError(f"cannot load model {settings.model!r}: {exc}") from exc


def build_loop(
    settings: Settings,
    runtime: ModelRuntime | None,
    sandbox: Sandbox,
    *,
    max_new_tokens: int | None = None,
    prompt_lookup: bool = False,
    wrap_generate: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
    deadline: float | None = None,
) -> FixLoop:
    """The daemon's fix loop (``compose.build_fix_loop``) over the coefficient versions active in the
    database, installed the way the daemon installs them (``ServingRuntime.sync``), so this process serves
    what the daemon would serve for the same input. A database without the schema serves the base model."""
    snapshot = None
    if runtime is not None:
        snapshot = _active_snapshot(settings, runtime, sandbox)
    return build_fix_loop(
        runtime,
        settings,
        sandbox,
        snapshot=snapshot,
        max_new_tokens=max_new_tokens,
        prompt_lookup=prompt_lookup,
        wrap_generate=wrap_generate,
        deadline=deadline,
    )


def _active_snapshot(settings: Settings, runtime: ModelRuntime, sandbox: Sandbox) -> BankSnapshot | None:
    from sqlalchemy.exc import SQLAlchemyError

    from service.db.session import Database
    from service.serving import ServingRuntime

    db = Database(settings.db_url)
    try:
        serving = ServingRuntime(settings, db, sandbox, lambda: runtime)
        serving.runtime = runtime
        try:
            serving.sync()
        except SQLAlchemyError as exc:
            print(
                f"no active coefficient versions read ({type(exc).__name__}): serving the base model",
                file=sys.stderr,
            )
            return None
        return serving.pinned_snapshot()
    finally:
        db.dispose()


def _read_text(path: str, what: str) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{what} {path} is not UTF-8 text") from exc


def record_to_result(record: ProblemRecord) -> dict[str, Any]:
    """The JSON of ``POST /v1/fix`` (``serving.fix_response``), without an episode: nothing is stored."""
    from service.serving import fix_response

    return fix_response(record).model_dump()


def _fix_via_server(
    url: str,
    code: str,
    mode: str,
    edition: str,
    diagnostics: str | None,
    retries: int = 4,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    import httpx

    from service.client import RetryPolicy, post_with_retry

    payload: dict[str, Any] = {"code": code, "mode": mode, "edition": edition}
    if diagnostics is not None:
        payload["diagnostics"] = diagnostics
    if timeout_s is not None:
        payload["timeout_s"] = timeout_s
    endpoint = url.rstrip("/") + "/v1/fix"
    try:
        response = post_with_retry(
            endpoint,
            payload,
            # The server answers by the request's deadline (a 504 past it); the margin covers its last step.
            timeout=(timeout_s if timeout_s is not None else get_settings().limits.request_timeout_s) + 30,
            policy=RetryPolicy(tries=retries + 1),
            notify=lambda line: print(line, file=sys.stderr),
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {endpoint}: {exc}") from exc
    try:
        body = response.json()
    except ValueError:
        body = {"detail": response.text[:500]}
    if response.status_code >= 400:
        detail = body.get("detail") or body.get("message") or body if isinstance(body, dict) else body
        busy = " (still busy after retrying; try again later)" if response.status_code in (429, 503) else ""
        raise CliError(f"server answered {response.status_code}: {detail}{busy}")
    if not isinstance(body, dict) or "fixed" not in body or "code" not in body:
        raise CliError(f"unexpected answer from {endpoint}: {str(body)[:300]}")
    return body


def fix_in_process(
    code: str,
    mode: str,
    edition: str,
    diagnostics: list[Diagnostic] | None,
    max_attempts: int | None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """One fix in this process. ``timeout_s`` (counted once the model is loaded): decoding and further model
    rounds stop at it, as the daemon's deadline does, and the answer has the attempts made by then."""
    settings = get_settings()
    sandbox = build_sandbox(settings)
    runtime = load_runtime(settings)
    deadline = time.monotonic() + timeout_s if timeout_s is not None else None
    loop = build_loop(settings, runtime, sandbox, deadline=deadline)
    strategy = serving_strategy(settings, max_attempts)
    problem = Problem(
        "cli", code, mode, edition, None, None, tuple(diagnostics) if diagnostics is not None else None
    )
    stop = (lambda: time.monotonic() >= deadline) if deadline is not None else None
    return record_to_result(loop.run([problem], strategy, should_stop=stop)[0])


def _print_human(result: dict[str, Any]) -> None:
    if result.get("diff"):
        print(result["diff"], end="" if result["diff"].endswith("\n") else "\n")
    attempts = result.get("attempts", [])
    route = result.get("route") or {}
    status = result.get("status", "fixed" if result.get("fixed") else "unfixed")
    line = f"{status}: {len(attempts)} attempt(s)"
    if route.get("task"):
        line += f", route {route['task']}" + (
            f"@v{route['version']}" if route.get("version") is not None else ""
        )
    if not result.get("verified", True):
        line += " (unverified: the sandbox lacks crates this code uses)"
    print(line, file=sys.stderr)


def run_fix(args: argparse.Namespace) -> int:
    code = _read_text(args.file, "source file")
    if not code.strip():
        raise CliError(f"{args.file} is empty")
    diagnostics_text = _read_text(args.diagnostics, "diagnostics file") if args.diagnostics else None
    if args.max_attempts is not None and args.max_attempts < 0:
        raise CliError("--max-attempts must be >= 0")
    if args.retries < 0:
        raise CliError("--retries must be >= 0")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise CliError("--timeout must be a number of seconds > 0")
    if args.server:
        result = _fix_via_server(
            args.server, code, args.mode, args.edition, diagnostics_text, args.retries, args.timeout
        )
    else:
        diagnostics = parse_client_output(diagnostics_text) if diagnostics_text is not None else None
        if diagnostics_text is not None and not diagnostics:
            raise CliError(f"no rustc diagnostics found in {args.diagnostics}")
        result = fix_in_process(code, args.mode, args.edition, diagnostics, args.max_attempts, args.timeout)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_human(result)
    return 0 if result.get("fixed") else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fix",
        help="fix a Rust file's compile errors",
        description="Fix FILE.rs with the model + rustc loop (in-process, or via --server). Exit 0 when fixed.",
    )
    parser.add_argument("file", metavar="FILE.rs")
    parser.add_argument("--diagnostics", metavar="FILE", help="your compiler's output (rendered or JSON)")
    parser.add_argument("--mode", choices=MODES, default="bin", help="how the program is checked")
    parser.add_argument("--edition", choices=EDITIONS, default="2021")
    parser.add_argument("--max-attempts", type=int, default=None, help="model attempts (default: settings)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--server", metavar="URL", help="ask a running dreamfix server instead")
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="the fix's deadline: with --server, the request's timeout_s (default: the server's "
        "limits.request_timeout_s, at most its limits.max_request_timeout_s); in-process, the model rounds "
        "stop at it (counted from the model's load)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=4,
        help="with --server: retries on 429/503, waiting Retry-After (capped at 30 s) or a backoff (default 4)",
    )
    parser.set_defaults(handler=run_fix)
