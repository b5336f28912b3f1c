"""Generator for the ``multi`` family: multi-function programs with 2-4 errors of different kinds at once.

A draw picks 2-4 distinct error *kinds* -- ownership (``moves``), aliasing (``borrows``), ``mut``
(``mutability``), lifetimes, type mismatches (E0308), unresolved names (E0425/E0433) and method/arity
mistakes (E0599/E0061) -- takes one piece of each (the first four reuse the family generators' pieces; the
last three are defined here) and joins them into one 30-60 line program. Every error sits in its own
function, so rustc reports all of them: a type error only silences the borrow checker in its own body.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from agent.generators import Example, borrows, lifetimes, moves, mutability
from agent.generators.moves import NOUNS, WORDS, Piece, assemble, draw_pieces, rlist

FAMILY = "multi"


def q(s: str) -> str:
    return f'"{s}"'


def type_mismatch(rng: random.Random) -> Piece:
    """An integer where a float is expected, a ``&str`` where a ``String`` is, or a float compared to an int."""
    kind = rng.randrange(3)
    noun = rng.choice(NOUNS)
    if kind == 0:
        fn = f"mean_{noun}"
        xs = [rng.randint(0, 50) for _ in range(rng.randint(1, 4)) for _ in (0, 1)]
        items = f"""
fn {fn}(xs: &[u32]) -> f64 {{
    if xs.is_empty() {{
        return 0.0;
    }}
    let total: u32 = xs.iter().sum();
    total / xs.len() as u32
}}
"""
        fixed = items.replace("    total / xs.len() as u32\n", "    total as f64 / xs.len() as f64\n")
        mean = sum(xs) / len(xs)
        call, check = f"{fn}(&{rlist(xs)})", f"assert!(({fn}(&{rlist(xs)}) - {mean!r}).abs() < 1e-9);"
    elif kind == 1:
        fn = f"{noun}_size_label"
        t = rng.randint(3, 20)
        n = rng.randint(0, 30)
        big, small = rng.choice([("big", "small"), ("bulk", "single"), ("heavy", "light")])
        items = f"""
fn {fn}(n: u32) -> String {{
    if n > {t} {{
        "{big}"
    }} else {{
        "{small}"
    }}
}}
"""
        fixed = items.replace(f'"{big}"\n', f'"{big}".to_string()\n').replace(
            f'"{small}"\n', f'"{small}".to_string()\n'
        )
        call = f"{fn}({n})"
        check = f"assert_eq!({call}, {q(big if n > t else small)});"
    else:
        fn = f"{noun}_is_hot"
        t = rng.randint(20, 40)
        v = rng.choice([15.5, 22.0, 31.25, 40.5, 18.75])
        items = f"""
fn {fn}(celsius: f64) -> bool {{
    celsius >= {t}
}}
"""
        fixed = items.replace(f"celsius >= {t}\n", f"celsius >= {t}.0\n")
        call = f"{fn}({v})"
        check = f"assert_eq!({call}, {str(v >= t).lower()});\n    assert_eq!({fn}({t - 0.5}), false);\n    assert!({fn}({t}.0));"
    tests = f"""
