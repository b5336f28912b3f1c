"""Generator for the ``trait_items`` family: impls that do not match their trait (E0046, E0407, E0053, E0050).

Shapes: a user trait with two implementors (``trait_world``) where one or two impls are injured — a method or
associated const left out (E0046), a misspelt method (E0407 + E0046), a helper written inside the trait impl
(E0407 + E0599), a changed signature (E0053) or a dropped parameter (E0050); an ``Iterator`` impl
(``std_iterator``: missing ``type Item``, wrong ``Item``, ``&self`` receiver, misspelt ``next``); and an
arithmetic operator impl (``std_ops``: missing ``Output``, rhs by reference, misspelt method). Expected values
are computed here, so the tests pin the behaviour of every implementor.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.generators import Example

FAMILY = "trait_items"


@dataclass(frozen=True)
class Domain:
    trait: str
    field: str
    ty: str
    get: str
    adjust: str
    label: str
    check: str
    impls: tuple[str, ...]
    unit: str


DOMAINS = [
    Domain(
        "Account",
        "cents",
        "i64",
        "balance",
        "deposit",
        "statement",
        "exceeds",
        ("Checking", "Savings", "Escrow"),
        "c",
    ),
    Domain(
        "Tank",
        "liters",
        "u32",
        "level",
        "refill",
        "gauge",
        "above",
        ("WaterTank", "FuelTank", "Cistern"),
        "l",
    ),
    Domain(
        "Counter", "count", "u64", "value", "bump", "show", "over", ("Clicks", "Visits", "Downloads"), "x"
    ),
    Domain(
        "Stock",
        "units",
        "i32",
        "on_hand",
        "restock",
        "report",
        "more_than",
        ("Shelf", "Warehouse", "Van"),
        "u",
    ),
    Domain(
        "Battery",
        "charge",
        "u32",
        "remaining",
        "charge_by",
        "status",
        "has_at_least",
        ("Phone", "Drone", "Watch"),
        "mah",
    ),
    Domain(
        "Garden",
        "plants",
        "i64",
        "yield_est",
        "plant",
        "summary",
        "bigger_than",
        ("Orchard", "Vineyard", "Plot"),
        "p",
    ),
]
OTHER_INT = {"i64": "i32", "u32": "u64", "u64": "u32", "i32": "i64"}
KEYWORDS = {
    "as",
    "fn",
    "if",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "self",
    "type",
    "use",
    "where",
    "while",
    "dyn",
    "impl",
    "true",
    "false",
    "for",
    "box",
    "try",
    "yield",
}


def typo(rng: random.Random, name: str, taken: set[str]) -> str:
    """A plausible misspelling of ``name`` (a different identifier, no keyword, not already taken)."""
    for _ in range(50):
        kind = rng.randrange(3)
        if kind == 0 and len(name) > 3:
            i = rng.randrange(1, len(name) - 1)
            cand = name[:i] + name[i + 1 :]
        elif kind == 1 and len(name) > 2:
            i = rng.randrange(len(name) - 1)
            cand = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        else:
            cand = rng.choice(["get_", "do_", "calc_"]) + name
        if cand != name and cand not in taken and cand not in KEYWORDS and cand.isidentifier():
            return cand
    return name + "_x"


def trait_world(rng: random.Random) -> Example:
    d = rng.choice(DOMAINS)
    impls = rng.sample(d.impls, 2)
    ty, f = d.ty, d.field
    methods = ["get"] + [m for m in ("adjust", "label", "check") if rng.random() < 0.7]
    if len(methods) == 1:
        methods.append(rng.choice(["adjust", "label", "check"]))
    has_const = rng.random() < 0.3
    ks = {name: rng.randint(1, 5) for name in impls}
    mname = {"get": d.get, "adjust": d.adjust, "label": d.label, "check": d.check}
    helper = rng.choice(["scaled", "raw_value", "weighted"])

    kinds = ["missing", "misspelt", "helper", "signature", "arity"] + (["const"] if has_const else [])
    n_inj = 2 if rng.random() < 0.25 else 1
    injuries: dict[str, tuple[str, str]] = {}  # impl -> (kind, method)
    for impl in rng.sample(impls, n_inj):
        kind = rng.choice(kinds)
        pool = {
            "missing": methods,
            "misspelt": methods,
            "helper": ["get"],
            "signature": [m for m in methods if m in ("get", "check")],
            "arity": [m for m in methods if m in ("adjust", "check")],
            "const": ["get"],
        }[kind]
        if not pool:
            kind, pool = "missing", methods
        injuries[impl] = (kind, rng.choice(pool))
    sig_variant = rng.randrange(2)
    taken = set(mname.values()) | {helper}
    codes: set[str] = set()
    for kind, _ in injuries.values():
        codes |= {
            "missing": {"E0046"},
            "misspelt": {"E0407", "E0046"},
            "helper": {"E0407", "E0599"},
            "signature": {"E0053"},
            "arity": {"E0050"},
            "const": {"E0046"},
        }[kind]
    typos = {impl: typo(rng, mname[m], taken) for impl, (_, m) in injuries.items()}

    def trait_decl() -> str:
        lines = [f"trait {d.trait} {{"]
        if has_const:
            lines.append("    const UNIT: &'static str;")
        sigs = {
            "get": f"fn {d.get}(&self) -> {ty};",
            "adjust": f"fn {d.adjust}(&mut self, amount: {ty});",
            "label": f"fn {d.label}(&self) -> String;",
            "check": f"fn {d.check}(&self, limit: {ty}) -> bool;",
        }
        lines += [f"    {sigs[m]}" for m in methods]
        return "\n".join(lines) + "\n}"

    def impl_block(impl: str, broken: bool) -> str:
        k = ks[impl]
        kind, target = injuries.get(impl, ("", "")) if broken else ("", "")
        unit = f'"{d.unit}"' if impl == impls[0] else f'"{d.unit}{d.unit}"'
        lab = "Self::UNIT" if has_const else unit
        bodies = {
            "get": f"    fn {d.get}(&self) -> {ty} {{\n        self.{f} * {k}\n    }}",
            "adjust": f"    fn {d.adjust}(&mut self, amount: {ty}) {{\n        self.{f} += amount;\n    }}",
            "label": (
                f"    fn {d.label}(&self) -> String {{\n"
                f'        format!("{impl.lower()}={{}}{{}}", self.{d.get}(), {lab})\n    }}'
            ),
            "check": f"    fn {d.check}(&self, limit: {ty}) -> bool {{\n        self.{d.get}() > limit\n    }}",
        }
        if kind == "missing":
            del bodies[target]
        elif kind == "misspelt":
            bodies[target] = bodies[target].replace(f"fn {mname[target]}(", f"fn {typos[impl]}(", 1)
        elif kind == "helper":
            bodies["get"] = f"    fn {d.get}(&self) -> {ty} {{\n        self.{helper}()\n    }}"
            bodies["helper"] = f"    fn {helper}(&self) -> {ty} {{\n        self.{f} * {k}\n    }}"
        elif kind == "signature" and target == "get":
            other = OTHER_INT[ty]
            if sig_variant == 0:
                bodies["get"] = (
                    f"    fn {d.get}(&self) -> {other} {{\n        (self.{f} * {k}) as {other}\n    }}"
                )
            else:
                bodies["get"] = f"    fn {d.get}(&mut self) -> {ty} {{\n        self.{f} * {k}\n    }}"
        elif kind == "signature":
            bodies["check"] = (
                f"    fn {d.check}(&self, limit: &{ty}) -> bool {{\n        self.{d.get}() > *limit\n    }}"
            )
        elif kind == "arity" and target == "adjust":
            bodies["adjust"] = f"    fn {d.adjust}(&mut self) {{\n        self.{f} += 1;\n    }}"
        elif kind == "arity":
            bodies["check"] = f"    fn {d.check}(&self) -> bool {{\n        self.{d.get}() > 100\n    }}"
        order = [m for m in methods if m in bodies] + (["helper"] if "helper" in bodies else [])
        head = f"impl {d.trait} for {impl} {{\n"
        if has_const and kind != "const":
            head += f"    const UNIT: &'static str = {unit};\n\n"
        block = head + "\n\n".join(bodies[m] for m in order) + "\n}"
        if not broken and injuries.get(impl, ("", ""))[0] == "helper":
            # the fix: the get method stays as is and the helper moves to an inherent impl
            block = block.replace(f"self.{f} * {k}\n    }}", f"self.{helper}()\n    }}", 1)
            block += (
                f"\n\nimpl {impl} {{\n    fn {helper}(&self) -> {ty} {{\n        self.{f} * {k}\n    }}\n}}"
            )
        return block

    structs = "\n\n".join(f"struct {impl} {{\n    {f}: {ty},\n}}" for impl in impls)
    total = rng.choice(["combined", "together", "sum_pair"])
    users = [
        f"fn {total}<A: {d.trait}, B: {d.trait}>(a: &A, b: &B) -> {ty} {{\n    a.{d.get}() + b.{d.get}()\n}}"
    ]
    va, vb = rng.randint(1, 40), rng.randint(1, 40)
    a, b = impls
    lines = [f"let mut x = {a} {{ {f}: {va} }};", f"let y = {b} {{ {f}: {vb} }};"]
    tests = [
        f"    let mut x = {a} {{ {f}: {va} }};",
        f"    let y = {b} {{ {f}: {vb} }};",
        f"    assert_eq!(x.{d.get}(), {va * ks[a]});",
        f"    assert_eq!({total}(&x, &y), {va * ks[a] + vb * ks[b]});",
    ]
    cur_a = va
    if "check" in methods:
        lim = rng.randint(0, 120)
        tests.append(f"    assert_eq!(y.{d.check}({lim}), {str(vb * ks[b] > lim).lower()});")
        tests.append(f"    assert!(!x.{d.check}({va * ks[a]}));")
    if "label" in methods:
        unit_b = d.unit * 2
        tests.append(f'    assert_eq!(y.{d.label}(), "{b.lower()}={vb * ks[b]}{unit_b}");')
    if "adjust" in methods:
        add = rng.randint(1, 30)
        tests.append(f"    x.{d.adjust}({add});")
        cur_a += add
        tests.append(f"    assert_eq!(x.{d.get}(), {cur_a * ks[a]});")
        lines.append(f"x.{d.adjust}({add});")
    lines.append(f'println!("{{}}", {total}(&x, &y));')
    test = "#[test]\nfn implementors_agree_with_the_trait() {\n" + "\n".join(tests) + "\n}\n"

    def program(broken: bool) -> str:
        parts = [trait_decl(), structs] + [impl_block(i, broken) for i in impls] + users
        main = "fn main() {\n" + "".join(f"    {line}\n" for line in lines) + "}"
        return "\n\n".join([*parts, main]) + "\n"

    shape = "trait_world:" + "+".join(sorted(k for k, _ in injuries.values()))
    return Example(FAMILY, shape, program(True), program(False), test, tuple(sorted(codes)))


SEQUENCES = ["countdown", "evens", "powers", "fib", "stride"]


def std_iterator(rng: random.Random) -> Example:
    seq = rng.choice(SEQUENCES)
    name = rng.choice(
        {
            "countdown": ["Countdown", "Launch", "Timer"],
            "evens": ["Evens", "EvenSteps"],
            "powers": ["Powers", "Doubling"],
            "fib": ["Fib", "Fibonacci"],
            "stride": ["Stride", "Steps", "Ticks"],
        }[seq]
    )
    ty = rng.choice(["u64", "u32", "usize"])
    limit = rng.randint(10, 90)
    if seq == "countdown":
        fields, init = f"left: {ty}", f"left: {limit % 12 + 1}"
        body = "if self.left == 0 {\n            return None;\n        }\n        self.left -= 1;\n        Some(self.left + 1)"
        values = list(range(limit % 12 + 1, 0, -1))
    elif seq == "evens":
        fields, init = f"cur: {ty}, max: {ty}", f"cur: 0, max: {limit}"
        body = (
            "if self.cur > self.max {\n            return None;\n        }\n        let v = self.cur;\n"
            "        self.cur += 2;\n        Some(v)"
        )
        values = list(range(0, limit + 1, 2))
    elif seq == "powers":
        base = rng.randint(2, 4)
        fields, init = f"cur: {ty}, max: {ty}", f"cur: 1, max: {limit * 10}"
        body = (
            "if self.cur > self.max {\n            return None;\n        }\n        let v = self.cur;\n"
            f"        self.cur *= {base};\n        Some(v)"
        )
        values, v = [], 1
        while v <= limit * 10:
            values.append(v)
            v *= base
    elif seq == "fib":
        fields, init = f"a: {ty}, b: {ty}, max: {ty}", f"a: 0, b: 1, max: {limit * 5}"
        body = (
            "if self.a > self.max {\n            return None;\n        }\n        let v = self.a;\n"
            "        self.a = self.b;\n        self.b += v;\n        Some(v)"
        )
        values, x, y = [], 0, 1
        while x <= limit * 5:
            values.append(x)
            x, y = y, x + y
    else:
        step = rng.randint(3, 9)
        fields, init = f"cur: {ty}, step: {ty}, end: {ty}", f"cur: {step}, step: {step}, end: {limit}"
        body = (
            "if self.cur >= self.end {\n            return None;\n        }\n        let v = self.cur;\n"
            "        self.cur += self.step;\n        Some(v)"
        )
        values = list(range(step, limit, step))
    other = {"u64": "u32", "u32": "u64", "usize": "u64"}[ty]
    kind = rng.choice(["no_item", "wrong_item", "ref_self", "misspelt"])
    codes = {
        "no_item": {"E0046"},
        "wrong_item": {"E0053"},
        "ref_self": {"E0053", "E0594"},
        "misspelt": {"E0407", "E0046"},
    }[kind]
    mk = rng.choice(["new", "start", "make"])

    def impl(broken: bool) -> str:
        item = f"    type Item = {ty};\n\n"
        recv, fname = "&mut self", "next"
        if broken and kind == "no_item":
            item = ""
        if broken and kind == "wrong_item":
            item = f"    type Item = {other};\n\n"
        if broken and kind == "ref_self":
            recv = "&self"
        if broken and kind == "misspelt":
            fname = rng_m.choice(["next_item", "advance", "nxt"])
        return (
            f"impl Iterator for {name} {{\n{item}    fn {fname}({recv}) -> Option<{ty}> {{\n        {body}\n"
            f"    }}\n}}"
        )

    rng_m = random.Random(rng.random())
    struct = f"struct {name} {{\n" + "".join(f"    {x.strip()},\n" for x in fields.split(",")) + "}"
    ctor = f"fn {mk}() -> {name} {{\n    {name} {{ {init} }}\n}}"
    # with a wrong Item type, sum() and last() would add errors of their own; count() does not care
    user = "count" if kind == "wrong_item" else rng.choice(["total", "count", "last"])
    use_fn = {
        "total": f"fn sum_all() -> {ty} {{\n    {mk}().sum()\n}}",
        "count": f"fn how_many() -> usize {{\n    {mk}().count()\n}}",
        "last": f"fn final_value() -> Option<{ty}> {{\n    {mk}().last()\n}}",
    }[user]
    check = {
        "total": f"assert_eq!(sum_all(), {sum(values)});",
        "count": f"assert_eq!(how_many(), {len(values)});",
        "last": f"assert_eq!(final_value(), Some({values[-1]}));",
    }[user]
    take = min(len(values), rng.randint(2, 5))
    tests = (
        f"#[test]\nfn yields_the_sequence() {{\n    assert_eq!({mk}().take({take}).collect::<Vec<_>>(), "
        f"vec!{values[:take]});\n    {check}\n}}\n"
    )
    main = f'fn main() {{\n    println!("{{:?}}", {mk}().collect::<Vec<_>>());\n}}'

    def program(broken: bool) -> str:
        return "\n\n".join([struct, impl(broken), ctor, use_fn, main]) + "\n"

    rng_state = rng_m.getstate()
    broken = program(True)
    rng_m.setstate(rng_state)
    return Example(FAMILY, f"std_iterator:{kind}", broken, program(False), tests, tuple(sorted(codes)))


VECS = [
    ("V2", ["x", "y"]),
    ("V3", ["x", "y", "z"]),
    ("Money", ["euros", "cents"]),
    ("Rgb", ["r", "g", "b"]),
    ("Stats", ["wins", "losses"]),
]
OPS = [("Add", "add", "+"), ("Sub", "sub", "-"), ("Mul", "mul", "*")]


def std_ops(rng: random.Random) -> Example:
    tname, fields = rng.choice(VECS)
    trait, method, sym = rng.choice(OPS)
    ty = rng.choice(["i32", "i64"])
    kind = rng.choice(["no_output", "rhs_ref", "misspelt"])
    codes = {"no_output": {"E0046"}, "rhs_ref": {"E0053"}, "misspelt": {"E0407", "E0046"}}[kind]
    wrong = rng.choice(
        {"add": ["plus", "sum", "add_to"], "sub": ["minus", "subtract"], "mul": ["times", "multiply"]}[method]
    )
    fn = rng.choice(["fold_all", "reduce_all", "combine_all"])

    def impl(broken: bool) -> str:
        out = "" if broken and kind == "no_output" else f"    type Output = {tname};\n\n"
        rhs = f"&{tname}" if broken and kind == "rhs_ref" else tname
        mname = wrong if broken and kind == "misspelt" else method
        inner = ", ".join(f"{fl}: self.{fl} {sym} o.{fl}" for fl in fields)
        return (
            f"impl {trait} for {tname} {{\n{out}    fn {mname}(self, o: {rhs}) -> {tname} {{\n"
            f"        {tname} {{ {inner} }}\n    }}\n}}"
        )

    n = rng.randint(2, 4)
    rows = [[rng.randint(-9, 9) for _ in fields] for _ in range(n)]
    acc = list(rows[0])
    for r in rows[1:]:
        acc = [{"+": a + b, "-": a - b, "*": a * b}[sym] for a, b in zip(acc, r, strict=True)]

    def lit(r: list[int]) -> str:
        return f"{tname} {{ " + ", ".join(f"{fl}: {v}" for fl, v in zip(fields, r, strict=True)) + " }"

    struct = (
        f"#[derive(Debug, Clone, Copy, PartialEq)]\nstruct {tname} {{\n"
        + "".join(f"    {fl}: {ty},\n" for fl in fields)
        + "}"
    )
    user = (
        f"fn {fn}(items: &[{tname}]) -> Option<{tname}> {{\n    let (first, rest) = items.split_first()?;\n"
        f"    Some(rest.iter().fold(*first, |acc, &v| acc {sym} v))\n}}"
    )
    items = "[" + ", ".join(lit(r) for r in rows) + "]"
    tests = (
        f"#[test]\nfn folds_with_the_operator() {{\n    assert_eq!({fn}(&{items}), Some({lit(acc)}));\n"
        f"    assert_eq!({fn}(&[]), None);\n}}\n"
    )
    main = f'fn main() {{\n    println!("{{:?}}", {fn}(&{items}));\n}}'
    use = f"use std::ops::{trait};"

    def program(broken: bool) -> str:
        return "\n\n".join([use, struct, impl(broken), user, main]) + "\n"

    return Example(FAMILY, f"std_ops:{kind}", program(True), program(False), tests, tuple(sorted(codes)))


def generate(rng: random.Random) -> Example:
    """One draw: a user trait with injured impls (most often), an Iterator impl or an operator impl."""
    r = rng.random()
    if r < 0.55:
        ex = trait_world(rng)
    elif r < 0.8:
        ex = std_iterator(rng)
    else:
        ex = std_ops(rng)
    if rng.random() < 0.3:  # also as a library: the same items without main
        ex = Example(
            ex.family,
            ex.shape,
            _without_main(ex.broken),
            _without_main(ex.fixed),
            ex.tests,
            ex.codes,
            mode="lib",
        )
    return ex


def _without_main(program: str) -> str:
    return program[: program.index("fn main()")].rstrip() + "\n"
