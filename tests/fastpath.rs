//! The fast render path (`promptops_core::fast`) against minijinja: every
//! render must give the same output or the same error with the fast path
//! as through minijinja only. Inputs: the shared render vectors, the
//! benchmark workload, the example prompts, and a deterministic generator
//! of templates from the subset grammar (plus constructs outside it) ×
//! contexts of many value types and object shapes.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use promptops_core::fast::FastTemplate;
use promptops_core::{
    Client, Limits, Prompt, PromptData, PromptVersion, RenderPath, SnapshotData, Source, Update,
    Value, to_value,
};
use promptops_tests::{bench_workload, load_vector, render_vector_client};
use serde_json::json;

/// What a render gave, comparably: the text/messages or the error's kind
/// and message.
fn outcome(r: &promptops_core::Result<promptops_core::Rendered>) -> String {
    match r {
        Ok(r) => format!(
            "ok {}",
            serde_json::to_string(&json!({"text": r.text, "messages": r.messages})).unwrap()
        ),
        Err(e) => format!("err {:?} {}", e.kind(), e),
    }
}

/// Render both ways and compare; returns the default render's path (None
/// for an error).
fn same(p: &Prompt, vars: &Value, what: &str) -> Option<RenderPath> {
    let fast = p.render(vars);
    let slow = p.render_minijinja(vars);
    assert_eq!(
        outcome(&fast),
        outcome(&slow),
        "{what}: fast path and minijinja differ for vars {vars:?}"
    );
    if let Ok(s) = &slow {
        assert_eq!(s.render_path(), RenderPath::Minijinja, "{what}");
    }
    fast.ok().map(|r| r.render_path())
}

#[test]
fn render_vectors_match() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let doc = load_vector("render.json");
    let (_dir, client) = render_vector_client(&doc);
    let mut fast = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let g = case.get("get").cloned().unwrap_or(json!({}));
        let opts = promptops_core::GetOptions {
            label: g["label"].as_str().map(String::from),
            version: g["version"].as_u64().map(|v| v as u32),
            fallback: g["fallback"]
                .as_str()
                .map(|f| promptops_core::Fallback::Text(f.to_string())),
        };
        let Ok(mut p) = client.get_with(case["prompt"].as_str().unwrap(), &opts) else {
            continue;
        };
        if let Some(v) = g["variant"].as_str() {
            match p.variant(v) {
                Ok(x) => p = x,
                Err(_) => continue,
            }
        }
        if let Some(m) = g["for_model"].as_str() {
            p = p.for_model(m);
        }
        let vars = to_value(&case.get("vars").cloned().unwrap_or(json!({})));
        if same(&p, &vars, name) == Some(RenderPath::Fast) {
            fast += 1;
        }
    }
    // Most vector prompts are plain variables, loops and conditions.
    assert!(fast >= 15, "only {fast} vector renders took the fast path");
}

#[test]
fn workload_takes_the_fast_path() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let Some(dir) = bench_workload() else {
        panic!("the shared benchmark workload is missing (../shared/bench-workload)");
    };
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let p = |name: &str, template: String| PromptData {
        name: name.into(),
        versions: vec![PromptVersion::text(1, template)],
        labels: [("production".to_string(), 1)].into_iter().collect(),
        policy: None,
    };
    let client = Client::builder().project("bench").build().unwrap();
    client
        .apply(
            Update::Snapshot(SnapshotData::new(
                "bench",
                1,
                vec![
                    p("bench/t1", read("t1.txt")),
                    p("bench/t2", read("t2.jinja")),
                ],
            )),
            Source::Memory,
        )
        .unwrap();
    for t in ["t1", "t2"] {
        let vars: serde_json::Value =
            serde_json::from_str(&read(&format!("{t}_vars.json"))).unwrap();
        let vars = to_value(&vars);
        let prompt = client.get(&format!("bench/{t}")).unwrap();
        assert!(prompt.has_fast_path(), "{t} is in the subset");
        let r = prompt.render(&vars).unwrap();
        assert_eq!(r.render_path(), RenderPath::Fast, "{t}");
        assert_eq!(r.text.unwrap(), read(&format!("{t}_expected.txt")), "{t}");
        assert_eq!(same(&prompt, &vars, t), Some(RenderPath::Fast));
        // Variations: the other branch, no chunks, a missing variable (an
        // error, minijinja's), a non-string value.
        let mut obj =
            serde_json::from_str::<serde_json::Value>(&read(&format!("{t}_vars.json"))).unwrap();
        let m = obj.as_object_mut().unwrap();
        if t == "t2" {
            m.insert("cite_sources".into(), json!(false));
            same(&prompt, &to_value(&obj), "t2 no citations");
            obj["chunks"] = json!([]);
            same(&prompt, &to_value(&obj), "t2 no chunks");
            obj["chunks"] = json!([{"id": 1, "title": null, "url": 2.5, "text": true}]);
            same(&prompt, &to_value(&obj), "t2 odd chunk");
            obj["chunks"] = json!([{"id": 1}]);
            assert!(prompt.render(&to_value(&obj)).is_err());
            same(&prompt, &to_value(&obj), "t2 chunk missing keys");
        }
        let first = obj.as_object().unwrap().keys().next().unwrap().clone();
        obj.as_object_mut().unwrap().remove(&first);
        same(&prompt, &to_value(&obj), "missing variable");
    }
}

