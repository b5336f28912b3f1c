"""Type annotations needed: E0282 (collect, empty Option), E0283 (sum/product/into), E0284 (parse), E0790.

Shapes: an untyped `collect()` used through methods, a `parse()` whose target nothing fixes, a `sum()` or
`product()` feeding an operator, an `into()` whose target is ambiguous, a running-best `None` read in a
closure before it is assigned, and a trait's associated function called without naming the implementor.
The fix names the type the program means; the tests pin behaviour that depends on that type.
"""

from __future__ import annotations

import random

from agent.generators import Example
from agent.generators._common import Part, assemble, one_or_two

FAMILY = "annotations"


def _collect(rng: random.Random) -> Part:
    fn = rng.choice(["tokens", "fields", "unique_tags", "cells", "parts_of"])
    sep = rng.choice([",", ";", "|", " "])
    kind = rng.choice(["sorted_dedup", "count_long", "reversed"])
    owned = rng.random() < 0.5
    elem = "String" if owned else "&str"
    mapper = ".map(|s| s.trim().to_lowercase())" if owned else ".map(str::trim)"
    min_len = rng.randint(2, 4)
    if kind == "sorted_dedup":
        ret, use = "usize", "    items.sort();\n    items.dedup();\n    items.len()"
        mut = "mut "
    elif kind == "count_long":
        ret, use = "usize", f"    items.iter().filter(|s| s.len() >= {min_len}).count()"
        mut = ""
    else:
        ret, use = "String", '    items.iter().rev().map(|s| s.to_string()).collect::<Vec<_>>().join("-")'
        mut = ""
    life = "<'a>" if not owned else ""
    arg = "text: &'a str" if not owned else "text: &str"
    line = f'    let {mut}items{{ann}} = text.split("{sep}"){mapper}.filter(|s| !s.is_empty()).collect();\n'
    head = f"fn {fn}{life}({arg}) -> {ret} {{\n"
    broken = head + line.replace("{ann}", "") + use + "\n}\n"
    fixed = head + line.replace("{ann}", f": Vec<{elem}>") + use + "\n}\n"
    words = rng.sample(["ox", "elk", "yak", "emu", "gnu", "wolf", "lynx", "crow"], 4)
    sample = sep.join([words[0], words[1], words[0], "", words[2], words[3]])
    distinct = [words[0], words[1], words[2], words[3]]
    if kind == "sorted_dedup":
        expect = str(len(set(distinct)))
    elif kind == "count_long":
        seq = [words[0], words[1], words[0], words[2], words[3]]
        expect = str(sum(1 for w in seq if len(w) >= min_len))
    else:
        expect = '"' + "-".join(reversed([words[0], words[1], words[0], words[2], words[3]])) + '"'
    tests = f'#[test]\nfn {fn}_splits() {{\n    assert_eq!({fn}("{sample}"), {expect});\n'
    empty = "0" if ret == "usize" else '""'
    tests += f'    assert_eq!({fn}(""), {empty});\n}}\n'
    demo = f'    println!("{{}}", {fn}("{sample}"));'
    return Part("collect", broken, fixed, tests, demo, ("E0282",))


INT_TYPES = {
    "u8": (0, 255),
    "i8": (-128, 127),
    "u16": (0, 65535),
    "i16": (-32768, 32767),
    "u32": (0, 4294967295),
}