#[test]
fn {fn}_typed() {{
    {check}
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("type_mismatch", items, fixed, tests, ("E0308",), demo, demo)


def unresolved(rng: random.Random) -> Piece:
    """A misspelt local (E0425) or a collection type used without its ``use`` (E0433)."""
    noun = rng.choice(NOUNS)
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
    lit = rlist([q(w) for w in words])
    if rng.random() < 0.5:
        fn = f"distinct_{noun}s"
        ty = rng.choice(["BTreeSet", "HashSet"])
        items = f"""
fn {fn}(words: &[&str]) -> usize {{
    let mut seen = {ty}::new();
    for w in words {{
        seen.insert(w.to_lowercase());
    }}
    seen.len()
}}
"""
        fixed = f"use std::collections::{ty};\n" + items
        expect, code = len(set(words)), "E0433"
    else:
        fn = f"{noun}_letters"
        var = rng.choice(["letters", "total", "count", "chars"])
        typo = {"letters": "leters", "total": "totl", "count": "cout", "chars": "chrs"}[var]
        items = f"""
fn {fn}(words: &[&str]) -> usize {{
    let mut {var} = 0;
    for w in words {{
        {var} += w.len();
    }}
    {typo}
}}
"""
        fixed = items.replace(f"    {typo}\n", f"    {var}\n")
        expect, code = sum(len(w) for w in words), "E0425"
    tests = f"""
#[test]
fn {fn}_counts() {{
    assert_eq!({fn}(&{lit}), {expect});
}}
"""
    demo = f'println!("{{}}", {fn}(&{lit}));'
    return Piece("unresolved", items, fixed, tests, (code,), demo, demo)


def wrong_call(rng: random.Random) -> Piece:
    """A method from another language (E0599) or a helper called with the wrong number of arguments (E0061)."""
    noun = rng.choice(NOUNS)
    words = rng.sample(WORDS, rng.randint(1, 5))
    if rng.random() < 0.5:
        fn = f"{noun}_stack"
        bad, good = rng.choice([("push_back", "push"), ("append_item", "push"), ("add", "push")])
        items = f"""
fn {fn}(words: &[&str]) -> (usize, Option<String>) {{
    let mut stack: Vec<String> = Vec::new();
    for w in words {{
        stack.{bad}(w.to_string());
    }}
    (stack.len(), stack.pop())
}}
"""
        fixed = items.replace(f"stack.{bad}(", f"stack.{good}(")
        call, expect = (
            f"{fn}(&{rlist([q(w) for w in words])})",
            f"({len(words)}, Some({q(words[-1])}.to_string()))",
        )
        code = "E0599"
    else:
        fn = f"{noun}_ids"
        base = rng.randint(1, 900)
        items = f"""
fn make_id(prefix: &str, n: usize) -> String {{
    format!("{{prefix}}-{{n:03}}")
}}

fn {fn}(words: &[&str]) -> Vec<String> {{
    words.iter().enumerate().map(|(i, w)| make_id(w, i + {base}, true)).collect()
}}
"""
        fixed = items.replace(f"make_id(w, i + {base}, true)", f"make_id(w, i + {base})")
        call = f"{fn}(&{rlist([q(w) for w in words])})"
        expect = f"vec!{rlist([q(f'{w}-{i + base:03}') for i, w in enumerate(words)])}"
        code = "E0061"
    tests = f"""
#[test]
fn {fn}_calls() {{
    assert_eq!({call}, {expect});
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("wrong_call", items, fixed, tests, (code,), demo, demo)


KINDS: dict[str, Sequence[Callable[[random.Random], Piece]]] = {
    "moves": moves.SHAPES,
    "borrows": borrows.SHAPES,
    "mutability": mutability.SHAPES,
    "lifetimes": lifetimes.SHAPES,
    "types": [type_mismatch],
    "resolve": [unresolved],
    "calls": [wrong_call],
}


def _one_of(makers: Sequence[Callable[[random.Random], Piece]]) -> Callable[[random.Random], Piece]:
    def make(rng: random.Random) -> Piece:
        return rng.choice(list(makers))(rng)

    make.__name__ = "one_of_" + "_".join(m.__name__ for m in makers[:1])
    return make


def generate(rng: random.Random) -> Example:
    """2-4 errors of different kinds in one bin/lib program of roughly 30-60 lines."""
    for _ in range(30):
        k = rng.choices([2, 3, 4], weights=[3, 5, 2])[0]
        kinds = rng.sample(sorted(KINDS), k)
        pieces = draw_pieces(rng, [_one_of(KINDS[kind]) for kind in kinds], k)
        example = assemble(FAMILY, pieces, rng)
        if 30 <= len(example.broken.strip().splitlines()) <= 60:
            return example
    return example
