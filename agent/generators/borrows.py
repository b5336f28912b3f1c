"""Generator for the ``borrows`` family: aliasing borrows -- two ``&mut`` at once (E0499), ``&mut`` while
``&`` is alive (E0502) and assigning to a borrowed place (E0506).

Shapes are pieces (see ``moves.Piece``): pruning a vector while iterating it, swapping two elements through
two mutable borrows, overwriting a field whose old value is still borrowed, reading a value and then mutating
its container, and a ``&mut self`` call while a field is mutably borrowed. Expected values are computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.generators import Example
from agent.generators.moves import NOUNS, STRUCTS, WORDS, Piece, assemble, draw_pieces, rlist, strs

FAMILY = "borrows"


def prune_while_iterating(rng: random.Random) -> Piece:
    """``remove`` inside a loop over ``iter()`` of the same vector (E0502); fix: ``retain``."""
    noun = rng.choice(NOUNS)
    fn = f"drop_{rng.choice(['big', 'odd', 'low', 'stale'])}_{noun}s"
    ty = rng.choice(["i32", "i64", "u32", "u16"])
    lo = 0 if ty[0] == "u" else -30
    kept: list[int] = []
    vals: list[int] = []
    while not 0 < len(kept) < len(vals):  # something pruned and something kept: a stub cannot pass
        vals = [rng.randint(lo, 60) for _ in range(rng.randint(3, 7))]
        limit, first = rng.randint(5, 40), vals[0]
        rule = rng.randrange(4)
        cond = [f"*x > {limit}", f"*x < {limit}", "*x % 2 != 0", f"*x == {first}"][rule]
        kept = [x for x in vals if [x <= limit, x >= limit, x % 2 == 0, x != first][rule]]
    neg = {"*x > ": "*x <= ", "*x < ": "*x >= ", "*x % 2 != 0": "*x % 2 == 0", "*x == ": "*x != "}
    keep = cond
    for a, b in neg.items():
        if cond.startswith(a):
            keep = b + cond[len(a) :]
            break
    items = f"""
fn {fn}(v: &mut Vec<{ty}>) -> usize {{
    let mut removed = 0;
    for (i, x) in v.iter().enumerate() {{
        if {cond} {{
            v.remove(i);
            removed += 1;
        }}
    }}
    removed
}}
"""
    fixed = f"""
fn {fn}(v: &mut Vec<{ty}>) -> usize {{
    let before = v.len();
    v.retain(|x| {keep});
    before - v.len()
}}
"""
    tests = f"""
#[test]
fn {fn}_prunes() {{
    let mut v: Vec<{ty}> = vec!{rlist(vals)};
    assert_eq!({fn}(&mut v), {len(vals) - len(kept)});
    assert_eq!(v, Vec::<{ty}>::from({rlist(kept)}));
}}
"""
    demo = f'let mut v: Vec<{ty}> = vec!{rlist(vals)};\nprintln!("{{}} {{:?}}", {fn}(&mut v), v);'
    return Piece("prune_while_iterating", items, fixed, tests, ("E0502",), demo, demo)


def double_mut(rng: random.Random) -> Piece:
    """Two mutable borrows into one collection at once (E0499)."""
    if rng.random() < 0.5:
        fn = f"swap_ends_{rng.choice(NOUNS)}s"
        words = rng.sample(WORDS, rng.randint(2, 5))
        items = f"""
fn {fn}(v: &mut Vec<String>) -> usize {{
    if v.len() < 2 {{
        return v.len();
    }}
    let first = v.first_mut().unwrap();
    let last = v.last_mut().unwrap();
    std::mem::swap(first, last);
    v.len()
}}
"""
        fixed = items.replace(
            "    let first = v.first_mut().unwrap();\n    let last = v.last_mut().unwrap();\n"
            "    std::mem::swap(first, last);\n",
            "    let n = v.len();\n    v.swap(0, n - 1);\n",
        )
        after = [words[-1], *words[1:-1], words[0]]
        tests = f"""
#[test]
fn {fn}_swaps() {{
    let mut v = {strs(words)};
    assert_eq!({fn}(&mut v), {len(words)});
    assert_eq!(v, {strs(after)});
}}
"""
        demo = f'let mut v = {strs(words)};\n{fn}(&mut v);\nprintln!("{{:?}}", v);'
        return Piece("double_mut", items, fixed, tests, ("E0499",), demo, demo)
    fn = f"move_{rng.choice(['points', 'credits', 'stock', 'votes', 'tokens'])}"
    a, b = rng.sample(WORDS, 2)
    va, vb, amt = rng.randint(0, 50), rng.randint(0, 50), rng.randint(1, 30)
    ok = va >= amt
    items = f"""
