"""Generator for the ``lifetimes`` family: missing lifetime specifiers (E0106), borrowed values that do not
live long enough (E0597), references to locals returned (E0515), temporaries dropped while borrowed (E0716)
and, less often, closures that borrow a local they outlive (E0373).

Shapes are pieces (see ``moves.Piece``); expected values are computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.generators import Example
from agent.generators.moves import NOUNS, STRUCTS, WORDS, Piece, assemble, draw_pieces, rlist

FAMILY = "lifetimes"


def q(s: str) -> str:
    return f'"{s}"'


def ambiguous_output(rng: random.Random) -> Piece:
    """A function with several reference inputs returning a reference (E0106)."""
    kind = rng.randrange(3)
    if kind == 0:
        fn = rng.choice(["heavier", "bigger_batch", "richer"])
        a = [rng.randint(0, 30) for _ in range(rng.randint(1, 4))]
        b = [rng.randint(0, 30) for _ in range(rng.randint(1, 4))]
        items = f"""
fn {fn}(a: &[i32], b: &[i32]) -> &[i32] {{
    let sa: i32 = a.iter().sum();
    let sb: i32 = b.iter().sum();
    if sa >= sb {{ a }} else {{ b }}
}}
"""
        fixed = items.replace(
            f"fn {fn}(a: &[i32], b: &[i32]) -> &[i32]",
            f"fn {fn}<'a>(a: &'a [i32], b: &'a [i32]) -> &'a [i32]",
        )
        call = f"{fn}(&{rlist(a)}, &{rlist(b)})"
        expect = rlist(a if sum(a) >= sum(b) else b)
    elif kind == 1:
        fn = rng.choice(["shorter", "terser", "brief"])
        wa, wb = rng.sample(WORDS, 2)
        items = f"""
fn {fn}(a: &str, b: &str) -> &str {{
    if b.len() < a.len() {{
        b
    }} else {{
        a
    }}
}}
"""
        fixed = items.replace(
            f"fn {fn}(a: &str, b: &str) -> &str", f"fn {fn}<'a>(a: &'a str, b: &'a str) -> &'a str"
        )
        call, expect = f"{fn}({q(wa)}, {q(wb)})", q(wb if len(wb) < len(wa) else wa)
    else:
        fn = f"first_{rng.choice(NOUNS)}_with"
        words = rng.sample(WORDS, rng.randint(2, 5))
        c = rng.choice("aeiorst")
        fb = rng.choice(["none", "n/a", "-", "?"])
        items = f"""
fn {fn}(items: &[String], letter: char, fallback: &str) -> &str {{
    for s in items {{
        if s.starts_with(letter) {{
            return s;
        }}
    }}
    fallback
}}
"""
        fixed = items.replace(
            f"fn {fn}(items: &[String], letter: char, fallback: &str) -> &str",
            f"fn {fn}<'a>(items: &'a [String], letter: char, fallback: &'a str) -> &'a str",
        )
        hit = next((w for w in words if w.startswith(c)), fb)
        lit = "[" + ", ".join(f"{q(w)}.to_string()" for w in words) + "]"
        call, expect = f"{fn}(&{lit}, '{c}', {q(fb)})", q(hit)
    tests = f"""
