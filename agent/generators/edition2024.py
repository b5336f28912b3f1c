"""Rust 2024 edition changes, checked with ``--edition 2024``.

Shapes: `env::set_var`/`remove_var` without `unsafe` (E0133); a plain `extern "C"` block (an error with
no code); bare `#[no_mangle]`/`#[export_name]` (no code); `gen` used as an identifier (no code); a returned
`impl Iterator` that now captures an argument's lifetime (E0597/E0506/E0502, fixed with `use<..>`); a
block-tail temporary borrowed past the block (E0716); `?` on an unconstrained result whose type now falls
back to `!` (E0277); and `Box<[T]>::into_iter` yielding values (E0614). Codes are empty only where rustc
reports nothing but code-less errors.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.generators import Example, _common
from agent.generators._common import assemble

FAMILY = "edition2024"


@dataclass
class Part(_common.Part):
    """A part that may be a syntax error, which stops rustc before the other parts' errors."""

    parse_level: bool = False  # a syntax error: rustc stops before reporting other parts' errors


def _key(rng: random.Random) -> str:
    return (
        "KOAN_"
        + "_".join(rng.sample(["ALPHA", "BETA", "GAMMA", "DELTA", "OMEGA", "SIGMA", "TAU"], 2))
        + (f"_{rng.randint(100, 999)}")
    )


def _set_var(rng: random.Random) -> Part:
    kind = rng.choice(["defaults", "override", "clear"])
    k1, k2 = _key(rng), _key(rng) + "_B"
    if kind == "defaults":
        fn = rng.choice(["fill_defaults", "seed_env", "ensure_vars"])
        text = (
            f"fn {fn}(pairs: &[(&str, &str)]) -> usize {{\n    let mut set = 0;\n"
            "    for (k, v) in pairs {\n        if std::env::var(k).is_err() {\n"
            "            {U}std::env::set_var(k, v){E};\n            set += 1;\n        }\n    }\n    set\n}\n"
        )
        tests = (
            f'#[test]\nfn {fn}_only_missing() {{\n    assert_eq!({fn}(&[("{k1}", "1"), ("{k2}", "2")]), 2);\n'
            f'    assert_eq!({fn}(&[("{k1}", "9")]), 0);\n    assert_eq!(std::env::var("{k1}").unwrap(), "1");\n}}\n'
        )
        demo = f'    println!("{{}}", {fn}(&[("{k1}", "x")]));'
    elif kind == "override":
        fn = rng.choice(["with_override", "scoped_var", "temp_env"])
        text = (
            f"fn {fn}(key: &str, value: &str) -> Option<String> {{\n    let old = std::env::var(key).ok();\n"
            "    {U}std::env::set_var(key, value){E};\n    let seen = std::env::var(key).ok();\n"
            "    match old {\n        Some(v) => {U}std::env::set_var(key, v){E},\n"
            "        None => {U}std::env::remove_var(key){E},\n    }\n    seen\n}\n"
        )
        tests = (
            f'#[test]\nfn {fn}_restores() {{\n    assert_eq!({fn}("{k1}", "on").as_deref(), Some("on"));\n'
            f'    assert!(std::env::var("{k1}").is_err());\n}}\n'
        )
        demo = f'    println!("{{:?}}", {fn}("{k1}", "x"));'
    else:
        fn = rng.choice(["scrub", "drop_secrets", "clear_keys"])
        text = (
            f"fn {fn}(keys: &[&str]) -> usize {{\n    let mut removed = 0;\n    for k in keys {{\n"
            "        if std::env::var_os(k).is_some() {\n            {U}std::env::remove_var(k){E};\n"
            "            removed += 1;\n        }\n    }\n    removed\n}\n"
        )
        tests = (
            f'#[test]\nfn {fn}_removes_present() {{\n    unsafe {{ std::env::set_var("{k1}", "s") }};\n'
            f'    assert_eq!({fn}(&["{k1}", "{k2}"]), 1);\n    assert!(std::env::var("{k1}").is_err());\n}}\n'
        )
        demo = f'    println!("{{}}", {fn}(&["{k1}"]));'
    broken = text.replace("{U}", "").replace("{E}", "")
    fixed = text.replace("{U}", "unsafe { ").replace("{E}", " }")
    return Part("set_var", broken, fixed, tests, demo, ("E0133",))