fn {fn}(m: &mut std::collections::HashMap<String, i64>, from: &str, to: &str, amt: i64) -> bool {{
    let src = m.get_mut(from);
    let dst = m.get_mut(to);
    match (src, dst) {{
        (Some(s), Some(d)) if *s >= amt => {{
            *s -= amt;
            *d += amt;
            true
        }}
        _ => false,
    }}
}}
"""
    fixed = f"""
fn {fn}(m: &mut std::collections::HashMap<String, i64>, from: &str, to: &str, amt: i64) -> bool {{
    if !m.contains_key(to) || m.get(from).map_or(true, |s| *s < amt) {{
        return false;
    }}
    *m.get_mut(from).unwrap() -= amt;
    *m.get_mut(to).unwrap() += amt;
    true
}}
"""
    ra, rb = (va - amt, vb + amt) if ok else (va, vb)
    setup = f'let mut m = std::collections::HashMap::from([("{a}".to_string(), {va}), ("{b}".to_string(), {vb})]);'
    tests = f"""
#[test]
fn {fn}_between_keys() {{
    {setup}
    assert_eq!({fn}(&mut m, "{a}", "{b}", {amt}), {str(ok).lower()});
    assert_eq!((m["{a}"], m["{b}"]), ({ra}, {rb}));
    assert!(!{fn}(&mut m, "{a}", "nobody", 1));
}}
"""
    demo = f'{setup}\nprintln!("{{}}", {fn}(&mut m, "{a}", "{b}", {amt}));'
    return Piece("double_mut", items, fixed, tests, ("E0499",), demo, demo)


def overwrite_borrowed(rng: random.Random) -> Piece:
    """A field assigned while a reference to its old value is still used (E0506)."""
    sname = rng.choice(STRUCTS) + rng.choice(["State", "Cell", "Slot", "Gauge"])
    method = rng.choice(["set", "update", "store", "commit"])
    if rng.random() < 0.5:
        ty = "u32"
        vals = [rng.randint(0, 99) for _ in range(3)]
        lits = [str(v) for v in vals]
        prev_b, prev_f, use_b, use_f = "let prev = &self.value;", "let prev = self.value;", "*prev", "prev"
    else:
        ty = "String"
        lits = [f'"{w}".to_string()' for w in rng.sample(WORDS, 3)]
        prev_b, prev_f = "let prev = &self.value;", "let prev = self.value.clone();"
        use_b = use_f = "prev.clone()"
    items = f"""
struct {sname} {{
    value: {ty},
    history: Vec<{ty}>,
}}

impl {sname} {{
    fn {method}(&mut self, next: {ty}) -> usize {{
        {prev_b}
        self.value = next;
        self.history.push({use_b});
        self.history.len()
    }}
}}
"""
    fixed = items.replace(prev_b, prev_f).replace(
        f"self.history.push({use_b});", f"self.history.push({use_f});"
    )
    tests = f"""
#[test]
fn {sname.lower()}_keeps_history() {{
    let mut s = {sname} {{ value: {lits[0]}, history: Vec::new() }};
    assert_eq!(s.{method}({lits[1]}), 1);
    assert_eq!(s.{method}({lits[2]}), 2);
    assert_eq!(s.history, vec![{lits[0]}, {lits[1]}]);
    assert_eq!(s.value, {lits[2]});
}}
"""
    demo = (
        f"let mut s = {sname} {{ value: {lits[0]}, history: Vec::new() }};\n"
        f'println!("{{}}", s.{method}({lits[1]}));'
    )
    return Piece("overwrite_borrowed", items, fixed, tests, ("E0506",), demo, demo)


def read_then_mutate(rng: random.Random) -> Piece:
    """A reference obtained from a container is used after the container was mutated (E0502)."""
    variant = rng.randrange(3)
    noun = rng.choice(NOUNS)
    if variant == 0:
        fn = f"add_{noun}_over_min"
        vals = [rng.randint(1, 80) for _ in range(rng.randint(1, 5))]
        x = rng.randint(0, 50)
        items = f"""
