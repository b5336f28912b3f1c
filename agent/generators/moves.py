"""Generator for the ``moves`` family: use after move (E0382), move out while borrowed (E0505) and moving
out of a borrow (E0507).

Every shape builds a :class:`Piece` -- a few Rust items with one injected ownership error, its minimal fix, the
tests that pin the behaviour (expected values computed here) and a demo statement for ``main``. ``assemble``
turns pieces into an :class:`Example`; the ``borrows``, ``mutability``, ``lifetimes`` and ``multi`` generators
reuse both, which is why they live in this module.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent.generators import Example

FAMILY = "moves"

NOUNS = [
    "order",
    "ticket",
    "parcel",
    "invoice",
    "sample",
    "reading",
    "track",
    "note",
    "badge",
    "crate",
    "route",
    "lesson",
    "booking",
    "shard",
    "packet",
    "vote",
]
STRUCTS = [
    "Item",
    "Parcel",
    "Sensor",
    "Player",
    "Ticket",
    "Invoice",
    "Badge",
    "Route",
    "Crate",
    "Lesson",
    "Vessel",
    "Tenant",
    "Booking",
    "Packet",
    "Probe",
    "Rider",
]
WORDS = [
    "ash",
    "birch",
    "cedar",
    "dune",
    "elm",
    "fjord",
    "grove",
    "heath",
    "isle",
    "juniper",
    "kelp",
    "larch",
    "moss",
    "nook",
    "oak",
    "pine",
    "quay",
    "reed",
    "sage",
    "tarn",
]
STR_FIELDS = ["name", "label", "title", "owner", "city", "tag", "code", "region", "author"]
NUM_FIELDS = ["qty", "count", "weight", "score", "level", "size", "stock", "hits", "depth", "rank"]


@dataclass(frozen=True)
class Piece:
    """Rust items with one injected error (``broken``) and their fix; ``demo_*`` are statements for main."""

    shape: str
    broken: str
    fixed: str
    tests: str
    codes: tuple[str, ...]
    demo_broken: str
    demo_fixed: str


def strs(words: Sequence[str]) -> str:
    """A Rust ``vec!`` of String literals."""
    return "vec![" + ", ".join(f'"{w}".to_string()' for w in words) + "]"


def rlist(values: Sequence[object]) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def assemble(family: str, pieces: Sequence[Piece], rng: random.Random, mode: str | None = None) -> Example:
    """Join pieces into one program; ``bin`` programs get a main that runs every demo."""
    mode = mode or ("bin" if rng.random() < 0.7 else "lib")

    def program(items: list[str], demos: list[str]) -> str:
        text = "\n".join(i.strip("\n") + "\n" for i in items)
        if mode == "bin":
            body = "\n".join("    " + line for d in demos for line in d.strip("\n").splitlines())
            text += f"\nfn main() {{\n{body}\n}}\n"
        return text

    codes = tuple(sorted({c for p in pieces for c in p.codes}))
    return Example(
        family=family,
        shape="+".join(p.shape for p in pieces),
        broken=program([p.broken for p in pieces], [p.demo_broken for p in pieces]),
        fixed=program([p.fixed for p in pieces], [p.demo_fixed for p in pieces]),
        tests="\n".join(p.tests.strip("\n") for p in pieces) + "\n",
        codes=codes,
        mode=mode,
    )


_ITEM = re.compile(r"\b(?:fn|struct|enum)\s+(\w+)")


def item_names(piece: Piece) -> set[str]:
    """Names a piece defines at the top level (and its test names), to keep combined pieces apart."""
    return set(_ITEM.findall(piece.fixed)) | set(_ITEM.findall(piece.tests))


def draw_pieces(
    rng: random.Random, makers: Sequence[Callable[[random.Random], Piece]], k: int
) -> list[Piece]:
    """``k`` pieces from ``k`` distinct makers whose item names do not clash."""
    chosen = rng.sample(list(makers), k)
    pieces: list[Piece] = []
    taken: set[str] = set()
    for make in chosen:
        for _ in range(50):
            piece = make(rng)
            names = item_names(piece)
            if not names & taken:
                break
        else:
            raise RuntimeError(f"could not draw a non-clashing piece from {make.__name__}")
        taken |= names
        pieces.append(piece)
    return pieces


# --- shapes ------------------------------------------------------------------------------------------------


def consume_then_use(rng: random.Random) -> Piece:
    """A Vec handed by value to an aggregate, then asked for its length (E0382)."""
    noun = rng.choice(NOUNS)
    kind = rng.choice(["sum", "max", "join", "longest"])
    n = rng.randint(2, 5)
    if kind in ("sum", "max"):
        ty = rng.choice(["i64", "u32", "u64", "i32"])
        vals: list[int] = [rng.randint(0 if ty[0] == "u" else -20, 90) for _ in range(n)]
        lit = "vec!" + rlist(vals)
        agg = f"{kind}_{noun}s" if kind == "sum" else f"peak_{noun}"
        body = "values.into_iter().sum()" if kind == "sum" else "values.into_iter().max().unwrap_or(0)"
        expect: object = sum(vals) if kind == "sum" else max(vals)
        ret = ty
    else:
        words = rng.sample(WORDS, n)
        lit = strs(words)
        ty, ret = "String", "String"
        if kind == "join":
            sep = rng.choice(["-", ", ", "/", "+"])
            agg, body, expect = f"join_{noun}s", f'values.join("{sep}")', sep.join(words)
        else:
            agg = f"longest_{noun}"
            body = "values.into_iter().fold(String::new(), |a, b| if b.len() > a.len() { b } else { a })"
            expect = ""
            for w in words:
                if len(w) > len(str(expect)):
                    expect = w
        expect = f'"{expect}".to_string()'
    report = f"{noun}_{rng.choice(['report', 'summary', 'stats', 'digest'])}"
    second, second_expr, second_ty, second_val = rng.choice(
        [("count", "values.len()", "usize", n), ("empty", "values.is_empty()", "bool", "false")]
    )
    items = f"""
