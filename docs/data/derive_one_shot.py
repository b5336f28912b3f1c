"""Split the 2026-11-29 whole-split run into its two strategies.

That run was started as ``--strategy base --max-attempts 2``. At the time ``--max-attempts`` also applied
to ``base`` (fixed since: base is always one shot), so every koan got up to two greedy attempts, the second
with hints and the compiler's feedback. That is the ``loop`` strategy with N = 2 exactly: ``loop`` differs
from ``base`` only in ``sample_on_stall``, and the loop samples only after a second stall, which two attempts
never reach. The first attempt of each koan is the base strategy's one shot, with the same prompt and the
same greedy reply.

So the merged report yields:

* ``base`` — every record cut to its first attempt (fixed iff that attempt was verified);
* ``loop`` — the records unchanged, relabelled.

Wall time cannot be split per attempt. The one-shot entry therefore gives the first attempts' model and
sandbox seconds, and says so.

    python docs/data/derive_one_shot.py docs/data/eval-base-2attempts.json docs/data/eval-base-loop.json
"""

from __future__ import annotations

import json
import sys
from copy import deepcopy
from pathlib import Path


def main(source: str, target: str) -> None:
    report = json.loads(Path(source).read_text())
    two = report["strategies"].pop("base")
    one = deepcopy(two)
    for record in one["records"]:
        first = record["attempts"][:1]
        record["attempts"] = first
        record["fixed"] = bool(first and first[0]["fixed"])
        record["steps_to_green"] = 1 if record["fixed"] else None
        record["final_status"] = "fixed" if record["fixed"] else "unfixed"
        record["final_code"] = first[0]["candidate"] if record["fixed"] else record["source"]
        record["strategy"] = "base"
    seconds = sum(a["generate_seconds"] + a["check_seconds"] for r in one["records"] for a in r["attempts"])
    one["wall_seconds"] = round(seconds / 2, 1)  # two processes side by side
    one["note"] = "first attempts of the 2-attempt run; wall = their model+sandbox seconds / 2 processes"
    two["note"] = "run as base with --max-attempts 2 = loop with N = 2 (see derive_one_shot.py)"
    for record in two["records"]:
        record["strategy"] = "loop"
    report["strategies"] = {"base": one, "loop": two}
    report["derived_from"] = source
    Path(target).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