#[test]
fn example_prompts_match() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/prompts");
    let client = Client::builder().prompts_dir(&dir).build().unwrap();
    let contexts = [
        json!({}),
        json!({"question": "Where?", "chunks": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]}),
        json!({"question": "Where?", "cite_sources": false, "chunks": []}),
        json!({"user_name": "Dana", "company": "Acme", "order_id": "A-1", "tone": "formal"}),
        json!({"user_name": "Dana", "company": "Acme", "order_id": "A-1"}),
    ];
    let mut fast = 0;
    for name in ["rag/answer", "support/reply", "shared/signature"] {
        let p = client.get(name).unwrap();
        for c in &contexts {
            if same(&p, &to_value(c), name) == Some(RenderPath::Fast) {
                fast += 1;
            }
        }
    }
    assert!(fast >= 2, "rag/answer renders on the fast path");
    // support/reply includes another prompt: not in the subset.
    assert!(!client.get("support/reply").unwrap().has_fast_path());
    assert!(client.get("rag/answer").unwrap().has_fast_path());
}

fn client_with(templates: &[String], limits: Limits) -> Client {
    let prompts = templates
        .iter()
        .enumerate()
        .map(|(i, t)| PromptData {
            name: format!("gen/p{i}"),
            versions: vec![PromptVersion::text(1, t.clone())],
            labels: [("production".to_string(), 1)].into_iter().collect(),
            policy: None,
        })
        .collect();
    let client = Client::builder()
        .project("gen")
        .limits(limits)
        .build()
        .unwrap();
    client
        .apply(
            Update::Snapshot(SnapshotData::new("gen", 1, prompts)),
            Source::Memory,
        )
        .unwrap();
    client
}

#[test]
fn subset_and_non_subset_templates() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let inside = [
        "plain text\n",
        "{{ a }} and {{ b.c }} and {{ d['k'] }} and {{ e[0] }}",
        "{% if a %}x{% elif b is defined %}y{% else %}z{% endif %}",
        "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{% if loop.last %}.{% endif %}{% else %}none{% endfor %}",
        "{% set greeting = 'hi' %}{{ greeting | upper }} {{ name | default('you') | title }}",
        "{{ xs | join(', ') }} {{ xs | length }} {{ v | tojson }} {{ f | round }}",
        "{%- if a -%}\n  {{ a | trim }}\n{%- endif %}",
        "{{ a if b else c }} {{ not a }} {{ a == 1 and b != 'x' or c < 2 }}",
        "{# comment #}{% raw %}{{ not a var }}{% endraw %}",
    ];
    let outside = [
        "{% include 'gen/p0' %}",
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{{ range(3) }}",
        "{{ a ~ b }}",
        "{{ a + 1 }}",
        "{{ xs | reverse }}",
        "{{ a | replace('a', 'b') }}",
        "{% for x in xs if x %}{{ x }}{% endfor %}",
        "{% for k, v in m | items %}{{ k }}{% endfor %}",
        "{% for x in xs %}{{ loop.cycle('a', 'b') }}{% endfor %}",
        "{% for x in xs %}{% set y = x %}{% endfor %}",
        "{% if a %}{% set y = 1 %}{% endif %}",
        "{% for x in xs %}{{ loop }}{% endfor %}",
        "{% block b %}x{% endblock %}",
        "{% with x = 1 %}{{ x }}{% endwith %}",
        "{% filter upper %}x{% endfilter %}",
        "{{ a is string }}",
        "{{ -a }}",
        "{{ 1 < a < 3 }}",
    ];
    for t in inside {
        assert!(FastTemplate::compile(t).is_some(), "should be lowered: {t}");
    }
    for t in outside {
        assert!(
            FastTemplate::compile(t).is_none(),
            "should not be lowered: {t}"
        );
    }
    let all: Vec<String> = inside
        .iter()
        .chain(&outside)
        .map(|s| s.to_string())
        .collect();
    let client = client_with(&all, Limits::default());
    for (i, t) in all.iter().enumerate() {
        let p = client.get(&format!("gen/p{i}")).unwrap();
        assert_eq!(p.has_fast_path(), i < inside.len(), "{t}");
    }
}

