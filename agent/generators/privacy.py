"""Generator for the privacy family: code outside a module reaching into what that module keeps private.

Shapes: a record struct whose private field, method or constant is used from outside (E0616, E0624,
E0603 in combinations; E0451 for a struct literal on its own, since rustc reports that only when nothing
else failed), tuple newtypes (private constructor E0603, `.0` E0616) and paths through private modules
(E0603). Test expectations are computed here from the drawn constants.
"""

from __future__ import annotations

import random

from agent.generators import Example
from agent.generators._common import finish

FAMILY = "privacy"

# module, struct, public text field, private number field
_DOMAINS = [
    ("shop", "Cart", "owner", "total_cents"),
    ("fleet", "Truck", "plate", "load_kg"),
    ("school", "Student", "name", "credits"),
    ("garden", "Plot", "crop", "area_m2"),
    ("hotel", "Room", "guest", "nights"),
    ("lab", "Sample", "label", "mass_mg"),
    ("league", "Team", "city", "points"),
    ("library", "Shelf", "topic", "books"),
]
_LABELS = ["north", "ada", "blue", "zeta", "oak", "rio", "kai", "mira"]


def _record(rng: random.Random) -> Example:
    """A record struct in a module; the crate root touches a private field, method or constant."""
    mod, st, pub_f, priv_f = rng.choice(_DOMAINS)
    rate = rng.randint(2, 9)
    bonus_name = rng.choice(["scaled", "weighted", "boosted", "projected"])
    const_name = rng.choice(["RATE", "FACTOR", "MULTIPLIER", "WEIGHT"])
    if rng.random() < 0.2:
        errors = {"E0451"}
    else:
        errors = set(rng.sample(["E0603", "E0616", "E0624"], rng.randint(1, 2)))
    vis_const = "" if "E0603" in errors else "pub "
    vis_method = "" if "E0624" in errors else "pub "

    def module(vc: str, vm: str) -> str:
        return (
            f"mod {mod} {{\n"
            f"    {vc}const {const_name}: u32 = {rate};\n\n"
            f"    pub struct {st} {{\n        pub {pub_f}: String,\n        {priv_f}: u32,\n    }}\n\n"
            f"    impl {st} {{\n"
            f"        pub fn new({pub_f}: &str, {priv_f}: u32) -> {st} {{\n"
            f"            {st} {{ {pub_f}: {pub_f}.to_string(), {priv_f} }}\n        }}\n\n"
            f"        pub fn add(&mut self, n: u32) {{\n            self.{priv_f} += n;\n        }}\n\n"
            f"        pub fn {priv_f}(&self) -> u32 {{\n            self.{priv_f}\n        }}\n\n"
            f"        {vm}fn {bonus_name}(&self, k: u32) -> u32 {{\n            self.{priv_f} * k\n        }}\n"
            f"    }}\n}}\n\n"
        )

    read_b = f"x.{priv_f}" if "E0616" in errors else f"x.{priv_f}()"
    make_b = (
        f"{mod}::{st} {{ {pub_f}: label.to_string(), {priv_f}: start }}"
        if "E0451" in errors
        else f"{mod}::{st}::new(label, start)"
    )
    outside = (
        'pub fn describe(x: &{m}::{s}) -> String {{\n    format!("{{}}: {{}}", x.{p}, {read})\n}}\n\n'
        "pub fn make(label: &str, start: u32) -> {m}::{s} {{\n    {make}\n}}\n\n"
        "pub fn outlook(x: &{m}::{s}) -> u32 {{\n    x.{b}({m}::{c})\n}}\n"
    )
    fmt = {"m": mod, "s": st, "p": pub_f, "b": bonus_name, "c": const_name}
    broken = module(vis_const, vis_method) + outside.format(**fmt, read=read_b, make=make_b)
    fixed = module("pub ", "pub ") + outside.format(
        **fmt, read=f"x.{priv_f}()", make=f"{mod}::{st}::new(label, start)"
    )
    label = rng.choice(_LABELS)
    start, more = rng.randint(0, 30), rng.randint(1, 20)
    tests = (
        f"#[test]\nfn builds_and_reports() {{\n"
        f'    let mut x = make("{label}", {start});\n    x.add({more});\n'
        f'    assert_eq!(describe(&x), "{label}: {start + more}");\n'
        f"    assert_eq!(outlook(&x), {(start + more) * rate});\n}}\n"
    )
    return finish(FAMILY, rng, "record", broken, fixed, tests, errors, f'describe(&make("{label}", {start}))')


