//! Side-by-side timing in the peers' method (BASELINE.md of the shared
//! workload): after a 0.2 s warm-up, 5 batches of about 0.5 s; print the
//! median batch's ops/s, min and max as one JSON line. The side-by-side
//! scripts (`benches/*.py`, `benches/*.mjs`) run this binary beside the peer
//! libraries in the same run.
//!
//! timing tokens cl100k_base|o200k_base [promptops|promptops-cold|bpe-openai|tiktoken-rs]
//!   (promptops: `Encoding::count`, piece cache warm after the warm-up;
//!   promptops-cold: `Encoding::count_uncached`, no cache)
//! timing render t1|t2 [promptops|promptops-minijinja|minijinja]

use std::hint::black_box;
use std::time::{Duration, Instant};

use promptops_benches::{read, read_json, workload_snapshot};
use promptops_core::{Client, Encoding, RenderPath, Source, Update, to_value};

fn measure(mut op: impl FnMut()) -> (f64, f64, f64) {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(200) {
        op();
    }
    // Calibrate a batch of ~0.5 s.
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < Duration::from_millis(50) {
        op();
        n += 1;
    }
    let per_batch = (n * 10).max(1);
    let mut rates: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            per_batch as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    (rates[2], rates[0], rates[4])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let (case, lib, (median, min, max), extra) = match arg(0) {
        "tokens" => {
            let corpus = read("corpus.txt");
            let enc = Encoding::from_name(arg(1)).expect("cl100k_base or o200k_base");
            let lib = if arg(2).is_empty() {
                "promptops"
            } else {
                arg(2)
            };
            let want = read_json("expected_tokens.json")[enc.name()]
                .as_u64()
                .unwrap() as usize;
            let r = match lib {
                "promptops" => {
                    assert_eq!(enc.count(&corpus), want);
                    measure(|| {
                        black_box(enc.count(black_box(&corpus)));
                    })
                }
                "promptops-cold" => {
                    assert_eq!(enc.count_uncached(&corpus), want);
                    measure(|| {
                        black_box(enc.count_uncached(black_box(&corpus)));
                    })
                }
                "bpe-openai" => {
                    assert_eq!(enc.count_bpe_openai(&corpus), want);
                    measure(|| {
                        black_box(enc.count_bpe_openai(black_box(&corpus)));
                    })
                }
                "tiktoken-rs" => {
                    let tk = match enc {
                        Encoding::Cl100kBase => tiktoken_rs::cl100k_base().unwrap(),
                        Encoding::O200kBase => tiktoken_rs::o200k_base().unwrap(),
                    };
                    assert_eq!(tk.encode_ordinary(&corpus).len(), want);
                    measure(|| {
                        black_box(tk.encode_ordinary(black_box(&corpus)).len());
                    })
                }
                other => panic!("unknown library {other}"),
            };
            (
                format!("{} count", enc.name()),
                lib.to_string(),
                r,
                want as f64,
            )
        }
        "render" => {
            let t = arg(1);
            let (tmpl, vars, expected) = match t {
                "t1" => ("t1.txt", "t1_vars.json", "t1_expected.txt"),
                "t2" => ("t2.jinja", "t2_vars.json", "t2_expected.txt"),
                other => panic!("unknown case {other}"),
            };
            let vars = to_value(&read_json(vars));
            let expected = read(expected);
            let lib = if arg(2).is_empty() {
                "promptops"
            } else {
                arg(2)
            };
            let r = match lib {
                // `promptops`: the default render (fast path when the
                // template fits it); `promptops-minijinja`: the same prompt
                // rendered through minijinja only.
                "promptops" | "promptops-minijinja" => {
                    let client = Client::builder().project("bench").build().unwrap();
                    client
                        .apply(Update::Snapshot(workload_snapshot()), Source::Memory)
                        .unwrap();
                    let name = format!("bench/{t}");
                    let fast = lib == "promptops";
                    let render = |p: &promptops_core::Prompt| {
                        if fast {
                            p.render(&vars)
                        } else {
                            p.render_minijinja(&vars)
                        }
                    };
                    let out = render(&client.get(&name).unwrap()).unwrap();
                    assert_eq!(out.text.as_deref(), Some(expected.as_str()));
                    let want = if fast {
                        RenderPath::Fast
                    } else {
                        RenderPath::Minijinja
                    };
                    assert_eq!(out.render_path(), want, "render path");
                    measure(|| {
                        let p = client.get(black_box(&name)).unwrap();
                        black_box(render(&p).unwrap());
                    })
                }
                "minijinja" => {
                    let mut env = minijinja::Environment::new();
                    env.set_syntax(
                        minijinja::syntax::SyntaxConfig::builder()
                            .trim_blocks(true)
                            .lstrip_blocks(true)
                            .keep_trailing_newline(true)
                            .build()
                            .unwrap(),
                    );
                    env.add_template_owned("t", read(tmpl)).unwrap();
                    let out = env.get_template("t").unwrap().render(vars.clone()).unwrap();
                    assert_eq!(out, expected);
                    measure(|| {
                        let t = env.get_template(black_box("t")).unwrap();
                        black_box(t.render(vars.clone()).unwrap());
                    })
                }
                other => panic!("unknown library {other}"),
            };
            (
                format!("{} get+render", t.to_uppercase()),
                lib.to_string(),
                r,
                0.0,
            )
        }
        _ => {
            eprintln!("usage: timing tokens ENCODING [LIB] | timing render t1|t2 [LIB]");
            std::process::exit(2);
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "lang": "rust", "library": lib, "case": case,
            "ops_per_s": median, "min": min, "max": max,
            "us_per_op": 1e6 / median,
            "tokens_per_s": if extra > 0.0 { Some(median * extra) } else { None },
        })
    );
}
