"""Generator for the ``traits`` family: trait bounds and derives (E0277, E0599, E0369).

Each shape builds a "kernel" (a type or generic function plus the code that needs a trait); a draw holds one
kernel or, as ``multi``, two kernels of different shapes in one program. Shapes: a struct lacking a derive
its use needs (``derive_missing``: Debug, PartialEq, Clone, Ord, Hash, Default, PartialOrd), a generic
function lacking a bound (``generic_bound``), a trait method whose trait is not imported (``missing_use``),
an operator or Display used on a newtype without the impl (``operator_impl``) and a user trait not
implemented for a type passed to a bounded function (``trait_impl``). Expected values are computed here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from agent.generators import Example
from agent.generators._common import Kernel, kernels_example

FAMILY = "traits"

TYPE_NAMES = [
    "Ticket",
    "Sample",
    "Visit",
    "Entry",
    "Badge",
    "Slot",
    "Parcel",
    "Reading",
    "Vote",
    "Lease",
    "Patch",
    "Shift",
    "Quote",
    "Trail",
    "Tile",
    "Guest",
]
FIELD_POOL = [
    ("id", "u32"),
    ("name", "String"),
    ("rank", "i64"),
    ("active", "bool"),
    ("code", "char"),
    ("level", "u8"),
    ("city", "String"),
    ("weight", "u32"),
    ("delta", "i64"),
]
WORDS = ["oak", "ash", "elm", "fir", "yew", "bay", "ivy", "rye", "fig", "kiwi", "lime", "plum"]
DERIVE_ORDER = ["Debug", "Clone", "Default", "PartialEq", "Eq", "PartialOrd", "Ord", "Hash"]


class Names:
    """Draws type names without repeats inside one program (two kernels must not clash)."""

    def __init__(self, rng: random.Random):
        self.pool = rng.sample(TYPE_NAMES, len(TYPE_NAMES))

    def take(self) -> str:
        return self.pool.pop()


def draw_value(rng: random.Random, ty: str) -> object:
    if ty == "String":
        return rng.choice(WORDS)
    if ty == "bool":
        return rng.random() < 0.5
    if ty == "char":
        return rng.choice("abcdxyz")
    if ty == "i64":
        return rng.randint(-9, 9)
    return rng.randint(0, 9)


def lit(ty: str, v: object) -> str:
    if ty == "String":
        return f'"{v}".to_string()'
    if ty == "bool":
        return "true" if v else "false"
    if ty == "char":
        return f"'{v}'"
    return str(v)


def debug(ty: str, v: object) -> str:
    if ty == "String":
        return f'"{v}"'
    if ty == "bool":
        return "true" if v else "false"
    if ty == "char":
        return f"'{v}'"
    return str(v)


def derives(ds: set[str]) -> str:
    return f"#[derive({', '.join(d for d in DERIVE_ORDER if d in ds)})]\n" if ds else ""


# op -> (derives it needs, code when they are missing)
DERIVE_OPS = {
    "debug": ({"Debug"}, "E0277"),
    "eq": ({"PartialEq"}, "E0369"),
    "clone": ({"Clone"}, "E0599"),
    "sort": ({"PartialEq", "Eq", "PartialOrd", "Ord"}, "E0277"),
    "hashset": ({"PartialEq", "Eq", "Hash"}, "E0277"),
    "default": ({"Default"}, "E0599"),
    "lt": ({"PartialEq", "PartialOrd"}, "E0369"),
    "max": ({"PartialEq", "Eq", "PartialOrd", "Ord"}, "E0277"),
}


def derive_missing(rng: random.Random, names: Names) -> Kernel:
    op = rng.choice(sorted(DERIVE_OPS))
    need, code = DERIVE_OPS[op]
    sname = names.take()
    fields = rng.sample(FIELD_POOL, rng.randint(1, 3))
    struct_fields = "".join(f"    {f}: {t},\n" for f, t in fields)
    extras = {d for d in ("Debug", "Clone", "Default") if rng.random() < 0.4} - need
    partial = set()
    if op in ("sort", "max"):
        partial = rng.choice([set(), {"PartialEq"}, {"PartialEq", "Eq"}, {"PartialEq", "PartialOrd"}])
    elif op == "hashset":
        partial = rng.choice([set(), {"PartialEq"}, {"PartialEq", "Eq"}, {"Hash"}])
    broken_derives, fixed_derives = extras | partial, extras | partial | need

    def struct(ds: set[str]) -> str:
        return derives(ds) + f"struct {sname} {{\n{struct_fields}}}"

    n = rng.randint(2, 4)
    rows = [tuple(draw_value(rng, t) for _, t in fields) for _ in range(n)]
    if op in ("hashset", "eq") and n > 1:
        rows[-1] = rows[0]  # a duplicate makes dedup and equality observable

    def build(row: tuple[object, ...]) -> str:
        return (
            f"{sname} {{ "
            + ", ".join(f"{f}: {lit(t, v)}" for (f, t), v in zip(fields, row, strict=True))
            + " }"
        )

    items = "vec![" + ", ".join(build(r) for r in rows) + "]"
    f0, t0 = fields[0]
    uses: list[str] = []

    def key(row: tuple[object, ...]) -> tuple[object, ...]:
        return row

    if op == "debug":
        fn = rng.choice(["describe", "dump", "as_text"])
        body = f'fn {fn}(x: &{sname}) -> String {{\n    format!("{{:?}}", x)\n}}'
        expect = (
            f"{sname} {{ "
            + ", ".join(f"{f}: {debug(t, v)}" for (f, t), v in zip(fields, rows[0], strict=True))
            + " }"
        )
        expect = expect.replace("\\", "\\\\").replace('"', '\\"')
        test = f'    let xs = {items};\n    assert_eq!({fn}(&xs[0]), "{expect}");\n'
        main = f'println!("{{}}", {fn}(&{build(rows[0])}));'
    elif op == "eq":
        fn = rng.choice(["count_matching", "occurrences", "how_many"])
        body = (
            f"fn {fn}(xs: &[{sname}], probe: &{sname}) -> usize {{\n"
            f"    xs.iter().filter(|x| *x == probe).count()\n}}"
        )
        test = (
            f"    let xs = {items};\n    assert_eq!({fn}(&xs, &xs[0]), {sum(r == rows[0] for r in rows)});\n"
        )
        main = f'println!("{{}}", {fn}(&{items}, &{build(rows[0])}));'
    elif op == "clone":
        fn = rng.choice(["repeated", "copies_of", "replicate"])
        body = (
            f"fn {fn}(x: {sname}, n: usize) -> Vec<{sname}> {{\n    let mut out = Vec::with_capacity(n);\n"
            f"    for _ in 0..n {{\n        out.push(x.clone());\n    }}\n    out\n}}"
        )
        k = rng.randint(1, 5)
        test = (
            f"    let xs = {fn}({build(rows[0])}, {k});\n    assert_eq!(xs.len(), {k});\n"
            f"    assert_eq!(xs[{k - 1}].{f0}, {lit(t0, rows[0][0])});\n"
        )
        main = f'println!("{{}}", {fn}({build(rows[0])}, 2).len());'
    elif op == "sort":
        fn = rng.choice(["sorted", "in_order", "ranked"])
        body = f"fn {fn}(mut xs: Vec<{sname}>) -> Vec<{sname}> {{\n    xs.sort();\n    xs\n}}"
        exp = "vec![" + ", ".join(build(r) for r in sorted(rows, key=key)) + "]"
        test = f"    assert!({fn}({items}) == {exp});\n"
        main = f'println!("{{}}", {fn}({items}).len());'
    elif op == "hashset":
        fn = rng.choice(["distinct", "distinct_count", "different"])
        uses.append("use std::collections::HashSet;")
        body = (
            f"fn {fn}(xs: Vec<{sname}>) -> usize {{\n    let set: HashSet<{sname}> = xs.into_iter().collect();\n"
            f"    set.len()\n}}"
        )
        test = f"    assert_eq!({fn}({items}), {len(set(rows))});\n"
        main = f'println!("{{}}", {fn}({items}));'
    elif op == "default":
        fn = rng.choice(["reset", "clear", "wipe"])
        body = f"fn {fn}(x: &mut {sname}) {{\n    *x = {sname}::default();\n}}"
        zero = {"String": "String::new()", "bool": "false", "char": "'\\0'"}
        test = f"    let mut x = {build(rows[0])};\n    {fn}(&mut x);\n" + "".join(
            f"    assert_eq!(x.{f}, {zero.get(t, '0')});\n" for f, t in fields
        )
        main = f"let mut x = {build(rows[0])};\n    {fn}(&mut x);"
    elif op == "lt":
        fn = rng.choice(["comes_before", "precedes", "is_less"])
        body = f"fn {fn}(a: &{sname}, b: &{sname}) -> bool {{\n    a < b\n}}"
        a, b = rows[0], rows[1]
        test = (
            f"    let xs = {items};\n    assert_eq!({fn}(&xs[0], &xs[1]), {str(key(a) < key(b)).lower()});\n"
            f"    assert_eq!({fn}(&xs[1], &xs[0]), {str(key(b) < key(a)).lower()});\n"
            f"    assert!(!{fn}(&xs[0], &xs[0]));\n"
        )
        main = f'println!("{{}}", {fn}(&{build(a)}, &{build(b)}));'
    else:  # max
        fn = rng.choice(["best", "largest", "top"])
        body = f"fn {fn}(xs: &[{sname}]) -> Option<&{sname}> {{\n    xs.iter().max()\n}}"
        best = max(range(n), key=lambda i: key(rows[i]))
        test = (
            f"    let xs = {items};\n    assert!({fn}(&xs) == Some(&xs[{best}]));\n"
            f"    assert!({fn}(&[]).is_none());\n"
        )
        main = f'println!("{{}}", {fn}(&{items}).is_some());'
    tests = f"#[test]\nfn check_{fn}() {{\n{test}}}\n"
    return Kernel(
        "derive_missing",
        {code},
        struct(broken_derives) + "\n\n" + body,
        struct(fixed_derives) + "\n\n" + body,
        [main],
        tests,
        uses,
        uses,
    )


# op -> (bound to add, code when missing, fn name choices)
GENERIC_OPS = {
    "display": ("std::fmt::Display", "E0277"),
    "debug": ("std::fmt::Debug", "E0277"),
    "gt": ("PartialOrd", "E0369"),
    "eq": ("PartialEq", "E0369"),
    "add": ("std::ops::Add<Output = T>", "E0369"),
    "clone": ("Clone", "E0599"),
    "default": ("Default", "E0599"),
    "hash": ("std::hash::Hash + Eq", "E0277"),
    "sort": ("Ord", "E0277"),
}


def generic_bound(rng: random.Random, names: Names) -> Kernel:
    op = rng.choice(sorted(GENERIC_OPS))
    bound, code = GENERIC_OPS[op]
    tp = "T"
    where = rng.random() < 0.4
    uses: list[str] = []
    ints = [rng.randint(-20, 40) for _ in range(rng.randint(3, 6))]
    il = "[" + ", ".join(map(str, ints)) + "]"
    words = rng.sample(WORDS, 3)
    wl = "[" + ", ".join(f'"{w}"' for w in words) + "]"

    def sig(name: str, params: str, ret: str, base: str, body: str) -> tuple[str, str]:
        def one(b: str) -> str:
            bs = " + ".join(x for x in (base, b) if x)
            if where and bs:
                return f"fn {name}<{tp}>({params}) -> {ret}\nwhere\n    {tp}: {bs},\n{{\n{body}\n}}"
            return f"fn {name}<{tp}{': ' + bs if bs else ''}>({params}) -> {ret} {{\n{body}\n}}"

        return one(""), one(bound)

    if op == "display":
        fn = rng.choice(["labelled", "tagged", "with_caption"])
        sep = rng.choice([": ", " = ", " -> "])
        b, f = sig(fn, "label: &str, value: T", "String", "", f'    format!("{{}}{sep}{{}}", label, value)')
        test = (
            f'    assert_eq!({fn}("n", {ints[0]}), "n{sep}{ints[0]}");\n'
            f'    assert_eq!({fn}("w", "{words[0]}"), "w{sep}{words[0]}");\n'
        )
        main = f'println!("{{}}", {fn}("x", 1.5));'
    elif op == "debug":
        fn = rng.choice(["dump_all", "render_debug", "listing"])
        b, f = sig(fn, "xs: &[T]", "String", "", '    format!("{} items: {:?}", xs.len(), xs)')
        exp = f"{len(ints)} items: [" + ", ".join(map(str, ints)) + "]"
        test = f'    assert_eq!({fn}(&{il}), "{exp}");\n'
        main = f'println!("{{}}", {fn}(&{wl}));'
    elif op == "gt":
        fn = rng.choice(["count_above", "num_over", "exceeding"])
        b, f = sig(fn, "xs: &[T], limit: T", "usize", "Copy", "    xs.iter().filter(|&&x| x > limit).count()")
        k = rng.randint(-5, 30)
        test = (
            f"    assert_eq!({fn}(&{il}, {k}), {sum(x > k for x in ints)});\n"
            f'    assert_eq!({fn}(&{wl}, "{words[1]}"), {sum(w > words[1] for w in words)});\n'
        )
        main = f'println!("{{}}", {fn}(&{il}, {k}));'
    elif op == "eq":
        fn = rng.choice(["index_of", "locate", "position_in"])
        b, f = sig(fn, "xs: &[T], target: &T", "Option<usize>", "", "    xs.iter().position(|x| x == target)")
        probe = rng.choice(ints)
        test = (
            f"    assert_eq!({fn}(&{il}, &{probe}), Some({ints.index(probe)}));\n"
            f"    assert_eq!({fn}(&{il}, &100), None);\n"
            f'    assert_eq!({fn}(&{wl}, &"{words[2]}"), Some(2));\n'
        )
        main = f'println!("{{:?}}", {fn}(&{il}, &{probe}));'
    elif op == "add":
        fn = rng.choice(["fold_sum", "total_of", "sum_from"])
        b, f = sig(
            fn,
            "xs: &[T], start: T",
            "T",
            "Copy",
            "    let mut acc = start;\n    for &x in xs {\n        acc = acc + x;\n    }\n    acc",
        )
        s0 = rng.randint(0, 9)
        test = f"    assert_eq!({fn}(&{il}, {s0}), {sum(ints) + s0});\n    assert_eq!({fn}(&[0.5, 0.25], 1.0), 1.75);\n"
        main = f'println!("{{}}", {fn}(&{il}, {s0}));'
    elif op == "clone":
        fn = rng.choice(["pair_up", "twin", "doubled"])
        b, f = sig(fn, "x: T", "(T, T)", "", "    (x.clone(), x)")
        test = (
            f'    assert_eq!({fn}(String::from("{words[0]}")), ("{words[0]}".to_string(), "{words[0]}".to_string()));\n'
            f"    assert_eq!({fn}({ints[0]}), ({ints[0]}, {ints[0]}));\n"
        )
        main = f'println!("{{:?}}", {fn}({ints[0]}));'
    elif op == "default":
        fn = rng.choice(["or_fallback", "value_or_default", "unwrap_or_zero"])
        b, f = sig(
            fn,
            "x: Option<T>",
            "T",
            "",
            "    match x {\n        Some(v) => v,\n        None => T::default(),\n    }",
        )
        test = (
            f"    assert_eq!({fn}(Some({ints[0]})), {ints[0]});\n    assert_eq!({fn}::<i32>(None), 0);\n"
            f'    assert_eq!({fn}::<String>(None), "");\n'
        )
        main = f'println!("{{}}", {fn}(Some({ints[0]})));'
    elif op == "hash":
        fn = rng.choice(["unique_count", "distinct_values", "how_many_distinct"])
        uses.append("use std::collections::HashSet;")
        b, f = sig(
            fn,
            "xs: Vec<T>",
            "usize",
            "",
            "    let set: HashSet<T> = xs.into_iter().collect();\n    set.len()",
        )
        test = (
            f"    assert_eq!({fn}(vec!{il}), {len(set(ints))});\n"
            f'    assert_eq!({fn}(vec!["{words[0]}", "{words[0]}", "{words[1]}"]), 2);\n'
        )
        main = f'println!("{{}}", {fn}(vec!{il}));'
    else:  # sort
        fn = rng.choice(["sorted_copy", "ordered", "ascending"])
        b, f = sig(fn, "xs: &[T]", "Vec<T>", "Clone", "    let mut v = xs.to_vec();\n    v.sort();\n    v")
        test = (
            f"    assert_eq!({fn}(&{il}), vec!{sorted(ints)});\n"
            f"    assert_eq!({fn}(&{wl}), vec!{sorted(words)});\n".replace("'", '"')
        )
        main = f'println!("{{:?}}", {fn}(&{il}));'
    tests = f"#[test]\nfn check_{fn}() {{\n{test}}}\n"
    return Kernel("generic_bound", {code}, b, f, [main], tests, uses, uses)


def missing_use(rng: random.Random, names: Names) -> Kernel:
    op = rng.choice(["fmt_write", "io_write", "io_read", "bufread", "hash", "from_str"])
    words = rng.sample(WORDS, rng.randint(2, 4))
    wl = "[" + ", ".join(f'"{w}"' for w in words) + "]"
    if op == "fmt_write":
        fn = rng.choice(["numbered", "as_list", "bullet_lines"])
        mark = rng.choice(["-", "*", ">"])
        use = "use std::fmt::Write;"
        body = (
            f"fn {fn}(items: &[&str]) -> String {{\n    let mut out = String::new();\n"
            f"    for (i, it) in items.iter().enumerate() {{\n"
            f'        writeln!(out, "{mark} {{}}. {{}}", i + 1, it).unwrap();\n    }}\n    out\n}}'
        )
        exp = "".join(f"{mark} {i + 1}. {w}\\n" for i, w in enumerate(words))
        test = f'    assert_eq!({fn}(&{wl}), "{exp}");\n'
        main = f'print!("{{}}", {fn}(&{wl}));'
    elif op == "io_write":
        fn = rng.choice(["frame", "encode", "pack"])
        use = "use std::io::Write;"
        tag = rng.randint(1, 200)
        body = (
            f"fn {fn}(payload: &str) -> std::io::Result<Vec<u8>> {{\n    let mut buf = Vec::new();\n"
            f"    buf.write_all(&[{tag}, payload.len() as u8])?;\n    buf.write_all(payload.as_bytes())?;\n"
            f"    Ok(buf)\n}}"
        )
        w = words[0]
        exp = ", ".join(str(x) for x in [tag, len(w), *w.encode()])
        test = f'    assert_eq!({fn}("{w}").unwrap(), vec![{exp}]);\n'
        main = f'println!("{{:?}}", {fn}("{w}"));'
    elif op == "io_read":
        fn = rng.choice(["slurp", "read_all", "drain_text"])
        use = "use std::io::Read;"
        body = (
            f"fn {fn}(mut src: &[u8]) -> String {{\n    let mut s = String::new();\n"
            f"    src.read_to_string(&mut s).unwrap();\n    s.trim().to_uppercase()\n}}"
        )
        text = " ".join(words)
        test = f'    assert_eq!({fn}(b"  {text}\\n"), "{text.upper()}");\n'
        main = f'println!("{{}}", {fn}(b"{text}"));'
    elif op == "bufread":
        fn = rng.choice(["longest_line", "widest_row", "max_line_len"])
        use = "use std::io::BufRead;"
        body = (
            f"fn {fn}(data: &[u8]) -> usize {{\n"
            f"    data.lines().map(|l| l.map(|s| s.len()).unwrap_or(0)).max().unwrap_or(0)\n}}"
        )
        text = "\\n".join(words)
        test = (
            f'    assert_eq!({fn}(b"{text}"), {max(len(w) for w in words)});\n    assert_eq!({fn}(b""), 0);\n'
        )
        main = f'println!("{{}}", {fn}(b"{text}"));'
    elif op == "hash":
        fn = rng.choice(["fingerprint", "digest", "checksum"])
        use = "use std::hash::{Hash, Hasher};"
        body = (
            f"fn {fn}(parts: &[&str]) -> u64 {{\n"
            f"    let mut h = std::collections::hash_map::DefaultHasher::new();\n"
            f"    for p in parts {{\n        p.hash(&mut h);\n    }}\n    h.finish()\n}}"
        )
        test = (
            f"    assert_eq!({fn}(&{wl}), {fn}(&{wl}));\n"
            f'    assert_ne!({fn}(&["{words[0]}"]), {fn}(&["{words[1]}"]));\n'
        )
        main = f'println!("{{}}", {fn}(&{wl}));'
    else:
        fn = rng.choice(["parse_all", "numbers_in", "read_ints"])
        ty = rng.choice(["u32", "i64", "u16"])
        use = "use std::str::FromStr;"
        body = (
            f"fn {fn}(line: &str) -> Vec<{ty}> {{\n"
            f"    line.split(',').filter_map(|p| {ty}::from_str(p.trim()).ok()).collect()\n}}"
        )
        nums = [rng.randint(0, 999) for _ in range(3)]
        line = f"{nums[0]}, {words[0]}, {nums[1]},{nums[2]}"
        test = f'    assert_eq!({fn}("{line}"), vec![{", ".join(map(str, nums))}]);\n'
        main = f'println!("{{:?}}", {fn}("{line}"));'
    tests = f"#[test]\nfn check_{fn}() {{\n{test}}}\n"
    return Kernel("missing_use", {"E0599"}, body, body, [main], tests, [], [use])


OPS = [("+", "Add", "add"), ("-", "Sub", "sub"), ("*", "Mul", "mul")]
NEWTYPES = [("Meters", "f64"), ("Cents", "i64"), ("Points", "i32"), ("Seconds", "u64"), ("Grams", "u32")]


def operator_impl(rng: random.Random, names: Names) -> Kernel:
    tname, inner = rng.choice(NEWTYPES)
    a, b = rng.randint(20, 90), rng.randint(1, 19)
    if inner == "f64":
        la, lb = f"{a}.0", f"{b}.0"
    else:
        la, lb = str(a), str(b)
    if rng.random() < 0.6:
        sym, trait, method = rng.choice(OPS)
        fn = rng.choice(["combine", "apply", "merge"])
        derive = "#[derive(Debug, Clone, Copy, PartialEq)]\n"
        struct = f"{derive}struct {tname}({inner});"
        imp = (
            f"impl {trait} for {tname} {{\n    type Output = {tname};\n"
            f"    fn {method}(self, other: {tname}) -> {tname} {{\n        {tname}(self.0 {sym} other.0)\n    }}\n}}"
        )
        body = f"fn {fn}(a: {tname}, b: {tname}) -> {tname} {{\n    a {sym} b\n}}"
        val = {"+": a + b, "-": a - b, "*": a * b}[sym]
        lv = f"{val}.0" if inner == "f64" else str(val)
        test = f"    assert_eq!({fn}({tname}({la}), {tname}({lb})), {tname}({lv}));\n"
        main = f'println!("{{:?}}", {fn}({tname}({la}), {tname}({lb})));'
        uses = [f"use std::ops::{trait};"]
        tests = f"#[test]\nfn check_{fn}_{method}() {{\n{test}}}\n"
        return Kernel(
            "operator_impl",
            {"E0369"},
            f"{struct}\n\n{body}",
            f"{struct}\n\n{imp}\n\n{body}",
            [main],
            tests,
            [],
            uses,
        )
    unit = {"Meters": "m", "Cents": "c", "Points": "pt", "Seconds": "s", "Grams": "g"}[tname]
    struct = f"struct {tname}({inner});"
    imp = (
        f"impl std::fmt::Display for {tname} {{\n"
        f"    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {{\n"
        f'        write!(f, "{{}}{unit}", self.0)\n    }}\n}}'
    )
    fn = rng.choice(["labels", "captions", "as_strings"])
    if rng.random() < 0.5:
        body = (
            f"fn {fn}(xs: &[{tname}]) -> Vec<String> {{\n    xs.iter().map(|x| x.to_string()).collect()\n}}"
        )
        code = "E0599"
    else:
        body = f'fn {fn}(xs: &[{tname}]) -> Vec<String> {{\n    xs.iter().map(|x| format!("{{}}", x)).collect()\n}}'
        code = "E0277"
    va, vb = (f"{a}", f"{b}")
    test = f'    assert_eq!({fn}(&[{tname}({la}), {tname}({lb})]), vec!["{va}{unit}", "{vb}{unit}"]);\n'
    main = f'println!("{{:?}}", {fn}(&[{tname}({la})]));'
    tests = f"#[test]\nfn check_{fn}() {{\n{test}}}\n"
    return Kernel(
        "operator_impl", {code}, f"{struct}\n\n{body}", f"{struct}\n\n{imp}\n\n{body}", [main], tests
    )


TRAITS = [
    ("Priced", "price", "u32"),
    ("Weighted", "weight", "u32"),
    ("Scored", "score", "i64"),
    ("Measured", "area", "u64"),
]


def trait_impl(rng: random.Random, names: Names) -> Kernel:
    trait, method, ty = rng.choice(TRAITS)
    a_name, b_name = names.take(), names.take()
    ka, kb = rng.randint(2, 9), rng.randint(2, 9)
    fn = rng.choice(["total", "sum_all", "grand"])
    generic = rng.random() < 0.5
    head = (
        f"trait {trait} {{\n    fn {method}(&self) -> {ty};\n}}\n\n"
        f"struct {a_name} {{\n    units: {ty},\n}}\n\nstruct {b_name} {{\n    units: {ty},\n}}\n\n"
        f"impl {trait} for {a_name} {{\n    fn {method}(&self) -> {ty} {{\n        self.units * {ka}\n    }}\n}}"
    )
    imp_b = f"impl {trait} for {b_name} {{\n    fn {method}(&self) -> {ty} {{\n        self.units * {kb}\n    }}\n}}"
    ua, ub = rng.randint(1, 20), rng.randint(1, 20)
    both = f"{fn}_of_{a_name.lower()}_{b_name.lower()}"
    if generic:
        body = (
            f"fn {fn}<A: {trait}, B: {trait}>(a: &A, b: &B) -> {ty} {{\n    a.{method}() + b.{method}()\n}}"
        )
        inner = f"{fn}(&{a_name} {{ units: ua }}, &{b_name} {{ units: ub }})"
    else:
        body = f"fn {fn}(items: &[&dyn {trait}]) -> {ty} {{\n    items.iter().map(|i| i.{method}()).sum()\n}}"
        inner = f"{fn}(&[&{a_name} {{ units: ua }}, &{b_name} {{ units: ub }}])"
    # the call that needs the missing impl lives in the program itself, not only in main or the tests
    body += f"\n\nfn {both}(ua: {ty}, ub: {ty}) -> {ty} {{\n    {inner}\n}}"
    call = f"{both}({ua}, {ub})"
    expect = ua * ka + ub * kb
    tests = f"#[test]\nfn check_{fn}_{method}() {{\n    assert_eq!({call}, {expect});\n}}\n"
    return Kernel(
        "trait_impl",
        {"E0277"},
        f"{head}\n\n{body}",
        f"{head}\n\n{imp_b}\n\n{body}",
        [f'println!("{{}}", {call});'],
        tests,
    )


SHAPES: list[Callable[[random.Random, Names], Kernel]] = [
    derive_missing,
    generic_bound,
    missing_use,
    operator_impl,
    trait_impl,
]
WEIGHTS = [3, 3, 2, 1, 1]


def generate(rng: random.Random) -> Example:
    """One draw: one kernel (or two of different shapes, ``multi``) as a bin or lib program."""
    names = Names(rng)
    first = rng.choices(SHAPES, WEIGHTS)[0]
    picks = [first]
    if rng.random() < 0.25:
        picks.append(rng.choice([s for s in SHAPES if s is not first and s is not operator_impl]))
    kernels = [make(rng, names) for make in picks]
    mode = "lib" if rng.random() < 0.3 else "bin"

    return kernels_example(FAMILY, kernels, mode)
