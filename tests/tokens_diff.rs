//! Differential tests of the core's token counter against tiktoken-rs (a
//! port of tiktoken with its real patterns, run by `fancy-regex`) and
//! `bpe-openai`: the same pieces and the same counts on the 20 KB corpus
//! (every line, many windows) and on tens of thousands of generated strings
//! that stress pre-tokenization. Deterministic (fixed seed); run with
//! `cargo test --release -p promptops-tests --test tokens_diff`.

use std::sync::Arc;

use promptops_core::tokens::Encoding;
use promptops_tests::bench_workload;
use tiktoken_rs::CoreBPE;

/// tiktoken's cl100k_base pattern (tiktoken-rs 0.12, tiktoken 0.12+).
const CL100K_PAT: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

struct Oracle {
    enc: Encoding,
    tk: CoreBPE,
    pat: fancy_regex::Regex,
}

fn oracles() -> Vec<Oracle> {
    vec![
        Oracle {
            enc: Encoding::Cl100kBase,
            tk: tiktoken_rs::cl100k_base().unwrap(),
            pat: fancy_regex::Regex::new(CL100K_PAT).unwrap(),
        },
        Oracle {
            enc: Encoding::O200kBase,
            tk: tiktoken_rs::o200k_base().unwrap(),
            pat: fancy_regex::Regex::new(tiktoken_rs::O200K_BASE_PAT_STR).unwrap(),
        },
    ]
}

impl Oracle {
    fn pieces<'a>(&self, text: &'a str) -> Vec<&'a str> {
        self.pat
            .find_iter(text)
            .map(|m| m.unwrap().as_str())
            .collect()
    }

    /// Checks one text; returns whether bpe-openai agreed with tiktoken.
    fn check(&self, text: &str) -> bool {
        let want = self.tk.encode_ordinary(text).len();
        let counter = self.enc.counter().expect("counter");
        let ours = counter.split(text);
        let theirs = self.pieces(text);
        assert_eq!(ours, theirs, "{} pieces of {text:?}", self.enc.name());
        assert_eq!(
            self.enc.count_uncached(text),
            want,
            "{} uncached {text:?}",
            self.enc.name()
        );
        assert_eq!(
            self.enc.count(text),
            want,
            "{} cached {text:?}",
            self.enc.name()
        );
        // Twice: the second count reads the cache the first one filled.
        assert_eq!(
            self.enc.count(text),
            want,
            "{} cached again {text:?}",
            self.enc.name()
        );
        self.enc.count_bpe_openai(text) == want
    }
}

fn corpus() -> String {
    let dir = std::env::var("PROMPTOPS_WORKLOAD")
        .map(std::path::PathBuf::from)
        .ok()
        .or_else(bench_workload)
        .expect("the shared workload (../shared/bench-workload or $PROMPTOPS_WORKLOAD)");
    std::fs::read_to_string(dir.join("corpus.txt")).expect("corpus.txt")
}

/// splitmix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const WORDS: &[&str] = &[
    "hello",
    "World",
    "THE",
    "quick",
    "Zoë",
    "café",
    "naïve",
    "Straße",
    "ǅemal",
    "ǈ",
    "ʰello",
    "ſtate",
    "Ωmega",
    "привет",
    "Москва",
    "ΑΘΗΝΑ",
    "λόγος",
    "中文",
    "字符",
    "日本語",
    "ひらがな",
    "カタカナ",
    "한국어",
    "مرحبا",
    "العربية",
    "हिन्दी",
    "नमस्ते",
    "ক্ষ",
    "ไทย",
    "e\u{301}",
    "a\u{308}\u{323}",
    "\u{301}",
    "\u{300}x",
    "Ⅻ",
    "x²",
    "ꓸ",
    "ᾼ",
    "İstanbul",
    "ΣΊΣΥΦΟΣ",
    "MacDonald",
    "iPhone",
    "XMLHttpRequest",
    "snake_case",
    "camelCase",
    "a",
    "I",
    "antidisestablishmentarianism",
    "Pneumonoultramicroscopicsilicovolcanoconiosis",
];

const CONTRACTIONS: &[&str] = &[
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'S",
    "'T",
    "'RE",
    "'Ve",
    "'M",
    "'LL",
    "'lL",
    "'D",
    "'ſ",
    "’s",
    "’ll",
    "’RE",
    "'",
    "''",
    "'x",
    "'sup",
    "'dve",
    "\u{2bc}s",
    "'\u{17f}t",
];

