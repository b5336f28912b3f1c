"""Generator for the ``fields`` family: struct and enum field errors.

Shapes: a record type with free functions (``record_fns``), the same record behind methods (``record_methods``),
an enum with struct variants (``enum_variants``) and a struct of two inner structs (``nested_named``, or
``nested_tuple`` where the inner struct is a tuple struct read through names). Errors are injected at sites of the program: a literal
(E0560 unknown field, E0063 missing field), a field access (E0609), a destructuring pattern (E0026 unknown
field, E0027 missing field without ``..``) and an enum-variant literal (E0559); ``multi`` draws injure two
independent sites at once. Expected test values are computed here, so the tests pin the real behaviour.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.generators import Example
from agent.generators.moves import WORDS

FAMILY = "fields"

STRUCTS = [
    "Item",
    "Order",
    "Sensor",
    "Player",
    "Ticket",
    "Parcel",
    "Invoice",
    "Badge",
    "Route",
    "Shelf",
    "Crate",
    "Lesson",
    "Recipe",
    "Vessel",
    "Tenant",
    "Booking",
]
NUM_FIELDS = [
    "qty",
    "count",
    "weight",
    "score",
    "level",
    "size",
    "stock",
    "hits",
    "depth",
    "speed",
    "rank",
    "votes",
    "floor",
    "seats",
    "grams",
    "points",
]
STR_FIELDS = ["name", "label", "title", "owner", "city", "tag", "code", "note", "region", "author"]
BOOL_FIELDS = ["active", "done", "open", "valid", "paid", "hidden", "urgent", "shipped"]
INT_TYPES = ["u32", "i64", "u16", "usize", "i32", "u64"]
KEYWORDS = {
    "as",
    "box",
    "do",
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
    "yield",
    "try",
    "dyn",
    "enum",
    "impl",
    "priv",
    "true",
}


def typo(rng: random.Random, name: str, taken: set[str]) -> str:
    """A plausible misspelling of ``name`` that is no existing field and not a keyword."""
    for _ in range(50):
        kind = rng.randrange(4)
        if kind == 0 and len(name) > 3:
            i = rng.randrange(1, len(name) - 1)
            cand = name[:i] + name[i + 1 :]
        elif kind == 1 and len(name) > 2:
            i = rng.randrange(len(name) - 1)
            cand = name[:i] + name[i + 1] + name[i] + name[i + 2 :]
        elif kind == 2:
            cand = name + rng.choice(["s", "_count", "_val", "x"])
        else:
            cand = rng.choice(["num_", "the_", "my_"]) + name
        if cand != name and cand not in taken and cand not in KEYWORDS and cand.isidentifier():
            return cand
    return name + "_x"


@dataclass
class Field:
    name: str
    kind: str  # "num" | "str" | "bool"
    ty: str


def rust_value(f: Field, v: object) -> str:
    if f.kind == "str":
        return f'"{v}"'
    if f.kind == "bool":
        return "true" if v else "false"
    return str(v)


def draw_values(rng: random.Random, f: Field, n: int) -> list[object]:
    if f.kind == "str":
        return rng.sample(WORDS, n)
    if f.kind == "bool":
        return [rng.random() < 0.5 for _ in range(n)]
    lo = -50 if f.ty.startswith("i") else 0
    return [rng.randint(lo, 900) for _ in range(n)]


def record_program(rng: random.Random, methods: bool) -> Example:
    sname = rng.choice(STRUCTS)
    nums = rng.sample(NUM_FIELDS, rng.randint(1, 2))
    fields = [Field(rng.choice(STR_FIELDS), "str", "String")]
    fields += [Field(n, "num", rng.choice(INT_TYPES)) for n in nums]
    if rng.random() < 0.6:
        fields.append(Field(rng.choice(BOOL_FIELDS), "bool", "bool"))
    rng.shuffle(fields)
    names = {f.name for f in fields}
    sf = next(f for f in fields if f.kind == "str")
    nf = next(f for f in fields if f.kind == "num")
    bf = next((f for f in fields if f.kind == "bool"), None)
    v = sname[0].lower()
    count = rng.randint(2, 4)
    values = {f.name: draw_values(rng, f, count) for f in fields}

    # Sites that may be broken; each maps to (broken_text, fixed_text).
    sites = ["literal", "access", "pattern"]
    n_err = 2 if rng.random() < 0.3 else 1
    broken_sites = rng.sample(sites, n_err)
    codes: set[str] = set()

    # Constructor literal.
    def init(f: Field, name: str) -> str:
        if f.kind == "str":
            return f"{name}: {f.name}.to_string()"
        return f.name if name == f.name else f"{name}: {f.name}"

    params = ", ".join(f"{f.name}: &str" if f.kind == "str" else f"{f.name}: {f.ty}" for f in fields)
    inits_fixed = [init(f, f.name) for f in fields]
    inits_broken = list(inits_fixed)
    if "literal" in broken_sites:
        if rng.random() < 0.5:
            i = rng.randrange(len(fields))
            inits_broken[i] = init(fields[i], typo(rng, fields[i].name, names))
            codes.add("E0560")
        else:
            i = rng.randrange(len(fields))
            del inits_broken[i]
            codes.add("E0063")
    ctor = "new" if methods else f"new_{sname.lower()}"
    ret = "Self" if methods else sname

    def ctor_fn(inits: list[str]) -> str:
        head = "    pub fn" if methods else "fn"
        ind = "    " if methods else ""
        return f"{head} {ctor}({params}) -> {ret} {{\n{ind}    {sname} {{ {', '.join(inits)} }}\n{ind}}}"

    # Field accesses (sum of the number, search by the string, count of the flag).
    acc_num, acc_str = nf.name, sf.name
    if "access" in broken_sites:
        if rng.random() < 0.5:
            acc_num = typo(rng, nf.name, names)
        else:
            acc_str = typo(rng, sf.name, names)
        codes.add("E0609")
    sum_name = rng.choice(["total", "sum", "combined"]) + "_" + nf.name
    find_name = rng.choice(["find", "position_of", "index_by"]) + "_" + sf.name
    desc_name = rng.choice(["describe", "summary", "render"])

    def access_fns(anum: str, astr: str) -> list[str]:
        fns = [
            f"fn {sum_name}(items: &[{sname}]) -> i64 {{\n"
            f"    items.iter().map(|{v}| {v}.{anum} as i64).sum()\n}}",
            f"fn {find_name}(items: &[{sname}], key: &str) -> Option<usize> {{\n"
            f"    items.iter().position(|{v}| {v}.{astr} == key)\n}}",
        ]
        if bf is not None:
            fns.append(
                f"fn count_{bf.name}(items: &[{sname}]) -> usize {{\n"
                f"    items.iter().filter(|{v}| {v}.{bf.name}).count()\n}}"
            )
        return fns

    # Destructuring pattern.
    pat_str, pat_rest = sf.name, ", .."
    if "pattern" in broken_sites:
        if rng.random() < 0.5 or len(fields) == 2:
            pat_str = typo(rng, sf.name, names)
            codes.add("E0026")
        else:
            pat_rest = ""
            codes.add("E0027")

    def desc_fn(pstr: str, rest: str) -> str:
        if methods:
            return (
                f"    pub fn {desc_name}(&self) -> String {{\n"
                f"        let {sname} {{ {pstr}, {nf.name}{rest} }} = self;\n"
                f'        format!("{{}}={{}}", {pstr}, {nf.name})\n    }}'
            )
        return (
            f"fn {desc_name}({v}: &{sname}) -> String {{\n"
            f"    let {sname} {{ {pstr}, {nf.name}{rest} }} = {v};\n"
            f'    format!("{{}}={{}}", {pstr}, {nf.name})\n}}'
        )

    derive = rng.choice(["", "#[derive(Debug)]\n", "#[derive(Debug, Clone)]\n"])
    struct_def = derive + f"struct {sname} {{\n" + "".join(f"    {f.name}: {f.ty},\n" for f in fields) + "}"

    def args(k: int) -> str:
        return ", ".join(rust_value(f, values[f.name][k]) for f in fields)

    make = f"{sname}::{ctor}" if methods else ctor
    desc_call = f"items[0].{desc_name}()" if methods else f"{desc_name}(&items[0])"
    main = (
        "fn main() {\n    let items = vec![\n"
        + "".join(f"        {make}({args(k)}),\n" for k in range(count))
        + "    ];\n"
        + f'    println!("{{}} {{:?}}", {sum_name}(&items), {find_name}(&items, "{values[sf.name][0]}"));\n'
        + f'    println!("{{}}", {desc_call});\n}}'
    )

    def program(inits: list[str], anum: str, astr: str, pstr: str, rest: str) -> str:
        parts = [struct_def]
        if methods:
            parts.append(f"impl {sname} {{\n{ctor_fn(inits)}\n\n{desc_fn(pstr, rest)}\n}}")
        else:
            parts.append(ctor_fn(inits))
        body = access_fns(anum, astr)
        if not methods:
            body.append(desc_fn(pstr, rest))
        order = list(range(len(body)))
        order_rng = random.Random(hash_key)
        order_rng.shuffle(order)
        parts += [body[i] for i in order]
        parts.append(main)
        return "\n\n".join(parts) + "\n"

    hash_key = rng.random()
    broken = program(inits_broken, acc_num, acc_str, pat_str, pat_rest)
    fixed = program(inits_fixed, nf.name, sf.name, sf.name, ", ..")

    total = sum(int(x) for x in values[nf.name])  # type: ignore[call-overload]
    probe = rng.randrange(count)
    tests = (
        "#[test]\nfn computes_over_records() {\n    let items = vec![\n"
        + "".join(f"        {make}({args(k)}),\n" for k in range(count))
        + "    ];\n"
        + f"    assert_eq!({sum_name}(&items), {total});\n"
        + f'    assert_eq!({find_name}(&items, "{values[sf.name][probe]}"), Some({probe}));\n'
        + f'    assert_eq!({find_name}(&items, "nowhere"), None);\n'
        + f"    assert_eq!({desc_call.replace('items[0]', f'items[{probe}]')}, "
        + f'"{values[sf.name][probe]}={values[nf.name][probe]}");\n'
    )
    if bf is not None:
        tests += f"    assert_eq!(count_{bf.name}(&items), {sum(bool(b) for b in values[bf.name])});\n"
    tests += "}\n"
    shape = ("record_methods" if methods else "record_fns") + ("+multi" if n_err > 1 else "")
    mode = "bin"
    if rng.random() < 0.3:  # the same program as a library: no main
        broken, fixed = (p[: p.index("fn main()")].rstrip() + "\n" for p in (broken, fixed))
        mode = "lib"
    return Example(FAMILY, shape, broken, fixed, tests, tuple(sorted(codes)), mode=mode)


ENUMS = [
    ("Shape", [("Rect", ["w", "h"]), ("Circle", ["r"]), ("Tri", ["base", "height"])]),
    ("Msg", [("Move", ["dx", "dy"]), ("Resize", ["width", "height"]), ("Scroll", ["lines"])]),
    ("Cmd", [("Deposit", ["amount"]), ("Transfer", ["amount", "fee"]), ("Fine", ["penalty", "days"])]),
    ("Job", [("Print", ["pages", "copies"]), ("Scan", ["dpi"]), ("Fax", ["pages", "retries"])]),
    ("Cell", [("Wall", ["hp"]), ("Door", ["key", "cost"]), ("Trap", ["damage", "radius"])]),
]


def enum_program(rng: random.Random) -> Example:
    ename, variants = rng.choice(ENUMS)
    variants = rng.sample(variants, rng.randint(2, 3))
    ty = rng.choice(["i64", "i32", "u32", "u64"])
    unit = rng.choice(["Idle", "Empty", "Noop", "Nothing"])
    weight = {vname: rng.randint(1, 9) for vname, _ in variants}
    fn_name = rng.choice(["cost", "weight", "value", "magnitude"])
    kind = rng.choice(["E0559", "E0026", "E0027", "E0559+E0027"])
    codes = set(kind.split("+"))
    target = rng.randrange(len(variants))
    tv, tfields = variants[target]
    all_fields = {f for _, fs in variants for f in fs}

    def match_arm(vname: str, fs: list[str], broken: bool) -> str:
        pat = list(fs)
        if broken and vname == tv and "E0026" in codes:
            pat = [*pat, typo(rng_arm, fs[-1], all_fields)]  # extra unknown field; `..` keeps E0027 away
            return f"        {ename}::{vname} {{ {', '.join(fs)}, {pat[-1]}: _, .. }} => " + body(vname, fs)
        if broken and vname == tv and "E0027" in codes and len(fs) > 1:
            return f"        {ename}::{vname} {{ {fs[0]} }} => " + body(vname, fs[:1])
        return f"        {ename}::{vname} {{ {', '.join(fs)} }} => " + body(vname, fs)

    def body(vname: str, fs: list[str]) -> str:
        expr = " + ".join(f"*{f} as i64" for f in fs)
        return f"({expr}) * {weight[vname]},"

    rng_arm = random.Random(rng.random())
    # the E0027 injection needs a variant with 2+ fields
    if "E0027" in codes and len(tfields) < 2:
        multi = [i for i, (_, fs) in enumerate(variants) if len(fs) > 1]
        if multi:
            target = rng.choice(multi)
            tv, tfields = variants[target]
        else:
            codes.discard("E0027")
            codes.add("E0559")

    def value_fn(broken: bool) -> str:
        arms = []
        local = random.Random(seed_arms)
        for vname, fs in variants:
            arms.append(match_arm(vname, fs, broken))
        local.shuffle(arms)
        return (
            f"fn {fn_name}(x: &{ename}) -> i64 {{\n    match x {{\n"
            + "\n".join(arms)
            + f"\n        {ename}::{unit} => 0,\n    }}\n}}"
        )

    seed_arms = rng.random()
    samples = []
    for vname, fs in variants:
        vals = {f: rng.randint(0, 60) for f in fs}
        samples.append((vname, fs, vals))
    lit_variant = rng.randrange(len(samples))

    def literal(vname: str, fs: list[str], vals: dict[str, int], broken: bool) -> str:
        parts = []
        for i, f in enumerate(fs):
            name = f
            if broken and "E0559" in codes and i == len(fs) - 1:
                name = typo(rng_lit, f, all_fields)
            parts.append(f"{name}: {vals[f]}")
        return f"{ename}::{vname} {{ {', '.join(parts)} }}"

    rng_lit = random.Random(rng.random())
    ctor = rng.choice(["sample", "fixtures", "examples"])

    def ctor_fn(broken: bool) -> str:
        items = []
        for i, (vname, fs, vals) in enumerate(samples):
            items.append("        " + literal(vname, fs, vals, broken and i == lit_variant) + ",")
        items.append(f"        {ename}::{unit},")
        return f"fn {ctor}() -> Vec<{ename}> {{\n    vec![\n" + "\n".join(items) + "\n    ]\n}"

    enum_def = (
        ("#[derive(Debug)]\n" if rng.random() < 0.5 else "")
        + f"enum {ename} {{\n"
        + "".join(f"    {vname} {{ {', '.join(f'{f}: {ty}' for f in fs)} }},\n" for vname, fs in variants)
        + f"    {unit},\n}}"
    )
    total_name = rng.choice(["total", "grand_total", "sum_all"])
    total_fn = f"fn {total_name}(xs: &[{ename}]) -> i64 {{\n    xs.iter().map({fn_name}).sum()\n}}"
    main = (
        f'fn main() {{\n    let xs = {ctor}();\n    println!("{{}} {{}}", xs.len(), {total_name}(&xs));\n}}'
    )

    def program(broken: bool) -> str:
        return "\n\n".join([enum_def, value_fn(broken), ctor_fn(broken), total_fn, main]) + "\n"

    expected = [sum(vals.values()) * weight[vname] for vname, _, vals in samples]
    tests = (
        f"#[test]\nfn values_each_variant() {{\n    let xs = {ctor}();\n"
        + "".join(f"    assert_eq!({fn_name}(&xs[{i}]), {e});\n" for i, e in enumerate(expected))
        + f"    assert_eq!({fn_name}(&{ename}::{unit}), 0);\n"
        + f"    assert_eq!({total_name}(&xs), {sum(expected)});\n}}\n"
    )
    return Example(FAMILY, "enum_variants", program(True), program(False), tests, tuple(sorted(codes)))


INNERS = [("Point", ["x", "y"]), ("Size", ["w", "h"]), ("Span", ["lo", "hi"]), ("Coord", ["row", "col"])]
OUTERS = [
    ("Segment", ["from", "to"]),
    ("Bounds", ["min", "max"]),
    ("Step", ["start", "end"]),
    ("Pair", ["left", "right"]),
]


def nested_program(rng: random.Random) -> Example:
    """A struct of two inner structs (named or tuple); errors in nested literals and nested accesses."""
    iname, (fa, fb) = rng.choice(INNERS)
    oname, (o1, o2) = rng.choice(OUTERS)
    label = rng.choice(["label", "name", "id", "tag"])
    ty = rng.choice(["i32", "i64"])
    tuple_inner = rng.random() < 0.3
    kind = "E0609" if tuple_inner else rng.choice(["E0609", "E0063", "E0560", "E0063+E0609"])
    codes = set(kind.split("+"))
    taken = {fa, fb, o1, o2, label}

    def inner_lit(a: str, b: str, broken: bool) -> str:
        if tuple_inner:
            return f"{iname}({a}, {b})"
        if broken and "E0063" in codes:
            return f"{iname} {{ {fa}: {a} }}"
        return f"{iname} {{ {fa}: {a}, {fb}: {b} }}"

    def acc(outer: str, field: str, idx: str, broken: bool) -> str:
        if tuple_inner:
            return f"{outer}.{field if broken else idx}"
        return f"{outer}.{field}"

    bad_field = typo(rng, rng.choice([fa, fb]), taken)
    bad_label = typo(rng, label, taken)
    fn_measure = rng.choice(["manhattan", "extent", "distance"])
    fn_pick = rng.choice(["longest", "widest", "biggest"])
    fn_make = rng.choice(["make", "build", f"new_{oname.lower()}"])

    def program(broken: bool) -> str:
        derive = "#[derive(Debug, Clone, Copy)]\n"
        if tuple_inner:
            inner = f"{derive}struct {iname}({ty}, {ty});"
        else:
            inner = f"{derive}struct {iname} {{\n    {fa}: {ty},\n    {fb}: {ty},\n}}"
        outer = f"struct {oname} {{\n    {label}: String,\n    {o1}: {iname},\n    {o2}: {iname},\n}}"
        lab = bad_label if broken and "E0560" in codes else label
        make = (
            f"fn {fn_make}({label}: &str, a: ({ty}, {ty}), b: ({ty}, {ty})) -> {oname} {{\n"
            f"    {oname} {{\n        {lab}: {label}.to_string(),\n"
            f"        {o1}: {inner_lit('a.0', 'a.1', broken)},\n"
            f"        {o2}: {inner_lit('b.0', 'b.1', False)},\n    }}\n}}"
        )
        da = acc(f"s.{o2}", fa, "0", broken)
        db = acc(f"s.{o2}", fb, "1", broken)
        if broken and "E0609" in codes and not tuple_inner:
            if bad_field.startswith(fa) or fa in bad_field or bad_field in fa:
                da = f"s.{o2}.{bad_field}"
            else:
                db = f"s.{o2}.{bad_field}"
        measure = (
            f"fn {fn_measure}(s: &{oname}) -> {ty} {{\n"
            f"    ({da} - {acc(f's.{o1}', fa, '0', False)}).abs()"
            f" + ({db} - {acc(f's.{o1}', fb, '1', False)}).abs()\n}}"
        )
        pick = (
            f"fn {fn_pick}(items: &[{oname}]) -> Option<&str> {{\n"
            f"    items.iter().max_by_key(|s| {fn_measure}(s)).map(|s| s.{label}.as_str())\n}}"
        )
        return "\n\n".join([inner, outer, make, measure, pick]) + "\n"

    n = rng.randint(2, 4)
    names = rng.sample(WORDS, n)
    pts = [
        ((rng.randint(-20, 20), rng.randint(-20, 20)), (rng.randint(-20, 20), rng.randint(-20, 20)))
        for _ in range(n)
    ]
    dists = [abs(b[0] - a[0]) + abs(b[1] - a[1]) for a, b in pts]
    best = max(i for i in range(n) if dists[i] == max(dists))  # max_by_key keeps the last maximum
    main = (
        "fn main() {\n    let items = vec![\n"
        + "".join(f'        {fn_make}("{names[i]}", {pts[i][0]}, {pts[i][1]}),\n' for i in range(n))
        + f'    ];\n    println!("{{:?}}", {fn_pick}(&items));\n}}\n'
    )
    tests = (
        "#[test]\nfn measures_nested_values() {\n    let items = vec![\n"
        + "".join(f'        {fn_make}("{names[i]}", {pts[i][0]}, {pts[i][1]}),\n' for i in range(n))
        + "    ];\n"
        + "".join(f"    assert_eq!({fn_measure}(&items[{i}]), {dists[i]});\n" for i in range(n))
        + f'    assert_eq!({fn_pick}(&items), Some("{names[best]}"));\n'
        + f"    assert_eq!({fn_pick}(&[]), None);\n}}\n"
    )
    shape = "nested_tuple" if tuple_inner else "nested_named"
    return Example(
        FAMILY, shape, program(True) + "\n" + main, program(False) + "\n" + main, tests, tuple(sorted(codes))
    )


def generate(rng: random.Random) -> Example:
    """One random draw: a record program (fns or methods) or an enum program, with 1-2 field errors."""
    r = rng.random()
    if r < 0.3:
        return record_program(rng, methods=False)
    if r < 0.55:
        return record_program(rng, methods=True)
    if r < 0.8:
        return enum_program(rng)
    return nested_program(rng)