fn {agg}(values: Vec<{ty}>) -> {ret} {{
    {body}
}}

fn {report}(values: Vec<{ty}>) -> ({ret}, {second_ty}) {{
    let agg = {agg}(values);
    let {second} = {second_expr};
    (agg, {second})
}}
"""
    if rng.random() < 0.5:
        fixed = items.replace(
            f"    let agg = {agg}(values);\n    let {second} = {second_expr};",
            f"    let {second} = {second_expr};\n    let agg = {agg}(values);",
        )
    else:
        fixed = items.replace(f"let agg = {agg}(values);", f"let agg = {agg}(values.clone());")
    tests = f"""
#[test]
fn {report}_pairs() {{
    assert_eq!({report}({lit}), ({expect}, {second_val}));
}}
"""
    demo = f'println!("{{:?}}", {report}({lit}));'
    return Piece("consume_then_use", items, fixed, tests, ("E0382",), demo, demo)


def loop_move(rng: random.Random) -> Piece:
    """A value moved into a call or struct inside a loop (E0382 in a previous iteration)."""
    noun = rng.choice(NOUNS)
    fn = f"tag_{noun}s"
    labels = rng.sample(WORDS, rng.randint(2, 4))
    tag = rng.choice(["urgent", "draft", "gold", "late", "bulk"])
    variant = rng.randrange(3)
    if variant == 0:
        sep = rng.choice([":", "#", "@", "/"])
        helper = f"""
fn stamp(a: &str, b: String) -> String {{
    format!("{{a}}{sep}{{b}}")
}}
"""
        push = "out.push(stamp(l, tag));"
        push_fixed = "out.push(stamp(l, tag.clone()));"
        expect = [f"{lb}{sep}{tag}" for lb in labels]
    elif variant == 1:
        helper = ""
        push = 'let t = tag;\n        out.push(format!("{l}={t}"));'
        push_fixed = 'let t = &tag;\n        out.push(format!("{l}={t}"));'
        expect = [f"{lb}={tag}" for lb in labels]
    else:
        sname = rng.choice(STRUCTS)
        helper = f"""
struct {sname} {{
    label: String,
    group: String,
}}

impl {sname} {{
    fn show(&self) -> String {{
        format!("{{}}({{}})", self.label, self.group)
    }}
}}
"""
        push = f"out.push({sname} {{ label: l.to_string(), group: tag }}.show());"
        push_fixed = f"out.push({sname} {{ label: l.to_string(), group: tag.clone() }}.show());"
        expect = [f"{lb}({tag})" for lb in labels]
    body = f"""
fn {fn}(labels: &[&str], tag: String) -> Vec<String> {{
    let mut out = Vec::new();
    for l in labels {{
        {push}
    }}
    out
}}
"""
    lit = rlist([f'"{lb}"' for lb in labels])
    tests = f"""
#[test]
fn {fn}_each() {{
    assert_eq!({fn}(&{lit}, "{tag}".to_string()), vec!{rlist([f'"{e}"' for e in expect])});
    assert!({fn}(&[], "x".to_string()).is_empty());
}}
"""
    demo = f'println!("{{:?}}", {fn}(&{lit}, "{tag}".to_string()));'
    return Piece(
        "loop_move", helper + body, helper + body.replace(push, push_fixed), tests, ("E0382",), demo, demo
    )


def borrow_then_move(rng: random.Random) -> Piece:
    """A reference into a value kept across a call that takes the value (E0505)."""
    sname = rng.choice(STRUCTS)
    sf, nf = rng.choice(STR_FIELDS), rng.choice(NUM_FIELDS)
    fn = f"file_{sname.lower()}"
    name, num = rng.choice(WORDS), rng.randint(1, 60)
    k = rng.randint(2, 9)
    struct = f"""
