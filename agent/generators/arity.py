"""Generator for the arity family: calls with the wrong number of arguments.

Shapes: one or two callees (free fn, method, tuple struct, enum variant: E0061; local closure: E0057) called
from a function that has every needed value in scope, so the right call is recoverable from the code; a
tuple-item closure handed to an iterator adaptor with too many parameters (E0593); and a variadic C
function missing a fixed argument (E0060). Expected results are computed here.
"""

from __future__ import annotations

import random

from agent.generators import Example
from agent.generators._common import finish

FAMILY = "arity"

_PARAM_WORDS = ["base", "rate", "bonus", "count", "width", "depth", "level", "speed", "cost", "units", "span"]
_FN_WORDS = ["score", "weigh", "blend", "price", "rank", "measure", "grade", "combine"]
_TYPE_WORDS = ["Quote", "Reading", "Sample", "Offer", "Bid", "Entry", "Probe", "Ticket"]
_KINDS = ["fn", "method", "closure", "tuple_struct", "variant"]


def _linear(rng: random.Random, names: list[str]) -> tuple[str, list[int]]:
    """A small integer expression over ``names`` and its coefficients (evaluated in Python for the tests)."""
    coefs = [rng.choice([-3, -2, -1, 1, 2, 3, 4, 5]) for _ in names]
    parts = []
    for i, (c, n) in enumerate(zip(coefs, names, strict=True)):
        term = n if abs(c) == 1 else f"{n} * {abs(c)}"
        if i == 0:
            parts.append(("- " if c < 0 else "") + term)
        else:
            parts.append(("- " if c < 0 else "+ ") + term)
    return " ".join(parts), coefs


def _wrong_args(rng: random.Random, args: list[str], spare: str) -> list[str]:
    """The argument list with one argument left out, or with a spare one added."""
    if rng.random() < 0.6:
        out = list(args)
        del out[rng.randrange(len(out))]
        return out
    out = list(args)
    out.insert(rng.randrange(len(out) + 1), spare)
    return out


def _callee(
    rng: random.Random, kind: str, names: list[str], idx: int
) -> tuple[str, str, str, str, list[int]]:
    """Declaration text, the statement used inside the caller (with ``{args}``), its code and coefficients."""
    expr, coefs = _linear(rng, names)
    params = ", ".join(f"{n}: i64" for n in names)
    fn = f"{rng.choice(_FN_WORDS)}_{idx}"
    ty = f"{rng.choice(_TYPE_WORDS)}{idx}"
    var = f"r{idx}"
    if kind == "fn":
        decl = f"fn {fn}({params}) -> i64 {{\n    {expr}\n}}\n\n"
        use = f"    let {var} = {fn}({{args}});\n"
        return decl, "", use, "E0061", coefs
    if kind == "method":
        decl = (
            f"struct {ty} {{\n    offset: i64,\n}}\n\n"
            f"impl {ty} {{\n    fn {fn}(&self, {params}) -> i64 {{\n        self.offset + {expr}\n    }}\n}}\n\n"
        )
        use = f"    let {var} = {ty} {{ offset: 0 }}.{fn}({{args}});\n"
        return decl, "", use, "E0061", coefs
    if kind == "closure":
        setup = f"    let {fn} = |{params}| {expr};\n"
        use = f"    let {var} = {fn}({{args}});\n"
        return "", setup, use, "E0057", coefs
    fields = ", ".join("i64" for _ in names)
    body_expr = expr
    for i, n in enumerate(names):
        body_expr = _replace_word(body_expr, n, f"self.{i}" if kind == "tuple_struct" else f"f{i}")
    if kind == "tuple_struct":
        decl = (
            f"struct {ty}({fields});\n\n"
            f"impl {ty} {{\n    fn value(&self) -> i64 {{\n        {body_expr}\n    }}\n}}\n\n"
        )
        use = f"    let {var} = {ty}({{args}}).value();\n"
        return decl, "", use, "E0061", coefs
    pats = ", ".join(f"f{i}" for i in range(len(names)))
    variant = rng.choice(["Full", "Known", "Exact", "Measured"])
    decl = (
        f"enum {ty} {{\n    {variant}({fields}),\n    Missing,\n}}\n\n"
        f"impl {ty} {{\n    fn value(&self) -> i64 {{\n        match *self {{\n"
        f"            {ty}::{variant}({pats}) => {body_expr},\n            {ty}::Missing => 0,\n"
        f"        }}\n    }}\n}}\n\n"
    )
    use = f"    let {var} = {ty}::{variant}({{args}}).value();\n"
    return decl, "", use, "E0061", coefs


