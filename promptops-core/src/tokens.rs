//! Token counting. OpenAI models get exact counts from their BPE encodings
//! (`cl100k_base`, `o200k_base`); other providers get a documented estimate
//! that is flagged as such (`exact == false`).
//!
//! Counting is exact: the same counts as tiktoken's `encode_ordinary`
//! (special-token text such as `<|endoftext|>` is ordinary text). The
//! counter ([`fast`]) splits text with a hand-written implementation of each
//! encoding's pre-tokenization pattern and counts each piece: one byte is one
//! token; else the bounded piece-count cache ([`cache`]: 16,384 entries,
//! 512 KiB per encoding, fixed); else a whole-piece vocabulary lookup; else
//! the `bpe` crate's exact BPE count (the algorithm `bpe-openai` runs).
//! It is checked against `bpe-openai` and `tiktoken-rs` by differential
//! tests (tests/tokens_diff.rs). Encodings are loaded lazily, on the first
//! count that needs them.

use serde::Serialize;

use std::sync::LazyLock;

use crate::model::Message;

pub mod cache;
pub mod fast;

static CL100K: LazyLock<Option<fast::Counter>> =
    LazyLock::new(|| fast::Counter::new(fast::Pattern::Cl100k, &bpe_openai::cl100k_base().bpe));
static O200K: LazyLock<Option<fast::Counter>> =
    LazyLock::new(|| fast::Counter::new(fast::Pattern::O200k, &bpe_openai::o200k_base().bpe));

/// An OpenAI BPE encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Cl100kBase,
    O200kBase,
}

impl Encoding {
    pub fn name(&self) -> &'static str {
        match self {
            Encoding::Cl100kBase => "cl100k_base",
            Encoding::O200kBase => "o200k_base",
        }
    }

    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "cl100k_base" => Some(Encoding::Cl100kBase),
            "o200k_base" => Some(Encoding::O200kBase),
            _ => None,
        }
    }

    /// Exact number of tokens of `text` (special tokens are counted as
    /// ordinary text, like tiktoken's `encode_ordinary`).
    pub fn count(&self, text: &str) -> usize {
        match self.counter() {
            Some(c) => c.count(text),
            None => self.count_bpe_openai(text),
        }
    }

    /// [`Encoding::count`] without reading or filling the piece-count cache
    /// (the cold path; for benchmarks and tests).
    pub fn count_uncached(&self, text: &str) -> usize {
        match self.counter() {
            Some(c) => c.count_uncached(text),
            None => self.count_bpe_openai(text),
        }
    }

    /// The count `bpe-openai` gives (its own regex pre-tokenizer and BPE);
    /// the reference the differential tests compare against.
    pub fn count_bpe_openai(&self, text: &str) -> usize {
        match self {
            Encoding::Cl100kBase => bpe_openai::cl100k_base().count(text),
            Encoding::O200kBase => bpe_openai::o200k_base().count(text),
        }
    }

    /// The counter of this encoding (loaded on first use). `None` only if
    /// its Unicode tables could not be built, in which case counts come
    /// from `bpe-openai`.
    pub fn counter(&self) -> Option<&'static fast::Counter> {
        match self {
            Encoding::Cl100kBase => CL100K.as_ref(),
            Encoding::O200kBase => O200K.as_ref(),
        }
    }
}

/// How a model's tokens are counted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tokenizer {
    /// The encoding counted with.
    pub encoding: Encoding,
    /// The count is multiplied by this (1.0 for exact counts).
    pub factor: f64,
    /// `true` for OpenAI models counted with their own encoding.
    pub exact: bool,
}

/// Estimate factors for providers whose tokenizers are not public or not
/// bundled, relative to `cl100k_base`. Measured ratios on English prose and
/// code, rounded up so that cost estimates err on the high side:
/// - Anthropic (Claude 3+): 1.20 — Claude's tokenizer yields roughly 10–25 %
///   more tokens than cl100k on English text.
/// - Google Gemini, Meta Llama 3/4, Qwen 2/3: 1.00 — their large (128k–256k)
///   vocabularies tokenise English close to cl100k.
/// - Anything else: 1.00, flagged as an estimate.
pub const ANTHROPIC_FACTOR: f64 = 1.20;

/// The tokenizer used for `model` (a model id, optionally `provider/model`).
pub fn tokenizer_for_model(model: &str) -> Tokenizer {
    let m = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let exact = |encoding| Tokenizer {
        encoding,
        factor: 1.0,
        exact: true,
    };
    let estimate = |factor| Tokenizer {
        encoding: Encoding::Cl100kBase,
        factor,
        exact: false,
    };
    if m.starts_with("gpt-4o")
        || m.starts_with("gpt-4.1")
        || m.starts_with("gpt-4.5")
        || m.starts_with("gpt-5")
        || m.starts_with("chatgpt-4o")
        || m.starts_with("gpt-oss")
        || is_o_series(&m)
    {
        exact(Encoding::O200kBase)
    } else if m.starts_with("gpt-4")
        || m.starts_with("gpt-3.5")
        || m.starts_with("text-embedding-3")
        || m.starts_with("text-embedding-ada-002")
    {
        exact(Encoding::Cl100kBase)
    } else if m.starts_with("claude") {
        estimate(ANTHROPIC_FACTOR)
    } else {
        estimate(1.0)
    }
}

