"""``dreamfix check FILE.rs``: the sandboxed rustc from the command line (diagnostics, codes, spans).

Also ``build_sandbox``: the one place where settings become a ``Sandbox`` for CLI commands.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.koans import EDITIONS, MODES
from agent.sandbox import CheckResult, Sandbox, Verdict
from service.cli import CliError
from service.compose import CompositionError, make_sandbox
from service.settings import Settings, get_settings


def build_sandbox(settings: Settings) -> Sandbox:
    """The sandbox the settings describe (``DREAMFIX_SANDBOX__*``), with its on-disk result cache."""
    try:
        return make_sandbox(settings)
    except CompositionError as exc:
        raise CliError(str(exc)) from exc


def read_source(path: str) -> bytes:
    """The file's bytes (the sandbox judges encoding and size); a missing file is a usage error."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise CliError(f"no such file: {path}") from exc
    except IsADirectoryError as exc:
        raise CliError(f"{path} is a directory, not a Rust source file") from exc
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def print_human(result: CheckResult) -> None:
    for diag in result.diagnostics:
        sys.stdout.write(diag.rendered if diag.rendered.endswith("\n") else diag.rendered + "\n")
    if result.output and result.verdict != Verdict.OK:
        sys.stdout.write(result.output if result.output.endswith("\n") else result.output + "\n")
    codes = ", ".join(result.error_codes) or "-"
    line = f"verdict: {result.verdict.value} (error codes: {codes}; {result.duration_s:.2f} s"
    line += ", cached)" if result.cached else ")"
    print(line)
    if result.message:
        print(f"note: {result.message}")


def run(args: argparse.Namespace) -> int:
    source = read_source(args.file)
    sandbox = build_sandbox(get_settings())
    result = sandbox.check(source, mode=args.mode, edition=args.edition)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print_human(result)
    return 0 if result.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="compile a Rust file in the sandbox and show its diagnostics",
        description="Compile FILE.rs with rustc inside the jail (mode test: build with --test and run the "
        "tests). Exit status: 0 ok, 1 the code fails, 2 usage error.",
    )
    parser.add_argument("file", metavar="FILE.rs")
    parser.add_argument("--edition", default="2021", choices=EDITIONS)
    parser.add_argument("--mode", default="bin", choices=MODES, help="lib, bin (needs fn main) or test")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)