def _parse(rng: random.Random) -> Part:
    ty = rng.choice(list(INT_TYPES))
    lo, hi = INT_TYPES[ty]
    fn = rng.choice(["is_valid", "accepts", "in_range", "looks_ok"])
    what = rng.choice(["port", "age", "level", "offset", "count"])
    style = rng.choice(["match", "if_let"])
    threshold = rng.randint(1, 20)
    if style == "match":
        body = (
            f"    match {what}.trim().parse{{turbo}}() {{\n        Ok(v) => v >= {threshold},\n"
            "        Err(_) => false,\n    }\n"
        )
    else:
        body = f"    if let Ok(v) = {what}.trim().parse{{turbo}}() {{\n        return v >= {threshold};\n    }}\n    false\n"
    head = f"fn {fn}({what}: &str) -> bool {{\n"
    broken = head + body.replace("{turbo}", "") + "}\n"
    fixed = head + body.replace("{turbo}", f"::<{ty}>") + "}\n"
    tests = (
        f"#[test]\nfn {fn}_uses_{ty}() {{\n"
        f'    assert!({fn}("{hi}"));\n    assert!(!{fn}("{hi + 1}"));\n'
        f'    assert!(!{fn}("{threshold - 1}"));\n    assert!({fn}(" {threshold} "));\n'
        f'    assert!(!{fn}("x"));\n'
    )
    if lo < 0:
        tests += f'    assert!(!{fn}("{lo - 1}"));\n'
    tests += "}\n"
    demo = f'    println!("{{}}", {fn}("{threshold + 3}"));'
    return Part("parse", broken, fixed, tests, demo, ("E0284",))