const SPACES: &[&str] = &[
    " ", "  ", "   ", "\t", "\t\t", "\n", "\r\n", "\n\n", "\r", " \n", "  \n", " \r\n ", "\u{a0}",
    "\u{3000}", "\u{2028}", "\u{2029}", "\u{0b}", "\u{0c}", "\u{85}", "\u{2003}", " \u{a0} ",
    "\u{feff}", "\u{200b}", "\n ", "\n  \n\t",
];

const PUNCT: &[&str] = &[
    ".", ",", ";", ":", "!", "?", "...", "/", "//", "\\", "-", "--", "(", ")", "[", "]", "{", "}",
    "\"", "`", "~", "@", "#", "$", "%", "^", "&", "*", "_", "+", "=", "<", ">", "|", "“", "”", "—",
    "…", "«", "»", "¿", "¡", "・", "。", "、", "!?!", "/*", "*/", "=>", "->", "::", "</", "/>",
    "./", "/\n", "!\n", ".\r\n/", "§", "©", "€", "£", "°",
];

const SPECIAL: &[&str] = &[
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|endofprompt|>",
    "<|im_start|>",
];

const EMOJI: &[&str] = &[
    "😀",
    "👍🏽",
    "👨‍👩‍👧‍👦",
    "❤️",
    "🏳️‍🌈",
    "🇫🇷",
    "✌🏿",
    "☺︎",
    "🧑‍💻",
    "1️⃣",
    "#️⃣",
    "👁‍🗨",
];

const NUMBERS: &[&str] = &[
    "٣٤٥",
    "१२३",
    "½",
    "⅓",
    "²³",
    "Ⅳ",
    "①",
    "１２３",
    "𝟘𝟙",
    "0x1F",
    "3.14",
];

const CODE: &[&str] = &[
    "def fib(n):\n    return n if n < 2 else fib(n-1) + fib(n-2)\n",
    "fn main() {\n\tprintln!(\"{}\", x);\n}\n",
    "if (a && b) { return c; }",
    "<div class=\"x\">Hi</div>",
    "SELECT * FROM t WHERE id = 42;",
    "    // comment\n        x += 1;  \n",
    "http://example.com/a/b?c=d&e=f",
    "{\"key\": [1, 2, 3], \"k2\": null}",
];

fn random_string(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..1 + rng.below(12) {
        match rng.below(11) {
            0 | 1 => {
                let w = rng.pick(WORDS);
                match rng.below(4) {
                    0 => s.push_str(&w.to_uppercase()),
                    1 => s.push_str(&w.to_lowercase()),
                    _ => s.push_str(w),
                }
            }
            2 => s.push_str(rng.pick(CONTRACTIONS)),
            3 => {
                let n = 1 + rng.below(20);
                for _ in 0..n {
                    s.push(char::from(b'0' + rng.below(10) as u8));
                }
            }
            4 => {
                // Whitespace runs, sometimes long, sometimes before newlines.
                let n = 1 + rng.below(4);
                for _ in 0..n {
                    s.push_str(rng.pick(SPACES));
                }
                if rng.below(3) == 0 {
                    s.push_str(&" ".repeat(rng.below(10)));
                    s.push('\n');
                }
            }
            5 => {
                for _ in 0..1 + rng.below(3) {
                    s.push_str(rng.pick(PUNCT));
                }
            }
            6 => s.push_str(rng.pick(SPECIAL)),
            7 => s.push_str(rng.pick(EMOJI)),
            8 => s.push_str(rng.pick(NUMBERS)),
            9 => s.push_str(rng.pick(CODE)),
            _ => {
                // A random scalar from a mixed-script range.
                let ranges: [(u32, u32); 8] = [
                    (0x20, 0x7e),
                    (0xa0, 0x24f),
                    (0x300, 0x36f),
                    (0x370, 0x52f),
                    (0x600, 0x6ff),
                    (0x900, 0x97f),
                    (0x3040, 0x30ff),
                    (0x1f300, 0x1faff),
                ];
                let (a, b) = ranges[rng.below(ranges.len())];
                let cp = a + rng.below((b - a + 1) as usize) as u32;
                s.push(char::from_u32(cp).unwrap_or('?'));
            }
        }
        if rng.below(3) == 0 {
            s.push(' ');
        }
    }
    s
}

