"""The ONE prompt builder: inference and night training both build their chat messages here.

The prototype's models learned one prompt and were asked another; here :func:`build_messages` is the only way
to turn (program, diagnostics, hints, format, feedback) into messages, and :func:`training_example` pairs those
exact messages with the answer :func:`parse_reply` expects back.

Two answer formats:

* ``program`` — the whole corrected program in one fenced ```rust block.
* ``edits`` — one or more search/replace blocks, applied in order to the program::

      <<<<<<< SEARCH
      lines copied exactly from the program
      =======
      the lines that replace them
      >>>>>>> REPLACE

  Each SEARCH text must occur in the program (the first occurrence is replaced; a match that differs only
  in indentation/trailing spaces is accepted). Cheaper to decode for long programs with small fixes.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agent.hints import hints_for

OutputFormat = Literal["program", "edits"]
OUTPUT_FORMATS: tuple[str, ...] = ("program", "edits")

MAX_DIAGNOSTICS = 6
MAX_LINES_PER_DIAGNOSTIC = 24
MAX_DIAGNOSTICS_CHARS = 3000
MAX_FEEDBACK_CHARS = 1500

# Measured on 19 eval koans (docs/results.md): a system prompt stressing "the smallest change, keep the
# logic" and one insisting "your answer must differ" did no better than this plain one (15–16 of 19 replies
# unchanged each); behaviour is pinned by the koans' tests, not by the wording here.
SYSTEM_PROMPT = "You are an expert Rust programmer. You fix compile errors in Rust programs."

# Asking for the cause first is measured (docs/results.md): with the bare "reply with the corrected program",
# the default model returned 15–16 of 19 eval programs unchanged; naming the cause first cut that to 5.
_PROGRAM_INSTRUCTIONS = (
    "First say in one sentence what causes the error and how to fix it. Then reply with the complete "
    "corrected program in one ```rust code block."
)
_EDITS_INSTRUCTIONS = (
    "Reply only with edit blocks in this form, one block per change, SEARCH lines copied exactly from the "
    "program:\n<<<<<<< SEARCH\n(lines to replace)\n=======\n(new lines)\n>>>>>>> REPLACE"
)


class DiagnosticLike(Protocol):
    """What the prompt needs of a rustc diagnostic (agent.diagnostics.Diagnostic provides it)."""

    @property
    def level(self) -> str: ...

    @property
    def code(self) -> str | None: ...

    @property
    def message(self) -> str: ...

    @property
    def line(self) -> int | None: ...

    @property
    def rendered(self) -> str: ...


@dataclass(frozen=True)
class Feedback:
    """What went wrong with the previous attempt, shown in the next prompt so the model does not repeat it."""

    note: str  # e.g. "the reply changed nothing", "the same errors remain", "the tests failed"
    candidate: str | None = None  # the previous candidate program (None if the reply was unusable)
    diagnostics: Sequence[DiagnosticLike] = field(default_factory=tuple)
    test_output: str = ""


# --------------------------------------------------------------------------------------------- diagnostics

_ABS_SRC_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\][^\s:]*?[/\\](src[/\\][\w./\\-]+\.rs)")
_ABS_RS_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?[/\\](?:[^\s:/\\]+[/\\])*([\w.-]+\.rs)")
_NOISE = re.compile(
    r"^(error: aborting due to.*|For more information about (this|an) error.*|"
    r"Some errors have detailed explanations.*|error: could not compile.*|warning: build failed.*)$"
)


def normalize_paths(text: str) -> str:
    """Absolute paths become project-relative (``/home/u/p/src/x.rs`` → ``src/x.rs``; else the file name)."""
    text = _ABS_SRC_PATH.sub(lambda m: m.group(1).replace("\\", "/"), text)
    return _ABS_RS_PATH.sub(lambda m: m.group(1), text)


def _error_diagnostics(diagnostics: Sequence[DiagnosticLike]) -> list[DiagnosticLike]:
    return [
        d
        for d in diagnostics
        if d.level == "error" and not d.message.startswith(("aborting due to", "Some errors have"))
    ]


def _clean_rendered(diag: DiagnosticLike) -> str:
    text = diag.rendered or ""
    if not text.strip():
        code = f"[{diag.code}]" if diag.code else ""
        where = f"\n --> line {diag.line}" if diag.line else ""
        text = f"error{code}: {diag.message}{where}"
    lines = [line.rstrip() for line in normalize_paths(text).splitlines()]
    lines = [line for line in lines if not _NOISE.match(line.strip())]
    collapsed: list[str] = []
    for line in lines:
        if line == "" and (not collapsed or collapsed[-1] == ""):
            continue
        collapsed.append(line)
    while collapsed and not collapsed[-1]:
        collapsed.pop()
    if len(collapsed) > MAX_LINES_PER_DIAGNOSTIC:
        collapsed = [*collapsed[:MAX_LINES_PER_DIAGNOSTIC], "  ... (trimmed)"]
    return "\n".join(collapsed)


def clean_diagnostics(diagnostics: Sequence[DiagnosticLike]) -> str:
    """The errors as the model sees them: errors only, deduplicated, paths normalised, length capped."""
    seen: set[tuple[str | None, str, int | None]] = set()
    blocks: list[str] = []
    errors = _error_diagnostics(diagnostics)
    for diag in errors:
        key = (diag.code, diag.message, diag.line)
        if key in seen:
            continue
        seen.add(key)
        blocks.append(_clean_rendered(diag))
    shown: list[str] = []
    total = 0
    for block in blocks[:MAX_DIAGNOSTICS]:
        if shown and total + len(block) > MAX_DIAGNOSTICS_CHARS:
            break
        if not shown and len(block) > MAX_DIAGNOSTICS_CHARS:
            block = block[:MAX_DIAGNOSTICS_CHARS] + "\n  ... (trimmed)"
        shown.append(block)
        total += len(block)
    if len(blocks) > len(shown):
        shown.append(f"... and {len(blocks) - len(shown)} more error(s)")
    return "\n\n".join(shown)


def error_codes_in_order(diagnostics: Sequence[DiagnosticLike]) -> list[str]:
    out: list[str] = []
    for diag in _error_diagnostics(diagnostics):
        if diag.code and diag.code not in out:
            out.append(diag.code)
    return out


# ------------------------------------------------------------------------------------------------ messages


def _fence(text: str, lang: str) -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _unified_diff(before: str, after: str) -> str:
    lines = difflib.unified_diff(
        before.splitlines(), after.splitlines(), "before.rs", "after.rs", n=1, lineterm=""
    )
    return "\n".join(lines)


def _feedback_text(source: str, feedback: Feedback) -> str:
    parts = [f"A previous attempt failed: {feedback.note}."]
    if feedback.candidate is not None and feedback.candidate.strip() != source.strip():
        diff = _unified_diff(source, feedback.candidate)
        if len(diff) > MAX_FEEDBACK_CHARS:
            diff = diff[:MAX_FEEDBACK_CHARS] + "\n... (trimmed)"
        parts.append("It made this change:\n" + _fence(diff, "diff"))
    errors = clean_diagnostics(feedback.diagnostics)
    if errors:
        if len(errors) > MAX_FEEDBACK_CHARS:
            errors = errors[:MAX_FEEDBACK_CHARS] + "\n... (trimmed)"
        parts.append("After that change rustc reported:\n" + _fence(errors, "text"))
    if feedback.test_output.strip():
        output = normalize_paths(feedback.test_output.strip())[-MAX_FEEDBACK_CHARS:]
        parts.append("It compiled, but the program's tests failed:\n" + _fence(output, "text"))
    parts.append("Do not repeat that attempt; fix the program shown above differently.")
    return "\n".join(parts)


def build_messages(
    source: str,
    diagnostics: Sequence[DiagnosticLike],
    *,
    hints: bool,
    output_format: OutputFormat = "program",
    feedback: Feedback | None = None,
) -> list[dict[str, str]]:
    """System + user chat messages asking to fix ``source`` given its rustc ``diagnostics``."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, not {output_format!r}")
    sections = [
        "Fix the compile errors in this Rust program.",
        _fence(source, "rust"),
    ]
    errors = clean_diagnostics(diagnostics)
    if errors:
        sections.append("rustc reports:\n" + _fence(errors, "text"))
    if hints:
        advice = hints_for(error_codes_in_order(diagnostics))
        if advice:
            sections.append("Hints:\n" + "\n".join(f"- {h}" for h in advice))
    if feedback is not None:
        sections.append(_feedback_text(source, feedback))
    sections.append(_PROGRAM_INSTRUCTIONS if output_format == "program" else _EDITS_INSTRUCTIONS)
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "\n\n".join(sections)},
    ]