def _replace_word(text: str, word: str, new: str) -> str:
    out = []
    for tok in text.split(" "):
        out.append(new if tok == word else tok)
    return " ".join(out)


def _calls(rng: random.Random) -> Example:
    """One or two callees of different kinds, each called with one argument too many or too few."""
    kinds = rng.sample(_KINDS, rng.choice([1, 1, 2]))
    names = rng.sample(_PARAM_WORDS, 4)
    decls, setups, uses_b, uses_f, codes = "", "", "", "", set()
    needed: set[str] = set()
    all_coefs: list[dict[str, int]] = []
    for idx, kind in enumerate(kinds, start=1):
        mine = rng.sample(names, rng.randint(2, 3))
        decl, setup, use, code, coefs = _callee(rng, kind, mine, idx)
        spare = next(n for n in names if n not in mine)
        bad_args = _wrong_args(rng, mine, spare)
        decls += decl
        setups += setup
        uses_f += use.replace("{args}", ", ".join(mine))
        uses_b += use.replace("{args}", ", ".join(bad_args))
        codes.add(code)
        needed.update(mine, bad_args)
        all_coefs.append(dict(zip(mine, coefs, strict=True)))
    caller_params = [n for n in names if n in needed or rng.random() < 0.3]
    sig = f"fn evaluate({', '.join(f'{n}: i64' for n in caller_params)}) -> i64 {{\n"
    total = " + ".join(f"r{i}" for i in range(1, len(kinds) + 1))
    broken = decls + sig + setups + uses_b + f"    {total}\n}}\n"
    fixed = decls + sig + setups + uses_f + f"    {total}\n}}\n"
    checks = ""
    for _ in range(2):
        vals = {n: rng.randint(-9, 20) for n in caller_params}
        want = sum(sum(c * vals[n] for n, c in co.items()) for co in all_coefs)
        checks += f"    assert_eq!(evaluate({', '.join(str(vals[n]) for n in caller_params)}), {want});\n"
    tests = f"#[test]\nfn evaluates_the_formula() {{\n{checks}}}\n"
    demo = f"evaluate({', '.join('1' for _ in caller_params)})"
    return finish(FAMILY, rng, "calls", broken, fixed, tests, codes, demo)


def _adaptor_closure(rng: random.Random) -> Example:
    """A closure taking two parameters where the iterator yields one tuple (E0593)."""
    fname = (
        rng.choice(["pairwise", "combine", "match_up", "cross"]) + "_" + rng.choice(["sum", "total", "score"])
    )
    a_name, b_name = rng.choice([("x", "y"), ("price", "qty"), ("a", "b"), ("left", "right"), ("w", "v")])
    kind = rng.choice(["zip", "enumerate", "chunks"])
    k = rng.randint(1, 5)
    xs = [rng.randint(0, 20) for _ in range(rng.randint(3, 6))]
    ys = [rng.randint(0, 20) for _ in range(rng.randint(3, 6))]
    if kind == "zip":
        sig = f"fn {fname}(xs: &[i64], ys: &[i64]) -> i64 {{\n"
        chain = "xs.iter().zip(ys)"
        body = f"{a_name} * {b_name} + {k}"
        want = sum(x * y + k for x, y in zip(xs, ys, strict=False))
        call = f"{fname}(&{xs}, &{ys})"
        empty = f"{fname}(&[], &[1])"
        pat = f"({a_name}, {b_name})"
    elif kind == "enumerate":
        sig = f"fn {fname}(xs: &[i64]) -> i64 {{\n"
        chain = "xs.iter().enumerate()"
        body = f"{a_name} as i64 * {b_name} - {k}"
        want = sum(i * x - k for i, x in enumerate(xs))
        call = f"{fname}(&{xs})"
        empty = f"{fname}(&[])"
        pat = f"({a_name}, {b_name})"
    else:
        sig = f"fn {fname}(xs: &[i64]) -> i64 {{\n"
        chain = "xs.chunks_exact(2).map(|c| (c[0], c[1]))"
        body = f"{a_name} * {k} + {b_name}"
        want = sum(xs[i] * k + xs[i + 1] for i in range(0, len(xs) - 1, 2))
        call = f"{fname}(&{xs})"
        empty = f"{fname}(&[5])"
        pat = f"({a_name}, {b_name})"
    adaptor = rng.choice(["map", "map"]) if kind != "chunks" else "map"
    broken = sig + f"    {chain}.{adaptor}(|{a_name}, {b_name}| {body}).sum()\n}}\n"
    fixed = sig + f"    {chain}.{adaptor}(|{pat}| {body}).sum()\n}}\n"
    tests = (
        f"#[test]\nfn adds_up_pairs() {{\n    assert_eq!({call}, {want});\n    assert_eq!({empty}, 0);\n}}\n"
    )
    return finish(FAMILY, rng, "adaptor_closure", broken, fixed, tests, {"E0593"}, call)