/// Fuel: a loop over caller data near the limit. The fast path must give
/// up early enough that minijinja produces the same output or the same
/// out-of-fuel error, and must be taken well below the limit.
#[test]
fn fuel_limit_is_kept() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let t = "{% for x in xs %}[{{ x.name | upper }}{% if x.n > 1 %}+{% endif %}]{% endfor %}"
        .to_string();
    let client = client_with(
        std::slice::from_ref(&t),
        Limits {
            fuel: Some(5_000),
            max_output_bytes: 1 << 20,
        },
    );
    let p = client.get("gen/p0").unwrap();
    let (mut fast, mut errors) = (0, 0);
    for n in (0..400).step_by(3) {
        let xs: Vec<_> = (0..n)
            .map(|i| json!({"name": format!("item{i}"), "n": i % 3}))
            .collect();
        let vars = to_value(&json!({ "xs": xs }));
        match same(&p, &vars, &format!("{n} items")) {
            Some(RenderPath::Fast) => fast += 1,
            None => {
                errors += 1;
                let e = p.render(&vars).unwrap_err();
                assert!(
                    matches!(e, promptops_core::Error::FuelExhausted { .. }),
                    "{e}"
                );
            }
            _ => {}
        }
    }
    assert!(fast >= 5, "small inputs render on the fast path ({fast})");
    assert!(errors >= 5, "large inputs run out of fuel ({errors})");

    // The output limit: the fast path leaves over-long output to the core's
    // check after minijinja, so the error is the same.
    let client = client_with(
        std::slice::from_ref(&t),
        Limits {
            fuel: None,
            max_output_bytes: 100,
        },
    );
    let p = client.get("gen/p0").unwrap();
    for n in [1, 5, 10, 50] {
        let xs: Vec<_> = (0..n).map(|i| json!({"name": "ab", "n": i})).collect();
        same(&p, &to_value(&json!({ "xs": xs })), "output limit");
    }
}

// ---------------------------------------------------------------------------
// The generator.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const KEYS: &[&str] = &[
    "a", "b", "c", "name", "n", "f", "flag", "items", "user", "tags", "nothing", "text",
];
const FIELDS: &[&str] = &["name", "id", "title", "text", "x", "nested"];

fn scalar(r: &mut Rng) -> Value {
    match r.below(6) {
        0 | 1 => Value::from(*r.pick(&[
            "",
            "x",
            "hello world",
            "  padded  ",
            "ÀÉÎ ñ",
            "ΣΑΣ οδός",
            "straße",
            "ǆemo",
            "日本語",
            "emoji 🎉",
            "MiXeD cAsE",
            "don't-stop (now)",
            "line\nbreak",
            "tab\tsep",
            "<b>&amp;</b>",
            "\"quoted\"",
            "1.5",
            "Σ",
        ])),
        2 => match r.below(8) {
            0 => Value::from(0),
            1 => Value::from(1),
            2 => Value::from(-1),
            3 => Value::from(42),
            4 => Value::from(i64::MAX),
            5 => Value::from(u64::MAX),
            6 => Value::from(i128::MIN),
            _ => Value::from(-7),
        },
        3 => Value::from(*r.pick(&[
            0.0,
            -0.0,
            1.0,
            0.5,
            1e21,
            1e-7,
            3.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -2.5,
            100.0,
            1e16,
            2.675,
        ])),
        4 => Value::from(r.chance(50)),
        _ => match r.below(4) {
            0 => Value::from_safe_string("<i>safe</i>".into()),
            1 => Value::from_bytes(b"bytes".to_vec()),
            _ => Value::from(()),
        },
    }
}

