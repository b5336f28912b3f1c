"""A replay buffer per task group: the verified training examples of earlier nights (issue 16, item 3).

One JSON-lines file per group (``<root>/<group>.jsonl``), one example a line: the chat messages, the reply,
the night (run id) that added it and a key (sha256 of messages and reply). Adding keeps every example once
(a repeat counts as new again: it moves to the newest end) and at most ``cap`` per group, the newest. A night
trains on its own new examples first and fills up with replayed ones (``mix``), so a group keeps being
refit on what it learnt before and a group too small for one night grows until it holds enough.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Example = tuple[list[dict[str, str]], str]

_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")


def example_key(example: Example) -> str:
    messages, answer = example
    text = json.dumps([messages, answer], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    messages: list[dict[str, str]]
    answer: str
    night: int
    key: str

    @property
    def example(self) -> Example:
        return self.messages, self.answer


class ReplayBuffer:
    def __init__(self, root: Path, cap: int) -> None:
        if cap < 0:
            raise ValueError(f"replay cap must be ≥ 0, got {cap}")
        self.root = root
        self.cap = cap

    def _path(self, group: str) -> Path:
        if not _GROUP.match(group) or group.startswith("."):
            raise ValueError(f"bad replay group name {group!r}")
        return self.root / f"{group}.jsonl"

    def groups(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.jsonl")) if self.root.exists() else []

    def load(self, group: str) -> list[Entry]:
        """Oldest first."""
        path = self._path(group)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            if line.strip():
                row: dict[str, Any] = json.loads(line)
                out.append(Entry(row["messages"], row["answer"], int(row["night"]), row["key"]))
        return out

    def add(self, group: str, examples: Sequence[Example], night: int) -> int:
        """Append tonight's examples (each once), keep the newest ``cap``; returns the group's size."""
        if self.cap == 0:
            return 0
        fresh = {example_key(e): e for e in examples}
        kept = [e for e in self.load(group) if e.key not in fresh]
        kept += [Entry(list(m), a, night, k) for k, (m, a) in fresh.items()]
        kept = kept[-self.cap :]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(group)
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w") as fh:
            for e in kept:
                row = {"messages": e.messages, "answer": e.answer, "night": e.night, "key": e.key}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return len(kept)

    def replayed(self, group: str, new: Sequence[Example]) -> list[Example]:
        """The group's buffered examples that are not among ``new`` (newest first)."""
        keys = {example_key(e) for e in new}
        return [e.example for e in reversed(self.load(group)) if e.key not in keys]


def mix(
    new: Sequence[Example],
    replayed: Sequence[Example],
    limit: int,
    rng: random.Random,
    preferred: Sequence[Example] = (),
) -> list[Example]:
    """Tonight's examples first — those in ``preferred`` (the model's own verified replies) before the
    others, each tier a random choice when there are more than ``limit`` — then replayed ones (a random
    choice) up to ``limit``; shuffled."""
    keys = {example_key(e) for e in preferred}
    first = [e for e in new if example_key(e) in keys]
    rest = [e for e in new if example_key(e) not in keys]
    chosen: list[Example] = []
    for tier in (first, rest, list(replayed)):
        rng.shuffle(tier)
        chosen += tier[: max(0, limit - len(chosen))]
    rng.shuffle(chosen)
    return chosen
