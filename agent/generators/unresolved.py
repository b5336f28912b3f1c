"""Generator for the unresolved family: names and paths rustc cannot resolve.

Shapes: std collections used without `use` (E0433 for paths, E0425 for types), misspelled locals (E0425),
fields used without `self.` (E0425), bad `use` paths inside the crate or std (E0432), and struct
literals/constructors with the wrong name or form (E0422/E0423). Expected test values are computed here.
"""

from __future__ import annotations

import random
from collections import Counter

from agent.generators import Example
from agent.generators._common import finish

FAMILY = "unresolved"

_ITEM_WORDS = ["apple", "pear", "fig", "kiwi", "plum", "lime", "date", "nut"]
_VARS = ["total", "count", "amount", "width", "height", "offset", "margin", "weight", "budget", "limit"]


def _typo(name: str, rng: random.Random, avoid: set[str]) -> str:
    """A plausible misspelling: a dropped or doubled letter, or two neighbours swapped."""
    for _ in range(50):
        i = rng.randrange(1, len(name))
        kind = rng.choice(["drop", "swap", "double"])
        if kind == "drop":
            cand = name[:i] + name[i + 1 :]
        elif kind == "swap" and i < len(name) - 1:
            cand = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        else:
            cand = name[:i] + name[i] + name[i:]
        if cand != name and cand not in avoid and cand.isidentifier() and not cand.endswith("_"):
            return cand
    return name + "s"


def _str_slice(words: list[str]) -> str:
    return "&[" + ", ".join(f'"{w}"' for w in words) + "]"


def _missing_collection_use(rng: random.Random) -> Example:
    """A std collection used without importing it."""
    words = [rng.choice(_ITEM_WORDS) for _ in range(rng.randint(3, 7))]
    param = rng.choice(["items", "names", "entries", "words", "tokens"])
    options: list[tuple[str, str, str, str | None, set[str]]] = []
    # HashMap counting: the type only appears as a path -> E0433.
    top = max(Counter(words).values())
    options.append(
        (
            "HashMap",
            f"fn most_common_count({param}: &[&str]) -> usize {{\n"
            f"    let mut seen = HashMap::new();\n"
            f"    for w in {param} {{\n        *seen.entry(*w).or_insert(0usize) += 1;\n    }}\n"
            f"    seen.values().copied().max().unwrap_or(0)\n}}\n",
            "most_common_count",
            str(top),
            {"E0433"},
        )
    )
    # HashSet in a type annotation -> E0425.
    options.append(
        (
            "HashSet",
            f"fn distinct({param}: &[&str]) -> usize {{\n"
            f"    let unique: HashSet<&str> = {param}.iter().copied().collect();\n    unique.len()\n}}\n",
            "distinct",
            str(len(set(words))),
            {"E0425"},
        )
    )
    # BTreeSet in the signature and as a path -> both codes.
    srt = sorted(set(words))
    options.append(
        (
            "BTreeSet",
            f"fn sorted_unique({param}: &[&str]) -> BTreeSet<String> {{\n"
            f"    let mut out = BTreeSet::new();\n"
            f"    for w in {param} {{\n        out.insert(w.to_string());\n    }}\n    out\n}}\n",
            "sorted_unique",
            None,
            {"E0425", "E0433"},
        )
    )
    k = rng.randint(1, 3)
    rotated = words[k % len(words) :] + words[: k % len(words)]
    options.append(
        (
            "VecDeque",
            f"fn rotate({param}: &[&str]) -> Vec<String> {{\n"
            f"    let mut ring: VecDeque<String> = {param}.iter().map(|s| s.to_string()).collect();\n"
            f"    ring.rotate_left({k} % ring.len().max(1));\n    ring.into_iter().collect()\n}}\n",
            "rotate",
            None,
            {"E0425"},
        )
    )
    coll, body, fname, expect, codes = rng.choice(options)
    if fname == "sorted_unique":
        check = f"    let got: Vec<String> = sorted_unique({_str_slice(words)}).into_iter().collect();\n"
        check += f"    assert_eq!(got, vec![{', '.join(repr(w).replace(chr(39), chr(34)) for w in srt)}]);\n"
    elif fname == "rotate":
        check = f"    assert_eq!(rotate({_str_slice(words)}), vec!{_str_slice(rotated)[1:]});\n"
        check += "    assert!(rotate(&[]).is_empty());\n"
    else:
        check = f"    assert_eq!({fname}({_str_slice(words)}), {expect});\n    assert_eq!({fname}(&[]), 0);\n"
    imp = rng.choice([f"use std::collections::{coll};\n", f"use std::collections::{{{coll}}};\n"])
    broken = body
    fixed = imp + "\n" + body
    tests = f"#[test]\nfn works_on_sample() {{\n{check}}}\n"
    return finish(
        FAMILY, rng, "missing_collection_use", broken, fixed, tests, codes, f"{fname}({_str_slice(words)})"
    )