def _fold(rng: random.Random) -> Part:
    op = rng.choice(["sum", "product"])
    ty = rng.choice(["u64", "i64", "u32", "f64"])
    fn = rng.choice(["mean_of", "scaled_total", "ratio", "per_unit"])
    field = rng.choice(["qty", "weight", "hours", "points"])
    st = rng.choice(["Line", "Entry", "Row", "Record"])
    div = rng.randint(2, 5)
    vals = [rng.randint(1, 6) for _ in range(3)]
    lit = (lambda v: f"{v}.0") if ty == "f64" else str
    total = sum(vals) if op == "sum" else vals[0] * vals[1] * vals[2]
    expect = repr(total / div) if ty == "f64" else str(total // div)
    head = f"struct {st} {{\n    {field}: {ty},\n}}\n\nfn {fn}(rows: &[{st}]) -> {ty} {{\n"
    line = f"    let acc{{ann}} = rows.iter().map(|r| r.{field}).{op}();\n    acc / {lit(div)}\n}}\n"
    broken = head + line.replace("{ann}", "")
    fixed = head + line.replace("{ann}", f": {ty}")
    rows = ", ".join(f"{st} {{ {field}: {lit(v)} }}" for v in vals)
    if ty == "f64":
        empty = "0.0" if op == "sum" else repr(1 / div)
    else:
        empty = "0" if op == "sum" else str(1 // div)
    tests = (
        f"#[test]\nfn {fn}_folds() {{\n    assert_eq!({fn}(&[{rows}]), {expect});\n"
        f"    assert_eq!({fn}(&[]), {empty});\n}}\n"
    )
    demo = f'    println!("{{}}", {fn}(&[{rows}]));'
    return Part("fold", broken, fixed, tests, demo, ("E0283",))


WIDEN = [("u8", "u32"), ("u16", "u64"), ("f32", "f64"), ("i32", "i64"), ("u8", "u16"), ("i16", "i32")]


def _into(rng: random.Random) -> Part:
    small, wide = rng.choice(WIDEN)
    fn = rng.choice(["widen_scale", "to_wide", "boosted", "expanded"])
    k = rng.randint(3, 9)
    flt = small.startswith("f")
    kl = f"{k}.0" if flt else str(k)
    off = rng.randint(1, 50)
    ol = f"{off}.0" if flt else str(off)
    body = f"    let w{{ann}} = x.into();\n    w * {kl} + {ol}\n"
    head = f"fn {fn}(x: {small}) -> {wide} {{\n"
    broken = head + body.replace("{ann}", "") + "}\n"
    fixed = head + body.replace("{ann}", f": {wide}") + "}\n"
    big = {"u8": 250, "u16": 65000, "f32": 1000, "i32": 2000000000, "i16": 32000}[small]
    bl = f"{big}.0" if flt else str(big)
    tests = (
        f"#[test]\nfn {fn}_no_overflow() {{\n    assert_eq!({fn}({bl}), {big * k + off}{'.0' if flt else ''});\n"
        f"    assert_eq!({fn}({'0.0' if flt else '0'}), {ol});\n}}\n"
    )
    demo = f'    println!("{{}}", {fn}({"2.0" if flt else "2"}));'
    return Part("into", broken, fixed, tests, demo, ("E0283",))


def _running_best(rng: random.Random) -> Part:
    st = rng.choice(["Runner", "Bid", "Probe", "Shot", "Lap"])
    field = rng.choice(["score", "amount", "value", "time_ms"])
    fn = rng.choice(["best", "winner", "top", "pick_best"])
    better = rng.choice([">", "<"])
    label = rng.choice(["name", "tag", "id"])
    head = (
        f"struct {st} {{\n    {label}: String,\n    {field}: u32,\n}}\n\n"
        f"fn {fn}(items: &[{st}]) -> Option<&{st}> {{\n"
    )
    body = (
        f"    let mut cur{{ann}} = None;\n    for it in items {{\n"
        f"        if cur.map_or(true, |c| it.{field} {better} c.{field}) {{\n            cur = Some(it);\n"
        f"        }}\n    }}\n    cur\n}}\n"
    )
    broken = head + body.replace("{ann}", "")
    fixed = head + body.replace("{ann}", f": Option<&{st}>")
    vals = rng.sample(range(1, 100), 3)
    want = max(vals) if better == ">" else min(vals)
    items = ", ".join(f'{st} {{ {label}: "n{v}".to_string(), {field}: {v} }}' for v in vals)
    tests = (
        f"#[test]\nfn {fn}_finds_it() {{\n    let xs = vec![{items}];\n"
        f'    assert_eq!({fn}(&xs).unwrap().{label}, "n{want}");\n    assert!({fn}(&[]).is_none());\n}}\n'
    )
    demo = f'    println!("{{}}", {fn}(&[]).is_some());'
    return Part("running_best", broken, fixed, tests, demo, ("E0282",))


TRAITS = [
    ("Codec", "tag", ["Json", "Yaml", "Toml", "Csv"]),
    ("Sensor", "channel", ["Thermo", "Baro", "Hygro", "Lux"]),
    ("Currency", "minor_units", ["Euro", "Yen", "Dinar", "Peso"]),
    ("Animal", "legs", ["Spider", "Bird", "Dog", "Snake"]),
]


def _trait_static(rng: random.Random) -> Part:
    tr, method, pool = rng.choice(TRAITS)
    impls = rng.sample(pool, rng.randint(2, 3))
    vals = rng.sample(range(0, 40), len(impls))
    target = rng.randrange(len(impls))
    fn = rng.choice(["total_for", "combined", "weighted"])
    mult = rng.randint(2, 7)
    decl = f"trait {tr} {{\n    fn {method}() -> u32;\n}}\n\n"
    decl += "".join(f"struct {s};\n" for s in impls) + "\n"
    decl += "".join(
        f"impl {tr} for {s} {{\n    fn {method}() -> u32 {{\n        {v}\n    }}\n}}\n\n"
        for s, v in zip(impls, vals, strict=True)
    )
    other = (target + 1) % len(impls)
    body = (
        f"fn {fn}(n: u32) -> u32 {{\n    n * {{who}}::{method}() + {impls[other]}::{method}() * {mult}\n}}\n"
    )
    broken = decl + body.replace("{who}", tr)
    fixed = decl + body.replace("{who}", impls[target])
    tests = (
        f"#[test]\nfn {fn}_uses_{impls[target].lower()}() {{\n"
        f"    assert_eq!({fn}(3), {3 * vals[target] + vals[other] * mult});\n"
        f"    assert_eq!({fn}(0), {vals[other] * mult});\n}}\n"
    )
    demo = f'    println!("{{}}", {fn}(1));'
    return Part("trait_static", broken, fixed, tests, demo, ("E0790",))


SHAPES = [_collect, _parse, _fold, _into, _running_best, _trait_static]


def _assemble(rng: random.Random, parts: list[Part]) -> Example:
    return assemble(FAMILY, rng, parts, public=("fn ", "struct ", "trait "))


def generate(rng: random.Random) -> Example:
    return _assemble(rng, one_or_two(rng, SHAPES))