/// Maps and lists built the ways callers build them: serde (minijinja's
/// own map and vec types), the bindings' map, std collections (other
/// object types).
fn map_of(r: &mut Rng, entries: Vec<(String, Value)>) -> Value {
    match r.below(4) {
        // minijinja's own insertion-ordered map (what serde and `context!`
        // build).
        0 => Value::from_pairs(entries),
        // The bindings' map (a `SmallMap` up to 16 entries, else an
        // `IndexMap`), built as Python's binding builds it.
        3 => {
            let mut b = promptops_core::vars::MapBuilder::with_capacity(entries.len());
            for (k, v) in entries {
                let key = Value::from(k);
                b.set(key.clone(), promptops_core::vars::key_fingerprint(&key), v);
            }
            b.into_value()
        }
        // Through serde: also minijinja's map type.
        1 => to_value(&entries.into_iter().collect::<BTreeMap<String, Value>>()),
        // Another object type (looked up through the `Object` trait).
        _ => Value::from(entries.into_iter().collect::<BTreeMap<String, Value>>()),
    }
}

fn value(r: &mut Rng, depth: usize) -> Value {
    match r.below(if depth >= 2 { 1 } else { 10 }) {
        0..=5 => scalar(r),
        6 | 7 => {
            let n = r.below(5);
            let items: Vec<Value> = (0..n).map(|_| value(r, depth + 1)).collect();
            if r.chance(75) {
                Value::from(items)
            } else {
                Value::from(items.into_iter().collect::<VecDeque<Value>>())
            }
        }
        _ => {
            let mut entries = Vec::new();
            for k in FIELDS {
                if r.chance(70) {
                    entries.push((k.to_string(), value(r, depth + 1)));
                }
            }
            map_of(r, entries)
        }
    }
}

/// A record: a map with (usually) every field.
fn record(r: &mut Rng, all: bool) -> Value {
    let mut entries = Vec::new();
    for k in FIELDS {
        if all || r.chance(80) {
            let v = if *k == "nested" && r.chance(50) {
                value(r, 1)
            } else {
                scalar(r)
            };
            entries.push((k.to_string(), v));
        }
    }
    map_of(r, entries)
}

/// A list of records (what loops usually run over).
fn records(r: &mut Rng, all: bool) -> Value {
    let n = r.below(5);
    let items: Vec<Value> = (0..n).map(|_| record(r, all)).collect();
    if r.chance(85) {
        Value::from(items)
    } else {
        Value::from(items.into_iter().collect::<VecDeque<Value>>())
    }
}

/// A render context: most are complete (every variable, records with
/// every field), the rest miss things.
fn context(r: &mut Rng) -> Value {
    let all = r.chance(70);
    let mut entries = Vec::new();
    for k in KEYS {
        if all || r.chance(80) {
            let v = match *k {
                "user" if r.chance(85) => record(r, all),
                "items" | "tags" if r.chance(85) => records(r, all),
                "nothing" => Value::from(()),
                _ => value(r, 0),
            };
            entries.push((k.to_string(), v));
        }
    }
    map_of(r, entries)
}

struct Gen<'r> {
    r: &'r mut Rng,
    loop_vars: Vec<&'static str>,
}

