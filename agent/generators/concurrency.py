"""Sharing data across threads: E0277 (Rc/RefCell/Cell are not Send/Sync), E0373 and E0521 (a spawned
closure borrows), E0382 (one Arc moved into many threads), E0596/E0594 (mutation through an Arc).

Every program joins all of its threads and sorts what they produce, so tests are deterministic and fast.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agent.generators import Example, _common
from agent.generators._common import one_or_two, parts_example, publish, with_main

FAMILY = "concurrency"


@dataclass
class Part(_common.Part):
    """A part with the ``use`` lines its broken and its fixed program need."""

    uses: tuple[str, ...] = ()
    fixed_uses: tuple[str, ...] = ()


def _words(rng: random.Random, n: int) -> list[str]:
    return rng.sample(["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris"], n)


def _rc_to_thread(rng: random.Random) -> Part:
    fn = rng.choice(["lengths_in_parallel", "scan_parallel", "fan_out", "spread_work"])
    var = rng.choice(["shared", "table", "corpus", "data"])
    letter = rng.choice("aeior")
    text = (
        f"fn {fn}(items: Vec<String>, workers: usize) -> Vec<usize> {{\n"
        f"    let {var} = {{RC}}::new(items);\n    let mut handles = Vec::new();\n"
        f"    for w in 0..workers {{\n        let {var} = {{RC}}::clone(&{var});\n"
        f"        handles.push(thread::spawn(move || {{\n"
        f"            {var}.iter().skip(w).step_by(workers).filter(|s| s.contains('{letter}')).count()\n"
        "        }));\n    }\n"
        "    handles.into_iter().map(|h| h.join().unwrap()).collect()\n}\n"
    )
    ws = _words(rng, 5)
    workers = rng.randint(2, 3)
    want = [sum(1 for i, s in enumerate(ws) if i % workers == w and letter in s) for w in range(workers)]
    arr = "vec![" + ", ".join(f'"{w}".to_string()' for w in ws) + "]"
    tests = (
        f"#[test]\nfn {fn}_counts_per_worker() {{\n    assert_eq!({fn}({arr}, {workers}), vec!{want});\n"
        f"    assert_eq!({fn}(vec![], 2), vec![0, 0]);\n}}\n"
    )
    demo = f'    println!("{{:?}}", {fn}({arr}, {workers}));'
    return Part(
        "rc_to_thread",
        text.replace("{RC}", "Rc"),
        text.replace("{RC}", "Arc"),
        tests,
        demo,
        ("E0277",),
        ("use std::rc::Rc;", "use std::thread;"),
        ("use std::sync::Arc;", "use std::thread;"),
    )


def _refcell_shared(rng: random.Random) -> Part:
    fn = rng.choice(["tally_votes", "count_events", "merge_marks", "record_all"])
    cell = rng.choice(["RefCell", "Cell"])
    k = rng.randint(2, 5)
    if cell == "RefCell":
        init, upd, read = "Vec::new()", "{v}.borrow_mut().push(x * K)", "{v}.borrow().clone()"
        init_f, upd_f, read_f = "Vec::new()", "{v}.lock().unwrap().push(x * K)", "{v}.lock().unwrap().clone()"
        rty = "Vec<u64>"
        post = "    out.sort();\n    out\n"
    else:
        init, upd, read = "0", "{v}.set({v}.get() + x * K)", "{v}.get()"
        init_f, upd_f, read_f = "0", "*{v}.lock().unwrap() += x * K", "*{v}.lock().unwrap()"
        rty = "u64"
        post = "    out\n"
    v = rng.choice(["acc", "sink", "board", "store"])

    def build(c: str, ini: str, up: str, rd: str) -> str:
        up, rd = up.replace("{v}", v).replace("K", str(k)), rd.replace("{v}", v)
        return (
            f"fn {fn}(inputs: Vec<u64>) -> {rty} {{\n    let {v} = Arc::new({c}::new({ini}));\n"
            "    let handles: Vec<_> = inputs\n        .into_iter()\n        .map(|x| {\n"
            f"            let {v} = Arc::clone(&{v});\n            thread::spawn(move || {up})\n"
            "        })\n        .collect();\n    for h in handles {\n        h.join().unwrap();\n    }\n"
            f"    let {'mut ' if rty != 'u64' else ''}out = {rd};\n{post}}}\n"
        )

    xs = [rng.randint(1, 20) for _ in range(rng.randint(2, 5))]
    want = f"vec!{sorted(x * k for x in xs)}" if cell == "RefCell" else str(sum(xs) * k)
    empty = "Vec::<u64>::new()" if cell == "RefCell" else "0"
    tests = (
        f"#[test]\nfn {fn}_joins_all() {{\n    assert_eq!({fn}(vec!{xs}), {want});\n"
        f"    assert_eq!({fn}(vec![]), {empty});\n}}\n"
    )
    demo = f'    println!("{{:?}}", {fn}(vec!{xs}));'
    return Part(
        "refcell_shared",
        build(cell, init, upd, read),
        build("Mutex", init_f, upd_f, read_f),
        tests,
        demo,
        ("E0277",),
        (f"use std::cell::{cell};", "use std::sync::Arc;", "use std::thread;"),
        ("use std::sync::{Arc, Mutex};", "use std::thread;"),
    )


def _spawn_borrow(rng: random.Random) -> Part:
    fn = rng.choice(["checksum_bg", "digest_later", "hash_async", "score_in_background"])
    mult = rng.choice([31, 33, 37, 131])
    joined = rng.random() < 0.5
    body = (
        f"    let seed = {{seed}}u64;\n    let h = thread::spawn({{mv}}|| {{\n"
        f"        data.iter().fold(seed, |acc, &b| acc.wrapping_mul({mult}).wrapping_add(b as u64))\n    }});\n"
    )
    seed = rng.randint(1, 999)
    if joined:
        text = (
            f"fn {fn}(label: &str) -> u64 {{\n    let data = label.as_bytes().to_vec();\n"
            + body
            + "    h.join().unwrap()\n}\n"
        )
        call = f'{fn}("@")'
    else:
        text = f"fn {fn}(data: Vec<u8>) -> thread::JoinHandle<u64> {{\n" + body + "    h\n}\n"
        call = f'{fn}(b"@".to_vec()).join().unwrap()'
    text = text.replace("{seed}", str(seed))
    word = rng.choice(["abc", "rust", "queue", "ledger"])
    acc = seed
    for ch in word.encode():
        acc = (acc * mult + ch) % (1 << 64)
    tests = (
        f"#[test]\nfn {fn}_hashes() {{\n    assert_eq!({call.replace('@', word)}, {acc});\n"
        f"    assert_eq!({call.replace('@', '')}, {seed});\n}}\n"
    )
    demo = f'    println!("{{}}", {call.replace("@", word)});'
    return Part(
        "spawn_borrow",
        text.replace("{mv}", ""),
        text.replace("{mv}", "move "),
        tests,
        demo,
        ("E0373",),
        ("use std::thread;",),
        ("use std::thread;",),
    )


def _arc_moved(rng: random.Random) -> Part:
    fn = rng.choice(["price_all", "convert_each", "apply_rates", "rate_jobs"])
    v = rng.choice(["rates", "factors", "weights", "config"])
    text = (
        f"fn {fn}({v}: Vec<u64>, jobs: &[u64]) -> Vec<u64> {{\n    let {v} = Arc::new({v});\n"
        "    let mut handles = Vec::new();\n    for &job in jobs {\n{CLONE}"
        f"        handles.push(thread::spawn(move || {v}.iter().map(|r| r * job).sum::<u64>()));\n"
        "    }\n    handles.into_iter().map(|h| h.join().unwrap()).collect()\n}\n"
    )
    rates = [rng.randint(1, 9) for _ in range(rng.randint(2, 4))]
    jobs = [rng.randint(1, 20) for _ in range(rng.randint(2, 4))]
    want = [sum(rates) * j for j in jobs]
    tests = (
        f"#[test]\nfn {fn}_per_job() {{\n    assert_eq!({fn}(vec!{rates}, &{jobs}), vec!{want});\n"
        f"    assert!({fn}(vec![1], &[]).is_empty());\n}}\n"
    )
    demo = f'    println!("{{:?}}", {fn}(vec!{rates}, &{jobs}));'
    clone = rng.choice([f"Arc::clone(&{v})", f"{v}.clone()"])
    return Part(
        "arc_moved",
        text.replace("{CLONE}", ""),
        text.replace("{CLONE}", f"        let {v} = {clone};\n"),
        tests,
        demo,
        ("E0382",),
        ("use std::sync::Arc;", "use std::thread;"),
        ("use std::sync::Arc;", "use std::thread;"),
    )


def _arc_mutation(rng: random.Random) -> Part:
    fn = rng.choice(["gather", "harvest", "pool_results", "accumulate"])
    kind = rng.choice(["vec_push", "field_add"])
    k = rng.randint(2, 6)
    if kind == "vec_push":
        ty_b, ty_f = "Arc<Vec<u32>>", "Arc<Mutex<Vec<u32>>>"
        new_b, new_f = "Arc::new(Vec::new())", "Arc::new(Mutex::new(Vec::new()))"
        act_b, act_f = f"res.push(x + {k})", f"res.lock().unwrap().push(x + {k})"
        rd_b, rd_f = "res.to_vec()", "res.lock().unwrap().to_vec()"
        rty, post, codes = "Vec<u32>", "    out.sort();\n    out\n", ("E0596",)
        pre = ""
    else:
        st = rng.choice(["Totals", "Stats", "Counter"])
        pre = f"struct {st} {{\n    sum: u32,\n}}\n\n"
        ty_b, ty_f = f"Arc<{st}>", f"Arc<Mutex<{st}>>"
        new_b, new_f = f"Arc::new({st} {{ sum: 0 }})", f"Arc::new(Mutex::new({st} {{ sum: 0 }}))"
        act_b, act_f = f"res.sum += x * {k}", f"res.lock().unwrap().sum += x * {k}"
        rd_b, rd_f = "res.sum", "res.lock().unwrap().sum"
        rty, post, codes = "u32", "    out\n", ("E0594",)

    def build(ty: str, new: str, act: str, rd: str) -> str:
        mut = "mut " if rty != "u32" else ""
        return pre + (
            f"fn {fn}(xs: &[u32]) -> {rty} {{\n    let res: {ty} = {new};\n    let mut hs = Vec::new();\n"
            "    for &x in xs {\n        let res = Arc::clone(&res);\n"
            f"        hs.push(thread::spawn(move || {{\n            {act};\n        }}));\n    }}\n"
            "    for h in hs {\n        h.join().unwrap();\n    }\n"
            f"    let {mut}out = {rd};\n{post}}}\n"
        )

    xs = [rng.randint(0, 30) for _ in range(rng.randint(2, 5))]
    want = f"vec!{sorted(x + k for x in xs)}" if kind == "vec_push" else str(sum(xs) * k)
    empty = "Vec::<u32>::new()" if kind == "vec_push" else "0"
    tests = f"#[test]\nfn {fn}_collects() {{\n    assert_eq!({fn}(&{xs}), {want});\n    assert_eq!({fn}(&[]), {empty});\n}}\n"
    demo = f'    println!("{{:?}}", {fn}(&{xs}));'
    return Part(
        "arc_mutation",
        build(ty_b, new_b, act_b, rd_b),
        build(ty_f, new_f, act_f, rd_f),
        tests,
        demo,
        codes,
        ("use std::sync::Arc;", "use std::thread;"),
        ("use std::sync::{Arc, Mutex};", "use std::thread;"),
    )


def _scoped(rng: random.Random) -> Part:
    fn = rng.choice(["split_max", "halves_min", "two_way_sum", "pair_count"])
    agg = {"split_max": "max", "halves_min": "min", "two_way_sum": "sum", "pair_count": "count"}[fn]
    elem = "i64"
    thr = rng.randint(0, 5)
    red = {
        "max": ".iter().copied().max().unwrap_or(i64::MIN)",
        "min": ".iter().copied().min().unwrap_or(i64::MAX)",
        "sum": ".iter().sum::<i64>()",
        "count": f".iter().filter(|v| **v > {thr}).count() as i64",
    }[agg]
    comb = {"max": "a.max(b)", "min": "a.min(b)", "sum": "a + b", "count": "a + b"}[agg]
    head = f"fn {fn}(values: &[{elem}]) -> {elem} {{\n    let (left, right) = values.split_at(values.len() / 2);\n"
    broken = head + (
        f"    let l = thread::spawn(|| left{red});\n    let r = thread::spawn(|| right{red});\n"
        f"    let (a, b) = (l.join().unwrap(), r.join().unwrap());\n    {comb}\n}}\n"
    )
    fixed = head + (
        "    thread::scope(|s| {\n"
        f"        let l = s.spawn(|| left{red});\n        let r = s.spawn(|| right{red});\n"
        f"        let (a, b) = (l.join().unwrap(), r.join().unwrap());\n        {comb}\n    }})\n}}\n"
    )
    xs = [rng.randint(-9, 20) for _ in range(rng.randint(3, 7))]
    if agg == "max":
        want = max(xs)
    elif agg == "min":
        want = min(xs)
    elif agg == "sum":
        want = sum(xs)
    else:
        want = sum(1 for x in xs if x > thr)
    tests = f"#[test]\nfn {fn}_matches_serial() {{\n    assert_eq!({fn}(&{xs}), {want});\n}}\n"
    demo = f'    println!("{{}}", {fn}(&{xs}));'
    return Part(
        "scoped", broken, fixed, tests, demo, ("E0521",), ("use std::thread;",), ("use std::thread;",)
    )


SHAPES = [_rc_to_thread, _refcell_shared, _spawn_borrow, _arc_moved, _arc_mutation, _scoped]


def _assemble(rng: random.Random, parts: list[Part]) -> Example:
    mode = rng.choice(["bin", "bin", "lib"])

    def body(uses: set[str], texts: list[str]) -> str:
        out = "\n".join(sorted(uses)) + "\n\n" + "\n".join(texts)
        return publish(out, ("fn ", "struct ")) if mode == "lib" else with_main(out, parts)

    broken_uses = {u for p in parts for u in p.uses}
    fixed_uses = {u for p in parts for u in p.fixed_uses}
    if "use std::sync::{Arc, Mutex};" in fixed_uses:
        fixed_uses.discard("use std::sync::Arc;")
    return parts_example(
        FAMILY,
        parts,
        mode,
        body(broken_uses, [p.broken for p in parts]),
        body(fixed_uses, [p.fixed for p in parts]),
    )


def generate(rng: random.Random) -> Example:
    return _assemble(rng, one_or_two(rng, SHAPES))
