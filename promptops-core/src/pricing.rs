//! Model prices and context windows. The built-in table is the default; a
//! client (and later the registry's model catalogue) overrides entries. An
//! unknown model has no price: lookups return `None` or `Error::UnknownModel`,
//! never a guess.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Price and limits of one model. Prices are USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelPrice {
    pub provider: String,
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Price of cached (prompt-cache hit) input tokens; `None` when the
    /// provider has no discount.
    #[serde(default)]
    pub cached_input_per_mtok: Option<f64>,
    /// Context window in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
}

impl ModelPrice {
    /// Cost in USD of a call with these token counts.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64, cached_input_tokens: u64) -> f64 {
        let cached = cached_input_tokens.min(input_tokens);
        let fresh = input_tokens - cached;
        let cached_price = self.cached_input_per_mtok.unwrap_or(self.input_per_mtok);
        (fresh as f64 * self.input_per_mtok
            + cached as f64 * cached_price
            + output_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// The date the built-in prices were taken from the providers' price pages.
pub const BUILTIN_PRICES_AS_OF: &str = "2026-11-01";

/// (provider, model, input, output, cached input, context window)
type Row = (&'static str, &'static str, f64, f64, Option<f64>, u64);

const BUILTIN: &[Row] = &[
    // OpenAI
    ("openai", "gpt-5", 1.25, 10.0, Some(0.125), 400_000),
    ("openai", "gpt-5-mini", 0.25, 2.0, Some(0.025), 400_000),
    ("openai", "gpt-5-nano", 0.05, 0.40, Some(0.005), 400_000),
    ("openai", "gpt-4.1", 2.0, 8.0, Some(0.50), 1_047_576),
    ("openai", "gpt-4.1-mini", 0.40, 1.60, Some(0.10), 1_047_576),
    ("openai", "gpt-4.1-nano", 0.10, 0.40, Some(0.025), 1_047_576),
    ("openai", "gpt-4o", 2.50, 10.0, Some(1.25), 128_000),
    ("openai", "gpt-4o-mini", 0.15, 0.60, Some(0.075), 128_000),
    ("openai", "o3", 2.0, 8.0, Some(0.50), 200_000),
    ("openai", "o3-mini", 1.10, 4.40, Some(0.55), 200_000),
    ("openai", "o4-mini", 1.10, 4.40, Some(0.275), 200_000),
    ("openai", "o1", 15.0, 60.0, Some(7.50), 200_000),
    ("openai", "gpt-4-turbo", 10.0, 30.0, None, 128_000),
    ("openai", "gpt-3.5-turbo", 0.50, 1.50, None, 16_385),
    // Anthropic (cached = cache read)
    (
        "anthropic",
        "claude-opus-4-1",
        15.0,
        75.0,
        Some(1.50),
        200_000,
    ),
    (
        "anthropic",
        "claude-opus-4",
        15.0,
        75.0,
        Some(1.50),
        200_000,
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        3.0,
        15.0,
        Some(0.30),
        200_000,
    ),
    (
        "anthropic",
        "claude-sonnet-4",
        3.0,
        15.0,
        Some(0.30),
        200_000,
    ),
    (
        "anthropic",
        "claude-haiku-4-5",
        1.0,
        5.0,
        Some(0.10),
        200_000,
    ),
    (
        "anthropic",
        "claude-3-7-sonnet",
        3.0,
        15.0,
        Some(0.30),
        200_000,
    ),
    (
        "anthropic",
        "claude-3-5-haiku",
        0.80,
        4.0,
        Some(0.08),
        200_000,
    ),
    (
        "anthropic",
        "claude-3-haiku",
        0.25,
        1.25,
        Some(0.03),
        200_000,
    ),
    // Google (prompts up to 200k tokens)
    (
        "google",
        "gemini-2.5-pro",
        1.25,
        10.0,
        Some(0.31),
        1_048_576,
    ),
    (
        "google",
        "gemini-2.5-flash",
        0.30,
        2.50,
        Some(0.075),
        1_048_576,
    ),
    (
        "google",
        "gemini-2.5-flash-lite",
        0.10,
        0.40,
        Some(0.025),
        1_048_576,
    ),
    (
        "google",
        "gemini-2.0-flash",
        0.10,
        0.40,
        Some(0.025),
        1_048_576,
    ),
    // Meta Llama (typical hosted prices)
    ("meta", "llama-4-maverick", 0.27, 0.85, None, 1_048_576),
    ("meta", "llama-4-scout", 0.18, 0.59, None, 327_680),
    ("meta", "llama-3.3-70b-instruct", 0.88, 0.88, None, 131_072),
    ("meta", "llama-3.1-8b-instruct", 0.18, 0.18, None, 131_072),
    // Qwen (Alibaba Cloud Model Studio, international)
    ("qwen", "qwen-max", 1.60, 6.40, None, 32_768),
    ("qwen", "qwen-plus", 0.40, 1.20, None, 131_072),
    ("qwen", "qwen-turbo", 0.05, 0.20, None, 1_000_000),
    ("qwen", "qwen3-max", 1.20, 6.0, None, 262_144),
];

/// A lookup table of model prices. Cheap to clone (shares nothing mutable).
#[derive(Debug, Clone)]
pub struct PricingTable {
    models: HashMap<String, ModelPrice>,
}

impl Default for PricingTable {
    fn default() -> Self {
        Self::builtin()
    }
}

impl PricingTable {
    /// The built-in table (prices as of [`BUILTIN_PRICES_AS_OF`]).
    pub fn builtin() -> Self {
        let models = BUILTIN
            .iter()
            .map(|&(provider, model, input, output, cached, ctx)| {
                (
                    model.to_string(),
                    ModelPrice {
                        provider: provider.into(),
                        model: model.into(),
                        input_per_mtok: input,
                        output_per_mtok: output,
                        cached_input_per_mtok: cached,
                        context_window: Some(ctx),
                    },
                )
            })
            .collect();
        PricingTable { models }
    }

    /// An empty table (every model unknown until set).
    pub fn empty() -> Self {
        PricingTable {
            models: HashMap::new(),
        }
    }

    /// Add or replace a model's price. Prices must be finite and >= 0.
    pub fn set(&mut self, price: ModelPrice) -> Result<()> {
        for (field, v) in [
            ("input_per_mtok", Some(price.input_per_mtok)),
            ("output_per_mtok", Some(price.output_per_mtok)),
            ("cached_input_per_mtok", price.cached_input_per_mtok),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || v < 0.0)
            {
                return Err(Error::Config(format!(
                    "price for `{}`: {field} must be a finite number >= 0, got {v}",
                    price.model
                )));
            }
        }
        if price.model.trim().is_empty() {
            return Err(Error::Config("price with an empty model id".into()));
        }
        self.models.insert(price.model.clone(), price);
        Ok(())
    }

    pub fn models(&self) -> impl Iterator<Item = &ModelPrice> {
        self.models.values()
    }

    /// Find a model: exact id, then without a `provider/` prefix, then
    /// without a date or version suffix (`gpt-4o-2024-08-06` → `gpt-4o`,
    /// `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`, `…-latest`).
    pub fn get(&self, model: &str) -> Option<&ModelPrice> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        let bare = model.split_once('/').map(|(_, m)| m).unwrap_or(model);
        if let Some(p) = self.models.get(bare) {
            return Some(p);
        }
        let stripped = strip_snapshot_suffix(bare);
        if stripped != bare {
            return self.models.get(stripped);
        }
        None
    }