def _typo_local(rng: random.Random) -> Example:
    """A local variable misspelled at one of its later uses."""
    x, y, z = rng.sample(_VARS, 3)
    a, b, c = (rng.randint(2, 30) for _ in range(3))
    fname = rng.choice(["compute", "estimate", "plan", "derive", "figure"]) + "_" + z
    template = (
        "fn {f}(base: i64, extra: i64) -> i64 {{\n"
        "    let {x} = base * {a};\n"
        "    let {y} = {X1} + extra * {b};\n"
        "    let {z} = ({Y1} - {X2}) / {c} + {X3};\n"
        "    {Z1}\n}}\n"
    )
    uses = {"X1": x, "X2": x, "X3": x, "Y1": y, "Z1": z}
    slot = rng.choice(sorted(uses))
    bad = dict(uses)
    bad[slot] = _typo(uses[slot], rng, {x, y, z, "base", "extra"})
    common = {"f": fname, "x": x, "y": y, "z": z, "a": a, "b": b, "c": c}
    broken = template.format(**common, **bad)
    fixed = template.format(**common, **uses)

    def py(base: int, extra: int) -> int:
        vx = base * a
        q = extra * b
        # Rust integer division truncates toward zero.
        return (abs(q) // c) * (1 if q >= 0 else -1) + vx

    cases = [(rng.randint(1, 20), rng.randint(-5, 20)) for _ in range(2)]
    checks = "".join(f"    assert_eq!({fname}({p}, {q}), {py(p, q)});\n" for p, q in cases)
    tests = f"#[test]\nfn matches_the_formula() {{\n{checks}}}\n"
    return finish(
        FAMILY, rng, "typo_local", broken, fixed, tests, {"E0425"}, f"{fname}({cases[0][0]}, {cases[0][1]})"
    )


def _missing_self(rng: random.Random) -> Example:
    """Fields or an associated const used inside a method without `self.`/`Self::`."""
    sname, f1, f2 = rng.choice(
        [
            ("Tank", "level", "capacity"),
            ("Budget", "spent", "limit"),
            ("Battery", "charge", "max_charge"),
            ("Counter", "hits", "ceiling"),
            ("Backlog", "queued", "bound"),
        ]
    )
    method = rng.choice(["add", "fill", "take_in", "absorb"])
    unit = rng.randint(1, 5)
    good = {"F1": f"self.{f1}", "F2": f"self.{f2}", "U1": "Self::UNIT", "U2": "Self::UNIT"}
    plain = {"F1": f1, "F2": f2, "U1": "UNIT", "U2": "UNIT"}
    broken_slots = rng.sample(sorted(good), rng.randint(1, 2))
    bad = {k: (plain[k] if k in broken_slots else v) for k, v in good.items()}
    template = (
        "pub struct {s} {{\n    {f1}: u32,\n    {f2}: u32,\n}}\n\n"
        "impl {s} {{\n    const UNIT: u32 = {unit};\n\n"
        "    pub fn new({f2}: u32) -> Self {{\n        {s} {{ {f1}: 0, {f2} }}\n    }}\n\n"
        "    /// Takes as much of `amount` as fits, in whole units, and returns the rest.\n"
        "    pub fn {m}(&mut self, amount: u32) -> u32 {{\n"
        "        let room = {F2} - {F1};\n"
        "        let taken = amount.min(room) / {U1} * {U2};\n"
        "        self.{f1} += taken;\n"
        "        amount - taken\n    }}\n\n"
        "    pub fn {f1}(&self) -> u32 {{\n        self.{f1}\n    }}\n}}\n"
    )
    common = {"s": sname, "f1": f1, "f2": f2, "unit": unit, "m": method}
    broken = template.format(**common, **bad)
    fixed = template.format(**common, **good)
    cap = rng.randint(10, 50)
    amounts = [rng.randint(1, cap), rng.randint(cap // 2, cap + 30)]
    level, rests = 0, []
    for amt in amounts:
        taken = min(amt, cap - level) // unit * unit
        level += taken
        rests.append(amt - taken)
    checks = "".join(
        f"    assert_eq!(t.{method}({amt}), {r});\n" for amt, r in zip(amounts, rests, strict=True)
    )
    tests = (
        f"#[test]\nfn fills_in_whole_units() {{\n    let mut t = {sname}::new({cap});\n"
        f"{checks}    assert_eq!(t.{f1}(), {level});\n}}\n"
    )
    return finish(
        FAMILY,
        rng,
        "missing_self",
        broken,
        fixed,
        tests,
        {"E0425"},
        f"{sname}::new({cap}).{method}({amounts[0]})",
    )


def _bad_use_path(rng: random.Random) -> Example:
    """A `use` whose path names a module that does not exist under that name."""
    outer, inner = rng.choice(
        [
            ("geometry", "shapes"),
            ("billing", "invoices"),
            ("text", "tokens"),
            ("net", "packets"),
            ("game", "rules"),
        ]
    )
    fn_name = rng.choice(["scale", "weigh", "grade", "score", "rank"])
    k = rng.randint(2, 9)
    module = (
        f"mod {outer} {{\n    pub mod {inner} {{\n"
        f"        pub fn {fn_name}(x: i32) -> i32 {{\n            x * {k} - 1\n        }}\n    }}\n}}\n\n"
    )
    kind = rng.choice(["typo_inner", "typo_outer", "relative_in_module", "std_case"])
    user = (
        f"pub fn apply_all(xs: &[i32]) -> Vec<i32> {{\n    xs.iter().map(|&x| {fn_name}(x)).collect()\n}}\n"
    )
    good_use = f"use {outer}::{inner}::{fn_name};\n"
    if kind == "typo_inner":
        bad_use = f"use {outer}::{_typo(inner, rng, {outer})}::{fn_name};\n"
    elif kind == "typo_outer":
        bad_use = f"use crate::{_typo(outer, rng, {inner})}::{inner}::{fn_name};\n"
        good_use = f"use crate::{outer}::{inner}::{fn_name};\n"
    elif kind == "relative_in_module":
        bad_use = good_use = ""
        user = (
            f"mod report {{\n    use {outer}::{inner}::{fn_name};\n\n"
            f"    pub fn apply_all(xs: &[i32]) -> Vec<i32> {{\n"
            f"        xs.iter().map(|&x| {fn_name}(x)).collect()\n    }}\n}}\n\n"
            f"pub use report::apply_all;\n"
        )
    else:
        wrong = rng.choice(["collections::Hashmap", "collection::HashMap"])
        bad_use = good_use + f"use std::{wrong};\n"
        good_use = good_use + "use std::collections::HashMap;\n"
        user = (
            f"pub fn apply_all(xs: &[i32]) -> Vec<i32> {{\n"
            f"    let mut memo: HashMap<i32, i32> = HashMap::new();\n"
            f"    xs.iter().map(|&x| *memo.entry(x).or_insert_with(|| {fn_name}(x))).collect()\n}}\n"
        )
        bad_user = user.replace("HashMap", wrong.split("::")[1])
    if kind == "std_case":
        broken = bad_use + "\n" + module + bad_user
        fixed = good_use + "\n" + module + user
    elif kind == "relative_in_module":
        broken = module + user
        fixed = module + user.replace(f"use {outer}::", f"use crate::{outer}::")
    else:
        broken = bad_use + "\n" + module + user
        fixed = good_use + "\n" + module + user
    xs = [rng.randint(-5, 20) for _ in range(rng.randint(2, 5))]
    expect = [x * k - 1 for x in xs]
    tests = (
        f"#[test]\nfn applies_the_module_function() {{\n"
        f"    assert_eq!(apply_all(&{xs}), vec!{expect});\n    assert!(apply_all(&[]).is_empty());\n}}\n"
    )
    # A missing module followed by more path segments fails to resolve (E0433); a bad last segment is E0432.
    codes = {"E0433"} if kind in ("typo_outer", "relative_in_module") else {"E0432"}
    return finish(FAMILY, rng, "bad_use_path", broken, fixed, tests, codes, f"apply_all(&{xs})")


def _struct_name_or_form(rng: random.Random) -> Example:
    """A struct literal with a misspelled name (E0422) or a braced struct called like a function (E0423)."""
    sname, fa, fb = rng.choice(
        [
            ("Point", "x", "y"),
            ("Size", "width", "height"),
            ("Span", "start", "end"),
            ("Range", "low", "high"),
            ("Pair", "left", "right"),
        ]
    )
    fname = rng.choice(["combine", "merge", "join", "widen", "union"])
    ty = rng.choice(["i32", "i64"])
    kinds = rng.choice([["E0422"], ["E0423"], ["E0422", "E0423"]])
    decl = f"#[derive(Debug, PartialEq, Clone, Copy)]\npub struct {sname} {{\n    pub {fa}: {ty},\n    pub {fb}: {ty},\n}}\n\n"
    good_a = f"{sname} {{ {fa}: p.{fa}.min(q.{fa}), {fb}: p.{fb}.max(q.{fb}) }}"
    good_b = f"{sname} {{ {fa}: lo, {fb}: hi }}"
    bad_a = good_a.replace(sname, _typo(sname, rng, set()), 1) if "E0422" in kinds else good_a
    bad_b = f"{sname}(lo, hi)" if "E0423" in kinds else good_b
    body = (
        "pub fn {f}(p: {s}, q: {s}) -> {s} {{\n    {a}\n}}\n\n"
        "pub fn ordered(a: {t}, b: {t}) -> {s} {{\n    let (lo, hi) = if a <= b {{ (a, b) }} else {{ (b, a) }};\n"
        "    {b}\n}}\n"
    )
    broken = decl + body.format(f=fname, s=sname, a=bad_a, b=bad_b, t=ty)
    fixed = decl + body.format(f=fname, s=sname, a=good_a, b=good_b, t=ty)
    a, b, c, d = (rng.randint(-20, 20) for _ in range(4))

    def lit(u: int, v: int) -> str:
        return f"{sname} {{ {fa}: {u}, {fb}: {v} }}"

    tests = (
        f"#[test]\nfn orders_and_merges() {{\n"
        f"    assert_eq!(ordered({a}, {b}), {lit(min(a, b), max(a, b))});\n"
        f"    assert_eq!({fname}({lit(a, b)}, {lit(c, d)}), {lit(min(a, c), max(b, d))});\n}}\n"
    )
    return finish(FAMILY, rng, "struct_name_or_form", broken, fixed, tests, set(kinds), f"ordered({a}, {b})")


_SHAPES = [_missing_collection_use, _typo_local, _missing_self, _bad_use_path, _struct_name_or_form]


def generate(rng: random.Random) -> Example:
    """One random draw from one of the family's shapes."""
    return rng.choice(_SHAPES)(rng)