def _variadic(rng: random.Random) -> Example:
    """snprintf called without one of its fixed parameters (E0060)."""
    table: list[tuple[str, str, str, list[tuple[float, str]]]] = [
        ("padded", "%05d", "c_int", [(42, "00042"), (-7, "-0007"), (123456, "123456")]),
        ("hex", "%x", "c_uint", [(255, "ff"), (4096, "1000"), (0, "0")]),
        ("octal", "%o", "c_uint", [(8, "10"), (511, "777"), (1, "1")]),
        ("signed", "%+d", "c_int", [(5, "+5"), (-12, "-12"), (0, "+0")]),
        ("sci", "%.2e", "f64", [(1234.5, "1.23e+03"), (0.5, "5.00e-01"), (-2.0, "-2.00e+00")]),
        ("fixed2", "%.2f", "f64", [(3.14159, "3.14"), (-0.5, "-0.50"), (10.0, "10.00")]),
    ]
    fname, fmt, ty, cases = rng.choice(table)
    cap = rng.choice([24, 32, 48, 64])
    buf = rng.choice(["buf", "out", "scratch"])
    imports = "c_char, c_int" + (", c_uint" if ty == "c_uint" else "")
    args_all = [f"{buf}.as_mut_ptr().cast()", f"{buf}.len()", f'c"{fmt}".as_ptr()', "value"]
    # Either a printf call converted without adding the buffer and its size, or a call left unfinished.
    args_bad = args_all[2:] if rng.random() < 0.7 else args_all[:2]

    def src(args: list[str]) -> str:
        return (
            f"use std::ffi::{{{imports}}};\n\n"
            f'extern "C" {{\n    fn snprintf(buf: *mut c_char, size: usize, fmt: *const c_char, ...) -> c_int;\n}}\n\n'
            f"pub fn {fname}(value: {ty}) -> String {{\n"
            f"    let mut {buf} = [0u8; {cap}];\n"
            f"    let n = unsafe {{ snprintf({', '.join(args)}) }};\n"
            f"    String::from_utf8_lossy(&{buf}[..n.clamp(0, {cap - 1}) as usize]).into_owned()\n}}\n"
        )

    def lit(v: float) -> str:
        return repr(v) if ty == "f64" else str(v)

    checks = "".join(f'    assert_eq!({fname}({lit(v)}), "{s}");\n' for v, s in cases)
    tests = f"#[test]\nfn formats_like_c() {{\n{checks}}}\n"
    return finish(
        FAMILY,
        rng,
        "variadic",
        src(args_bad),
        src(args_all),
        tests,
        {"E0060"},
        f"{fname}({lit(cases[0][0])})",
    )


_SHAPES = [_calls, _calls, _adaptor_closure, _variadic]


def generate(rng: random.Random) -> Example:
    """One random draw from one of the family's shapes (call sites twice as often as the rest)."""
    return rng.choice(_SHAPES)(rng)