def _newtype(rng: random.Random) -> Example:
    """A validated tuple newtype: built through its private constructor or read through `.0`."""
    mod, name, lo, hi, unit = rng.choice(
        [
            ("units", "Percent", 0, 100, "%"),
            ("audio", "Volume", 0, 11, "dB"),
            ("geo", "Latitude", -90, 90, "deg"),
            ("sensor", "Humidity", 0, 100, "rh"),
            ("game", "Level", 1, 60, "lv"),
        ]
    )
    kind = rng.choice(["ctor", "field", "both"])
    codes = {"ctor": {"E0603"}, "field": {"E0616"}, "both": {"E0603", "E0616"}}[kind]
    module = (
        f"mod {mod} {{\n    #[derive(Debug, Clone, Copy, PartialEq)]\n    pub struct {name}(i32);\n\n"
        f"    impl {name} {{\n"
        f"        pub fn new(v: i32) -> {name} {{\n            {name}(v.clamp({lo}, {hi}))\n        }}\n\n"
        f"        pub fn get(self) -> i32 {{\n            self.0\n        }}\n    }}\n}}\n\n"
    )
    step = rng.randint(2, 15)
    build_b = f"{mod}::{name}({{v}})" if kind in ("ctor", "both") else f"{mod}::{name}::new({{v}})"
    read_b = "x.0" if kind in ("field", "both") else "x.get()"
    outside = (
        "pub fn bump(x: {m}::{n}) -> {m}::{n} {{\n    let v = {read} + {step};\n    {build}\n}}\n\n"
        'pub fn show(x: {m}::{n}) -> String {{\n    format!("{{}}{u}", x.get())\n}}\n'
    )
    fmt = {"m": mod, "n": name, "step": step, "u": unit}
    broken = module + outside.format(**fmt, read=read_b, build=build_b.format(v="v"))
    fixed = module + outside.format(**fmt, read="x.get()", build=f"{mod}::{name}::new(v)")
    start = rng.randint(lo, hi)
    once = min(max(start + step, lo), hi)
    twice = min(max(once + step, lo), hi)
    tests = (
        f"#[test]\nfn bumps_within_range() {{\n    let x = {mod}::{name}::new({start});\n"
        f'    assert_eq!(show(bump(x)), "{once}{unit}");\n    assert_eq!(bump(bump(x)).get(), {twice});\n'
        f"    assert_eq!({mod}::{name}::new({hi + 50}).get(), {hi});\n}}\n"
    )
    return finish(
        FAMILY, rng, "newtype", broken, fixed, tests, codes, f"show(bump({mod}::{name}::new({start})))"
    )


