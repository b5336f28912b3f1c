"""Generator for the ``type_mismatch`` family: E0308 in many shapes, E0277 for mixed arithmetic and indexing.

Each shape builds one small "kernel" (an item or two plus lines for ``main`` and a test) with the mistake
injected; a draw holds one kernel or, as ``multi``, two kernels of different shapes in one program, so rustc
reports both. Shapes: &str where String is expected (``str_string``), a missing ``Some`` (``option_wrap``),
a narrow integer passed where a wide one is expected (``int_width``), integer-by-float arithmetic
(``mixed_arith``), a tail expression swallowed by a semicolon (``semicolon``), a reference where a value is
expected or the reverse (``ref_value``) and a slice indexed by ``i32`` (``index_i32``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from agent.generators import Example
from agent.generators._common import Kernel, kernels_example

FAMILY = "type_mismatch"

WORDS = [
    "amber",
    "basalt",
    "cobalt",
    "delta",
    "ember",
    "flint",
    "garnet",
    "harbor",
    "indigo",
    "jasper",
    "krypton",
    "lagoon",
    "meadow",
    "nickel",
    "onyx",
    "prairie",
    "quartz",
    "raven",
    "summit",
    "tundra",
]


def vals(rng: random.Random, n: int, lo: int = 0, hi: int = 99) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def rs_list(xs: Sequence[object]) -> str:
    return "[" + ", ".join(str(x) for x in xs) + "]"


def str_string(rng: random.Random) -> Kernel:
    fn = rng.choice(["badge_for", "grade_of", "tier_name", "status_text", "level_label"])
    p = rng.choice(["score", "points", "value", "n"])
    ty = rng.choice(["u32", "i32", "u64", "i64", "u16"])
    k = rng.randint(10, 90)
    low, prefix = rng.sample(WORDS, 2)
    conv = rng.choice(['"{w}".to_string()', 'String::from("{w}")', '"{w}".to_owned()', '"{w}".into()'])
    style = rng.randrange(3)

    def body(lit: str) -> str:
        if style == 0:
            return (
                f"fn {fn}({p}: {ty}) -> String {{\n    if {p} < {k} {{\n        return {lit};\n    }}\n"
                f'    format!("{prefix}-{{}}", {p})\n}}'
            )
        if style == 1:
            return (
                f"fn {fn}({p}: {ty}) -> String {{\n    match {p} {{\n        0 => {lit},\n"
                f'        _ => format!("{prefix}-{{}}", {p}),\n    }}\n}}'
            )
        return (
            f"fn {fn}({p}: {ty}) -> String {{\n    let text: String = if {p} < {k} {{\n        {lit}\n"
            f'    }} else {{\n        format!("{prefix}-{{}}", {p})\n    }};\n    text\n}}'
        )

    threshold = k if style != 1 else 1
    xs = [*vals(rng, 3, 0, 120), 0]
    expect = [low if x < threshold else f"{prefix}-{x}" for x in xs]
    tests = (
        f"#[test]\nfn check_{fn}() {{\n"
        + "".join(f'    assert_eq!({fn}({x}), "{e}");\n' for x, e in zip(xs, expect, strict=True))
        + "}\n"
    )
    return Kernel(
        "str_string",
        {"E0308"},
        body(f'"{low}"'),
        body(conv.format(w=low)),
        [f'println!("{{}}", {fn}({xs[0]}));'],
        tests,
    )


def option_wrap(rng: random.Random) -> Kernel:
    ty = rng.choice(["i32", "i64", "u32", "u8", "usize"])
    if rng.random() < 0.5:
        fn = rng.choice(["first_over", "locate_above", "find_exceeding"])
        op = rng.choice([">", ">=", "<"])
        label = {">": "above", ">=": "at_least", "<": "below"}[op]
        k = rng.randint(20, 80)

        def body(ret: str) -> str:
            return (
                f"fn {fn}(xs: &[{ty}], limit: {ty}) -> Option<usize> {{\n"
                f"    for (i, &x) in xs.iter().enumerate() {{\n        if x {op} limit {{\n"
                f"            return {ret};\n        }}\n    }}\n    None\n}}"
            )

        xs = vals(rng, rng.randint(3, 6))

        def find(limit: int) -> str:
            for i, x in enumerate(xs):
                if (op == ">" and x > limit) or (op == ">=" and x >= limit) or (op == "<" and x < limit):
                    return f"Some({i})"
            return "None"

        probes = [k, 100 if op != "<" else 0]
        tests = (
            f"#[test]\nfn finds_{label}() {{\n"
            + "".join(f"    assert_eq!({fn}(&{rs_list(xs)}, {q}), {find(q)});\n" for q in probes)
            + "}\n"
        )
        return Kernel(
            "option_wrap",
            {"E0308"},
            body("i"),
            body("Some(i)"),
            [f'println!("{{:?}}", {fn}(&{rs_list(xs)}, {k}));'],
            tests,
        )
    fn = rng.choice(["capped", "limit_to", "bounded"])
    caller = rng.choice(["apply_cap", "clip_all", "cap_each"])
    cap = rng.randint(10, 60)
    signed = ty in ("i32", "i64")
    xs = vals(rng, rng.randint(2, 5), -30 if signed else 0, 90)
    items = (
        f"fn {fn}(v: {ty}, cap: Option<{ty}>) -> {ty} {{\n    match cap {{\n        Some(c) => v.min(c),\n"
        f"        None => v,\n    }}\n}}"
    )

    def caller_fn(arg: str) -> str:
        return (
            f"fn {caller}(xs: &[{ty}]) -> Vec<{ty}> {{\n    xs.iter().map(|&x| {fn}(x, {arg})).collect()\n}}"
        )

    tests = (
        f"#[test]\nfn check_{caller}() {{\n"
        f"    assert_eq!({caller}(&{rs_list(xs)}), vec!{rs_list([min(x, cap) for x in xs])});\n"
        f"    assert_eq!({fn}(7, None), 7);\n}}\n"
    )
    return Kernel(
        "option_wrap",
        {"E0308"},
        items + "\n\n" + caller_fn(str(cap)),
        items + "\n\n" + caller_fn(f"Some({cap})"),
        [f'println!("{{:?}}", {caller}(&{rs_list(xs)}));'],
        tests,
    )


WIDTHS = [
    ("u8", "u32"),
    ("u16", "u32"),
    ("u32", "u64"),
    ("i32", "i64"),
    ("u8", "u64"),
    ("i16", "i64"),
    ("u16", "usize"),
    ("u8", "i32"),
    ("u16", "i64"),
]


def int_width(rng: random.Random) -> Kernel:
    narrow, wide = rng.choice(WIDTHS)
    scale = rng.choice(["scaled", "weighted", "times"])
    total = rng.choice(["grand_total", "weighted_sum", "accumulate"])
    k = rng.randint(2, 1000)
    conv = rng.choice([f"{wide}::from(it)", "it.into()"])
    xs = vals(rng, rng.randint(2, 5), 0, 200)

    def body(arg: str) -> str:
        return (
            f"fn {scale}(value: {wide}, factor: {wide}) -> {wide} {{\n    value * factor\n}}\n\n"
            f"fn {total}(items: &[{narrow}]) -> {wide} {{\n    let mut acc: {wide} = 0;\n"
            f"    for &it in items {{\n        acc += {scale}({arg}, {k});\n    }}\n    acc\n}}"
        )

    tests = (
        f"#[test]\nfn check_{total}() {{\n    assert_eq!({total}(&{rs_list(xs)}), {sum(xs) * k});\n"
        f"    assert_eq!({total}(&[]), 0);\n}}\n"
    )
    return Kernel(
        "int_width", {"E0308"}, body("it"), body(conv), [f'println!("{{}}", {total}(&{rs_list(xs)}));'], tests
    )


def mixed_arith(rng: random.Random) -> Kernel:
    ty = rng.choice(["u32", "i32", "u16", "u8"])
    kind = rng.randrange(3)
    conv = rng.choice(["f64::from({v})", "{v} as f64"])
    if kind == 0:
        fn = rng.choice(["with_tax", "marked_up", "discounted"])
        rate = rng.choice([0.25, 0.5, 0.125, 1.5])
        sign = "+" if fn != "discounted" else "-"

        def body(v: str) -> str:
            return f"fn {fn}(price: {ty}, rate: f64) -> f64 {{\n    {v} * (1.0 {sign} rate)\n}}"

        p = rng.randint(1, 200)
        expect = p * (1.0 + rate) if sign == "+" else p * (1.0 - rate)
        tests = (
            f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}({p}, {rate}), {expect!r});\n"
            f"    assert_eq!({fn}(0, {rate}), 0.0);\n}}\n"
        )
        return Kernel(
            "mixed_arith",
            {"E0277"},
            body("price"),
            body(conv.format(v="price")),
            [f'println!("{{}}", {fn}({p}, {rate}));'],
            tests,
        )
    if kind == 1:
        fn = rng.choice(["share_of", "percent_of", "fraction_done"])

        def body(v: str) -> str:
            return (
                f"fn {fn}(part: {ty}, whole: {ty}) -> f64 {{\n    if whole == 0 {{\n        return 0.0;\n"
                f"    }}\n    {v} * 100.0 / f64::from(whole)\n}}"
            )

        whole = rng.randint(1, 100)
        part = rng.randint(0, whole)
        tests = (
            f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}({part}, {whole}), {part * 100.0 / whole!r});\n"
            f"    assert_eq!({fn}(3, 0), 0.0);\n}}\n"
        )
        return Kernel(
            "mixed_arith",
            {"E0277"},
            body("part"),
            body(conv.format(v="part")),
            [f'println!("{{:.1}}", {fn}({part}, {whole}));'],
            tests,
        )
    fn = rng.choice(["mean_gap", "spread_per_item", "avg_step"])

    def render(v: str) -> str:
        return (
            f"fn {fn}(xs: &[{ty}]) -> f64 {{\n    let (Some(lo), Some(hi)) = (xs.iter().min(), xs.iter().max()) "
            f"else {{\n        return 0.0;\n    }};\n    let span = hi - lo;\n"
            f"    {v} / xs.len() as f64\n}}"
        )

    xs = vals(rng, rng.randint(2, 5), 0, 250)
    tests = (
        f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}(&{rs_list(xs)}), {(max(xs) - min(xs)) / len(xs)!r});\n"
        f"    assert_eq!({fn}(&[]), 0.0);\n}}\n"
    )
    return Kernel(
        "mixed_arith",
        {"E0277"},
        render("span"),
        render(conv.format(v="span")),
        [f'println!("{{}}", {fn}(&{rs_list(xs)}));'],
        tests,
    )


def semicolon(rng: random.Random) -> Kernel:
    ty = rng.choice(["i64", "u32", "i32", "u64"])
    kind = rng.randrange(3)
    xs = vals(rng, rng.randint(2, 6), 0, 500)
    if kind == 0:
        fn = rng.choice(["count_even", "evens", "num_even"])

        def body(end: str) -> str:
            return (
                f"fn {fn}(xs: &[{ty}]) -> usize {{\n    let mut n = 0;\n    for x in xs {{\n"
                f"        if x % 2 == 0 {{\n            n += 1;\n        }}\n    }}\n    n{end}\n}}"
            )

        expect = sum(1 for x in xs if x % 2 == 0)
    elif kind == 1:
        fn = rng.choice(["sum_of_squares", "squares_total", "energy"])

        def body(end: str) -> str:
            return f"fn {fn}(xs: &[{ty}]) -> {ty} {{\n    xs.iter().map(|x| x * x).sum::<{ty}>(){end}\n}}"

        expect = sum(x * x for x in xs)
    else:
        fn = rng.choice(["larger_end", "max_edge", "bigger_side"])

        def body(end: str) -> str:
            return (
                f"fn {fn}(xs: &[{ty}]) -> {ty} {{\n    let first = xs[0];\n    let last = xs[xs.len() - 1];\n"
                f"    if first > last {{ first }} else {{ last }}{end}\n}}"
            )

        expect = max(xs[0], xs[-1])
    tests = f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}(&{rs_list(xs)}), {expect});\n}}\n"
    return Kernel(
        "semicolon", {"E0308"}, body(";"), body(""), [f'println!("{{}}", {fn}(&{rs_list(xs)}));'], tests
    )


def ref_value(rng: random.Random) -> Kernel:
    kind = rng.randrange(3)
    if kind == 0:
        fn = rng.choice(["vowel_count", "consonants", "upper_count"])
        pred = {
            "vowel_count": '"aeiou".contains(c)',
            "consonants": 'c.is_alphabetic() && !"aeiou".contains(c)',
            "upper_count": "c.is_uppercase()",
        }[fn]
        caller = rng.choice(["score_joined", "joined_score", "measure_both"])
        a, b = rng.sample(WORDS, 2)
        a = a.capitalize() if rng.random() < 0.5 else a

        def body(arg: str) -> str:
            return (
                f"fn {fn}(s: &str) -> usize {{\n    s.chars().filter(|&c| {pred}).count()\n}}\n\n"
                f'fn {caller}(a: &str, b: &str) -> usize {{\n    let joined = format!("{{}}{{}}", a, b);\n'
                f"    {fn}({arg})\n}}"
            )

        def count(s: str) -> int:
            if fn == "vowel_count":
                return sum(c in "aeiou" for c in s)
            if fn == "consonants":
                return sum(c.isalpha() and c not in "aeiou" for c in s)
            return sum(c.isupper() for c in s)

        tests = (
            f'#[test]\nfn check_{caller}() {{\n    assert_eq!({caller}("{a}", "{b}"), {count(a + b)});\n}}\n'
        )
        return Kernel(
            "ref_value",
            {"E0308"},
            body("joined"),
            body("&joined"),
            [f'println!("{{}}", {caller}("{a}", "{b}"));'],
            tests,
        )
    ty = rng.choice(["i64", "i32", "u64"])
    xs = vals(rng, rng.randint(2, 5), 0, 40)
    if kind == 1:
        fn = rng.choice(["cube", "triple", "double_plus_one"])
        f = {
            "cube": ("n * n * n", lambda n: n**3),
            "triple": ("n * 3", lambda n: n * 3),
            "double_plus_one": ("2 * n + 1", lambda n: 2 * n + 1),
        }[fn]
        total = rng.choice(["total_mapped", "mapped_sum", "sum_over"])

        def body(arg: str) -> str:
            return (
                f"fn {fn}(n: {ty}) -> {ty} {{\n    {f[0]}\n}}\n\n"
                f"fn {total}(xs: &Vec<{ty}>) -> {ty} {{\n    let mut acc = 0;\n"
                f"    for n in xs {{\n        acc += {fn}({arg});\n    }}\n    acc\n}}"
            )

        tests = f"#[test]\nfn check_{total}() {{\n    assert_eq!({total}(&vec!{rs_list(xs)}), {sum(f[1](x) for x in xs)});\n}}\n"
        return Kernel(
            "ref_value",
            {"E0308"},
            body("n"),
            body("*n"),
            [f'println!("{{}}", {total}(&vec!{rs_list(xs)}));'],
            tests,
        )
    fn = rng.choice(["peak", "highest", "top_value"])
    fix = rng.choice(["*xs.iter().max().unwrap_or(&0)", "xs.iter().copied().max().unwrap_or(0)"])

    def render(expr: str) -> str:
        return f"fn {fn}(xs: &[{ty}]) -> {ty} {{\n    let best: {ty} = {expr};\n    best\n}}"

    tests = f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}(&{rs_list(xs)}), {max(xs)});\n    assert_eq!({fn}(&[]), 0);\n}}\n"
    return Kernel(
        "ref_value",
        {"E0308"},
        render("xs.iter().max().unwrap_or(&0)"),
        render(fix),
        [f'println!("{{}}", {fn}(&{rs_list(xs)}));'],
        tests,
    )


def index_i32(rng: random.Random) -> Kernel:
    fn = rng.choice(["walk", "hop_through", "sample_ring", "stride"])
    ty = rng.choice(["u8", "char", "i32", "u32"])
    n = rng.randint(3, 7)
    items: list[object]
    if ty == "char":
        items = list(rng.sample("abcdefghijklmnop", n))
        lit = "[" + ", ".join(f"'{c}'" for c in items) + "]"
    else:
        items = list(vals(rng, n, 0, 99))
        lit = rs_list(items)
    start, step, count = rng.randint(0, n - 1), rng.choice([-2, -1, 1, 2, 3]), rng.randint(2, 6)
    use_get = rng.random() < 0.3

    def body(idx: str) -> str:
        read = f"*xs.get({idx}).unwrap()" if use_get else f"xs[{idx}]"
        return (
            f"fn {fn}(xs: &[{ty}], start: i32, step: i32, count: usize) -> Vec<{ty}> {{\n"
            f"    let len = xs.len() as i32;\n    let mut pos = start;\n    let mut out = Vec::new();\n"
            f"    for _ in 0..count {{\n        out.push({read});\n        pos = (pos + step).rem_euclid(len);\n"
            f"    }}\n    out\n}}"
        )

    pos, out = start, []
    for _ in range(count):
        out.append(items[pos])
        pos = (pos + step) % n
    expect = ("vec![" + ", ".join(f"'{c}'" for c in out) + "]") if ty == "char" else "vec!" + rs_list(out)
    tests = f"#[test]\nfn check_{fn}() {{\n    assert_eq!({fn}(&{lit}, {start}, {step}, {count}), {expect});\n}}\n"
    return Kernel(
        "index_i32",
        {"E0277"},
        body("pos"),
        body("pos as usize"),
        [f'println!("{{:?}}", {fn}(&{lit}, {start}, {step}, {count}));'],
        tests,
    )


SHAPES: list[Callable[[random.Random], Kernel]] = [
    str_string,
    option_wrap,
    int_width,
    mixed_arith,
    semicolon,
    ref_value,
    index_i32,
]


def generate(rng: random.Random) -> Example:
    """One draw: one kernel (or two of different shapes, ``multi``) as a bin or lib program."""
    picks = rng.sample(SHAPES, 2 if rng.random() < 0.25 else 1)
    kernels = [make(rng) for make in picks]
    mode = "lib" if rng.random() < 0.3 else "bin"

    return kernels_example(FAMILY, kernels, mode)