struct {sname} {{
    {sf}: String,
    {nf}: u32,
}}

fn store_{sname.lower()}(x: {sname}, store: &mut Vec<{sname}>) {{
    store.push(x);
}}
"""
    if rng.random() < 0.5:
        ret, keep, keep_fixed = "String", f"let kept = &x.{sf};", f"let kept = x.{sf}.clone();"
        out, expect = 'format!("filed {kept}")', f'"filed {name}"'
    else:
        ret, keep, keep_fixed = "u32", f"let kept = &x.{nf};", f"let kept = x.{nf};"
        out, expect = f"*kept * {k}", str(num * k)
    items = f"""{struct}
fn {fn}(x: {sname}, store: &mut Vec<{sname}>) -> {ret} {{
    {keep}
    store_{sname.lower()}(x, store);
    {out}
}}
"""
    fixed = items.replace(keep, keep_fixed)
    if ret == "u32":
        fixed = fixed.replace(f"    *kept * {k}", f"    kept * {k}")
    lit = f'{sname} {{ {sf}: "{name}".to_string(), {nf}: {num} }}'
    tests = f"""
#[test]
fn {fn}_keeps_and_stores() {{
    let mut store = Vec::new();
    assert_eq!({fn}({lit}, &mut store), {expect});
    assert_eq!(store.len(), 1);
    assert_eq!(store[0].{nf}, {num});
}}
"""
    demo = f'let mut store = Vec::new();\nprintln!("{{:?}}", {fn}({lit}, &mut store));'
    return Piece("borrow_then_move", items, fixed, tests, ("E0505",), demo, demo)


def move_out_of_ref(rng: random.Random) -> Piece:
    """A non-Copy value moved out of a shared borrow: index, deref, field getter or Option match (E0507)."""
    variant = rng.randrange(4)
    words = rng.sample(WORDS, rng.randint(3, 5))
    lit = strs(words)
    if variant == 0:
        fn = rng.choice(["shout_at", "upper_at", "loud_entry"])
        i = rng.randrange(len(words))
        items = f"""
fn {fn}(items: &Vec<String>, i: usize) -> String {{
    let s = items[i];
    s.to_uppercase()
}}
"""
        fixed = items.replace("let s = items[i];", "let s = &items[i];")
        call, expect = f"{fn}(&{lit}, {i})", f'"{words[i].upper()}"'
    elif variant == 1:
        fn = rng.choice(["collect_long", "keep_long", "long_words"])
        m = rng.randint(3, 5)
        items = f"""
fn {fn}(items: &[String]) -> Vec<String> {{
    let mut out = Vec::new();
    for s in items {{
        if s.len() >= {m} {{
            out.push(*s);
        }}
    }}
    out
}}
"""
        fixed = items.replace("out.push(*s);", "out.push(s.clone());")
        call = f"{fn}(&{lit})"
        kept = [f'"{w}"' for w in words if len(w) >= m]
        expect = "vec!" + rlist(kept) if kept else "Vec::<&str>::new()"
    elif variant == 2:
        sname = rng.choice(STRUCTS)
        sf = rng.choice(STR_FIELDS)
        fn = f"{sname.lower()}_{sf}"
        items = f"""
struct {sname} {{
    {sf}: String,
    extra: Vec<String>,
}}

impl {sname} {{
    fn {sf}(&self) -> String {{
        self.{sf}
    }}
}}

fn {fn}(x: &{sname}) -> String {{
    format!("{{}}+{{}}", x.{sf}(), x.extra.len())
}}
"""
        fixed = items.replace(f"        self.{sf}\n", f"        self.{sf}.clone()\n")
        call = f'{fn}(&{sname} {{ {sf}: "{words[0]}".to_string(), extra: {strs(words[1:])} }})'
        expect = f'"{words[0]}+{len(words) - 1}"'
    else:
        sname = rng.choice(STRUCTS)
        fn = f"{sname.lower()}_alias"
        default = rng.choice(["anon", "none", "unset", "guest"])
        items = f"""
struct {sname} {{
    nick: Option<String>,
}}

fn {fn}(x: &{sname}) -> String {{
    match x.nick {{
        Some(n) => n,
        None => "{default}".to_string(),
    }}
}}
"""
        fixed = items.replace(
            "match x.nick {\n        Some(n) => n,", "match &x.nick {\n        Some(n) => n.clone(),"
        )
        call = f'{fn}(&{sname} {{ nick: Some("{words[0]}".to_string()) }})'
        expect = f'"{words[0]}"'
        call2 = f"{fn}(&{sname} {{ nick: None }})"
        tests = f"""