def _private_module_path(rng: random.Random) -> Example:
    """A helper reached through a module (or a function) that its parent keeps private."""
    outer, inner = rng.choice([("net", "codec"), ("app", "util"), ("store", "pricing"), ("engine", "math")])
    fname = rng.choice(["checksum", "digest", "fold", "mix"])
    mult = rng.choice([31, 17, 7, 13])
    modulo = rng.choice([97, 101, 251, 1009])
    hidden = rng.choice(["module", "function", "both"])
    codes = {"E0603"}
    inner_vis = "" if hidden in ("module", "both") else "pub "
    fn_vis = "" if hidden in ("function", "both") else "pub "

    def src(iv: str, fv: str) -> str:
        return (
            f"pub mod {outer} {{\n    {iv}mod {inner} {{\n"
            f"        {fv}fn {fname}(bytes: &[u8]) -> u32 {{\n"
            f"            bytes.iter().fold(0u32, |acc, &b| (acc * {mult} + b as u32) % {modulo})\n"
            f"        }}\n    }}\n\n"
            f"    pub fn tag(text: &str) -> String {{\n"
            f'        format!("{{}}#{{}}", text.len(), {inner}::{fname}(text.as_bytes()))\n    }}\n}}\n\n'
            f"pub fn verify(text: &str, expected: u32) -> bool {{\n"
            f"    {outer}::{inner}::{fname}(text.as_bytes()) == expected\n}}\n"
        )

    word = rng.choice(_LABELS) + rng.choice(["", "-1", "!", " x"])
    acc = 0
    for b in word.encode():
        acc = (acc * mult + b) % modulo
    tests = (
        f"#[test]\nfn checks_digests() {{\n"
        f'    assert!(verify("{word}", {acc}));\n    assert!(!verify("{word}", {acc + 1}));\n'
        f'    assert_eq!({outer}::tag("{word}"), "{len(word.encode())}#{acc}");\n}}\n'
    )
    return finish(
        FAMILY,
        rng,
        "private_module_path",
        src(inner_vis, fn_vis),
        src("pub ", "pub "),
        tests,
        codes,
        f'verify("{word}", 0)',
    )


def _private_assoc_fn(rng: random.Random) -> Example:
    """A private associated constructor/parser called from outside its module (E0624)."""
    mod, st, sep = rng.choice(
        [("geo", "Coord", ","), ("color", "Rgb", "/"), ("time", "Clock", ":"), ("dims", "Box3", "x")]
    )
    fields = {"geo": ["lat", "lon"], "color": ["r", "g", "b"], "time": ["h", "m"], "dims": ["w", "h", "d"]}[
        mod
    ]
    parse_name = rng.choice(["parse", "from_text", "decode", "read"])
    sum_name = rng.choice(["total", "sum", "magnitude"])
    field_decl = "".join(f"        pub {f}: i32,\n" for f in fields)
    inits = ", ".join(f"{f}: it.next()?.trim().parse().ok()?" for f in fields)

    def src(vis: str) -> str:
        return (
            f"mod {mod} {{\n    #[derive(Debug, PartialEq)]\n    pub struct {st} {{\n{field_decl}    }}\n\n"
            f"    impl {st} {{\n"
            f"        {vis}fn {parse_name}(s: &str) -> Option<{st}> {{\n"
            f'            let mut it = s.split("{sep}");\n'
            f"            let v = {st} {{ {inits} }};\n"
            f"            if it.next().is_some() {{ None }} else {{ Some(v) }}\n        }}\n\n"
            f"        pub fn {sum_name}(&self) -> i32 {{\n"
            f"            {' + '.join('self.' + f for f in fields)}\n        }}\n    }}\n}}\n\n"
            f"pub fn {sum_name}_of(lines: &[&str]) -> i32 {{\n"
            f"    lines.iter().filter_map(|l| {mod}::{st}::{parse_name}(l)).map(|v| v.{sum_name}()).sum()\n}}\n"
        )

    rows = [[rng.randint(0, 60) for _ in fields] for _ in range(rng.randint(1, 3))]
    lines = [sep.join(str(v) for v in r) for r in rows]
    bad = sep.join("7" for _ in range(len(fields) + 1))
    arg = "&[" + ", ".join(f'"{ln}"' for ln in [*lines, bad, "junk"]) + "]"
    tests = (
        f"#[test]\nfn sums_valid_rows() {{\n    assert_eq!({sum_name}_of({arg}), {sum(map(sum, rows))});\n"
        f"    assert_eq!({sum_name}_of(&[]), 0);\n}}\n"
    )
    return finish(
        FAMILY, rng, "private_assoc_fn", src(""), src("pub "), tests, {"E0624"}, f"{sum_name}_of({arg})"
    )


_SHAPES = [_record, _newtype, _private_module_path, _private_assoc_fn]


def generate(rng: random.Random) -> Example:
    """One random draw from one of the family's shapes."""
    return rng.choice(_SHAPES)(rng)