fn is_o_series(m: &str) -> bool {
    let b = m.as_bytes();
    b.len() >= 2 && b[0] == b'o' && b[1].is_ascii_digit()
}

/// A token count and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TokenCount {
    pub count: usize,
    pub encoding: Encoding,
    /// `false` when the count is an estimate for a non-OpenAI model.
    pub exact: bool,
}

/// Count the tokens of `text` as `model` would.
pub fn count_text(text: &str, model: &str) -> TokenCount {
    let t = tokenizer_for_model(model);
    let raw = t.encoding.count(text);
    TokenCount {
        count: scale(raw, t.factor),
        encoding: t.encoding,
        exact: t.exact,
    }
}

/// Tokens OpenAI bills per chat message on top of its content, per name,
/// and once per request to prime the reply (`<|start|>assistant<|message|>`).
pub const OPENAI_TOKENS_PER_MESSAGE: usize = 3;
pub const OPENAI_TOKENS_PER_NAME: usize = 1;
pub const OPENAI_REPLY_PRIMING: usize = 3;

/// Count the input tokens of a chat request as `model` bills them: message
/// contents plus roles and the per-message framing. For non-OpenAI models the
/// same framing is used and the result is scaled and flagged as an estimate.
pub fn count_messages(messages: &[Message], model: &str) -> TokenCount {
    let t = tokenizer_for_model(model);
    let mut raw = OPENAI_REPLY_PRIMING;
    for m in messages {
        raw += OPENAI_TOKENS_PER_MESSAGE;
        raw += t.encoding.count(&m.role);
        raw += t.encoding.count(&m.content);
        if let Some(name) = &m.name {
            raw += OPENAI_TOKENS_PER_NAME + t.encoding.count(name);
        }
    }
    TokenCount {
        count: scale(raw, t.factor),
        encoding: t.encoding,
        exact: t.exact,
    }
}

/// The input tokens of a rendered prompt (its text, or its messages) for
/// `model`: what [`crate::Rendered::input_tokens`] returns, for bindings that
/// hold the rendered output themselves. Without a model the count uses
/// `o200k_base` (messages: `gpt-4o` framing) and is flagged as an estimate.
pub fn count_input(
    text: Option<&str>,
    messages: Option<&[Message]>,
    model: Option<&str>,
) -> TokenCount {
    match model {
        Some(model) => match (text, messages) {
            (Some(t), _) => count_text(t, model),
            (None, Some(m)) => count_messages(m, model),
            (None, None) => count_text("", model),
        },
        None => {
            let mut c = match (text, messages) {
                (Some(t), _) => TokenCount {
                    count: Encoding::O200kBase.count(t),
                    encoding: Encoding::O200kBase,
                    exact: true,
                },
                (None, Some(m)) => count_messages(m, "gpt-4o"),
                (None, None) => TokenCount {
                    count: 0,
                    encoding: Encoding::O200kBase,
                    exact: true,
                },
            };
            c.exact = false;
            c
        }
    }
}

fn scale(raw: usize, factor: f64) -> usize {
    if factor == 1.0 {
        raw
    } else {
        (raw as f64 * factor).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_to_encoding() {
        assert_eq!(
            tokenizer_for_model("gpt-4o-mini").encoding,
            Encoding::O200kBase
        );
        assert_eq!(
            tokenizer_for_model("openai/gpt-4.1").encoding,
            Encoding::O200kBase
        );
        assert_eq!(tokenizer_for_model("o3-mini").encoding, Encoding::O200kBase);
        assert_eq!(
            tokenizer_for_model("gpt-4-turbo").encoding,
            Encoding::Cl100kBase
        );
        assert_eq!(
            tokenizer_for_model("gpt-3.5-turbo").encoding,
            Encoding::Cl100kBase
        );
        assert!(tokenizer_for_model("gpt-4o").exact);
        let c = tokenizer_for_model("claude-sonnet-4-5");
        assert!(!c.exact);
        assert_eq!(c.factor, ANTHROPIC_FACTOR);
        assert!(!tokenizer_for_model("llama-3.3-70b").exact);
        assert!(!tokenizer_for_model("omni-thing").exact);
    }

    #[test]
    fn counts() {
        assert_eq!(Encoding::Cl100kBase.count("hello world"), 2);
        assert_eq!(Encoding::O200kBase.count("hello world"), 2);
        assert_eq!(Encoding::Cl100kBase.count(""), 0);
        let est = count_text("hello world", "claude-3-5-haiku");
        assert_eq!(est.count, 3); // ceil(2 * 1.2)
        assert!(!est.exact);
    }

    #[test]
    fn chat_framing() {
        let msgs = vec![
            Message {
                role: "system".into(),
                content: "You are helpful.".into(),
                name: None,
            },
            Message {
                role: "user".into(),
                content: "hello world".into(),
                name: None,
            },
        ];
        // OpenAI cookbook: 3 per message + role + content, + 3 priming.
        let c = count_messages(&msgs, "gpt-4o");
        let expected = 3 + (3 + 1 + 4) + (3 + 1 + 2);
        assert_eq!(c.count, expected);
        assert!(c.exact);
    }
}