def prompt_hash(messages: Sequence[dict[str, str]]) -> str:
    """Stable short hash of a prompt, logged with each attempt (and used to never send one prompt twice)."""
    payload = json.dumps(list(messages), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- answers


def format_program_answer(fixed_source: str) -> str:
    return _fence(fixed_source, "rust")


def _edit_block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE"


def format_edits_answer(original: str, fixed_source: str) -> str:
    """Search/replace blocks that turn ``original`` into ``fixed_source`` when applied by :func:`apply_edits`.

    Hunks get one line of context, widened until their SEARCH text is unique; if the round trip through the
    parser does not reproduce the fix exactly, one block replacing the whole program is used instead.
    """
    old = original.splitlines(keepends=True)
    new = fixed_source.splitlines(keepends=True)
    if old and not old[-1].endswith("\n"):
        old[-1] += "\n"
    if new and not new[-1].endswith("\n"):
        new[-1] += "\n"
    hunks: list[list[int]] = []
    for group in difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(1):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        while (i1 > 0 or i2 < len(old)) and (i1 == i2 or "".join(old).count("".join(old[i1:i2])) != 1):
            if i1 > 0 and (i2 == len(old) or (i2 - i1) % 2 == 0):
                i1, j1 = i1 - 1, j1 - 1
            else:
                i2, j2 = i2 + 1, j2 + 1
        if hunks and i1 <= hunks[-1][1]:
            hunks[-1][1], hunks[-1][3] = max(hunks[-1][1], i2), max(hunks[-1][3], j2)
        else:
            hunks.append([i1, i2, j1, j2])
    blocks = [_edit_block("".join(old[a:b]), "".join(new[c:d])) for a, b, c, d in hunks]
    answer = "\n".join(blocks)
    if not blocks or apply_edits(original, answer) != _with_newline(fixed_source):
        answer = _edit_block("".join(old), "".join(new))
    return answer


def training_example(
    source: str,
    diagnostics: Sequence[DiagnosticLike],
    fixed_source: str,
    hints: bool,
    output_format: OutputFormat = "program",
) -> tuple[list[dict[str, str]], str]:
    """(messages, answer) for training: the inference prompt and exactly the answer the parser reads back."""
    messages = build_messages(source, diagnostics, hints=hints, output_format=output_format)
    if output_format == "program":
        return messages, format_program_answer(fixed_source)
    return messages, format_edits_answer(source, fixed_source)


# ------------------------------------------------------------------------------------------------ parsing

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:^[ \t]*```[ \t]*$|\Z)", re.S | re.M)
_EDIT = re.compile(
    r"^[ \t]*<{5,9}[ \t]*SEARCH[ \t]*\n(.*?)^[ \t]*={5,9}[ \t]*\n(.*?)^[ \t]*>{5,9}[ \t]*REPLACE[ \t]*$",
    re.S | re.M,
)
_RUST_START = re.compile(
    r"^\s*(use |fn |pub |struct |enum |impl|trait |mod |const |static |type |#\[|#!\[|//|extern |unsafe |"
    r"async fn|macro_rules!)"
)
_NON_RUST_LANGS = {"text", "diff", "console", "sh", "bash", "shell", "toml", "json", "output"}


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _code_blocks(reply: str) -> list[str]:
    blocks = []
    for match in _FENCE.finditer(reply):
        if match.group(1).lower() in _NON_RUST_LANGS:
            continue
        body = match.group(2)
        if body.strip():
            blocks.append(body)
    return blocks


def _bare_code(reply: str) -> str | None:
    """Code without fences: from the first line that starts like Rust to the last closing brace."""
    lines = reply.splitlines()
    start = next((i for i, line in enumerate(lines) if _RUST_START.match(line)), None)
    if start is None:
        return None
    end = max((i for i, line in enumerate(lines) if line.rstrip().endswith(("}", ";"))), default=-1)
    if end < start:
        return None
    return "\n".join(lines[start : end + 1])


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _best_program(candidates: list[str], original: str) -> str | None:
    """The block most like a whole corrected program: it defines functions, and is closest to the original."""
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    scored = []
    for index, text in enumerate(candidates):
        defines = ("fn " in text) or ("struct " in text) or ("impl " in text)
        scored.append((defines, _similarity(text, original), index, text))
    return max(scored)[3]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _reindent(text: str, delta: int) -> str:
    """Shift every non-blank line by ``delta`` spaces (the model's SEARCH was indented differently)."""
    if delta == 0:
        return text
    out = []
    for line in text.splitlines(keepends=True):
        if not line.strip():
            out.append(line)
        elif delta > 0:
            out.append(" " * delta + line)
        else:
            out.append(line[min(-delta, _indent(line)) :])
    return "".join(out)


def _find_block(text: str, search: str) -> tuple[int, int, int] | None:
    """Where whole lines equal to ``search`` occur in ``text`` (exactly, else ignoring surrounding
    whitespace per line), and the indentation difference between the program and the SEARCH text."""
    start = text.find(search) if search.strip() else -1
    while start != -1:
        at_line_start = start == 0 or text[start - 1] == "\n"
        end = start + len(search)
        if at_line_start and (search.endswith("\n") or end == len(text) or text[end] == "\n"):
            return start, end, 0
        start = text.find(search, start + 1)
    want_lines = search.splitlines()
    while want_lines and not want_lines[-1].strip():
        want_lines.pop()
    while want_lines and not want_lines[0].strip():
        want_lines.pop(0)
    if not want_lines:
        return None
    want = [line.strip() for line in want_lines]
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    for i in range(len(lines) - len(want) + 1):
        if all(lines[i + k].strip() == want[k] for k in range(len(want))):
            return offsets[i], offsets[i + len(want)], _indent(lines[i]) - _indent(want_lines[0])
    return None


def apply_edits(original: str, reply: str) -> str | None:
    """Apply the reply's search/replace blocks in order; None if it has none or none of them applies."""
    text = _with_newline(original)
    applied = 0
    for match in _EDIT.finditer(reply):
        search, replace = match.group(1), match.group(2)
        found = _find_block(text, search)
        if found is None:
            continue
        start, end, delta = found
        replacement = _reindent(_with_newline(replace), delta) if replace else ""
        text = text[:start] + replacement + text[end:]
        applied += 1
    return text if applied else None


def parse_reply(reply: str, original: str, output_format: OutputFormat = "program") -> str | None:
    """The candidate program in a model reply, or None when the reply holds nothing usable.

    Accepts fenced or bare code with prose around it; of several code blocks the one most like a whole fixed
    program wins. Edit blocks are applied to ``original`` whichever format was asked for (and a whole program
    is accepted when edits were asked for), because small models do not always follow the format.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, not {output_format!r}")
    if _EDIT.search(reply):
        edited = apply_edits(original, reply)
        if edited is not None:
            return edited
    blocks = [b for b in _code_blocks(reply) if not _EDIT.search(b)]
    program = _best_program(blocks, original)
    if program is None and "```" not in reply:
        program = _bare_code(reply)
    if program is None or not program.strip():
        return None
    return _with_newline(program.strip("\n"))