impl Gen<'_> {
    fn path(&mut self) -> String {
        let mut s = if !self.loop_vars.is_empty() && self.r.chance(60) {
            self.r.pick(&self.loop_vars).to_string()
        } else {
            self.r.pick(KEYS).to_string()
        };
        let steps = if self.r.chance(50) {
            0
        } else {
            1 + self.r.below(2)
        };
        for _ in 0..steps {
            match self.r.below(5) {
                0..=2 => {
                    s.push('.');
                    let f = *self.r.pick(FIELDS);
                    s.push_str(f);
                }
                3 => s.push_str(&format!("[\"{}\"]", self.r.pick(FIELDS))),
                _ => s.push_str(&format!("[{}]", self.r.below(3))),
            }
        }
        s
    }

    fn atom(&mut self) -> String {
        if !self.loop_vars.is_empty() && self.r.chance(15) {
            return format!(
                "loop.{}",
                self.r.pick(&[
                    "index",
                    "index0",
                    "first",
                    "last",
                    "length",
                    "revindex",
                    "revindex0",
                    "previtem",
                    "depth"
                ])
            );
        }
        match self.r.below(8) {
            0 => self
                .r
                .pick(&[
                    "'lit'", "\"x\"", "3", "2.5", "true", "false", "none", "0", "-1", "''",
                    "[1, 2]",
                ])
                .to_string(),
            _ => self.path(),
        }
    }

    fn filtered(&mut self) -> String {
        let mut s = self.atom();
        let n = match self.r.below(10) {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        for _ in 0..n {
            let f = *self.r.pick(&[
                "upper",
                "lower",
                "trim",
                "title",
                "capitalize",
                "length",
                "count",
                "default('d')",
                "default('d', true)",
                "d",
                "join(', ')",
                "join",
                "tojson",
                "round",
                // outside the subset
                "reverse",
                "first",
                "int",
                "string",
                "replace('a', 'b')",
            ]);
            s = format!("{s} | {f}");
        }
        s
    }

    fn cond(&mut self, depth: usize) -> String {
        if depth > 1 {
            return self.filtered();
        }
        match self.r.below(11) {
            0 | 1 => self.filtered(),
            2 => format!("{} is defined", self.path()),
            3 => format!("{} is not defined", self.path()),
            4 => format!("{} is none", self.atom()),
            5 => format!(
                "{} {} {}",
                self.filtered(),
                self.r.pick(&["==", "!=", "<", "<=", ">", ">="]),
                self.atom()
            ),
            6 => format!("not {}", self.cond(depth + 1)),
            7 => format!("{} and {}", self.cond(depth + 1), self.cond(depth + 1)),
            8 => format!("{} or {}", self.cond(depth + 1), self.cond(depth + 1)),
            9 => format!("({})", self.cond(depth + 1)),
            _ => format!("{} is string", self.atom()),
        }
    }

    fn emit(&mut self) -> String {
        let e = match self.r.below(10) {
            0 => format!(
                "{} if {} else {}",
                self.filtered(),
                self.cond(1),
                self.atom()
            ),
            1 => format!("{} ~ {}", self.atom(), self.atom()),
            2 => self.cond(0),
            _ => self.filtered(),
        };
        let (l, r) = *self
            .r
            .pick(&[("{{ ", " }}"), ("{{- ", " }}"), ("{{ ", " -}}")]);
        format!("{l}{e}{r}")
    }

    fn text(&mut self) -> String {
        self.r
            .pick(&[
                "Hello ",
                "\n",
                "  ",
                " - ",
                "line\n",
                "\n\n",
                "  indented\n",
                "x",
                "{# c #}",
                "é ",
                "\t",
                "   \n  ",
            ])
            .to_string()
    }

    fn tag(&mut self, body: &str) -> String {
        let (l, r) = *self.r.pick(&[
            ("{% ", " %}"),
            ("{% ", " %}"),
            ("{%- ", " %}"),
            ("{% ", " -%}"),
            ("{%+ ", " %}"),
        ]);
        let before = *self.r.pick(&["", "", "  ", "\n", "  \n  "]);
        let after = *self.r.pick(&["", "\n", "\n\n", " "]);
        format!("{before}{l}{body}{r}{after}")
    }

    fn block(&mut self, depth: usize, top: bool) -> String {
        let n = 1 + self.r.below(3);
        let mut s = String::new();
        for _ in 0..n {
            let k = self.r.below(if depth >= 2 { 2 } else { 10 });
            match k {
                0 => s.push_str(&self.text()),
                1..=3 => s.push_str(&self.emit()),
                4 | 5 => {
                    let c = self.cond(0);
                    s.push_str(&self.tag(&format!("if {c}")));
                    s.push_str(&self.block(depth + 1, false));
                    if self.r.chance(40) {
                        let c = self.cond(0);
                        s.push_str(&self.tag(&format!("elif {c}")));
                        s.push_str(&self.block(depth + 1, false));
                    }
                    if self.r.chance(50) {
                        s.push_str(&self.tag("else"));
                        s.push_str(&self.block(depth + 1, false));
                    }
                    s.push_str(&self.tag("endif"));
                }
                6 | 7 => {
                    let var = *self.r.pick(&["x", "item", "row"]);
                    let seq = if self.r.chance(90) {
                        self.r.pick(&["items", "tags", "items", "user"]).to_string()
                    } else {
                        self.path()
                    };
                    s.push_str(&self.tag(&format!("for {var} in {seq}")));
                    self.loop_vars.push(var);
                    s.push_str(&self.block(depth + 1, false));
                    self.loop_vars.pop();
                    if self.r.chance(30) {
                        s.push_str(&self.tag("else"));
                        s.push_str(&self.block(depth + 1, false));
                    }
                    s.push_str(&self.tag("endfor"));
                }
                8 if top => {
                    let name = *self.r.pick(&["a", "v", "greeting"]);
                    let e = self.filtered();
                    s.push_str(&self.tag(&format!("set {name} = {e}")));
                }
                _ => s.push_str(&self.text()),
            }
        }
        s
    }
}

