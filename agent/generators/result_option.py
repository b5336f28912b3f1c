"""Generator for the result_option family: `?` that cannot convert (E0277), missing Some/Ok (E0308),
inner-type methods called on an Option (E0599) and parses whose target type is never stated (E0282).

Every shape computes its expected test values in Python from the random inputs it draws, so the tests
pin the behaviour of the fixed program rather than echoing it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from agent.generators import Example
from agent.generators._common import finish

FAMILY = "result_option"

_FN_WORDS = ["pick", "select", "choose", "grab", "fetch", "take", "find", "locate"]
_SUBJECTS = ["reading", "score", "sample", "level", "price", "weight", "speed", "depth", "count"]
_PARAMS = ["values", "readings", "samples", "scores", "levels", "items", "data", "series"]
_INT_TYPES = ["i32", "i64", "isize"]


def _name(rng: random.Random, *parts: list[str]) -> str:
    return "_".join(rng.choice(p) for p in parts)


def _nums(rng: random.Random, n: int, lo: int = -20, hi: int = 60) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def _rs_slice(values: list[int]) -> str:
    return "&[" + ", ".join(str(v) for v in values) + "]"


def _option_question_in_result(rng: random.Random) -> Example:
    """`?` applied to an Option inside a function that returns Result<_, String>."""
    fname = _name(rng, _FN_WORDS, _SUBJECTS)
    param = rng.choice(_PARAMS)
    ty = rng.choice(_INT_TYPES)
    k = rng.randint(2, 9)
    m = rng.randint(2, 7)
    getters = [
        (f"iter().find(|x| **x > {k}).copied()", lambda v: next((x for x in v if x > k), None), f"over {k}"),
        (
            f"iter().rev().find(|x| **x % {k} == 0).copied()",
            lambda v: next((x for x in reversed(v) if x % k == 0), None),
            f"multiple of {k}",
        ),
        ("first().copied()", lambda v: v[0] if v else None, "first"),
        ("last().copied()", lambda v: v[-1] if v else None, "last"),
        (f"get({k % 4}).copied()", lambda v: v[k % 4] if len(v) > k % 4 else None, f"index {k % 4}"),
    ]
    expr, pick, what = rng.choice(getters)
    ops = [(f"* {m}", lambda x: x * m), (f"+ {m}", lambda x: x + m), (f"- {m}", lambda x: x - m)]
    op_src, op = rng.choice(ops)
    msg = f"no {what} {rng.choice(_SUBJECTS)}"
    conv = rng.choice([f'.ok_or("{msg}".to_string())', f'.ok_or_else(|| String::from("{msg}"))'])
    body = "    let found = {p}.{e}{c}?;\n    Ok(found {o})\n"
    if rng.random() < 0.5:
        body = "    let found = {p}.{e}{c}?;\n    let result = found {o};\n    Ok(result)\n"
    sig = f"fn {fname}({param}: &[{ty}]) -> Result<{ty}, String> {{\n"
    broken = sig + body.format(p=param, e=expr, c="", o=op_src) + "}\n"
    fixed = sig + body.format(p=param, e=expr, c=conv, o=op_src) + "}\n"
    hit = _nums(rng, rng.randint(3, 6), 0, 40)
    while pick(hit) is None:
        hit.append(rng.choice([k + 1, k * 3]))
    miss: list[int] = [] if what in ("first", "last") or what.startswith("index") else [1] * rng.randint(0, 2)
    if pick(miss) is not None:
        miss = []
    tests = (
        f"#[test]\nfn picks_and_transforms() {{\n"
        f"    assert_eq!({fname}({_rs_slice(hit)}), Ok({op(pick(hit))}));\n}}\n"
        f"#[test]\nfn explains_a_miss() {{\n"
        f'    assert_eq!({fname}({_rs_slice(miss)}), Err("{msg}".to_string()));\n}}\n'
    )
    return finish(
        FAMILY,
        rng,
        "option_question_in_result",
        broken,
        fixed,
        tests,
        ["E0277"],
        f"{fname}({_rs_slice(hit)})",
    )


def _result_question_in_option(rng: random.Random) -> Example:
    """`?` on a parse Result inside a function that returns Option."""
    fname = _name(rng, ["parse", "read", "decode", "extract"], _SUBJECTS)
    sep = rng.choice([":", "=", "->", "|"])
    ty = rng.choice(["u8", "u16", "u32", "i32", "i64"])
    scale = rng.randint(1, 5)
    sig = f"fn {fname}(line: &str) -> Option<{ty}> {{\n"
    head = f'    let (_, raw) = line.split_once("{sep}")?;\n'
    broken = sig + head + f"    let n = raw.trim().parse::<{ty}>()?;\n"
    fixed = sig + head + f"    let n = raw.trim().parse::<{ty}>().ok()?;\n"
    tail = f"    n.checked_mul({scale})\n}}\n" if rng.random() < 0.5 else f"    Some(n / {scale})\n}}\n"
    broken += tail
    fixed += tail
    v = rng.randint(1, 40)
    key = rng.choice(_SUBJECTS)
    expect = v * scale if "checked_mul" in tail else v // scale
    tests = (
        f"#[test]\nfn parses_the_value() {{\n"
        f'    assert_eq!({fname}("{key}{sep} {v}"), Some({expect}));\n}}\n'
        f"#[test]\nfn rejects_bad_lines() {{\n"
        f'    assert_eq!({fname}("{key}{sep} lots"), None);\n'
        f'    assert_eq!({fname}("{key} {v}"), None);\n}}\n'
    )
    return finish(
        FAMILY, rng, "result_question_in_option", broken, fixed, tests, ["E0277"], f'{fname}("{key}{sep}{v}")'
    )


def _missing_wrap(rng: random.Random) -> Example:
    """The success path returns a bare value where Option/Result is declared."""
    ty = rng.choice(["u32", "u64", "usize"])
    a_name, b_name = rng.choice([("total", "parts"), ("distance", "hours"), ("budget", "people"), ("a", "b")])
    wrapper = rng.choice(["Option", "Result"])
    op = rng.choice(["div", "sub", "rem"])
    guard, expr, pyop = {
        "div": (f"{b_name} == 0", f"{a_name} / {b_name}", lambda a, b: None if b == 0 else a // b),
        "rem": (f"{b_name} == 0", f"{a_name} % {b_name}", lambda a, b: None if b == 0 else a % b),
        "sub": (f"{b_name} > {a_name}", f"{a_name} - {b_name}", lambda a, b: None if b > a else a - b),
    }[op]
    fname = (
        rng.choice(["safe", "checked", "try", "careful"])
        + "_"
        + {"div": "share", "rem": "leftover", "sub": "remaining"}[op]
    )
    if wrapper == "Option":
        ret, fail, ok = f"Option<{ty}>", "None", "Some"
    else:
        ret, fail = f"Result<{ty}, String>", f'Err(format!("cannot {op} {{}} by {{}}", {a_name}, {b_name}))'
        ok = "Ok"
    sig = f"fn {fname}({a_name}: {ty}, {b_name}: {ty}) -> {ret} {{\n"
    early = rng.choice(
        [
            f"    if {guard} {{\n        return {fail};\n    }}\n",
            f"    if {guard} {{\n        return {fail};\n    }};\n",
        ]
    )
    broken = sig + early + f"    {expr}\n}}\n"
    fixed = sig + early + f"    {ok}({expr})\n}}\n"
    a, b = rng.randint(10, 90), rng.randint(1, 9)
    good = pyop(a, b)
    bad_b = 0 if op != "sub" else a + rng.randint(1, 5)
    if wrapper == "Option":
        bad_check = f"    assert_eq!({fname}({a}, {bad_b}), None);\n"
    else:
        bad_check = f'    assert_eq!({fname}({a}, {bad_b}), Err("cannot {op} {a} by {bad_b}".to_string()));\n'
    tests = (
        f"#[test]\nfn computes() {{\n    assert_eq!({fname}({a}, {b}), {ok}({good}));\n}}\n"
        f"#[test]\nfn refuses() {{\n{bad_check}}}\n"
    )
    return finish(FAMILY, rng, "missing_wrap", broken, fixed, tests, ["E0308"], f"{fname}({a}, {b})")


def _method_on_option(rng: random.Random) -> Example:
    """A method of the inner type called straight on the Option a lookup returned."""
    fname = _name(
        rng, ["describe", "summarise", "label", "headline", "show"], ["first", "last", "top", "lead"]
    )
    if rng.random() < 0.5:
        param = rng.choice(["names", "words", "titles", "tags", "cities"])
        getter, pyget = rng.choice(
            [("first()", lambda v: v[0] if v else None), ("last()", lambda v: v[-1] if v else None)]
        )
        method, ret, fix, pym, rs_lit = rng.choice(
            [
                (
                    "to_uppercase()",
                    "String",
                    ".map(|s| s.to_uppercase()).unwrap_or_default()",
                    str.upper,
                    '"{}"',
                ),
                (
                    "to_lowercase()",
                    "String",
                    ".map(|s| s.to_lowercase()).unwrap_or_default()",
                    str.lower,
                    '"{}"',
                ),
                ("chars().count()", "usize", ".map_or(0, |s| s.chars().count())", len, "{}"),
                (
                    "trim().to_string()",
                    "String",
                    ".map_or(String::new(), |s| s.trim().to_string())",
                    str.strip,
                    '"{}"',
                ),
            ]
        )
        words = [
            rng.choice(["Ada", " Bo ", "cyd", "DEE", "Eliza", "fox", " Gil"])
            for _ in range(rng.randint(2, 4))
        ]
        arg = "&[" + ", ".join(f'"{w}"' for w in words) + "]"
        sig = f"fn {fname}({param}: &[&str]) -> {ret} {{\n"
        empty_expect = rs_lit.format(pym("")) if ret != "usize" else "0"
        full_expect = rs_lit.format(pym(pyget(words)))  # type: ignore[arg-type]
    else:
        param = rng.choice(["temps", "deltas", "offsets", "changes", "errors"])
        ty = rng.choice(["i32", "i64"])
        getter, pyget = rng.choice(
            [
                ("iter().max()", lambda v: max(v) if v else None),
                ("iter().min()", lambda v: min(v) if v else None),
                ("first()", lambda v: v[0] if v else None),
            ]
        )
        method, ret, fix, pym, rs_lit = rng.choice(
            [
                ("abs()", ty, ".map_or(0, |v| v.abs())", abs, "{}"),
                ("pow(2)", ty, ".map_or(0, |v| v.pow(2))", lambda x: x * x, "{}"),
                ("signum()", ty, ".map_or(0, |v| v.signum())", lambda x: (x > 0) - (x < 0), "{}"),
            ]
        )
        nums = _nums(rng, rng.randint(2, 5), -30, 30)
        arg = _rs_slice(nums)
        sig = f"fn {fname}({param}: &[{ty}]) -> {ret} {{\n"
        empty_expect = "0"
        full_expect = rs_lit.format(pym(pyget(nums)))
    broken = sig + f"    {param}.{getter}.{method}\n}}\n"
    fixed = sig + f"    {param}.{getter}{fix}\n}}\n"
    tests = (
        f"#[test]\nfn uses_the_value() {{\n    assert_eq!({fname}({arg}), {full_expect});\n}}\n"
        f"#[test]\nfn handles_empty_input() {{\n    assert_eq!({fname}(&[]), {empty_expect});\n}}\n"
    )
    return finish(FAMILY, rng, "method_on_option", broken, fixed, tests, ["E0599"], f"{fname}({arg})")


def _parse_untyped(rng: random.Random) -> Example:
    """`parse()` whose result is used only through a method call, so its type is never inferred."""
    fname = _name(rng, ["setting", "option", "limit", "param"], ["value", "number", "amount"])
    var = rng.choice(["n", "v", "value", "parsed", "raw"])
    kind = rng.choice(["int", "float"])
    method: str
    pym: Callable[[Any], Any]
    cases: list[tuple[str, Any]]
    fmt: Callable[[Any], str] = str
    if kind == "int":
        ty = rng.choice(["u32", "u64", "i32"])
        lo = rng.randint(1, 5)
        hi = rng.randint(20, 90)
        method, pym = rng.choice(
            [
                (f"max({lo})", lambda x: max(x, lo)),
                (f"min({hi})", lambda x: min(x, hi)),
                (f"clamp({lo}, {hi})", lambda x: min(max(x, lo), hi)),
            ]
        )
        good = rng.randint(0, 120)
        cases = [(str(good), pym(good)), ("oops", pym(0))]
    else:
        ty = "f64"
        method, pym = rng.choice(
            [("abs()", abs), ("floor()", lambda x: float(int(x // 1))), ("max(0.0)", lambda x: max(x, 0.0))]
        )
        good_f = rng.choice([-2.5, 3.75, -0.5, 12.25, 7.5])
        cases = [(str(good_f), pym(good_f)), ("nan?", pym(0.0))]
        fmt = repr

    sig = f"fn {fname}(input: &str) -> {ty} {{\n"
    line = "    let {v}{t} = input.trim().parse().unwrap_or_default();\n"
    broken = sig + line.format(v=var, t="") + f"    {var}.{method}\n}}\n"
    fixed = sig + line.format(v=var, t=f": {ty}") + f"    {var}.{method}\n}}\n"
    checks = "".join(f'    assert_eq!({fname}("{s}"), {fmt(e)});\n' for s, e in cases)
    tests = f"#[test]\nfn parses_with_default() {{\n{checks}}}\n"
    return finish(FAMILY, rng, "parse_untyped", broken, fixed, tests, ["E0282"], f'{fname}("{cases[0][0]}")')


def _question_in_plain_fn(rng: random.Random) -> Example:
    """`?` in a function whose return type is a plain number: the signature must become a Result."""
    fname = _name(rng, ["sum", "total", "tally", "add_up"], ["lines", "fields", "entries", "cells"])
    ty = rng.choice(["i64", "i32", "u32"])
    sep = rng.choice([",", ";", " ", "|"])
    acc = rng.choice(["sum", "acc", "total", "running"])
    sig_b = f"fn {fname}(text: &str) -> {ty} {{\n"
    sig_f = f"fn {fname}(text: &str) -> Result<{ty}, std::num::ParseIntError> {{\n"
    loop = (
        f"    let mut {acc}: {ty} = 0;\n"
        f'    for part in text.split("{sep}").filter(|p| !p.trim().is_empty()) {{\n'
        f"        {acc} += part.trim().parse::<{ty}>()?;\n    }}\n"
    )
    broken = sig_b + loop + f"    {acc}\n}}\n"
    fixed = sig_f + loop + f"    Ok({acc})\n}}\n"
    nums = [rng.randint(0, 50) for _ in range(rng.randint(2, 5))]
    text = f"{sep} ".join(str(n) for n in nums) if sep != " " else " ".join(str(n) for n in nums)
    tests = (
        f'#[test]\nfn adds_fields() {{\n    assert_eq!({fname}("{text}"), Ok({sum(nums)}));\n'
        f'    assert_eq!({fname}(""), Ok(0));\n}}\n'
        f'#[test]\nfn reports_bad_fields() {{\n    assert!({fname}("1{sep}x").is_err());\n}}\n'
    )
    return finish(FAMILY, rng, "question_in_plain_fn", broken, fixed, tests, ["E0277"], f'{fname}("{text}")')


_SHAPES = [
    _option_question_in_result,
    _result_question_in_option,
    _missing_wrap,
    _method_on_option,
    _parse_untyped,
    _question_in_plain_fn,
]


def generate(rng: random.Random) -> Example:
    """One random draw from one of the family's shapes."""
    return rng.choice(_SHAPES)(rng)