LIBC = [
    ("abs", "fn abs(x: i32) -> i32;", "unsafe {{ abs({a}) }}", lambda a: abs(a), "i32"),
    ("labs", "fn labs(x: i64) -> i64;", "unsafe {{ labs({a}) }}", lambda a: abs(a), "i64"),
    (
        "toupper",
        "fn toupper(c: i32) -> i32;",
        "unsafe {{ toupper({a}) }}",
        lambda a: ord(chr(a).upper()),
        "i32",
    ),
    (
        "tolower",
        "fn tolower(c: i32) -> i32;",
        "unsafe {{ tolower({a}) }}",
        lambda a: ord(chr(a).lower()),
        "i32",
    ),
]


def _extern_block(rng: random.Random) -> Part:
    chosen = rng.sample(LIBC, rng.randint(1, 3))
    decls = "\n".join(f"    {d}" for _, d, _, _, _ in chosen)
    wrappers, checks = [], []
    for name, _, call, ref, ty in chosen:
        w = f"c_{name}_{rng.choice(['of', 'call', 'wrap'])}"
        wrappers.append(f"fn {w}(a: {ty}) -> {ty} {{\n    {call.format(a='a')}\n}}\n")
        for _ in range(2):
            a = rng.randint(-50, 50) if "abs" in name else rng.choice([65, 70, 97, 104, 122, 49])
            checks.append(f"    assert_eq!({w}({a}), {ref(a)});")
    body = "{EXT} {\n" + decls + "\n}\n\n" + "\n".join(wrappers)
    first = wrappers[0].split("(")[0][3:]
    tests = f"#[test]\nfn {first}_matches_libc() {{\n" + "\n".join(checks) + "\n}\n"
    demo = f'    println!("{{}}", {first}(7));'
    return Part(
        "extern_block",
        body.replace("{EXT}", 'extern "C"'),
        body.replace("{EXT}", 'unsafe extern "C"'),
        tests,
        demo,
        (),
    )


def _unsafe_attr(rng: random.Random) -> Part:
    word = rng.choice(["mix", "fold", "hash", "scramble", "digest"])
    n = rng.randint(100, 999)
    fn = f"plugin_{word}_{n}"
    mult, add = rng.choice([31, 33, 131, 257]), rng.randint(1, 99)
    attr = rng.choice(["no_mangle", "export_name"])
    a_b = "#[no_mangle]" if attr == "no_mangle" else f'#[export_name = "ext_{word}_{n}"]'
    a_f = "#[unsafe(no_mangle)]" if attr == "no_mangle" else f'#[unsafe(export_name = "ext_{word}_{n}")]'
    text = (
        "{A}\n"
        f'pub extern "C" fn {fn}(x: u32, y: u32) -> u32 {{\n    x.wrapping_mul({mult}).wrapping_add(y ^ {add})\n}}\n'
    )
    extra_b = extra_f = ""
    if rng.random() < 0.5:
        v = rng.randint(1, 9)
        extra = f'{{A2}}\npub extern "C" fn abi_{word}_{n}() -> u32 {{\n    {v}\n}}\n'
        extra_b = "\n" + extra.replace("{A2}", "#[no_mangle]")
        extra_f = "\n" + extra.replace("{A2}", "#[unsafe(no_mangle)]")
    x, y = rng.randint(0, 1000), rng.randint(0, 1000)
    tests = f"#[test]\nfn {fn}_value() {{\n    assert_eq!({fn}({x}, {y}), {(x * mult + (y ^ add)) % 2**32});\n}}\n"
    demo = f'    println!("{{}}", {fn}(1, 2));'
    return Part(
        "unsafe_attr", text.replace("{A}", a_b) + extra_b, text.replace("{A}", a_f) + extra_f, tests, demo, ()
    )


