//! Token counting on the shared corpus, the three counters interleaved in
//! short batches so that load changes on a shared machine hit all of them
//! alike: bpe-openai, promptops cold (`count_uncached`) and promptops warm
//! (`count`, piece cache filled by the warm-up). Prints the median tokens/s
//! of each and the median of the per-round ratios.
//!
//! cargo run --release -p promptops-benches --example tokens_interleaved [rounds]

use std::hint::black_box;
use std::time::Instant;

use promptops_benches::{read, read_json};
use promptops_core::Encoding;

type Counter<'a> = &'a dyn Fn(&str) -> usize;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(41);
    let corpus = read("corpus.txt");
    let expected = read_json("expected_tokens.json");
    for enc in [Encoding::Cl100kBase, Encoding::O200kBase] {
        let want = expected[enc.name()].as_u64().expect("count") as usize;
        let ops: [(&str, Counter); 3] = [
            ("bpe-openai", &|t| enc.count_bpe_openai(t)),
            ("promptops cold", &|t| enc.count_uncached(t)),
            ("promptops warm", &|t| enc.count(t)),
        ];
        for (name, op) in &ops {
            assert_eq!(op(&corpus), want, "{name}");
        }
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
        for _ in 0..rounds {
            for (i, (_, op)) in ops.iter().enumerate() {
                let n = 10;
                let t = Instant::now();
                for _ in 0..n {
                    black_box(op(black_box(&corpus)));
                }
                rates[i].push((n * want) as f64 / t.elapsed().as_secs_f64());
            }
        }
        let ratio = |a: usize, b: usize| {
            median(rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect())
        };
        for (i, (name, _)) in ops.iter().enumerate() {
            println!(
                "{} {name}: {:.2} M tokens/s",
                enc.name(),
                median(rates[i].clone()) / 1e6
            );
        }
        println!(
            "{}: cold {:.2}× bpe-openai, warm {:.2}× bpe-openai ({rounds} interleaved rounds)",
            enc.name(),
            ratio(1, 0),
            ratio(2, 0)
        );
    }
}
