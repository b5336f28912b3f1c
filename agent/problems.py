"""What the fix loop works on: a program to fix, and whether our sandbox can judge it at all.

Clients send code that uses crates (serde, tokio, ...) or sibling modules our sandbox does not have. rustc
then reports E0432/E0433/E0463/E0583 about those names, and nothing we compile can prove a fix right. Such
problems still get a model reply, but it is marked unverified and is routed by the client's diagnostics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.diagnostics import Diagnostic
from agent.koans import Koan

# Top-level names a program may use without any crate: the standard crates and std's modules (a missing
# `use std::fmt;` shows up as "cannot find module or crate `fmt`", which IS ours to fix).
_STD_NAMES = frozenset(
    [
        "std",
        "core",
        "alloc",
        "crate",
        "self",
        "super",
        "Self",
        "any",
        "array",
        "ascii",
        "borrow",
        "boxed",
        "cell",
        "char",
        "clone",
        "cmp",
        "collections",
        "convert",
        "default",
        "env",
        "error",
        "f32",
        "f64",
        "ffi",
        "fmt",
        "fs",
        "future",
        "hash",
        "hint",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "isize",
        "io",
        "iter",
        "marker",
        "mem",
        "net",
        "num",
        "ops",
        "option",
        "os",
        "panic",
        "path",
        "pin",
        "prelude",
        "primitive",
        "process",
        "ptr",
        "rc",
        "result",
        "slice",
        "str",
        "string",
        "sync",
        "task",
        "thread",
        "time",
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "usize",
        "vec",
    ]
)
_CRATE_IN_MESSAGE = re.compile(
    r"(?:unresolved import|cannot find module or crate|unlinked crate|undeclared crate or module"
    r"|can't find crate for) `([A-Za-z_][A-Za-z0-9_]*)`"
)
_EXTERNAL_ONLY_CODES = frozenset({"E0463", "E0583"})  # extern crate not found; `mod x;` file not found


@dataclass(frozen=True)
class Problem:
    """One program to fix. ``tests`` (koans) must still pass after the fix; clients usually send none."""

    id: str
    source: str
    mode: str = "bin"
    edition: str = "2021"
    tests: str | None = None
    family: str | None = None
    client_diagnostics: tuple[Diagnostic, ...] | None = None

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.source.encode("utf-8")).hexdigest()

    @classmethod
    def from_koan(cls, koan: Koan) -> Problem:
        return cls(koan.id, koan.broken, koan.mode, koan.edition, koan.tests, koan.family)


def _defined_in(source: str, name: str) -> bool:
    item = rf"\b(?:mod|struct|enum|trait|type|fn|union|const|static|macro_rules!)\s+{re.escape(name)}\b"
    alias = rf"\bas\s+{re.escape(name)}\b"
    return bool(re.search(item, source) or re.search(alias, source))


def missing_crate(diagnostic: Diagnostic, source: str) -> str | None:
    """The crate or out-of-file module this error is about, when it is one our sandbox cannot provide."""
    if not diagnostic.is_error:
        return None
    if diagnostic.code == "E0583":
        return "<module file>"
    for text in (diagnostic.message, diagnostic.rendered):
        for name in _CRATE_IN_MESSAGE.findall(text or ""):
            if diagnostic.code == "E0463" or (name not in _STD_NAMES and not _defined_in(source, name)):
                return name
    if diagnostic.code in _EXTERNAL_ONLY_CODES:
        return "<crate>"
    return None


def unavailable_crates(diagnostics: Sequence[Diagnostic], source: str) -> list[str]:
    """Sorted names of crates/modules the program needs and the sandbox lacks (empty: we can judge it)."""
    return sorted({name for d in diagnostics if (name := missing_crate(d, source)) is not None})


def judgeable_errors(diagnostics: Sequence[Diagnostic], source: str) -> list[Diagnostic]:
    """The errors that are the program's own, i.e. not caused by an unavailable crate."""
    return [d for d in diagnostics if d.is_error and missing_crate(d, source) is None]
