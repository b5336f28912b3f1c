"""The koan library: small broken Rust programs with a reference fix and behaviour-pinning tests.

Koans are data (``koans/<family>.toml``, format in ``koans/README.md``); this module loads and checks the
*shape* of that data. Whether each koan really breaks and really gets fixed is checked by
``dreamfix koans validate`` through the sandbox.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Mode = Literal["lib", "bin", "test"]
Split = Literal["train", "eval"]
MODES: tuple[str, ...] = ("lib", "bin", "test")
EDITIONS: tuple[str, ...] = ("2015", "2018", "2021", "2024")
SPLITS: tuple[str, ...] = ("train", "eval")

#: The repository's koan folder; ``DREAMFIX_KOANS_DIR`` style overrides are passed in by ``service``.
#: An installed wheel ships them inside this package instead (``agent/_data/koans``, see setup.py).
_BUNDLED_KOANS = Path(__file__).resolve().parent / "_data" / "koans"
DEFAULT_KOANS_DIR = (
    _BUNDLED_KOANS if _BUNDLED_KOANS.is_dir() else Path(__file__).resolve().parent.parent / "koans"
)


class KoanFormatError(ValueError):
    """A koan file that does not follow koans/README.md."""


@dataclass(frozen=True)
class Koan:
    id: str
    family: str
    title: str
    split: Split
    mode: Mode
    edition: str
    codes: tuple[str, ...]
    broken: str
    fixed: str
    tests: str
    notes: str = ""
    source_file: str = field(default="", compare=False)

    @property
    def is_eval(self) -> bool:
        return self.split == "eval"


_REQUIRED = ("id", "title", "split", "mode", "codes", "broken", "fixed", "tests")


def _parse_koan(raw: dict[str, object], family: str, default_edition: str, where: str) -> Koan:
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise KoanFormatError(f"{where}: koan {raw.get('id', '?')!r} lacks {', '.join(missing)}")
    koan_id = str(raw["id"])
    split = str(raw["split"])
    mode = str(raw["mode"])
    edition = str(raw.get("edition", default_edition))
    codes = raw["codes"]
    if split not in SPLITS:
        raise KoanFormatError(f"{where}: {koan_id}: split must be one of {SPLITS}, not {split!r}")
    if mode not in MODES:
        raise KoanFormatError(f"{where}: {koan_id}: mode must be one of {MODES}, not {mode!r}")
    if edition not in EDITIONS:
        raise KoanFormatError(f"{where}: {koan_id}: edition must be one of {EDITIONS}, not {edition!r}")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise KoanFormatError(f"{where}: {koan_id}: codes must be a list of strings like 'E0382'")
    tests = str(raw["tests"])
    if "#[test]" not in tests:
        raise KoanFormatError(f"{where}: {koan_id}: tests must contain at least one #[test] function")
    return Koan(
        id=koan_id,
        family=family,
        title=str(raw["title"]),
        split=split,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        edition=edition,
        codes=tuple(codes),
        broken=str(raw["broken"]),
        fixed=str(raw["fixed"]),
        tests=tests,
        notes=str(raw.get("notes", "")),
        source_file=where,
    )


def load_family_file(path: Path) -> list[Koan]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise KoanFormatError(f"{path.name}: not valid TOML: {exc}") from exc
    family = str(data.get("family") or path.stem)
    edition = str(data.get("edition", "2021"))
    raw_koans = data.get("koan", [])
    if not isinstance(raw_koans, list) or not raw_koans:
        raise KoanFormatError(f"{path.name}: no [[koan]] tables")
    return [_parse_koan(raw, family, edition, path.name) for raw in raw_koans]


def load_koans(directory: Path | None = None, families: Iterable[str] | None = None) -> list[Koan]:
    """All koans under ``directory`` (default: the repository's ``koans/``), sorted by id."""
    directory = directory or DEFAULT_KOANS_DIR
    wanted = set(families) if families else None
    koans: list[Koan] = []
    for path in sorted(directory.glob("*.toml")):
        for koan in load_family_file(path):
            if wanted is None or koan.family in wanted:
                koans.append(koan)
    seen: dict[str, str] = {}
    for koan in koans:
        if koan.id in seen:
            raise KoanFormatError(f"duplicate koan id {koan.id} in {koan.source_file} and {seen[koan.id]}")
        seen[koan.id] = koan.source_file
    return sorted(koans, key=lambda k: k.id)


def eval_koans(directory: Path | None = None) -> list[Koan]:
    """The frozen evaluation split. Never train on these."""
    return [k for k in load_koans(directory) if k.is_eval]


def train_koans(directory: Path | None = None) -> list[Koan]:
    return [k for k in load_koans(directory) if not k.is_eval]


TEST_MODULE = "__koan_tests"


def compose_with_tests(source: str, tests: str) -> str:
    """The program under judgement with the koan's tests appended as a child module that sees its items."""
    body = "\n".join(("    " + line) if line.strip() else "" for line in tests.strip("\n").splitlines())
    return (
        f"{source.rstrip()}\n\n#[cfg(test)]\n#[allow(unused_imports, dead_code)]\nmod {TEST_MODULE} {{\n"
        f"    use super::*;\n{body}\n}}\n"
    )
