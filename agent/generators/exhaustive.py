"""Non-exhaustive patterns: a match that misses a case (E0004) or a refutable `let` (E0005).

Shapes: an enum match missing one variant, integer bands that stop short of the type's range, an
Option/Result match missing an arm, a truth table over bools missing one row, a slice match without
the long case, and a refutable `let` that needs `let ... else`. A draw is one or two shapes in one program.
"""

from __future__ import annotations

import random

from agent.generators import Example
from agent.generators._common import Part, one_or_two, parts_example, publish, with_main

FAMILY = "exhaustive"


ENUMS = [
    ("Suit", ["Hearts", "Spades", "Clubs", "Diamonds"]),
    ("Signal", ["Red", "Amber", "Green", "Flashing"]),
    ("Level", ["Trace", "Debug", "Info", "Warn", "Error"]),
    ("Coin", ["Penny", "Nickel", "Dime", "Quarter", "Dollar"]),
    ("Fuel", ["Petrol", "Diesel", "Electric", "Hybrid"]),
    ("Tier", ["Free", "Basic", "Pro", "Team", "Enterprise"]),
    ("Piece", ["Pawn", "Knight", "Bishop", "Rook", "Queen"]),
    ("Channel", ["Email", "Sms", "Push", "Webhook"]),
]
ENUM_FNS = ["weight", "cost", "rank", "priority", "points", "code_of"]


def _enum_match(rng: random.Random) -> Part:
    name, pool = rng.choice(ENUMS)
    variants = rng.sample(pool, rng.randint(3, len(pool)))
    payload = {v: rng.random() < 0.3 for v in variants}
    values = rng.sample(range(1, 60), len(variants))
    fn = rng.choice(ENUM_FNS)
    missing = rng.randrange(len(variants))
    decl = ",\n".join(f"    {v}(u32)" if payload[v] else f"    {v}" for v in variants)

    def arm(i: int, v: str) -> str:
        return (
            f"        {name}::{v}(n) => n + {values[i]},"
            if payload[v]
            else f"        {name}::{v} => {values[i]},"
        )

    arms = [arm(i, v) for i, v in enumerate(variants)]
    head = (
        f"#[derive(Debug, Clone, Copy, PartialEq)]\nenum {name} {{\n{decl},\n}}\n\n"
        f"fn {fn}(x: {name}) -> u32 {{\n    match x {{\n"
    )
    tail = "    }\n}\n"
    broken = head + "\n".join(a for i, a in enumerate(arms) if i != missing) + "\n" + tail
    fixed = head + "\n".join(arms) + "\n" + tail

    def value(v: str) -> str:
        return f"{name}::{v}(5)" if payload[v] else f"{name}::{v}"

    checks = "\n".join(
        f"    assert_eq!({fn}({value(v)}), {values[i] + (5 if payload[v] else 0)});"
        for i, v in enumerate(variants)
    )
    tests = f"#[test]\nfn {fn}_covers_every_{name.lower()}() {{\n{checks}\n}}\n"
    demo = f'    println!("{{}}", {fn}({value(variants[missing])}));'
    return Part("enum_match", broken, fixed, tests, demo, ("E0004",))


BAND_LABELS = ["low", "mid", "high", "peak", "calm", "busy", "quiet", "loud"]
BAND_FNS = ["band", "bucket", "zone", "tier_for", "grade"]


