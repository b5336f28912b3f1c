"""Generator for the ``mutability`` family: a binding or argument assigned twice without ``mut`` (E0384),
a mutable borrow of something immutable (E0596) and an assignment through ``&`` or to an immutable place
(E0594).

Shapes are pieces (see ``moves.Piece``): an accumulator, a collection built in a non-``mut`` binding, a
``&self`` method that changes the value, a ``&``/``iter()`` parameter that is written through, and an
argument reassigned in a loop. Expected values are computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.generators import Example
from agent.generators.moves import NOUNS, STRUCTS, WORDS, Piece, assemble, draw_pieces, rlist

FAMILY = "mutability"


def accumulator(rng: random.Random) -> Piece:
    """``let acc = ...;`` then updated in a loop (E0384)."""
    noun = rng.choice(NOUNS)
    kind, k = rng.randrange(4), rng.randint(2, 5)
    if kind == 0:
        fn, init, upd = f"net_{noun}s", "0", "acc += x;"
    elif kind == 1:
        fn, init, upd = f"peak_{noun}", "i64::MIN", "acc = acc.max(x);"
    elif kind == 2:
        fn, init, upd = f"count_positive_{noun}s", "0", "if x > 0 {\n            acc += 1;\n        }"
    else:
        fn, init, upd = f"weigh_{noun}s", "0", f"acc = acc * {k} + x;"
    res = 0
    while res == 0:  # a zero result would let a stub returning the initial value pass
        xs = [rng.randint(-9, 30) for _ in range(rng.randint(2, 6))]
        if kind == 0:
            res = sum(xs)
        elif kind == 1:
            res = max(xs)
        elif kind == 2:
            res = sum(1 for x in xs if x > 0)
        else:
            for x in xs:
                res = res * k + x
    loop = rng.choice(["for", "while"])
    if loop == "for":
        body = f"""    for &x in xs {{
        {upd}
    }}"""
    else:
        body = f"""    let mut i = 0;
    while i < xs.len() {{
        let x = xs[i];
        {upd}
        i += 1;
    }}"""
    items = f"""
fn {fn}(xs: &[i64]) -> i64 {{
    let acc = {init};
{body}
    acc
}}
"""
    fixed = items.replace(f"let acc = {init};", f"let mut acc = {init};")
    tests = f"""
#[test]
fn {fn}_value() {{
    assert_eq!({fn}(&{rlist(xs)}), {res});
}}
"""
    demo = f'println!("{{}}", {fn}(&{rlist(xs)}));'
    return Piece("accumulator", items, fixed, tests, ("E0384",), demo, demo)


def immutable_collection(rng: random.Random) -> Piece:
    """A Vec, String or map built in a binding declared without ``mut`` (E0596)."""
    noun = rng.choice(NOUNS)
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))]
    lit = rlist([f'"{w}"' for w in words])
    kind = rng.randrange(3)
    if kind == 0:
        m = max(rng.randint(3, 5), min(len(w) for w in words))
        fn = f"short_{noun}s"
        decl, ret = "let out = Vec::new();", "Vec<String>"
        body = f"""    for w in words {{
        if w.len() <= {m} {{
            out.push(w.to_uppercase());
        }}
    }}"""
        expect = [w.upper() for w in words if len(w) <= m]
        exp = "vec!" + rlist([f'"{e}"' for e in expect]) if expect else "Vec::<String>::new()"
    elif kind == 1:
        sep = rng.choice(["-", "|", "+", ";"])
        fn = f"{noun}_initials"
        decl, ret = "let out = String::new();", "String"
        body = f"""    for w in words {{
        if !out.is_empty() {{
            out.push('{sep}');
        }}
        out.push_str(&w[..1]);
    }}"""
        exp = '"' + sep.join(w[0] for w in words) + '"'
    else:
        fn = f"{noun}_tally"
        decl, ret = "let out = std::collections::BTreeMap::new();", "std::collections::BTreeMap<String, u32>"
        body = """    for w in words {
        *out.entry(w.to_string()).or_insert(0) += 1;
    }"""
        counts: dict[str, int] = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        exp = (
            "std::collections::BTreeMap::from("
            + rlist([f'("{k}".to_string(), {v})' for k, v in sorted(counts.items())])
            + ")"
        )
    items = f"""
fn {fn}(words: &[&str]) -> {ret} {{
    {decl}
{body}
    out
}}
"""
    fixed = items.replace("let out =", "let mut out =")
    tests = f"""
#[test]
fn {fn}_builds() {{
    assert_eq!({fn}(&{lit}), {exp});
}}
"""
    demo = f'println!("{{:?}}", {fn}(&{lit}));'
    return Piece("immutable_collection", items, fixed, tests, ("E0596",), demo, demo)


def shared_self(rng: random.Random) -> Piece:
    """A ``&self`` method that assigns a field (E0594) or pushes into one (E0596)."""
    sname = rng.choice(STRUCTS) + rng.choice(["Log", "Counter", "Queue", "Book"])
    method = rng.choice(["record", "note", "track", "add"])
    assign = rng.random() < 0.5
    words = rng.sample(WORDS, rng.randint(1, 4))
    if assign:
        code = "E0594"
        body = "        self.count += 1;\n        self.last = Some(what.len());"
        fields = "    count: u32,\n    last: Option<usize>,"
        init = f"{sname} {{ count: 0, last: None }}"
        check = f"assert_eq!((s.count, s.last), ({len(words)}, Some({len(words[-1])})));"
    else:
        code = "E0596"
        body = "        self.items.push(what.to_string());"
        fields = "    items: Vec<String>,"
        init = f"{sname} {{ items: Vec::new() }}"
        check = f"assert_eq!(s.items, vec!{rlist([f'{chr(34)}{w}{chr(34)}' for w in words])});"
    items = f"""
