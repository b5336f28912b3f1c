"""Progress bars for the long CLI commands (tqdm, on stderr): shown on a terminal, silent otherwise, so logs,
pipes and CI output carry no bar characters or carriage returns."""

from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm


def enabled(stream: IO[str] | None = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def bar(total: int | None, desc: str, unit: str = "it", **kwargs: Any) -> tqdm[Any]:
    """A tqdm bar on stderr, disabled when stderr is not a terminal. ``update`` it or use it as an
    iterator wrapper via ``bar(None, ...)`` with ``iterable=``."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled(sys.stderr),
        leave=False,
        dynamic_ncols=True,
        **kwargs,
    )


def write(message: str) -> None:
    """Print a line to stdout above any bar (a plain print when none is shown), flushed for logs."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
