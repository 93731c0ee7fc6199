//! Criterion benchmarks of the core engine on the shared workload:
//! get+render T1/T2 (fast path, and forced through minijinja) vs raw
//! minijinja, token counting (promptops warm/cold) vs bpe-openai and
//! tiktoken-rs, and
//! loading a 1,000-prompt snapshot.
//!
//! cargo bench -p promptops-benches --bench core

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use promptops_benches::{large_snapshot, read, read_json, workload_snapshot};
use promptops_core::{
    Client, CompiledSnapshot, Encoding, Limits, RenderPath, SnapshotData, Source, Update, to_value,
};

fn client() -> Client {
    let c = Client::builder().project("bench").build().expect("client");
    c.apply(Update::Snapshot(workload_snapshot()), Source::Memory)
        .expect("apply");
    c
}

fn render(c: &mut Criterion) {
    let client = client();
    // Raw minijinja with the same whitespace settings promptops uses (and
    // the workload's expected outputs assume).
    let mut raw = minijinja::Environment::new();
    raw.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()
            .unwrap(),
    );
    raw.add_template_owned("t1", read("t1.txt")).unwrap();
    raw.add_template_owned("t2", read("t2.jinja")).unwrap();
    for (case, tmpl, vars, expected) in [
        ("T1", "t1", "t1_vars.json", "t1_expected.txt"),
        ("T2", "t2", "t2_vars.json", "t2_expected.txt"),
    ] {
        let vars = to_value(&read_json(vars));
        let expected = read(expected);
        let name = format!("bench/{tmpl}");
        // Check before timing: both produce the expected text.
        let ours = client.get(&name).unwrap().render(&vars).unwrap();
        assert_eq!(
            ours.text.as_deref(),
            Some(expected.as_str()),
            "{case} output"
        );
        if promptops_core::fast_render_enabled() {
            assert_eq!(ours.render_path(), RenderPath::Fast, "{case} fast path");
        }
        let slow = client.get(&name).unwrap().render_minijinja(&vars).unwrap();
        assert_eq!(slow.text, ours.text, "{case} minijinja path output");
        let theirs = raw
            .get_template(tmpl)
            .unwrap()
            .render(vars.clone())
            .unwrap();
        assert_eq!(theirs, expected, "{case} raw output");

        let mut g = c.benchmark_group(format!("render_{case}"));
        g.bench_function("promptops get+render", |b| {
            b.iter(|| {
                let p = client.get(black_box(&name)).unwrap();
                black_box(p.render(&vars).unwrap())
            })
        });
        g.bench_function("promptops get+render (minijinja path)", |b| {
            b.iter(|| {
                let p = client.get(black_box(&name)).unwrap();
                black_box(p.render_minijinja(&vars).unwrap())
            })
        });
        g.bench_function("minijinja raw render", |b| {
            b.iter(|| {
                let t = raw.get_template(black_box(tmpl)).unwrap();
                black_box(t.render(vars.clone()).unwrap())
            })
        });
        g.finish();
    }
}

fn tokens(c: &mut Criterion) {
    let corpus = read("corpus.txt");
    let expected = read_json("expected_tokens.json");
    let tk_cl = tiktoken_rs::cl100k_base().unwrap();
    let tk_o2 = tiktoken_rs::o200k_base().unwrap();
    for (enc, tk) in [
        (Encoding::Cl100kBase, &tk_cl),
        (Encoding::O200kBase, &tk_o2),
    ] {
        let want = expected[enc.name()].as_u64().unwrap() as usize;
        assert_eq!(enc.count(&corpus), want, "promptops {}", enc.name());
        assert_eq!(enc.count_uncached(&corpus), want, "cold {}", enc.name());
        assert_eq!(
            enc.count_bpe_openai(&corpus),
            want,
            "bpe-openai {}",
            enc.name()
        );
        assert_eq!(
            tk.encode_ordinary(&corpus).len(),
            want,
            "tiktoken-rs {}",
            enc.name()
        );
        let mut g = c.benchmark_group(format!("tokens_{}", enc.name()));
        // Throughput in tokens: criterion's "elements/s" is tokens/s.
        g.throughput(Throughput::Elements(want as u64));
        // Warm: the piece cache holds the corpus's pieces after the first
        // iteration (as when the same prompts are counted over and over).
        g.bench_function(
            BenchmarkId::new("promptops count (cache warm)", "corpus"),
            |b| b.iter(|| black_box(enc.count(black_box(&corpus)))),
        );
        // Cold: no cache, every piece pre-tokenized and counted afresh.
        g.bench_function(
            BenchmarkId::new("promptops count (no cache)", "corpus"),
            |b| b.iter(|| black_box(enc.count_uncached(black_box(&corpus)))),
        );
        g.bench_function(BenchmarkId::new("bpe-openai count", "corpus"), |b| {
            b.iter(|| black_box(enc.count_bpe_openai(black_box(&corpus))))
        });
        g.bench_function(
            BenchmarkId::new("tiktoken-rs encode_ordinary", "corpus"),
            |b| b.iter(|| black_box(tk.encode_ordinary(black_box(&corpus)).len())),
        );
        g.finish();
    }
}

fn snapshot_load(c: &mut Criterion) {
    let snap = large_snapshot(1000);
    let json = snap.to_json();
    let mut g = c.benchmark_group("snapshot_load_1000");
    g.sample_size(20);
    g.bench_function("parse+verify+compile", |b| {
        b.iter(|| {
            let s = SnapshotData::from_json(black_box(&json)).unwrap();
            black_box(CompiledSnapshot::compile(
                s,
                Limits::default(),
                Source::Memory,
            ))
        })
    });
    g.bench_function("store apply (parse+compile+swap)", |b| {
        let client = Client::builder().project("large").build().unwrap();
        let mut rev = 1;
        b.iter(|| {
            let mut s = SnapshotData::from_json(&json).unwrap();
            rev += 1;
            s.revision = rev;
            client.apply(Update::Snapshot(s), Source::Memory).unwrap()
        })
    });
    g.finish();
    eprintln!("1,000-prompt snapshot: {} bytes of JSON", json.len());
}

criterion_group!(benches, render, tokens, snapshot_load);
criterion_main!(benches);