def _int_bands(rng: random.Random) -> Part:
    ty = rng.choice(["u8", "u16", "u32", "i16", "i32", "i64"])
    signed = ty.startswith("i")
    k = rng.randint(3, 4)
    cuts = sorted(rng.sample(range(5, 120), k - 1))
    labels = rng.sample(BAND_LABELS, k)
    fn = rng.choice(BAND_FNS)
    arg = rng.choice(["value", "reading", "level", "n"])
    limit = cuts[-1] + rng.randint(10, 100)
    lows = [0, *cuts]
    arms_b, arms_f = [], []
    for i, lab in enumerate(labels):
        lo = lows[i]
        if i < k - 1:
            hi = f"{cuts[i] - 1}"
            rng_b = f"{lo}..={hi}"
            rng_f = f"..={hi}" if (signed and i == 0) else rng_b
        else:
            rng_b = f"{lo}..={limit}" if not signed else f"{lo}.."
            rng_f = f"{lo}.."
        arms_b.append(f'        {rng_b} => "{lab}",')
        arms_f.append(f'        {rng_f} => "{lab}",')
    sig = f"fn {fn}({arg}: {ty}) -> &'static str {{\n    match {arg} {{\n"
    broken = sig + "\n".join(arms_b) + "\n    }\n}\n"
    fixed = sig + "\n".join(arms_f) + "\n    }\n}\n"
    probes = [(lows[i] + (cuts[i] - 1 if i < k - 1 else lows[i] + 3)) // 2 for i in range(k)]
    checks = [f'    assert_eq!({fn}({p}), "{labels[i]}");' for i, p in enumerate(probes)]
    checks.append(f'    assert_eq!({fn}({limit + 7}), "{labels[-1]}");')
    if signed:
        checks.append(f'    assert_eq!({fn}(-{rng.randint(1, 50)}), "{labels[0]}");')
    tests = f"#[test]\nfn {fn}_whole_range() {{\n" + "\n".join(checks) + "\n}\n"
    demo = f'    println!("{{}}", {fn}({probes[0]}));'
    return Part("int_bands", broken, fixed, tests, demo, ("E0004",))


def _option_arm(rng: random.Random) -> Part:
    fn = rng.choice(["describe", "summary", "render", "status_line"])
    noun = rng.choice(["item", "ticket", "parcel", "order", "seat"])
    special = rng.randint(0, 3)
    # (tag, arm text, argument in a test, expected output)
    if rng.random() < 0.5:
        ty = "Option<u32>"
        arms = [
            ("gone", f'        None => String::from("no {noun}"),', "None", f"no {noun}"),
            (
                "special",
                f'        Some({special}) => String::from("{noun} #{special} held"),',
                f"Some({special})",
                f"{noun} #{special} held",
            ),
            ("value", f'        Some(n) => format!("{noun} {{n}}"),', "Some(42)", f"{noun} 42"),
        ]
    else:
        ty = "Result<u32, String>"
        arms = [
            (
                "gone",
                f'        Err(e) => format!("{noun} failed: {{e}}"),',
                'Err("io".to_string())',
                f"{noun} failed: io",
            ),
            (
                "special",
                f'        Ok({special}) => String::from("{noun} empty"),',
                f"Ok({special})",
                f"{noun} empty",
            ),
            ("value", f'        Ok(n) => format!("{noun} x{{n}}"),', "Ok(42)", f"{noun} x42"),
        ]
    if rng.random() < 0.4:
        arms = [a for a in arms if a[0] != "special"]
    if rng.random() < 0.5:
        arms = [a for a in arms if a[0] != "gone"] + [a for a in arms if a[0] == "gone"]
    drop = rng.choice(["gone", "value"])
    sig = f"fn {fn}(x: {ty}) -> String {{\n    match x {{\n"
    broken = sig + "\n".join(a[1] for a in arms if a[0] != drop) + "\n    }\n}\n"
    fixed = sig + "\n".join(a[1] for a in arms) + "\n    }\n}\n"
    checks = "\n".join(f'    assert_eq!({fn}({a[2]}), "{a[3]}");' for a in arms)
    tests = f"#[test]\nfn {fn}_all_cases() {{\n{checks}\n}}\n"
    demo = f'    println!("{{}}", {fn}({next(a[2] for a in arms if a[0] == drop)}));'
    return Part("option_arm", broken, fixed, tests, demo, ("E0004",))


FLAG_SETS = [
    ["is_admin", "is_owner", "is_locked"],
    ["raining", "windy", "weekend"],
    ["paid", "shipped", "returned"],
    ["online", "busy", "muted"],
    ["has_key", "has_card"],
    ["cached", "stale"],
]


def _truth_table(rng: random.Random) -> Part:
    flags = rng.choice(FLAG_SETS)
    fn = rng.choice(["decide", "code_for", "action", "state_code"])
    n = len(flags)
    rows = [tuple(bool(i >> (n - 1 - b) & 1) for b in range(n)) for i in range(2**n)]
    rng.shuffle(rows)
    outs = [rng.randint(0, 9) for _ in rows]
    missing = rng.randrange(len(rows))

    def pat(row: tuple[bool, ...]) -> str:
        return "(" + ", ".join("true" if v else "false" for v in row) + ")"

    arms = [f"        {pat(r)} => {o}," for r, o in zip(rows, outs, strict=True)]
    params = ", ".join(f"{f}: bool" for f in flags)
    sig = f"fn {fn}({params}) -> u8 {{\n    match ({', '.join(flags)}) {{\n"
    broken = sig + "\n".join(a for i, a in enumerate(arms) if i != missing) + "\n    }\n}\n"
    fixed = sig + "\n".join(arms) + "\n    }\n}\n"
    checks = "\n".join(
        f"    assert_eq!({fn}({', '.join('true' if v else 'false' for v in r)}), {o});"
        for r, o in zip(rows, outs, strict=True)
    )
    tests = f"#[test]\nfn {fn}_truth_table() {{\n{checks}\n}}\n"
    demo = f'    println!("{{}}", {fn}({", ".join("true" if v else "false" for v in rows[missing])}));'
    return Part("truth_table", broken, fixed, tests, demo, ("E0004",))


def _slice_match(rng: random.Random) -> Part:
    fn = rng.choice(["headline", "join_names", "credits", "route_label", "caption"])
    empty = rng.choice(["nobody", "(none)", "-", "empty"])
    sep = rng.choice(["and", "&", "with", "+"])
    more = rng.choice(["to", "...", "through", "->"])
    arms = [
        ("empty", f'        [] => String::from("{empty}"),'),
        ("one", "        [one] => one.to_string(),"),
        ("two", f'        [a, b] => format!("{{a}} {sep} {{b}}"),'),
        ("many", f'        [first, .., last] => format!("{{first}} {more} {{last}}"),'),
    ]
    if rng.random() < 0.5:
        arms = [arms[1], arms[2], arms[3], arms[0]]
    drop = rng.choice(["empty", "many", "one"])
    sig = f"fn {fn}(names: &[&str]) -> String {{\n    match names {{\n"
    broken = sig + "\n".join(a for t, a in arms if t != drop) + "\n    }\n}\n"
    fixed = sig + "\n".join(a for _, a in arms) + "\n    }\n}\n"
    w = rng.sample(["ana", "bo", "cy", "dee", "eli", "fay", "gus"], 4)
    tests = (
        f"#[test]\nfn {fn}_any_length() {{\n"
        f'    assert_eq!({fn}(&[]), "{empty}");\n    assert_eq!({fn}(&["{w[0]}"]), "{w[0]}");\n'
        f'    assert_eq!({fn}(&["{w[0]}", "{w[1]}"]), "{w[0]} {sep} {w[1]}");\n'
        f'    assert_eq!({fn}(&["{w[0]}", "{w[1]}", "{w[2]}", "{w[3]}"]), "{w[0]} {more} {w[3]}");\n}}\n'
    )
    demo = f'    println!("{{}}", {fn}(&["{w[1]}", "{w[2]}", "{w[3]}"]));'
    return Part("slice_match", broken, fixed, tests, demo, ("E0004",))


def _refutable_let(rng: random.Random) -> Part:
    kind = rng.choice(["map", "parse", "slice", "chars"])
    fn = rng.choice(["lookup_total", "price_of", "checked", "extract", "measure"])
    default = rng.randint(0, 3)
    if kind == "map":
        key_t = rng.choice(["sku", "user", "city", "room"])
        mult = rng.randint(2, 9)
        pre = "use std::collections::HashMap;\n\n"
        sig = f"fn {fn}(table: &HashMap<String, u32>, {key_t}: &str) -> u32 {{\n"
        line = f"    let Some(v) = table.get({key_t})"
        body = f"    v * {mult}\n}}\n"
        tests = (
            f"#[test]\nfn {fn}_present_and_absent() {{\n"
            f'    let t = HashMap::from([("a".to_string(), 4), ("b".to_string(), 0)]);\n'
            f'    assert_eq!({fn}(&t, "a"), {4 * mult});\n    assert_eq!({fn}(&t, "b"), 0);\n'
            f'    assert_eq!({fn}(&t, "zz"), {default});\n}}\n'
        )
        demo = f'    println!("{{}}", {fn}(&HashMap::new(), "x"));'
    elif kind == "parse":
        ty = rng.choice(["u8", "u16", "i32", "u64"])
        add = rng.randint(1, 9)
        pre = ""
        sig = f"fn {fn}(text: &str) -> {ty} {{\n"
        line = f"    let Ok(n) = text.trim().parse::<{ty}>()"
        body = f"    n.saturating_add({add})\n}}\n"
        tests = (
            f"#[test]\nfn {fn}_parses_or_defaults() {{\n"
            f'    assert_eq!({fn}(" 12 "), {12 + add});\n    assert_eq!({fn}("x1"), {default});\n'
            f'    assert_eq!({fn}(""), {default});\n}}\n'
        )
        demo = f'    println!("{{}}", {fn}("7"));'
    elif kind == "slice":
        pre = ""
        sig = f"fn {fn}(xs: &[u32]) -> u32 {{\n"
        line = "    let [head, .., tail] = xs"
        body = "    head.max(tail) - head.min(tail)\n}\n"
        tests = (
            f"#[test]\nfn {fn}_head_tail() {{\n    assert_eq!({fn}(&[3, 9, 10]), 7);\n"
            f"    assert_eq!({fn}(&[10, 1]), 9);\n    assert_eq!({fn}(&[]), {default});\n"
            f"    assert_eq!({fn}(&[5]), {default});\n}}\n"
        )
        demo = f'    println!("{{}}", {fn}(&[1, 4]));'
    else:
        pre = ""
        sig = f"fn {fn}(word: &str) -> u32 {{\n"
        line = "    let [first, second] = word.as_bytes()"
        body = "    u32::from(*first) * 256 + u32::from(*second)\n}\n"
        tests = (
            f'#[test]\nfn {fn}_two_letter_codes() {{\n    assert_eq!({fn}("AB"), 65 * 256 + 66);\n'
            f'    assert_eq!({fn}("ABC"), {default});\n    assert_eq!({fn}(""), {default});\n}}\n'
        )
        demo = f'    println!("{{}}", {fn}("ok"));'
    broken = pre + sig + line + ";\n" + body
    fixed = pre + sig + line + f" else {{\n        return {default};\n    }};\n" + body
    return Part("refutable_let", broken, fixed, tests, demo, ("E0005",))


SHAPES = [_enum_match, _int_bands, _option_arm, _truth_table, _slice_match, _refutable_let]


def _assemble(rng: random.Random, parts: list[Part]) -> Example:
    mode = rng.choice(["bin", "bin", "lib"])
    pre = [p for p in parts if p.broken.startswith("use ")]
    uses = sorted({p.broken.split("\n", 1)[0] for p in pre})
    strip = [p.broken.split("\n\n", 1)[1] if p in pre else p.broken for p in parts]
    strip_f = [p.fixed.split("\n\n", 1)[1] if p in pre else p.fixed for p in parts]
    head = ("\n".join(uses) + "\n\n") if uses else ""
    vis = "pub " if mode == "lib" else ""

    def body(texts: list[str]) -> str:
        out = head + "\n".join(texts)
        if vis:
            out = publish(out, ("fn ", "enum "))
        return with_main(out, parts) if mode == "bin" else out

    return parts_example(FAMILY, parts, mode, body(strip), body(strip_f))


def generate(rng: random.Random) -> Example:
    return _assemble(rng, one_or_two(rng, SHAPES))