/// Thousands of generated template × context pairs render identically with
/// and without the fast path; many take the fast path, many fall back.
#[test]
fn generated_templates_match() {
    // These tests are about the fast path: on, whatever the environment says.
    promptops_core::set_fast_render(true);
    let mut r = Rng(0x5eed_1234_abcd_0001);
    let templates: Vec<String> = (0..1000)
        .map(|_| {
            Gen {
                r: &mut r,
                loop_vars: Vec::new(),
            }
            .block(0, true)
        })
        .collect();
    let contexts: Vec<Value> = (0..12).map(|_| context(&mut r)).collect();
    let client = client_with(&templates, Limits::default());
    let (mut fast, mut fallback, mut errors, mut lowered) = (0usize, 0usize, 0usize, 0usize);
    let mut fuel_checked = 0usize;
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut env = minijinja::Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .unwrap(),
    );
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_fuel(Some(u64::MAX / 1024));
    for (i, t) in templates.iter().enumerate() {
        let p = client.get(&format!("gen/p{i}")).unwrap();
        let ft = FastTemplate::compile(t);
        assert_eq!(p.has_fast_path(), ft.is_some(), "{t:?}");
        if ft.is_some() {
            lowered += 1;
        }
        for ctx in &contexts {
            match same(&p, ctx, &format!("template {i} {t:?}")) {
                Some(RenderPath::Fast) => fast += 1,
                Some(_) => fallback += 1,
                None => {
                    errors += 1;
                    if let Err(e) = p.render(ctx) {
                        let m = e.to_string();
                        let m = m.split(':').next_back().unwrap_or("").trim().to_string();
                        *kinds
                            .entry(m.chars().take(40).collect::<String>())
                            .or_insert(0) += 1;
                    }
                }
            }
            // The fuel estimate never undercounts what minijinja charges.
            if let Some(ft) = &ft
                && let Some(est) = ft.estimate_units(ctx)
                && let Ok(tmpl) = env.template_from_str(t)
                && let Ok(c) = tmpl.render_captured(ctx.clone())
            {
                let (consumed, _) = c.state().fuel_levels().unwrap();
                assert!(
                    est + 64 >= consumed * 64,
                    "fuel estimate {est} units < minijinja's {consumed} fuel for {t:?} with {ctx:?}"
                );
                fuel_checked += 1;
            }
        }
    }
    let total = fast + fallback + errors;
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    eprintln!("most common errors: {:?}", &kinds[..kinds.len().min(12)]);
    eprintln!(
        "{total} renders: {fast} fast, {fallback} minijinja, {errors} errors; {lowered}/{} templates lowered; {fuel_checked} fuel estimates checked",
        templates.len()
    );
    assert!(total >= 12_000);
    // Many generated templates fail somewhere for some context (strict
    // undefined, filters on the wrong type): errors are compared too.
    assert!(
        fast >= 2_000 && fast >= total / 6,
        "fast path too rarely taken: {fast}/{total}"
    );
    assert!(fallback >= 100, "fallbacks exercised: {fallback}");
    assert!(errors >= 100, "errors exercised: {errors}");
    assert!(lowered >= templates.len() / 4 && lowered < templates.len());
    assert!(fuel_checked >= 2_000);
}
