"""Prompt A/B for the default model, one shot, on eval koans taken across families in turn.

For each variant (system prompt, answer instruction) it prints how many replies returned the program
unchanged, how many held no program at all, how many the sandbox verified (compiles AND the koan's tests
pass), the completion tokens and the wall time. Greedy, prompt-lookup decoding (batch 1).

    python tests/benchmarks/prompt_ab.py --variants smallest-change,plain,must-change,explain --limit 19

The variants patch ``agent.prompt``'s module constants for the run; the shipped prompt is whichever the data
chose (docs/results.md).
"""

from __future__ import annotations

import argparse
import json
import time

import agent.prompt as prompt
from learner.runtime import GenerationParams
from service.cli.eval import select_problems
from service.compose import load_runtime, make_sandbox
from service.settings import get_settings

PROGRAM_ONLY = "Reply with the complete corrected program in one ```rust code block."
CAUSE_FIRST = (
    "First say in one sentence what causes the error and how to fix it. Then reply with the complete "
    "corrected program in one ```rust code block."
)
PLAIN = "You are an expert Rust programmer. You fix compile errors in Rust programs."
VARIANTS: dict[str, tuple[str, str]] = {
    "smallest-change": (
        "You are an expert Rust programmer who fixes compile errors. Make the smallest change that makes the "
        "program compile and keeps its behaviour: keep the names, signatures and logic other code relies on; "
        "never delete logic or replace it with todo!(), unimplemented!() or a dummy value.",
        PROGRAM_ONLY,
    ),
    "plain": (PLAIN, PROGRAM_ONLY),
    "must-change": (
        "You are an expert Rust programmer. The program you are given does NOT compile. Find the lines rustc "
        "points at and change them so that it compiles; your answer must differ from the input.",
        PROGRAM_ONLY,
    ),
    "explain": (PLAIN, CAUSE_FIRST),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--limit", type=int, default=19)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    settings = get_settings()
    sandbox = make_sandbox(settings)
    runtime = load_runtime(settings)
    problems = select_problems("eval", None, args.limit, None, None)
    checks = [sandbox.verify(p.source, p.mode, p.edition, p.tests) for p in problems]
    results = {}
    for name in args.variants.split(","):
        prompt.SYSTEM_PROMPT, prompt._PROGRAM_INSTRUCTIONS = VARIANTS[name]
        messages = [
            prompt.build_messages(p.source, c.diagnostics, hints=False)
            for p, c in zip(problems, checks, strict=True)
        ]
        started = time.monotonic()
        replies = runtime.generate(
            messages, GenerationParams(max_new_tokens=args.max_new_tokens, prompt_lookup=True)
        )
        wall = time.monotonic() - started
        unchanged = no_program = passed = 0
        for problem, reply in zip(problems, replies, strict=True):
            candidate = prompt.parse_reply(reply.text, problem.source)
            if candidate is None:
                no_program += 1
            elif candidate.strip() == problem.source.strip():
                unchanged += 1
            else:
                passed += bool(sandbox.verify(candidate, problem.mode, problem.edition, problem.tests).ok)
        results[name] = {
            "koans": len(problems),
            "unchanged": unchanged,
            "no_program": no_program,
            "passed": passed,
            "completion_tokens": sum(r.completion_tokens for r in replies),
            "wall_s": round(wall, 1),
        }
        print(name, results[name], flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