def _gen_keyword(rng: random.Random) -> Part:
    where = rng.choice(["local", "param", "field"])
    new = rng.choice(["generation", "gen_id", "round", "epoch"])
    k = rng.randint(2, 9)
    if where == "local":
        fn = rng.choice(["next_ids", "cycle", "stamp"])
        text = (
            f"fn {fn}(start: u32, n: u32) -> Vec<u32> {{\n    let mut out = Vec::new();\n    let mut @ = start;\n"
            f"    for _ in 0..n {{\n        @ += {k};\n        out.push(@);\n    }}\n    out\n}}\n"
        )
        tests = f"#[test]\nfn {fn}_steps() {{\n    assert_eq!({fn}(1, 3), vec![{1 + k}, {1 + 2 * k}, {1 + 3 * k}]);\n}}\n"
        demo = f'    println!("{{:?}}", {fn}(0, 2));'
    elif where == "param":
        fn = rng.choice(["label", "tag_for", "describe"])
        text = f'fn {fn}(name: &str, @: u32) -> String {{\n    format!("{{name}}#{{}}", @ * {k})\n}}\n'
        tests = f'#[test]\nfn {fn}_formats() {{\n    assert_eq!({fn}("w", 3), "w#{3 * k}");\n}}\n'
        demo = f'    println!("{{}}", {fn}("a", 1));'
    else:
        st = rng.choice(["Cell", "Org", "Node", "Seed"])
        fn = rng.choice(["advance", "evolve", "tick"])
        text = (
            f"#[derive(Debug, PartialEq)]\nstruct {st} {{\n    @: u32,\n    size: u32,\n}}\n\n"
            f"fn {fn}(c: {st}) -> {st} {{\n    {st} {{ @: c.@ + 1, size: c.size * {k} }}\n}}\n"
        )
        tests = (
            f"#[test]\nfn {fn}_grows() {{\n    let c = {fn}({fn}({st} {{ @: 0, size: 1 }}));\n"
            f"    assert_eq!(c.size, {k * k});\n    assert_eq!(c, {st} {{ @: 2, size: {k * k} }});\n}}\n"
        )
        demo = f'    println!("{{:?}}", {fn}({st} {{ @: 0, size: 2 }}));'
    tests = tests.replace("@", new)
    demo = demo.replace("@", new)
    return Part(
        "gen_keyword", text.replace("@", "gen"), text.replace("@", new), tests, demo, (), parse_level=True
    )


def _rpit_capture(rng: random.Random) -> Part:
    st = rng.choice(["Ledger", "Sensor", "Catalog", "Roster"])
    m = rng.choice(["above", "at_least", "over"])
    fn = rng.choice(["sweep", "survey", "tally_levels"])
    caller = rng.choice(["loop", "block", "bump"])
    head_b = f"impl {st} {{\n    fn {m}(&self, min: &u32) -> impl Iterator<Item = u32> {{\n"
    head_f = f"impl {st} {{\n    fn {m}<'a>(&'a self, min: &u32) -> impl Iterator<Item = u32> + use<'a> {{\n"
    imp = "        let floor = *min;\n        self.vals.iter().copied().filter(move |v| *v >= floor)\n    }\n}\n\n"
    decl = f"struct {st} {{\n    vals: Vec<u32>,\n}}\n\n"
    vals = sorted(rng.sample(range(1, 60), rng.randint(4, 7)))
    step = rng.randint(5, 15)
    if caller == "loop":
        body = (
            f"fn {fn}(x: &{st}, start: u32, rounds: u32) -> Vec<usize> {{\n    let mut out = Vec::new();\n"
            f"    let mut t = start;\n    for _ in 0..rounds {{\n        let it = x.{m}(&t);\n        t += {step};\n"
            "        out.push(it.count());\n    }\n    out\n}\n"
        )
        code = "E0506"
        want = "vec![" + ", ".join(str(sum(1 for v in vals if v >= s)) for s in (0, step, 2 * step)) + "]"
        call = f"{fn}(&x, 0, 3)"
    elif caller == "block":
        body = (
            f"fn {fn}(x: &{st}, base: u32) -> u32 {{\n    let it = {{\n        let t = base + {step};\n"
            f"        x.{m}(&t)\n    }};\n    it.sum()\n}}\n"
        )
        code = "E0597"
        want = str(sum(v for v in vals if v >= step))
        call = f"{fn}(&x, 0)"
    else:
        body = (
            f"fn raise(t: &mut u32) {{\n    *t += {step};\n}}\n\n"
            f"fn {fn}(x: &{st}, mut t: u32) -> u32 {{\n    let it = x.{m}(&t);\n    raise(&mut t);\n"
            "    it.max().unwrap_or(t)\n}\n"
        )
        code = "E0502"
        want = str(max(vals))
        call = f"{fn}(&x, 0)"
    tests = f"#[test]\nfn {fn}_counts() {{\n    let x = {st} {{ vals: vec!{vals} }};\n    assert_eq!({call}, {want});\n}}\n"
    demo = f'    println!("{{:?}}", {call.replace("&x", f"&{st} {{ vals: vec!{vals[:2]} }}")});'
    return Part("rpit_capture", decl + head_b + imp + body, decl + head_f + imp + body, tests, demo, (code,))