struct {sname} {{
{fields}
}}

impl {sname} {{
    fn {method}(&self, what: &str) {{
{body}
    }}
}}
"""
    fixed = items.replace(f"fn {method}(&self,", f"fn {method}(&mut self,")
    calls = "\n".join(f'    s.{method}("{w}");' for w in words)
    tests = f"""
#[test]
fn {sname.lower()}_{method}s() {{
    let mut s = {init};
{calls}
    {check}
}}
"""
    demo = f'let mut s = {init};\ns.{method}("{words[0]}");'
    return Piece("shared_self", items, fixed, tests, (code,), demo, demo)


def shared_param(rng: random.Random) -> Piece:
    """A function that writes through a ``&`` parameter or ``iter()`` (E0594)."""
    if rng.random() < 0.5:
        fn = f"scale_{rng.choice(NOUNS)}s"
        k = rng.randint(2, 5)
        vals = [rng.randint(-20, 20) for _ in range(rng.randint(1, 5))]
        items = f"""
fn {fn}(v: &mut Vec<i32>) -> i32 {{
    for x in v.iter() {{
        *x *= {k};
    }}
    v.iter().sum()
}}
"""
        fixed = items.replace("for x in v.iter() {", "for x in v.iter_mut() {")
        tests = f"""
#[test]
fn {fn}_in_place() {{
    let mut v = vec!{rlist(vals)};
    assert_eq!({fn}(&mut v), {sum(vals) * k});
    assert_eq!(v, vec!{rlist([x * k for x in vals])});
}}
"""
        demo = f'let mut v = vec!{rlist(vals)};\nprintln!("{{}}", {fn}(&mut v));'
        return Piece("shared_param", items, fixed, tests, ("E0594",), demo, demo)
    sname = rng.choice(STRUCTS)
    field = rng.choice(["level", "charge", "stock", "fuel", "credit"])
    fn = f"top_up_{sname.lower()}"
    cap, start, amount = rng.randint(50, 100), rng.randint(0, 40), rng.randint(1, 80)
    items = f"""
struct {sname} {{
    {field}: u32,
    cap: u32,
}}

fn {fn}(x: &{sname}, amount: u32) -> u32 {{
    let room = x.cap - x.{field};
    let taken = amount.min(room);
    x.{field} += taken;
    amount - taken
}}
"""
    fixed = items.replace(f"fn {fn}(x: &{sname},", f"fn {fn}(x: &mut {sname},")
    taken = min(amount, cap - start)
    tests = f"""
#[test]
fn {fn}_caps() {{
    let mut x = {sname} {{ {field}: {start}, cap: {cap} }};
    assert_eq!({fn}(&mut x, {amount}), {amount - taken});
    assert_eq!(x.{field}, {start + taken});
}}
"""
    demo_b = f'let x = {sname} {{ {field}: {start}, cap: {cap} }};\nprintln!("{{}}", {fn}(&x, {amount}));'
    demo_f = (
        f'let mut x = {sname} {{ {field}: {start}, cap: {cap} }};\nprintln!("{{}}", {fn}(&mut x, {amount}));'
    )
    return Piece("shared_param", items, fixed, tests, ("E0594",), demo_b, demo_f)


def argument_reassigned(rng: random.Random) -> Piece:
    """A by-value argument updated in a loop without ``mut`` (E0384)."""
    kind = rng.randrange(4)
    n = rng.randint(2, 99999)
    if kind == 0:
        fn, body = (
            "digit_count",
            "    let mut c = 1;\n    while n >= 10 {\n        n /= 10;\n        c += 1;\n    }\n    c",
        )
        res = len(str(n))
    elif kind == 1:
        fn, body = (
            "digit_sum",
            "    let mut s = 0;\n    while n > 0 {\n        s += n % 10;\n        n /= 10;\n    }\n    s",
        )
        res = sum(int(d) for d in str(n))
    elif kind == 2:
        n = rng.randint(2, 300)
        fn = "collatz_steps"
        body = (
            "    let mut steps = 0;\n    while n != 1 {\n        n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };\n"
            "        steps += 1;\n    }\n    steps"
        )
        res, m = 0, n
        while m != 1:
            m = m // 2 if m % 2 == 0 else 3 * m + 1
            res += 1
    else:
        fn = "halvings"
        body = "    let mut h = 0;\n    while n > 1 {\n        n /= 2;\n        h += 1;\n    }\n    h"
        res = max(n.bit_length() - 1, 0)
    fn = f"{fn}_{rng.choice(['of', 'for', 'in'])}"
    items = f"""
fn {fn}(n: u64) -> u64 {{
{body}
}}
"""
    fixed = items.replace(f"fn {fn}(n: u64)", f"fn {fn}(mut n: u64)")
    tests = f"""
#[test]
fn {fn}_value() {{
    assert_eq!({fn}({n}), {res});
}}
"""
    demo = f'println!("{{}}", {fn}({n}));'
    return Piece("argument_reassigned", items, fixed, tests, ("E0384",), demo, demo)


SHAPES: list[Callable[[random.Random], Piece]] = [
    accumulator,
    immutable_collection,
    shared_self,
    shared_param,
    argument_reassigned,
]


def generate(rng: random.Random) -> Example:
    """One program with one missing-``mut`` error; about one in four carries a second, independent one."""
    return assemble(FAMILY, draw_pieces(rng, SHAPES, 2 if rng.random() < 0.25 else 1), rng)
