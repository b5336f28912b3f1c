"""Closure traits and captures: E0596, E0594, E0373, E0525, E0507 and E0308 between closure types.

Shapes: a stateful closure called without `mut`, a factory returning a closure that borrows its
arguments (missing `move`), an `F: Fn` helper given a mutating closure, a closure that gives away a
captured value passed where `Fn` is needed, a captured value moved out inside an iterator callback, and
two different capturing closures chosen by a branch. Each draw is one or two shapes in one program.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.generators import Example
from agent.generators._common import Part, assemble, one_or_two

FAMILY = "closures"


def _nums(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(1, 30) for _ in range(n)]


def _not_mut(rng: random.Random) -> Part:
    fn = rng.choice(["tally", "scan", "track", "observe", "sweep"])
    cb = rng.choice(["record", "note", "bump", "feed", "step"])
    kind = rng.choice(["sum_count", "max", "evens"])
    if kind == "sum_count":
        state = "    let mut total = 0u32;\n    let mut seen = 0u32;\n"
        closure = "|x: u32| {\n        total += x;\n        seen += 1;\n    }"
        ret, result, rty = "(total, seen)", lambda xs: f"({sum(xs)}, {len(xs)})", "(u32, u32)"
    elif kind == "max":
        state = "    let mut best = 0u32;\n"
        closure = "|x: u32| {\n        if x > best {\n            best = x;\n        }\n    }"
        ret, result, rty = "best", lambda xs: str(max(xs, default=0)), "u32"
    else:
        state = "    let mut evens = Vec::new();\n"
        closure = "|x: u32| {\n        if x % 2 == 0 {\n            evens.push(x);\n        }\n    }"
        ret, result, rty = (
            "evens",
            lambda xs: "vec![" + ", ".join(str(x) for x in xs if x % 2 == 0) + "]",
            "Vec<u32>",
        )
    loop = rng.choice(
        [
            f"    for &x in xs {{\n        {cb}(x);\n    }}\n",
            f"    for i in 0..xs.len() {{\n        {cb}(xs[i]);\n    }}\n",
        ]
    )
    text = f"fn {fn}(xs: &[u32]) -> {rty} {{\n{state}    let {{m}}{cb} = {closure};\n{loop}    {ret}\n}}\n"
    xs = _nums(rng, rng.randint(3, 6))
    empty = "Vec::<u32>::new()" if kind == "evens" else result([])
    tests = (
        f"#[test]\nfn {fn}_accumulates() {{\n    assert_eq!({fn}(&{xs}), {result(xs)});\n"
        f"    assert_eq!({fn}(&[]), {empty});\n}}\n"
    )
    demo = f'    println!("{{:?}}", {fn}(&{xs[:2]}));'
    return Part("not_mut", text.replace("{m}", ""), text.replace("{m}", "mut "), tests, demo, ("E0596",))


def _missing_move(rng: random.Random) -> Part:
    boxed = rng.random() < 0.5
    kind = rng.choice(["affine", "clamp", "label"])
    fn = rng.choice(["make", "build", "factory", "prepare"]) + "_" + kind
    if kind == "affine":
        sig, arg_t, ret_t = "scale: i64, shift: i64", "i64", "i64"
        body = "|x| x * scale + shift"
        a, b = rng.randint(2, 9), rng.randint(-20, 20)
        call, probe = f"{fn}({a}, {b})", rng.randint(-10, 10)
        want = str(probe * a + b)
    elif kind == "clamp":
        sig, arg_t, ret_t = "lo: i64, hi: i64", "i64", "i64"
        body = "|x| x.max(lo).min(hi)"
        a = rng.randint(-10, 0)
        b = a + rng.randint(5, 20)
        call, probe = f"{fn}({a}, {b})", b + 3
        want = str(b)
    else:
        sig, arg_t, ret_t = "prefix: String", "i64", "String"
        body = '|x| format!("{prefix}-{x}")'
        word = rng.choice(["job", "run", "cell", "slot"])
        call, probe = f'{fn}("{word}".to_string())', rng.randint(1, 99)
        want = f'"{word}-{probe}"'
    if boxed:
        ret = f"Box<dyn Fn({arg_t}) -> {ret_t}>"
        expr = "Box::new({mv}" + body + ")"
    else:
        ret = f"impl Fn({arg_t}) -> {ret_t}"
        expr = "{mv}" + body
    text = f"fn {fn}({sig}) -> {ret} {{\n    {expr}\n}}\n"
    tests = (
        f"#[test]\nfn {fn}_keeps_its_settings() {{\n    let f = {call};\n"
        f"    assert_eq!(f({probe}), {want});\n    assert_eq!(f({probe}), {want});\n}}\n"
    )
    demo = f'    println!("{{}}", ({call})({probe}));'
    return Part(
        "missing_move", text.replace("{mv}", ""), text.replace("{mv}", "move "), tests, demo, ("E0373",)
    )


def _fn_bound(rng: random.Random) -> Part:
    helper = rng.choice(["each_pair", "visit_all", "walk", "for_every"])
    fn = rng.choice(["collect_gaps", "count_rises", "log_steps", "sum_diffs"])
    mutate = rng.choice(["push", "assign"])
    params = "usize, i32"
    helper_broken = (
        f"fn {helper}<F: Fn({params})>(xs: &[i32], f: F) {{\n"
        "    for (i, &x) in xs.iter().enumerate() {\n        f(i, x);\n    }\n}\n\n"
    )
    helper_fixed = helper_broken.replace(
        f"F: Fn({params})>(xs: &[i32], f: F)", f"F: FnMut({params})>(xs: &[i32], mut f: F)"
    )
    step = rng.randint(1, 3)
    if mutate == "push":
        rty, init, act, ret = (
            "Vec<usize>",
            "    let mut out = Vec::new();\n",
            f"if x > {step} {{ out.push(i) }}",
            "out",
        )
        codes = ("E0596",)
    else:
        rty, init, act, ret = "i32", "    let mut acc = 0;\n", f"acc += x * {step}", "acc"
        codes = ("E0594",)
    body = f"fn {fn}(xs: &[i32]) -> {rty} {{\n{init}    {helper}(xs, |i, x| {act});\n    {ret}\n}}\n"
    xs = [rng.randint(-3, 6) for _ in range(5)]
    want = (
        "vec![" + ", ".join(str(i) for i, x in enumerate(xs) if x > step) + "]"
        if mutate == "push"
        else str(sum(x * step for x in xs))
    )
    if mutate == "assign":
        body = body.replace("|i, x|", "|_, x|")
    empty = "Vec::<usize>::new()" if mutate == "push" else "0"
    tests = (
        f"#[test]\nfn {fn}_sees_every_item() {{\n    assert_eq!({fn}(&{xs}), {want});\n"
        f"    assert_eq!({fn}(&[]), {empty});\n}}\n"
    )
    demo = f'    println!("{{:?}}", {fn}(&{xs}));'
    return Part("fn_bound", helper_broken + body, helper_fixed + body, tests, demo, codes)


def _gives_away(rng: random.Random) -> Part:
    runner = rng.choice(["run_twice", "repeat", "retry", "attempt"])
    fn = rng.choice(["greeting", "payload", "message", "banner"])
    times = rng.randint(2, 4)
    once = rng.random() < 0.4
    word = rng.choice(["hello", "ping", "ready", "sync"])
    if once:
        runner_b = f"fn {runner}<F: Fn() -> String>(f: F) -> Vec<String> {{\n    vec![f()]\n}}\n\n"
        runner_f = runner_b.replace("F: Fn()", "F: FnOnce()")
        mk_b = mk_f = "move || text"
        want = f'vec!["{word}!".to_string()]'
    else:
        runner_b = (
            f"fn {runner}<F: Fn() -> String>(f: F) -> Vec<String> {{\n"
            f"    (0..{times}).map(|_| f()).collect()\n}}\n\n"
        )
        runner_f = runner_b
        mk_b, mk_f = "move || text", "move || text.clone()"
        want = "vec![" + ", ".join([f'"{word}!".to_string()'] * times) + "]"
    body = f'fn {fn}(base: &str) -> Vec<String> {{\n    let text = format!("{{base}}!");\n    let make = {{mk}};\n    {runner}(make)\n}}\n'
    tests = f'#[test]\nfn {fn}_repeats() {{\n    assert_eq!({fn}("{word}"), {want});\n}}\n'
    demo = f'    println!("{{:?}}", {fn}("{word}"));'
    return Part(
        "gives_away",
        runner_b + body.replace("{mk}", mk_b),
        runner_f + body.replace("{mk}", mk_f),
        tests,
        demo,
        ("E0525",),
    )


def _move_out(rng: random.Random) -> Part:
    fn = rng.choice(["label_all", "tag_each", "pair_with", "attach"])
    owner = rng.choice(["owner", "team", "source", "region"])
    style = rng.choice(["for_each", "map"])
    if style == "for_each":
        body = (
            f"fn {fn}(items: &[&str], {owner}: String) -> Vec<(String, String)> {{\n"
            "    let mut out = Vec::new();\n"
            f"    items.iter().for_each(|it| out.push(({owner}{{c}}, it.to_string())));\n    out\n}}\n"
        )
    else:
        body = (
            f"fn {fn}(items: &[&str], {owner}: String) -> Vec<(String, String)> {{\n"
            f"    items.iter().map(|it| ({owner}{{c}}, it.to_string())).collect()\n}}\n"
        )
    who = rng.choice(["ops", "blue", "north", "core"])
    items = rng.sample(["a1", "b2", "c3", "d4", "e5"], rng.randint(2, 3))
    arr = "[" + ", ".join(f'"{i}"' for i in items) + "]"
    want = "vec![" + ", ".join(f'("{who}".to_string(), "{i}".to_string())' for i in items) + "]"
    tests = (
        f'#[test]\nfn {fn}_each_item() {{\n    assert_eq!({fn}(&{arr}, "{who}".to_string()), {want});\n'
        f'    assert!({fn}(&[], "x".to_string()).is_empty());\n}}\n'
    )
    demo = f'    println!("{{:?}}", {fn}(&{arr}, "{who}".to_string()));'
    return Part("move_out", body.replace("{c}", ""), body.replace("{c}", ".clone()"), tests, demo, ("E0507",))


OPS: list[tuple[str, Callable[[int, int], int]]] = [
    ("x * k1", lambda x, k: x * k),
    ("x + k1", lambda x, k: x + k),
    ("x - k1", lambda x, k: x - k),
    ("(x % k1) * 10", lambda x, k: (x % k) * 10),
]


def _two_closures(rng: random.Random) -> Part:
    fn = rng.choice(["pick_rule", "choose_op", "select_policy", "rule_for"])
    a, b = rng.randint(2, 9), rng.randint(1, 9)
    ops = rng.sample(OPS, 2)
    cond = rng.choice(["if", "match"])
    e1, e2 = ops[0][0].replace("k1", "a"), ops[1][0].replace("k1", "b")
    if cond == "if":
        broken_body = (
            f"    let f = if strict {{\n        move |x: i64| {e1}\n    }} else {{\n        move |x: i64| {e2}\n    }};\n"
            "    Box::new(f)\n"
        )
        fixed_body = (
            f"    if strict {{\n        Box::new(move |x: i64| {e1})\n    }} else {{\n"
            f"        Box::new(move |x: i64| {e2})\n    }}\n"
        )
        sig = "strict: bool, a: i64, b: i64"
        c1, c2 = f"{fn}(true, {a}, {b})", f"{fn}(false, {a}, {b})"
    else:
        broken_body = (
            f'    let f = match mode {{\n        "first" => move |x: i64| {e1},\n        _ => move |x: i64| {e2},\n    }};\n'
            "    Box::new(f)\n"
        )
        fixed_body = (
            f'    match mode {{\n        "first" => Box::new(move |x: i64| {e1}),\n'
            f"        _ => Box::new(move |x: i64| {e2}),\n    }}\n"
        )
        sig = "mode: &str, a: i64, b: i64"
        c1, c2 = f'{fn}("first", {a}, {b})', f'{fn}("other", {a}, {b})'
    head = f"fn {fn}({sig}) -> Box<dyn Fn(i64) -> i64> {{\n"
    x = rng.randint(10, 40)

    w1, w2 = ops[0][1](x, a), ops[1][1](x, b)
    tests = (
        f"#[test]\nfn {fn}_both_branches() {{\n    assert_eq!(({c1})({x}), {w1});\n"
        f"    assert_eq!(({c2})({x}), {w2});\n}}\n"
    )
    demo = f'    println!("{{}}", ({c1})({x}));'
    return Part(
        "two_closures", head + broken_body + "}\n", head + fixed_body + "}\n", tests, demo, ("E0308",)
    )


SHAPES = [_not_mut, _missing_move, _fn_bound, _gives_away, _move_out, _two_closures]


def _assemble(rng: random.Random, parts: list[Part]) -> Example:
    return assemble(FAMILY, rng, parts, public=("fn ",))


def generate(rng: random.Random) -> Example:
    return _assemble(rng, one_or_two(rng, SHAPES))