def _tail_temp(rng: random.Random) -> Part:
    fn = rng.choice(["padded_len", "render_width", "line_width", "cell_width"])
    kind = rng.choice(["format", "join", "repeat"])
    pad = rng.randint(1, 6)
    if kind == "format":
        expr = f'format!("{{:>{pad}}}{{}}", "", text)'
        want = lambda t: pad + len(t)  # noqa: E731
    elif kind == "join":
        expr = "text.split(' ').collect::<Vec<_>>().join(\"__\")"
        want = lambda t: len("__".join(t.split(" ")))  # noqa: E731
    else:
        expr = f"text.repeat({pad})"
        want = lambda t: len(t) * pad  # noqa: E731
    broken = f"fn {fn}(text: &str) -> usize {{\n    let n = {{ {expr}.as_str() }}.len();\n    n + 1\n}}\n"
    fixed = f"fn {fn}(text: &str) -> usize {{\n    let n = {{ {expr}.len() }};\n    n + 1\n}}\n"
    samples = rng.sample(["ab", "a b c", "hello world", "x", "tab le"], 2)
    checks = "\n".join(f'    assert_eq!({fn}("{s}"), {want(s) + 1});' for s in samples)
    tests = f"#[test]\nfn {fn}_measures() {{\n{checks}\n}}\n"
    demo = f'    println!("{{}}", {fn}("{samples[0]}"));'
    return Part("tail_temp", broken, fixed, tests, demo, ("E0716",))


def _never_fallback(rng: random.Random) -> Part:
    loader = rng.choice(["load", "fetch_section", "read_part", "decode"])
    fn = rng.choice(["warm", "preload", "check_all", "validate"])
    bound = rng.choice(["Default", "Default + Clone"])
    ty = rng.choice(["()", "u8", "String", "Vec<u8>"])
    text = (
        f"fn {loader}<T: {bound}>(ok: bool) -> Result<T, String> {{\n"
        f'    if ok {{ Ok(T::default()) }} else {{ Err("{loader} failed".to_string()) }}\n}}\n\n'
        f"fn {fn}(flags: &[bool]) -> Result<usize, String> {{\n    let mut n = 0;\n"
        f"    for &f in flags {{\n        {loader}{{T}}(f)?;\n        n += 1;\n    }}\n    Ok(n)\n}}\n"
    )
    k = rng.randint(1, 4)
    ok = ", ".join(["true"] * k)
    tests = (
        f"#[test]\nfn {fn}_stops_on_error() {{\n    assert_eq!({fn}(&[{ok}]), Ok({k}));\n"
        f'    assert_eq!({fn}(&[true, false]), Err("{loader} failed".to_string()));\n}}\n'
    )
    demo = f'    println!("{{:?}}", {fn}(&[{ok}]));'
    return Part(
        "never_fallback", text.replace("{T}", ""), text.replace("{T}", f"::<{ty}>"), tests, demo, ("E0277",)
    )


def _boxed_slice(rng: random.Random) -> Part:
    fn = rng.choice(["sum_over", "heavy_total", "count_big", "keep_large"])
    limit = rng.randint(3, 20)
    ty = rng.choice(["u32", "i64", "u64"])
    kind = rng.choice(["sum", "collect"])
    if kind == "sum":
        rty, init, act, ret = ty, "    let mut total = 0;\n", "total += {d}x", "total"
    else:
        rty, init, act, ret = f"Vec<{ty}>", "    let mut out = Vec::new();\n", "out.push({d}x)", "out"
    text = (
        f"fn {fn}(values: Box<[{ty}]>) -> {rty} {{\n{init}    for x in values.into_iter() {{\n"
        f"        if {{d}}x > {limit} {{\n            {act}\n        }}\n    }}\n    {ret}\n}}\n"
    )
    xs = [rng.randint(0, 40) for _ in range(rng.randint(3, 6))]
    big = [x for x in xs if x > limit]
    want = str(sum(big)) if kind == "sum" else f"vec!{big}"
    tests = f"#[test]\nfn {fn}_filters() {{\n    assert_eq!({fn}(vec!{xs}.into_boxed_slice()), {want});\n}}\n"
    demo = f'    println!("{{:?}}", {fn}(vec!{xs}.into_boxed_slice()));'
    return Part("boxed_slice", text.replace("{d}", "*"), text.replace("{d}", ""), tests, demo, ("E0614",))


SHAPES = [
    _set_var,
    _extern_block,
    _unsafe_attr,
    _gen_keyword,
    _rpit_capture,
    _tail_temp,
    _never_fallback,
    _boxed_slice,
]


def _assemble(rng: random.Random, parts: list[Part]) -> Example:
    return assemble(FAMILY, rng, parts, public=("fn ", "struct "), edition="2024")


def generate(rng: random.Random) -> Example:
    first = rng.choice(SHAPES)
    parts = [first(rng)]
    if not parts[0].parse_level and rng.random() < 0.25:
        second = rng.choice([s for s in SHAPES if s is not first and s is not _gen_keyword])
        parts.append(second(rng))
    return _assemble(rng, parts)