    /// Like [`get`](Self::get) but an unknown model is an error.
    pub fn require(&self, model: &str) -> Result<&ModelPrice> {
        self.get(model)
            .ok_or_else(|| Error::UnknownModel(model.to_string()))
    }

    /// Cost in USD, or `None` for an unknown model.
    pub fn estimate_cost(&self, model: &str, input_tokens: u64, output_tokens: u64) -> Option<f64> {
        self.get(model)
            .map(|p| p.cost(input_tokens, output_tokens, 0))
    }
}

/// Strip `-latest`, `-YYYY-MM-DD`, `-YYYYMMDD` and `@YYYYMMDD` suffixes.
fn strip_snapshot_suffix(model: &str) -> &str {
    if let Some(s) = model.strip_suffix("-latest") {
        return s;
    }
    let b = model.as_bytes();
    let n = b.len();
    let digits = |s: &[u8]| s.iter().all(|c| c.is_ascii_digit());
    // -YYYY-MM-DD
    if n > 11 && b[n - 11] == b'-' && b[n - 6] == b'-' && b[n - 3] == b'-' {
        let (y, m, d) = (&b[n - 10..n - 6], &b[n - 5..n - 3], &b[n - 2..]);
        if digits(y) && digits(m) && digits(d) {
            return &model[..n - 11];
        }
    }
    // -YYYYMMDD or @YYYYMMDD
    if n > 9 && (b[n - 9] == b'-' || b[n - 9] == b'@') && digits(&b[n - 8..]) {
        return &model[..n - 9];
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let t = PricingTable::builtin();
        assert_eq!(t.get("gpt-4o").unwrap().input_per_mtok, 2.50);
        assert_eq!(t.get("openai/gpt-4o-mini").unwrap().model, "gpt-4o-mini");
        assert_eq!(t.get("gpt-4o-2024-08-06").unwrap().model, "gpt-4o");
        assert_eq!(
            t.get("claude-sonnet-4-5-20250929").unwrap().model,
            "claude-sonnet-4-5"
        );
        assert_eq!(
            t.get("claude-3-5-haiku-latest").unwrap().model,
            "claude-3-5-haiku"
        );
        assert!(t.get("gpt-9000").is_none());
        assert!(matches!(t.require("nope"), Err(Error::UnknownModel(m)) if m == "nope"));
    }

    #[test]
    fn cost_math() {
        let t = PricingTable::builtin();
        let c = t.estimate_cost("gpt-4o", 1_000_000, 1_000_000).unwrap();
        assert!((c - 12.5).abs() < 1e-9);
        let p = t.get("gpt-4o").unwrap();
        // half the input cached
        let c = p.cost(1_000_000, 0, 500_000);
        assert!((c - (1.25 + 0.625)).abs() < 1e-9);
        assert!(t.estimate_cost("unknown-model", 1, 1).is_none());
    }

    #[test]
    fn overrides_validated() {
        let mut t = PricingTable::empty();
        let mut p = ModelPrice {
            provider: "x".into(),
            model: "m".into(),
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            cached_input_per_mtok: None,
            context_window: None,
        };
        t.set(p.clone()).unwrap();
        assert_eq!(t.get("m").unwrap().output_per_mtok, 2.0);
        p.input_per_mtok = -1.0;
        assert!(matches!(t.set(p), Err(Error::Config(_))));
    }
}