#[test]
fn {fn}_picks() {{
    assert_eq!({call}, {expect});
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("ambiguous_output", items, fixed, tests, ("E0106",), demo, demo)


def struct_without_lifetime(rng: random.Random) -> Piece:
    """A struct holding a reference without declaring a lifetime parameter (E0106)."""
    sname = rng.choice(STRUCTS) + rng.choice(["View", "Window", "Span", "Slice"])
    fn = f"{sname.lower()}_stat"
    vals = [rng.randint(-10, 50) for _ in range(rng.randint(2, 6))]
    lo = rng.randrange(len(vals))
    hi = rng.randint(lo + 1, len(vals))
    method, body, res = rng.choice(
        [
            ("total", "self.data.iter().sum()", sum(vals[lo:hi])),
            ("largest", "self.data.iter().copied().max().unwrap_or(0)", max(vals[lo:hi])),
            (
                "spread",
                "self.data.iter().max().unwrap_or(&0) - self.data.iter().min().unwrap_or(&0)",
                max(vals[lo:hi]) - min(vals[lo:hi]),
            ),
        ]
    )
    items = f"""
struct {sname} {{
    data: &[i64],
    offset: usize,
}}

impl {sname} {{
    fn {method}(&self) -> i64 {{
        {body}
    }}
}}

fn {fn}(all: &[i64], lo: usize, hi: usize) -> (i64, usize) {{
    let v = {sname} {{ data: &all[lo..hi], offset: lo }};
    (v.{method}(), v.offset)
}}
"""
    fixed = items.replace(
        f"struct {sname} {{\n    data: &[i64],", f"struct {sname}<'a> {{\n    data: &'a [i64],"
    )
    fixed = fixed.replace(f"impl {sname} {{", f"impl {sname}<'_> {{")
    call = f"{fn}(&{rlist(vals)}, {lo}, {hi})"
    tests = f"""
#[test]
fn {fn}_window() {{
    assert_eq!({call}, ({res}, {lo}));
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("struct_without_lifetime", items, fixed, tests, ("E0106",), demo, demo)


def outlived_scope(rng: random.Random) -> Piece:
    """A reference to a value declared in an inner block or loop body used after it ends (E0597)."""
    noun = rng.choice(NOUNS)
    if rng.random() < 0.5:
        fn = f"{noun}_banner"
        w = rng.choice(WORDS)
        k = rng.randint(1, 4)
        items = f"""
fn {fn}(name: &str, width: usize) -> usize {{
    let shown: &str;
    {{
        let padded = format!("{{:*^width$}}", name);
        shown = &padded;
    }}
    shown.len() + {k}
}}
"""
        fixed = f"""
fn {fn}(name: &str, width: usize) -> usize {{
    let padded = format!("{{:*^width$}}", name);
    let shown: &str = &padded;
    shown.len() + {k}
}}
"""
        width = rng.randint(1, 12)
        call, expect = f"{fn}({q(w)}, {width})", str(max(len(w), width) + k)
    else:
        fn = f"{noun}_codes"
        words = rng.sample(WORDS, rng.randint(1, 4))
        n = rng.randint(1, 3)
        items = f"""
fn {fn}(names: &[&str]) -> Vec<String> {{
    let mut codes: Vec<&str> = Vec::new();
    for n in names {{
        let code = n.to_uppercase();
        codes.push(&code[..{n}]);
    }}
    codes.iter().map(|c| c.to_string()).collect()
}}
"""
        fixed = f"""
fn {fn}(names: &[&str]) -> Vec<String> {{
    let mut codes: Vec<String> = Vec::new();
    for n in names {{
        let code = n.to_uppercase();
        codes.push(code[..{n}].to_string());
    }}
    codes
}}
"""
        call = f"{fn}(&{rlist([q(w) for w in words])})"
        expect = "vec!" + rlist([q(w.upper()[:n]) for w in words])
    tests = f"""
#[test]
fn {fn}_value() {{
    assert_eq!({call}, {expect});
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("outlived_scope", items, fixed, tests, ("E0597",), demo, demo)


def returns_local(rng: random.Random) -> Piece:
    """A function returning a reference to a String or Vec it created (E0515); fix: return it owned."""
    kind = rng.randrange(3)
    if kind == 0:
        fn = rng.choice(["snake_case_of", "slugify", "dash_words"])
        sep = rng.choice(["_", "-"])
        words = rng.sample(WORDS, rng.randint(1, 3))
        items = f"""
fn {fn}(s: &str) -> &str {{
    let out = s.trim().to_lowercase().replace(' ', "{sep}");
    &out
}}
"""
        fixed = f"""
fn {fn}(s: &str) -> String {{
    s.trim().to_lowercase().replace(' ', "{sep}")
}}
"""
        arg = " " + " ".join(w.capitalize() for w in words) + " "
        call, expect = f"{fn}({q(arg)})", q(sep.join(words))
    elif kind == 1:
        sname = rng.choice(STRUCTS)
        fn = "describe"
        name, n = rng.choice(WORDS), rng.randint(0, 99)
        items = f"""
struct {sname} {{
    name: String,
    n: u32,
}}

impl {sname} {{
    fn {fn}(&self) -> &str {{
        &format!("{{}} x{{}}", self.name, self.n)
    }}
}}
"""
        fixed = items.replace(
            f"fn {fn}(&self) -> &str {{\n        &format!", f"fn {fn}(&self) -> String {{\n        format!"
        )
        call, expect = f"{sname} {{ name: {q(name)}.to_string(), n: {n} }}.{fn}()", q(f"{name} x{n}")
        fn = f"{sname.lower()}_{fn}"
    else:
        fn = rng.choice(["sorted_unique", "dedup_sorted", "distinct_sorted"])
        vals = [rng.randint(0, 9) for _ in range(rng.randint(1, 6))]
        items = f"""
fn {fn}(v: &[u8]) -> &[u8] {{
    let mut out = v.to_vec();
    out.sort();
    out.dedup();
    &out[..]
}}
"""
        fixed = items.replace(f"fn {fn}(v: &[u8]) -> &[u8]", f"fn {fn}(v: &[u8]) -> Vec<u8>").replace(
            "&out[..]", "out"
        )
        call, expect = f"{fn}(&{rlist(vals)})", "vec!" + rlist(sorted(set(vals)))
    tests = f"""
#[test]
fn {fn}_owned() {{
    assert_eq!({call}, {expect});
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("returns_local", items, fixed, tests, ("E0515",), demo, demo)


def dropped_temporary(rng: random.Random) -> Piece:
    """A borrow of a temporary String kept past the end of its statement (E0716); fix: bind it."""
    noun = rng.choice(NOUNS)
    words = rng.sample(WORDS, rng.randint(2, 5))
    if all(len(w) <= 3 for w in words):
        words.append("meadow")
    sep = rng.choice([",", ";", "|"])
    helper = f"fn load_{noun}s() -> String"
    if rng.random() < 0.5:
        fn = f"{noun}_fields"
        line_b = f"let parts: Vec<&str> = load_{noun}s().split('{sep}').collect();"
        line_f = f"let raw = load_{noun}s();\n    let parts: Vec<&str> = raw.split('{sep}').collect();"
        use, ret = "parts.iter().filter(|p| p.len() > 3).count()", "usize"
        expect = str(sum(1 for w in words if len(w) > 3))
    else:
        fn = f"{noun}_head"
        line_b = f"let text = load_{noun}s().to_uppercase().as_str();"
        line_f = f"let upper = load_{noun}s().to_uppercase();\n    let text = upper.as_str();"
        use, ret = f"text.split('{sep}').next().unwrap_or(\"\").to_string()", "String"
        expect = q(words[0].upper())
    items = f"""
{helper} {{
    String::from("{sep.join(words)}")
}}

fn {fn}() -> {ret} {{
    {line_b}
    {use}
}}
"""
    fixed = items.replace(line_b, line_f)
    tests = f"""
#[test]
fn {fn}_value() {{
    assert_eq!({fn}(), {expect});
}}
"""
    demo = f'println!("{{:?}}", {fn}());'
    return Piece("dropped_temporary", items, fixed, tests, ("E0716",), demo, demo)


def escaping_closure(rng: random.Random) -> Piece:
    """A returned closure that borrows its captured argument (E0373); fix: ``move``."""
    fn = rng.choice(["scaler", "offsetter", "clamp_to", "tax_at"])
    ops: list[tuple[str, Callable[[int, int], int]]] = [
        ("x * k", lambda x, k: x * k),
        ("x + k", lambda x, k: x + k),
        ("x.min(k)", min),
        ("x - x / k", lambda x, k: x - x // k),
    ]
    op, py = rng.choice(ops)
    k = rng.randint(2, 9)
    xs = [rng.randint(0, 40) for _ in range(3)]
    items = f"""
fn {fn}(k: i64) -> impl Fn(i64) -> i64 {{
    |x| {op}
}}
"""
    fixed = items.replace(f"    |x| {op}", f"    move |x| {op}")
    results = [py(x, k) for x in xs]
    tests = f"""
#[test]
fn {fn}_applies() {{
    let f = {fn}({k});
    let got: Vec<i64> = {rlist(xs)}.iter().map(|&x| f(x)).collect();
    assert_eq!(got, vec!{rlist(results)});
}}
"""
    demo = f'println!("{{}}", {fn}({k})({xs[0]}));'
    return Piece("escaping_closure", items, fixed, tests, ("E0373",), demo, demo)


SHAPES: list[Callable[[random.Random], Piece]] = [
    ambiguous_output,
    struct_without_lifetime,
    outlived_scope,
    returns_local,
    dropped_temporary,
]


def generate(rng: random.Random) -> Example:
    """One program with one lifetime error (E0373 about one draw in ten); a quarter carry a second one."""
    makers = [*SHAPES, escaping_closure] if rng.random() < 0.1 else SHAPES
    return assemble(FAMILY, draw_pieces(rng, makers, 2 if rng.random() < 0.25 else 1), rng)