fn {fn}(v: &mut Vec<u32>, x: u32) -> u32 {{
    let smallest = v.iter().min().unwrap();
    v.push(x);
    x - *smallest.min(&x)
}}
"""
        fixed = items.replace(
            "let smallest = v.iter().min().unwrap();", "let smallest = *v.iter().min().unwrap();"
        )
        fixed = fixed.replace("x - *smallest.min(&x)", "x - smallest.min(x)")
        call, expect = f"{fn}(&mut v, {x})", str(x - min(min(vals), x))
        after_s = "vec!" + rlist([*vals, x])
        setup = f"let mut v: Vec<u32> = vec!{rlist(vals)};"
    elif variant == 1:
        fn = f"extend_{noun}_line"
        words = rng.sample(WORDS, rng.randint(2, 4))
        extra = rng.choice(WORDS)
        items = f"""
fn {fn}(line: &mut String, extra: &str) -> String {{
    let head = line.split(',').next().unwrap_or("");
    line.push(',');
    line.push_str(extra);
    head.to_uppercase()
}}
"""
        fixed = items.replace(
            "let head = line.split(',').next().unwrap_or(\"\");",
            "let head = line.split(',').next().unwrap_or(\"\").to_string();",
        )
        call, expect = f'{fn}(&mut v, "{extra}")', f'"{words[0].upper()}"'
        after_s = f'"{",".join([*words, extra])}"'
        setup = f'let mut v = String::from("{",".join(words)}");'
    else:
        fn = f"reset_{noun}s"
        vals = [rng.randint(0, 200) for _ in range(rng.randint(1, 5))]
        items = f"""
fn {fn}(v: &mut Vec<i64>) -> i64 {{
    let last = v.last().unwrap_or(&0);
    v.clear();
    *last * 2
}}
"""
        fixed = items.replace("let last = v.last().unwrap_or(&0);", "let last = *v.last().unwrap_or(&0);")
        fixed = fixed.replace("*last * 2", "last * 2")
        call, expect, after_s = f"{fn}(&mut v)", str(vals[-1] * 2), "Vec::<i64>::new()"
        setup = f"let mut v: Vec<i64> = vec!{rlist(vals)};"
    tests = f"""
#[test]
fn {fn}_then_changes() {{
    {setup}
    assert_eq!({call}, {expect});
    assert_eq!(v, {after_s});
}}
"""
    demo = f'{setup}\nprintln!("{{:?}} {{:?}}", {call}, v);'
    return Piece("read_then_mutate", items, fixed, tests, ("E0502",), demo, demo)


def call_while_held(rng: random.Random) -> Piece:
    """A ``&mut self`` method called while a field is still mutably borrowed (E0499)."""
    sname = rng.choice(STRUCTS) + rng.choice(["Bank", "Board", "Rack", "Grid"])
    method = rng.choice(["bump", "charge", "credit", "raise"])
    slots = [rng.randint(0, 40) for _ in range(rng.randint(2, 5))]
    i, by = rng.randrange(len(slots)), rng.randint(1, 9)
    items = f"""
struct {sname} {{
    slots: Vec<u32>,
    ops: u32,
}}

impl {sname} {{
    fn log(&mut self) {{
        self.ops += 1;
    }}

    fn {method}(&mut self, i: usize, by: u32) -> u32 {{
        let slot = &mut self.slots[i];
        self.log();
        *slot += by;
        *slot
    }}
}}
"""
    fixed = items.replace(
        "        let slot = &mut self.slots[i];\n        self.log();\n        *slot += by;\n        *slot\n",
        "        let slot = &mut self.slots[i];\n        *slot += by;\n        let now = *slot;\n"
        "        self.log();\n        now\n",
    )
    tests = f"""
#[test]
fn {sname.lower()}_{method}_counts() {{
    let mut b = {sname} {{ slots: vec!{rlist(slots)}, ops: 0 }};
    assert_eq!(b.{method}({i}, {by}), {slots[i] + by});
    assert_eq!(b.{method}({i}, {by}), {slots[i] + 2 * by});
    assert_eq!(b.ops, 2);
}}
"""
    demo = f'let mut b = {sname} {{ slots: vec!{rlist(slots)}, ops: 0 }};\nprintln!("{{}}", b.{method}({i}, {by}));'
    return Piece("call_while_held", items, fixed, tests, ("E0499",), demo, demo)


SHAPES: list[Callable[[random.Random], Piece]] = [
    prune_while_iterating,
    double_mut,
    overwrite_borrowed,
    read_then_mutate,
    call_while_held,
]


def generate(rng: random.Random) -> Example:
    """One program with one aliasing error; about one in four carries a second, independent one."""
    return assemble(FAMILY, draw_pieces(rng, SHAPES, 2 if rng.random() < 0.25 else 1), rng)