#[test]
fn {fn}_works() {{
    assert_eq!({call}, {expect});
    assert_eq!({call2}, "{default}");
}}
"""
        demo = f'println!("{{}}", {call});'
        return Piece("move_out_of_ref", items, fixed, tests, ("E0507",), demo, demo)
    tests = f"""
#[test]
fn {fn}_works() {{
    assert_eq!({call}, {expect});
}}
"""
    demo = f'println!("{{:?}}", {call});'
    return Piece("move_out_of_ref", items, fixed, tests, ("E0507",), demo, demo)


def slot_swap(rng: random.Random) -> Piece:
    """An Option field moved out of ``&mut self`` before being overwritten (E0507; fix: take/replace)."""
    sname = rng.choice(STRUCTS)
    slot = rng.choice(["current", "pending", "active", "held", "latest"])
    ty, vals = rng.choice(
        [
            ("String", [f'"{w}".to_string()' for w in rng.sample(WORDS, 3)]),
            ("Vec<u8>", [f"vec![{rng.randint(0, 9)}, {rng.randint(0, 9)}]" for _ in range(3)]),
        ]
    )
    method = rng.choice(["swap_in", "put", "install", "rotate"])
    items = f"""
struct {sname} {{
    {slot}: Option<{ty}>,
    changes: u32,
}}

impl {sname} {{
    fn {method}(&mut self, next: {ty}) -> Option<{ty}> {{
        let old = self.{slot};
        self.{slot} = Some(next);
        self.changes += 1;
        old
    }}
}}
"""
    if rng.random() < 0.5:
        fixed = items.replace(
            f"let old = self.{slot};\n        self.{slot} = Some(next);",
            f"let old = self.{slot}.replace(next);",
        )
    else:
        fixed = items.replace(f"let old = self.{slot};", f"let old = self.{slot}.take();")
    a, b, c = vals
    tests = f"""
#[test]
fn {sname.lower()}_{method}_returns_previous() {{
    let mut s = {sname} {{ {slot}: None, changes: 0 }};
    assert_eq!(s.{method}({a}), None);
    assert_eq!(s.{method}({b}), Some({a}));
    assert_eq!(s.{method}({c}), Some({b}));
    assert_eq!(s.{slot}, Some({c}));
    assert_eq!(s.changes, 3);
}}
"""
    demo = f'let mut s = {sname} {{ {slot}: None, changes: 0 }};\nprintln!("{{:?}}", s.{method}({a}));'
    return Piece("slot_swap", items, fixed, tests, ("E0507",), demo, demo)


def consume_self(rng: random.Random) -> Piece:
    """A builder-style method taking ``self`` called in a loop without keeping its result (E0382)."""
    sname = rng.choice(STRUCTS) + rng.choice(["Tally", "Acc", "Meter"])
    method = rng.choice(["add", "feed", "absorb", "push"])
    ops: list[tuple[str, Callable[[int, int], int]]] = [
        ("self.total + x", lambda t, x: t + x),
        ("self.total.max(x)", max),
        ("self.total * 2 + x", lambda t, x: t * 2 + x),
    ]
    op, py = rng.choice(ops)
    xs = [rng.randint(0, 20) for _ in range(rng.randint(2, 5))]
    total, seen = 0, 0
    for x in xs:
        total, seen = py(total, x), seen + 1
    fn = f"run_{sname.lower()}"
    items = f"""
struct {sname} {{
    total: u64,
    seen: u32,
}}

impl {sname} {{
    fn {method}(self, x: u64) -> Self {{
        {sname} {{ total: {op}, seen: self.seen + 1 }}
    }}
}}

fn {fn}(xs: &[u64]) -> (u64, u32) {{
    let mut acc = {sname} {{ total: 0, seen: 0 }};
    for &x in xs {{
        acc.{method}(x);
    }}
    (acc.total, acc.seen)
}}
"""
    fixed = items.replace(f"acc.{method}(x);", f"acc = acc.{method}(x);")
    tests = f"""
#[test]
fn {fn}_folds() {{
    assert_eq!({fn}(&{rlist(xs)}), ({total}, {seen}));
    assert_eq!({fn}(&[]), (0, 0));
}}
"""
    demo = f'println!("{{:?}}", {fn}(&{rlist(xs)}));'
    return Piece("consume_self", items, fixed, tests, ("E0382",), demo, demo)


SHAPES: list[Callable[[random.Random], Piece]] = [
    consume_then_use,
    loop_move,
    borrow_then_move,
    move_out_of_ref,
    slot_swap,
    consume_self,
]


def generate(rng: random.Random) -> Example:
    """One program with one ownership error; about one in four carries a second, independent one."""
    return assemble(FAMILY, draw_pieces(rng, SHAPES, 2 if rng.random() < 0.25 else 1), rng)
