"""Generator for the ``generics`` family: generic parameter errors.

Each shape builds a "kernel" (items plus ``main`` lines and a test); a draw holds one kernel or, as ``multi``,
two of different shapes. Shapes: a type parameter used but never declared (``undeclared``, E0425 in rustc
1.9x, formerly E0412), the wrong number of generic arguments (``arg_count``, E0107), an inner fn using the
outer item's parameter or ``Self`` (``inner_fn``, E0401), an unused type parameter that needs PhantomData
(``phantom``, E0392 plus the E0282 rustc adds at the struct literal) and a generic call whose type nothing
pins down (``annotation``, E0283). Expected values are computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from itertools import pairwise

from agent.generators import Example
from agent.generators._common import Kernel, kernels_example

FAMILY = "generics"

PARAMS = ["T", "U", "V", "Elem", "Item", "A", "X"]
WORDS = [
    "alpha",
    "bravo",
    "cargo",
    "delta",
    "echo",
    "fable",
    "gamma",
    "haven",
    "ionic",
    "joule",
    "karma",
    "lumen",
]


def ints(rng: random.Random, lo: int = 2, hi: int = 6) -> list[int]:
    return [rng.randint(-30, 60) for _ in range(rng.randint(lo, hi))]


def rl(xs: Sequence[object]) -> str:
    return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in xs) + "]"


def undeclared(rng: random.Random) -> Kernel:
    t = rng.choice(PARAMS)
    xs = ints(rng)
    ws = rng.sample(WORDS, 3)
    kind = rng.randrange(5)
    if kind == 0:
        fn = rng.choice(["last_two", "final_pair", "tail_pair"])
        sig = f"(xs: &[{t}]) -> Option<(&{t}, &{t})>"
        body = "    if xs.len() < 2 {\n        return None;\n    }\n    Some((&xs[xs.len() - 2], &xs[xs.len() - 1]))"
        exp = f"Some((&{xs[-2]}, &{xs[-1]}))"
        test = f"    assert_eq!({fn}(&{rl(xs)}), {exp});\n    assert_eq!({fn}(&[{rl(ws)[1:-1].split(', ')[0]}]), None);\n"
        main = f'println!("{{:?}}", {fn}(&{rl(xs)}));'
        bounds = ""
    elif kind == 1:
        fn = rng.choice(["repeat_each", "stutter", "echo_all"])
        n = rng.randint(1, 3)
        sig = f"(xs: &[{t}], n: usize) -> Vec<{t}>"
        bounds = f"{t}: Clone"
        body = (
            "    let mut out = Vec::new();\n    for x in xs {\n        for _ in 0..n {\n"
            "            out.push(x.clone());\n        }\n    }\n    out"
        )
        test = (
            f"    assert_eq!({fn}(&{rl(ws)}, {n}), vec!{rl([w for w in ws for _ in range(n)])});\n"
            f"    assert_eq!({fn}(&{rl(xs)}, 0), Vec::<i32>::new());\n"
        )
        main = f'println!("{{:?}}", {fn}(&{rl(xs)}, {n}));'
    elif kind == 2:
        fn = rng.choice(["count_where", "tally_if", "matching"])
        k = rng.randint(-10, 40)
        sig = f"(xs: &[{t}], pred: impl Fn(&{t}) -> bool) -> usize"
        body = "    xs.iter().filter(|x| pred(x)).count()"
        bounds = ""
        test = (
            f"    assert_eq!({fn}(&{rl(xs)}, |&x| x > {k}), {sum(x > k for x in xs)});\n"
            f"    assert_eq!({fn}(&{rl(ws)}, |w| w.len() == 5), {sum(len(w) == 5 for w in ws)});\n"
        )
        main = f'println!("{{}}", {fn}(&{rl(xs)}, |&x| x > {k}));'
    elif kind == 3:
        fn = rng.choice(["reversed", "backwards", "flipped"])
        sig = f"(xs: Vec<{t}>) -> Vec<{t}>"
        body = "    let mut v = xs;\n    v.reverse();\n    v"
        bounds = ""
        test = f"    assert_eq!({fn}(vec!{rl(xs)}), vec!{rl(xs[::-1])});\n    assert_eq!({fn}(vec!{rl(ws)}), vec!{rl(ws[::-1])});\n"
        main = f'println!("{{:?}}", {fn}(vec!{rl(xs)}));'
    else:
        s = rng.choice(["Holder", "Bag", "Bucket", "Tray"])
        push = rng.choice(["put", "add", "insert"])
        body_b = (
            f"struct {s}<{t}> {{\n    items: Vec<{t}>,\n}}\n\nimpl {s}<{t}> {{\n"
            f"    fn {push}(&mut self, x: {t}) -> usize {{\n        self.items.push(x);\n        self.items.len()\n    }}\n\n"
            f"    fn newest(&self) -> Option<&{t}> {{\n        self.items.last()\n    }}\n}}"
        )
        body_f = body_b.replace(f"impl {s}<{t}>", f"impl<{t}> {s}<{t}>")
        lines = "".join(f"    b.{push}({x});\n" for x in xs)
        test = (
            f"    let mut b = {s} {{ items: Vec::new() }};\n{lines}"
            f"    assert_eq!(b.{push}(7), {len(xs) + 1});\n    assert_eq!(b.newest(), Some(&7));\n"
        )
        tests = f"#[test]\nfn check_{s.lower()}() {{\n{test}}}\n"
        return Kernel(
            "undeclared",
            {"E0425"},
            body_b,
            body_f,
            [f"let mut b = {s} {{ items: Vec::new() }};", f'println!("{{}}", b.{push}("{ws[0]}"));'],
            tests,
        )
    where = bool(bounds) and rng.random() < 0.5

    def render(declared: bool) -> str:
        gen = f"<{t}{': ' + bounds.split(': ')[1] if bounds and not where else ''}>" if declared else ""
        if where:
            return f"fn {fn}{gen}{sig}\nwhere\n    {bounds},\n{{\n{body}\n}}"
        if bounds and not declared:
            return f"fn {fn}{sig}\nwhere\n    {bounds},\n{{\n{body}\n}}"
        return f"fn {fn}{gen}{sig} {{\n{body}\n}}"

    tests = f"#[test]\nfn check_{fn}() {{\n{test}}}\n"
    return Kernel("undeclared", {"E0425"}, render(False), render(True), [main], tests)


def arg_count(rng: random.Random) -> Kernel:
    kind = rng.randrange(5)
    xs = ints(rng, 2, 5)
    if kind == 0:
        s = rng.choice(["Pair", "Duo", "Twin"])
        fn = rng.choice(["spread", "gap", "distance"])
        a, b = rng.randint(-50, 50), rng.randint(-50, 50)
        items = (
            f"#[derive(Debug, Clone, Copy)]\nstruct {s}<T> {{\n    left: T,\n    right: T,\n}}\n\n"
            f"fn {fn}(p: &{s}<{{ARGS}}>) -> i64 {{\n    (p.left - p.right).abs()\n}}"
        )
        test = f"    assert_eq!({fn}(&{s} {{ left: {a}, right: {b} }}), {abs(a - b)});\n"
        return Kernel(
            "arg_count",
            {"E0107"},
            items.replace("{ARGS}", "i64, i64"),
            items.replace("{ARGS}", "i64"),
            [f'println!("{{}}", {fn}(&{s} {{ left: {a}, right: {b} }}));'],
            f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
        )
    if kind == 1:
        e = rng.choice(["Chain", "Stack", "Links"])
        fn = rng.choice(["total", "sum_chain", "fold_chain"])
        items = (
            f"enum {e}<T> {{\n    Node(T, Box<{e}<T>>),\n    End,\n}}\n\n"
            f"fn {fn}(c: &{{TY}}) -> i64 {{\n    match c {{\n        {e}::Node(v, rest) => v + {fn}(rest),\n"
            f"        {e}::End => 0,\n    }}\n}}\n\n"
            f"fn build(xs: &[i64]) -> {e}<i64> {{\n    xs.iter().rev().fold({e}::End, |acc, &x| {e}::Node(x, Box::new(acc)))\n}}"
        )
        test = f"    assert_eq!({fn}(&build(&{rl(xs)})), {sum(xs)});\n    assert_eq!({fn}(&build(&[])), 0);\n"
        return Kernel(
            "arg_count",
            {"E0107"},
            items.replace("{TY}", e),
            items.replace("{TY}", f"{e}<i64>"),
            [f'println!("{{}}", {fn}(&build(&{rl(xs)})));'],
            f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
        )
    if kind == 2:
        fn = rng.choice(["letter_counts", "tally_letters", "char_histogram"])
        word = rng.choice(WORDS)
        items = (
            f"fn {fn}(text: &str) -> HashMap<{{ARGS}}> {{\n    let mut m = HashMap::new();\n"
            f"    for c in text.chars().filter(|c| c.is_alphabetic()) {{\n        *m.entry(c).or_insert(0) += 1;\n"
            f"    }}\n    m\n}}"
        )
        c0 = word[0]
        test = (
            f"    let m = {fn}(\"{word}\");\n    assert_eq!(m[&'{c0}'], {word.count(c0)});\n"
            f"    assert_eq!(m.len(), {len(set(word))});\n"
        )
        return Kernel(
            "arg_count",
            {"E0107"},
            items.replace("{ARGS}", "char"),
            items.replace("{ARGS}", "char, usize"),
            [f'println!("{{:?}}", {fn}("{word}").len());'],
            f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
            uses_broken=["use std::collections::HashMap;"],
            uses_fixed=["use std::collections::HashMap;"],
        )
    if kind == 3:
        fn = rng.choice(["parse_range", "read_span", "bounds_of"])
        sep = rng.choice(["..", "-", ":"])
        a, b = sorted(rng.sample(range(0, 500), 2))
        items = (
            f"fn {fn}(s: &str) -> Result<{{ARGS}}> {{\n"
            f'    let (lo, hi) = s.split_once("{sep}").ok_or(format!("no \'{sep}\' in {{}}", s))?;\n'
            f'    let lo: u32 = lo.trim().parse().map_err(|_| format!("bad start {{}}", lo))?;\n'
            f'    let hi: u32 = hi.trim().parse().map_err(|_| format!("bad end {{}}", hi))?;\n'
            f'    if lo > hi {{\n        return Err(format!("{{}} > {{}}", lo, hi));\n    }}\n    Ok((lo, hi))\n}}'
        )
        test = (
            f'    assert_eq!({fn}("{a}{sep}{b}"), Ok(({a}, {b})));\n'
            f'    assert!({fn}("{b}{sep}{a}").is_err());\n    assert!({fn}("{a}").is_err());\n'
        )
        return Kernel(
            "arg_count",
            {"E0107"},
            items.replace("{ARGS}", "(u32, u32)"),
            items.replace("{ARGS}", "(u32, u32), String"),
            [f'println!("{{:?}}", {fn}("{a}{sep}{b}"));'],
            f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
        )
    fn = rng.choice(["parse_list", "numbers", "read_all"])
    user = rng.choice(["sum_line", "line_total", "add_up"])
    ty = rng.choice(["i64", "i32"])
    items = (
        f"fn {fn}<T: std::str::FromStr>(line: &str) -> Option<Vec<T>> {{\n"
        f"    line.split_whitespace().map(|p| p.parse().ok()).collect()\n}}\n\n"
        f"fn {user}(line: &str) -> {ty} {{\n    {fn}::<{{ARGS}}>(line).map(|v| v.iter().sum()).unwrap_or(-1)\n}}"
    )
    line = " ".join(map(str, xs))
    test = f'    assert_eq!({user}("{line}"), {sum(xs)});\n    assert_eq!({user}("1 x"), -1);\n'
    return Kernel(
        "arg_count",
        {"E0107"},
        items.replace("{ARGS}", f"{ty}, u8"),
        items.replace("{ARGS}", ty),
        [f'println!("{{}}", {user}("{line}"));'],
        f"#[test]\nfn check_{user}() {{\n{test}}}\n",
    )


def inner_fn(rng: random.Random) -> Kernel:
    kind = rng.randrange(4)
    t = rng.choice(PARAMS)
    xs = ints(rng, 3, 6)
    ws = rng.sample(WORDS, 3)
    if kind == 0:
        fn = rng.choice(["runs_of_equal", "repeats", "adjacent_dupes"])
        outer = f"fn {fn}<{t}: PartialEq>(xs: &[{t}]) -> usize {{\n"
        inner = f"    fn same{{G}}(a: &{t}, b: &{t}) -> bool {{\n        a == b\n    }}\n"
        rest = "    xs.windows(2).filter(|w| same(&w[0], &w[1])).count()\n}"
        xs = [rng.choice(xs[:2]) for _ in xs]
        exp = sum(a == b for a, b in pairwise(xs))
        test = f"    assert_eq!({fn}(&{rl(xs)}), {exp});\n    assert_eq!({fn}(&{rl(ws)}), 0);\n"
        g = f"<{t}: PartialEq>"
    elif kind == 1:
        fn = rng.choice(["biggest", "champion", "maximum"])
        outer = f"fn {fn}<{t}: PartialOrd + Copy>(xs: &[{t}]) -> Option<{t}> {{\n"
        inner = (
            f"    fn better{{G}}(a: {t}, b: {t}) -> {t} {{\n        if b > a {{ b }} else {{ a }}\n    }}\n"
        )
        rest = "    let mut it = xs.iter().copied();\n    let first = it.next()?;\n    Some(it.fold(first, better))\n}"
        test = f'    assert_eq!({fn}(&{rl(xs)}), Some({max(xs)}));\n    assert_eq!({fn}(&{rl(ws)}), Some("{max(ws)}"));\n'
        g = f"<{t}: PartialOrd + Copy>"
    elif kind == 2:
        fn = rng.choice(["bracketed", "wrapped", "quoted"])
        left, r = rng.choice([("<", ">"), ("[", "]"), ("(", ")"), ("{{", "}}")])
        outer = f"fn {fn}<{t}: std::fmt::Display>(xs: &[{t}]) -> Vec<String> {{\n"
        inner = f'    fn wrap{{G}}(x: &{t}) -> String {{\n        format!("{left}{{}}{r}", x)\n    }}\n'
        rest = "    xs.iter().map(wrap).collect()\n}"
        lr, rr = left.replace("{{", "{"), r.replace("}}", "}")
        test = f"    assert_eq!({fn}(&{rl(ws)}), vec!{rl([lr + w + rr for w in ws])});\n"
        g = f"<{t}: std::fmt::Display>"
    else:
        s = rng.choice(["Gauge", "Meter", "Dial"])
        m = rng.choice(["percent", "ratio_pct", "fill_pct"])
        cap = rng.randint(50, 200)
        val = rng.randint(0, cap)
        items_b = (
            f"struct {s} {{\n    value: u32,\n    max: u32,\n}}\n\nimpl {s} {{\n    fn {m}(&self) -> u32 {{\n"
            f"        fn scaled(g: &Self) -> u32 {{\n            g.value * 100 / g.max\n        }}\n"
            f"        if self.max == 0 {{ 0 }} else {{ scaled(self) }}\n    }}\n}}"
        )
        items_f = items_b.replace("fn scaled(g: &Self)", f"fn scaled(g: &{s})")
        test = (
            f"    assert_eq!({s} {{ value: {val}, max: {cap} }}.{m}(), {val * 100 // cap});\n"
            f"    assert_eq!({s} {{ value: 3, max: 0 }}.{m}(), 0);\n"
        )
        return Kernel(
            "inner_fn",
            {"E0401"},
            items_b,
            items_f,
            [f'println!("{{}}", {s} {{ value: {val}, max: {cap} }}.{m}());'],
            f"#[test]\nfn check_{m}() {{\n{test}}}\n",
        )
    broken = outer + inner.replace("{G}", "") + rest
    fixed = outer + inner.replace("{G}", g) + rest
    return Kernel(
        "inner_fn",
        {"E0401"},
        broken,
        fixed,
        [f'println!("{{:?}}", {fn}(&{rl(xs)}));'],
        f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
    )


def phantom(rng: random.Random) -> Kernel:
    t = rng.choice(["T", "U", "Unit", "Kind", "M"])
    marker = rng.choice(["_marker", "_kind", "_unit", "_phantom"])
    if rng.random() < 0.5:
        s = rng.choice(["Handle", "Key", "Ref", "Ticket"])
        store = rng.choice(["Arena", "Pool", "Slab", "Store"])
        add = rng.choice(["insert", "alloc", "push"])
        get = rng.choice(["get", "fetch", "lookup"])

        def render(fixed: bool) -> str:
            fld = f"\n    {marker}: PhantomData<{t}>," if fixed else ""
            init = f", {marker}: PhantomData" if fixed else ""
            return (
                f"struct {s}<{t}> {{\n    index: usize,{fld}\n}}\n\n"
                f"struct {store}<{t}> {{\n    slots: Vec<{t}>,\n}}\n\n"
                f"impl<{t}> {store}<{t}> {{\n    fn {add}(&mut self, value: {t}) -> {s}<{t}> {{\n"
                f"        self.slots.push(value);\n        {s} {{ index: self.slots.len() - 1{init} }}\n    }}\n\n"
                f"    fn {get}(&self, h: &{s}<{t}>) -> &{t} {{\n        &self.slots[h.index]\n    }}\n}}"
            )

        ws = rng.sample(WORDS, rng.randint(2, 4))
        k = rng.randrange(len(ws))
        test = (
            f"    let mut st = {store} {{ slots: Vec::new() }};\n"
            + "".join(f'    let h{i} = st.{add}("{w}");\n' for i, w in enumerate(ws))
            + f'    assert_eq!(*st.{get}(&h{k}), "{ws[k]}");\n    assert_eq!(h{len(ws) - 1}.index, {len(ws) - 1});\n'
        )
        main = [
            f"let mut st = {store} {{ slots: Vec::new() }};",
            f"let h = st.{add}({rng.randint(1, 99)});",
            f'println!("{{}}", st.{get}(&h));',
        ]
        return Kernel(
            "phantom",
            {"E0392", "E0282"},
            render(False),
            render(True),
            main,
            f"#[test]\nfn check_{store.lower()}() {{\n{test}}}\n",
            uses_broken=["use std::marker::PhantomData;"],
            uses_fixed=["use std::marker::PhantomData;"],
        )
    q = rng.choice(["Length", "Mass", "Amount", "Quantity"])
    units = rng.sample(["Meters", "Feet", "Grams", "Pounds", "Liters", "Euros"], 2)
    fn = rng.choice(["plus", "combine", "add_up"])

    def render2(fixed: bool) -> str:
        fld = f"\n    {marker}: PhantomData<{t}>," if fixed else ""
        init = f", {marker}: PhantomData" if fixed else ""
        return (
            f"struct {units[0]};\nstruct {units[1]};\n\n#[derive(Debug)]\nstruct {q}<{t}> {{\n    value: f64,{fld}\n}}\n\n"
            f"fn new_{q.lower()}<{t}>(value: f64) -> {q}<{t}> {{\n    {q} {{ value{init} }}\n}}\n\n"
            f"fn {fn}<{t}>(a: &{q}<{t}>, b: &{q}<{t}>) -> {q}<{t}> {{\n    new_{q.lower()}(a.value + b.value)\n}}"
        )

    a, b = rng.randint(1, 50) / 4, rng.randint(1, 50) / 4
    test = (
        f"    let a: {q}<{units[0]}> = new_{q.lower()}({a});\n    let b = new_{q.lower()}({b});\n"
        f"    assert_eq!({fn}(&a, &b).value, {a + b});\n"
    )
    main = [f"let a: {q}<{units[1]}> = new_{q.lower()}({a});", f'println!("{{}}", {fn}(&a, &a).value);']
    return Kernel(
        "phantom",
        {"E0392", "E0282"},
        render2(False),
        render2(True),
        main,
        f"#[test]\nfn check_{fn}() {{\n{test}}}\n",
        uses_broken=["use std::marker::PhantomData;"],
        uses_fixed=["use std::marker::PhantomData;"],
    )


def annotation(rng: random.Random) -> Kernel:
    kind = rng.randrange(3)
    ty = rng.choice(["i64", "i32", "u32", "u64"])
    if kind == 0:
        fn = rng.choice(["parse_or_zero", "read_or_default", "lenient_parse"])
        user = rng.choice(["echo_number", "normalised", "cleaned"])
        items = (
            f"fn {fn}<T: std::str::FromStr + Default>(s: &str) -> T {{\n    s.trim().parse().unwrap_or_default()\n}}\n\n"
            f'fn {user}(s: &str) -> String {{\n    let v = {fn}{{TF}}(s);\n    format!("<{{:?}}>", v)\n}}'
        )
        n = rng.randint(0, 999)
        test = f'    assert_eq!({user}(" {n} "), "<{n}>");\n    assert_eq!({user}("x"), "<0>");\n'
        main = f'println!("{{}}", {user}("{n}"));'
    elif kind == 1:
        fn = rng.choice(["zeros", "blank_row", "filled"])
        user = rng.choice(["row_text", "render_row", "show_row"])
        items = (
            f"fn {fn}<T: Default + Clone>(n: usize) -> Vec<T> {{\n    vec![T::default(); n]\n}}\n\n"
            f'fn {user}(n: usize) -> String {{\n    let row = {fn}{{TF}}(n);\n    format!("{{:?}}", row)\n}}'
        )
        n = rng.randint(0, 5)
        test = f'    assert_eq!({user}({n}), "{rl([0] * n)}");\n'
        main = f'println!("{{}}", {user}({n}));'
    else:
        fn = rng.choice(["biggest_or_default", "max_or_zero", "top_or_default"])
        user = rng.choice(["describe_max", "max_text", "peak_label"])
        items = (
            f"fn {fn}<T: Ord + Copy + Default>(xs: &[T]) -> T {{\n    xs.iter().copied().max().unwrap_or_default()\n}}\n\n"
            f'fn {user}() -> String {{\n    let best = {fn}{{TF}}(&[]);\n    format!("max={{:?}}", best)\n}}'
        )
        test = f'    assert_eq!({user}(), "max=0");\n    assert_eq!({fn}(&[3, 9, 2]), 9);\n'
        main = f'println!("{{}}", {user}());'
    return Kernel(
        "annotation",
        {"E0283"},
        items.replace("{TF}", ""),
        items.replace("{TF}", f"::<{ty}>"),
        [main],
        f"#[test]\nfn check_{user}() {{\n{test}}}\n",
    )


SHAPES: list[Callable[[random.Random], Kernel]] = [undeclared, arg_count, inner_fn, phantom, annotation]
WEIGHTS = [3, 3, 2, 2, 1]


def generate(rng: random.Random) -> Example:
    """One draw: one kernel (or two of different shapes, ``multi``) as a bin or lib program."""
    first = rng.choices(SHAPES, WEIGHTS)[0]
    picks = [first]
    if rng.random() < 0.25:
        picks.append(rng.choice([s for s in SHAPES if s is not first]))
    kernels = [make(rng) for make in picks]
    mode = "lib" if rng.random() < 0.3 else "bin"

    return kernels_example(FAMILY, kernels, mode)
