"""rustc diagnostics as plain data: parsed from rustc's JSON output or from a client's rendered text.

Everything downstream (routing, prompts, suggestion applying, repeat detection) reads these dataclasses, never
raw compiler output, so the two input forms — our own sandbox's ``--error-format=json`` and whatever a client
pastes from ``cargo build`` — look the same to the rest of the system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

# rustc's closing summaries carry no information about the program; they are dropped.
_SUMMARY = re.compile(
    r"^(aborting due to|\d+ warnings? emitted|For more information about|Some errors have detailed"
    r"|could not compile)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_HEADER = re.compile(r"^(error|warning)(?:\[([A-Za-z0-9_]+)\])?: (.*)$")
_SHORT = re.compile(r"^(.+?):(\d+):(\d+): (error|warning)(?:\[([A-Za-z0-9_]+)\])?: (.*)$")
_LOCATION = re.compile(r"^\s*--> (.+?):(\d+):(\d+)\s*$")
_CARGO_PROGRESS = re.compile(r"^\s+(Compiling|Checking|Finished|Running|Blocking|Updating|Locking)\b")


@dataclass(frozen=True)
class Suggestion:
    """One edit rustc proposes. Offsets are UTF-8 byte offsets into the checked source, end exclusive.

    ``group`` ties together the parts of one multi-span suggestion (they must be applied all or none).
    """

    message: str
    replacement: str
    byte_start: int
    byte_end: int
    line_start: int
    column_start: int
    line_end: int
    column_end: int
    applicability: str
    group: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Suggestion:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class Diagnostic:
    """One top-level compiler message (error or warning) with its primary location and suggested edits."""

    level: str
    code: str | None
    message: str
    line: int | None
    column: int | None
    rendered: str
    suggestions: tuple[Suggestion, ...] = ()

    @property
    def is_error(self) -> bool:
        return self.level == "error"

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "code": self.code,
            "message": self.message,
            "line": self.line,
            "column": self.column,
            "rendered": self.rendered,
            "suggestions": [s.to_dict() for s in self.suggestions],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnostic:
        return cls(
            level=str(data["level"]),
            code=data.get("code"),
            message=str(data["message"]),
            line=data.get("line"),
            column=data.get("column"),
            rendered=str(data.get("rendered", "")),
            suggestions=tuple(Suggestion.from_dict(s) for s in data.get("suggestions", ())),
        )


def _is_summary(level: str, message: str) -> bool:
    return level in ("failure-note", "note", "help") or bool(_SUMMARY.match(message))


def _suggestions_of(spans: Iterable[Mapping[str, Any]], message: str, group: int) -> list[Suggestion]:
    found = []
    for span in spans:
        replacement = span.get("suggested_replacement")
        if replacement is None:
            continue
        found.append(
            Suggestion(
                message=message,
                replacement=str(replacement),
                byte_start=int(span["byte_start"]),
                byte_end=int(span["byte_end"]),
                line_start=int(span["line_start"]),
                column_start=int(span["column_start"]),
                line_end=int(span["line_end"]),
                column_end=int(span["column_end"]),
                applicability=str(span.get("suggestion_applicability") or "Unspecified"),
                group=group,
            )
        )
    return found


def _from_json_object(obj: Mapping[str, Any]) -> Diagnostic | None:
    if obj.get("reason") == "compiler-message":  # cargo --message-format=json wraps rustc's object
        inner = obj.get("message")
        return _from_json_object(inner) if isinstance(inner, Mapping) else None
    if obj.get("$message_type", "diagnostic") != "diagnostic":
        return None
    level, message = obj.get("level"), obj.get("message")
    if not isinstance(level, str) or not isinstance(message, str) or _is_summary(level, message):
        return None
    code_obj = obj.get("code")
    code = code_obj.get("code") if isinstance(code_obj, Mapping) else None
    spans = [s for s in obj.get("spans") or [] if isinstance(s, Mapping)]
    primary = next((s for s in spans if s.get("is_primary")), spans[0] if spans else None)
    suggestions = _suggestions_of(spans, message, 0)
    for index, child in enumerate(obj.get("children") or [], start=1):
        if isinstance(child, Mapping):
            child_spans = [s for s in child.get("spans") or [] if isinstance(s, Mapping)]
            suggestions += _suggestions_of(child_spans, str(child.get("message", "")), index)
    return Diagnostic(
        level=level,
        code=str(code) if code else None,
        message=message,
        line=int(primary["line_start"]) if primary else None,
        column=int(primary["column_start"]) if primary else None,
        rendered=str(obj.get("rendered") or message),
        suggestions=tuple(suggestions),
    )


def parse_rustc_json(stderr: str) -> list[Diagnostic]:
    """Diagnostics from rustc ``--error-format=json`` (or cargo ``--message-format=json``) output.

    Lines that are not JSON objects (a stray panic message, cargo's progress) are ignored, as are the
    "aborting due to ..." summaries.
    """
    diagnostics = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, Mapping) and (diag := _from_json_object(obj)) is not None:
            diagnostics.append(diag)
    return diagnostics


def parse_rendered(text: str) -> list[Diagnostic]:
    """Diagnostics from human-readable rustc/cargo output (``error[E0382]: msg`` then `` --> file:l:c``).

    Also accepts ``--error-format=short`` lines. Rendered output carries no machine-applicable edits, so
    these diagnostics have no suggestions.
    """
    lines = _ANSI.sub("", text).splitlines()
    diagnostics: list[Diagnostic] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        short = _SHORT.match(line)
        if short and not _HEADER.match(line):
            _file, lno, col, level, code, message = short.groups()
            if not _SUMMARY.match(message):
                diagnostics.append(Diagnostic(level, code, message, int(lno), int(col), line))
            i += 1
            continue
        header = _HEADER.match(line)
        if not header:
            i += 1
            continue
        level, code, message = header.groups()
        block = [line]
        i += 1
        while i < len(lines) and not _HEADER.match(lines[i]) and not _SHORT.match(lines[i]):
            if not _CARGO_PROGRESS.match(lines[i]) and not _SUMMARY.match(lines[i]):
                block.append(lines[i])
            i += 1
        if _SUMMARY.match(message):
            continue
        where = next((m for m in map(_LOCATION.match, block) if m), None)
        while block and not block[-1].strip():
            block.pop()
        diagnostics.append(
            Diagnostic(
                level=level,
                code=code,
                message=message,
                line=int(where.group(2)) if where else None,
                column=int(where.group(3)) if where else None,
                rendered="\n".join(block) + "\n",
            )
        )
    return diagnostics


def parse_client_output(text: str) -> list[Diagnostic]:
    """Whatever a client sends: JSON lines if it contains any rustc/cargo JSON diagnostic, else rendered."""
    from_json = parse_rustc_json(text)
    if from_json:
        return from_json
    return parse_rendered(text)


def error_codes(diagnostics: Iterable[Diagnostic]) -> list[str]:
    """Sorted unique codes of the error-level diagnostics (lint names for denied lints)."""
    return sorted({d.code for d in diagnostics if d.is_error and d.code})


def signature(diagnostics: Iterable[Diagnostic]) -> str:
    """A short stable fingerprint of the errors (code and primary line each), to notice a repeated state."""
    parts = sorted(
        f"{d.code or '-'}@{d.line if d.line is not None else '?'}" for d in diagnostics if d.is_error
    )
    return ",".join(parts)