fn char_starts(s: &str) -> Vec<usize> {
    s.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(s.len()))
        .collect()
}

#[test]
fn corpus_lines_and_windows() {
    let corpus = corpus();
    let mut bpe_openai_diffs = 0;
    let mut cases = 0;
    for o in oracles() {
        o.check(&corpus);
        for line in corpus.split_inclusive('\n') {
            o.check(line);
            o.check(line.trim_end_matches('\n'));
            cases += 2;
        }
        let starts = char_starts(&corpus);
        for (n, &a) in starts.iter().enumerate().step_by(11) {
            for len in [1, 2, 3, 4, 5, 7, 9, 13, 21, 34, 55, 89, 144, 233, 377] {
                let Some(&b) = starts.get(n + len) else { break };
                if !o.check(&corpus[a..b]) {
                    bpe_openai_diffs += 1;
                }
                cases += 1;
            }
        }
    }
    eprintln!("{cases} corpus cases; bpe-openai differed from tiktoken on {bpe_openai_diffs}");
    assert!(cases > 20_000);
}

#[test]
fn generated_strings() {
    let mut rng = Rng(0x05ee_d0f7_0c35);
    let mut bpe_openai_diffs = Vec::new();
    let oracles = oracles();
    let n = 30_000;
    for _ in 0..n {
        let s = random_string(&mut rng);
        for o in &oracles {
            if !o.check(&s) {
                bpe_openai_diffs.push((o.enc.name(), s.clone()));
            }
        }
    }
    eprintln!(
        "{n} generated strings × 2 encodings; bpe-openai differed from tiktoken on {}: {:?}",
        bpe_openai_diffs.len(),
        bpe_openai_diffs.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn edge_cases() {
    let mut texts: Vec<String> = [
        "",
        " ",
        "  ",
        "\n",
        "\r\n",
        " \n",
        "\n ",
        "a\n  ",
        "a \n",
        "x  \n  ",
        "'s",
        "'S",
        "'ſ",
        "a's",
        "A'S",
        "ABC's",
        "abc'LL",
        "'",
        "''s",
        "don't",
        "DON'T",
        "ǅ",
        "ǅa'd",
        "ʰʰ",
        "\u{301}",
        "\u{301}a",
        " \u{301}a",
        "a\u{301}",
        "A\u{301}B",
        "1234567",
        " 12",
        "a1",
        "!!!\n\n",
        " !!",
        "  !!",
        "!/\n/x",
        "\u{a0}\u{a0}x",
        "\t\tx",
        "\u{3000}x",
        "<|endoftext|>",
        "<|endoftext|> is a special token written as text",
        "a<|endoftext|>b",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for n in 1..=40 {
        texts.push("7".repeat(n));
        texts.push(format!("x{}y", "9".repeat(n)));
        texts.push(" ".repeat(n));
        texts.push(format!("{}x", " ".repeat(n)));
        texts.push(format!("a{}\n", " ".repeat(n)));
        texts.push(format!("\n{}", " ".repeat(n)));
        texts.push("a".repeat(n * 7));
        texts.push("!".repeat(n));
    }
    for o in oracles() {
        for t in &texts {
            o.check(t);
        }
    }
}

#[test]
fn threads_share_the_cache() {
    // Many threads count different texts through the shared caches (which
    // evict and overwrite under them) and must get exactly tiktoken's counts.
    let mut rng = Rng(42);
    let texts: Vec<String> = (0..4000).map(|_| random_string(&mut rng)).collect();
    let oracles = oracles();
    let want: Vec<[usize; 2]> = texts
        .iter()
        .map(|t| {
            [
                oracles[0].tk.encode_ordinary(t).len(),
                oracles[1].tk.encode_ordinary(t).len(),
            ]
        })
        .collect();
    let texts = Arc::new(texts);
    let want = Arc::new(want);
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let (texts, want) = (texts.clone(), want.clone());
            std::thread::spawn(move || {
                for round in 0..3 {
                    for k in 0..texts.len() {
                        // Each thread walks the texts in its own order.
                        let i = (k * (2 * t + 1) + round * 997) % texts.len();
                        for (e, enc) in [Encoding::Cl100kBase, Encoding::O200kBase]
                            .into_iter()
                            .enumerate()
                        {
                            assert_eq!(enc.count(&texts[i]), want[i][e], "{:?}", texts[i]);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
}
