//! The model catalogue: the models a project may use (provider, model id,
//! context window, prices, enabled, health), kept by the registry and
//! delivered with the snapshot (`SnapshotData::models`).
//!
//! Prices and context windows of catalogue entries override the built-in
//! pricing table ([`crate::PricingTable`]); a disabled model, or one the
//! registry's health check marked `unavailable`, is skipped by routing.
//! Pure data: the health check itself runs in the registry (and, with the
//! `providers` feature, optionally in the SDK).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::pricing::{ModelPrice, PricingTable};

/// Health of a catalogue model as last checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Never checked (no key stored, health checks off, or not run yet).
    #[default]
    Unknown,
    Healthy,
    /// The last check failed: routing skips the model.
    Unavailable,
}

impl HealthStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthStatus::Unknown => "unknown",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unavailable => "unavailable",
        }
    }

    pub fn parse(s: &str) -> Option<HealthStatus> {
        match s {
            "unknown" => Some(HealthStatus::Unknown),
            "healthy" => Some(HealthStatus::Healthy),
            "unavailable" => Some(HealthStatus::Unavailable),
            _ => None,
        }
    }
}

/// The health part of a catalogue entry: the status, when the check that
/// established it ran, and (for `unavailable`) what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelHealth {
    #[serde(default)]
    pub status: HealthStatus,
    /// RFC 3339 time of the check that set `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_unknown(h: &ModelHealth) -> bool {
    h == &ModelHealth::default()
}

/// One model of a project's catalogue. Prices are USD per million tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The model id, unique within a catalogue (`gpt-4o-mini`,
    /// `claude-haiku-4-5`, `meta-llama/Llama-3.3-70B` on a compatible server).
    pub model: String,
    /// `openai`, `anthropic`, or the name of an OpenAI-compatible provider.
    pub provider: String,
    /// Context window in tokens (default: the built-in table's, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok: Option<f64>,
    /// `false`: routing never picks the model.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Base URL including the API version path (`https://host/v1`), for
    /// OpenAI-compatible servers; default: the provider's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    #[serde(default, skip_serializing_if = "is_unknown")]
    pub health: ModelHealth,
}

/// Largest accepted context window / output limit (2^40 tokens).
const MAX_TOKENS: u64 = 1 << 40;

impl ModelEntry {
    /// A priced, enabled entry with unknown health.
    pub fn new(
        provider: impl Into<String>,
        model: impl Into<String>,
        input_per_mtok: f64,
        output_per_mtok: f64,
    ) -> Self {
        ModelEntry {
            model: model.into(),
            provider: provider.into(),
            context_window: None,
            max_output_tokens: None,
            input_per_mtok,
            output_per_mtok,
            cached_input_per_mtok: None,
            enabled: true,
            base_url: None,
            health: ModelHealth::default(),
        }
    }

    /// Check the entry. The error names the offending field (`model`,
    /// `provider`, `input_per_mtok`, `context_window`, `base_url`, …).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_id(&self.model).map_err(|m| ("model", m))?;
        check_provider(&self.provider).map_err(|m| ("provider", m))?;
        for (field, v) in [
            ("input_per_mtok", Some(self.input_per_mtok)),
            ("output_per_mtok", Some(self.output_per_mtok)),
            ("cached_input_per_mtok", self.cached_input_per_mtok),
        ] {
            if let Some(v) = v
                && (!v.is_finite() || v < 0.0)
            {
                return Err((field, format!("must be a finite number >= 0, got {v}")));
            }
        }
        for (field, v) in [
            ("context_window", self.context_window),
            ("max_output_tokens", self.max_output_tokens),
        ] {
            if let Some(v) = v
                && (v == 0 || v > MAX_TOKENS)
            {
                return Err((
                    field,
                    format!("must be between 1 and {MAX_TOKENS}, got {v}"),
                ));
            }
        }
        if let (Some(w), Some(o)) = (self.context_window, self.max_output_tokens)
            && o > w
        {
            return Err((
                "max_output_tokens",
                format!("{o} is larger than the context window ({w})"),
            ));
        }
        if let Some(u) = &self.base_url {
            check_base_url(u).map_err(|m| ("base_url", m))?;
        }
        if let Some(e) = &self.health.error
            && e.len() > 1024
        {
            return Err(("health.error", "is longer than 1024 bytes".into()));
        }
        Ok(())
    }

    /// Why routing must skip this model (`None`: usable).
    pub fn unavailable_reason(&self) -> Option<String> {
        if !self.enabled {
            return Some(format!(
                "model `{}` is disabled in the model catalogue",
                self.model
            ));
        }
        if self.health.status == HealthStatus::Unavailable {
            let mut r = format!("model `{}` is unavailable (health check", self.model);
            if let Some(at) = &self.health.checked_at {
                r.push_str(" at ");
                r.push_str(at);
            }
            if let Some(e) = &self.health.error {
                r.push_str(": ");
                r.push_str(e);
            }
            r.push(')');
            return Some(r);
        }
        None
    }

    /// This entry as a price, with the context window falling back to
    /// `base`'s (the built-in table's) when the entry has none.
    pub fn price(&self, base: Option<&ModelPrice>) -> ModelPrice {
        ModelPrice {
            provider: self.provider.clone(),
            model: self.model.clone(),
            input_per_mtok: self.input_per_mtok,
            output_per_mtok: self.output_per_mtok,
            cached_input_per_mtok: self.cached_input_per_mtok,
            context_window: self
                .context_window
                .or_else(|| base.and_then(|b| b.context_window)),
        }
    }
}

fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 200 {
        return Err("is longer than 200 bytes".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#' | '%'))
    {
        return Err(format!(
            "contains {c:?} (no spaces, control characters, `?`, `#` or `%`)"
        ));
    }
    Ok(())
}

fn check_provider(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        return Err(format!(
            "`{s}` is not a provider name (lowercase letters, digits, `-`, `_`; at most 64)"
        ));
    }
    Ok(())
}

fn check_base_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"))
        .ok_or_else(|| format!("`{u}` must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("`{u}` has no host"));
    }
    if u.len() > 2048 || u.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("`{u}` is not a valid URL"));
    }
    if host.contains('@') {
        return Err("must not carry credentials (store the key as a secret)".into());
    }
    Ok(())
}

/// Check a whole catalogue: every entry (errors say `models[i].field`) and
/// unique model ids.
pub fn check_models(models: &[ModelEntry]) -> Result<(), (String, String)> {
    let mut seen = std::collections::HashSet::new();
    for (i, m) in models.iter().enumerate() {
        m.check()
            .map_err(|(f, msg)| (format!("models[{i}].{f}"), msg))?;
        if !seen.insert(m.model.as_str()) {
            return Err((
                format!("models[{i}].model"),
                format!("model `{}` appears twice", m.model),
            ));
        }
    }
    Ok(())
}

/// The catalogue of a compiled snapshot, indexed, with the pricing table
/// it implies (computed once per snapshot).
#[derive(Debug, Default)]
pub struct Catalogue {
    entries: Vec<ModelEntry>,
    by_model: HashMap<String, usize>,
    pricing: OnceLock<Arc<PricingTable>>,
}

impl Catalogue {
    pub fn new(entries: &[ModelEntry]) -> Catalogue {
        let by_model = entries
            .iter()
            .enumerate()
            .map(|(i, m)| (m.model.clone(), i))
            .collect();
        Catalogue {
            entries: entries.to_vec(),
            by_model,
            pricing: OnceLock::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[ModelEntry] {
        &self.entries
    }

    /// The entry of `model`: exact id, then without a `provider/` prefix.
    pub fn get(&self, model: &str) -> Option<&ModelEntry> {
        if let Some(&i) = self.by_model.get(model) {
            return Some(&self.entries[i]);
        }
        let (_, bare) = model.split_once('/')?;
        self.by_model.get(bare).map(|&i| &self.entries[i])
    }

    /// Why routing must skip `model` (disabled or unhealthy); `None` for a
    /// usable model or one the catalogue does not list.
    pub fn unavailable(&self, model: &str) -> Option<String> {
        self.get(model).and_then(ModelEntry::unavailable_reason)
    }

    /// `base` with every catalogue entry laid over it (the catalogue wins).
    /// Computed on first use and kept: every caller of one snapshot passes
    /// the same base (its client's table).
    pub fn pricing(&self, base: &Arc<PricingTable>) -> Arc<PricingTable> {
        if self.entries.is_empty() {
            return base.clone();
        }
        self.pricing
            .get_or_init(|| {
                let mut t = (**base).clone();
                for e in &self.entries {
                    let p = e.price(base.get(&e.model));
                    // Entries are checked when the snapshot is validated; a
                    // price the table refuses keeps the base's.
                    let _ = t.set(p);
                }
                Arc::new(t)
            })
            .clone()
    }
}

impl crate::compile::CompiledSnapshot {
    /// The snapshot's model catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ModelEntry {
        ModelEntry::new("openai", "gpt-4o-mini", 0.1, 0.4)
    }

    #[test]
    fn checks_name_the_field() {
        assert!(entry().check().is_ok());
        let mut e = entry();
        e.input_per_mtok = -1.0;
        assert_eq!(e.check().unwrap_err().0, "input_per_mtok");
        let mut e = entry();
        e.cached_input_per_mtok = Some(f64::NAN);
        assert_eq!(e.check().unwrap_err().0, "cached_input_per_mtok");
        let mut e = entry();
        e.model = "has space".into();
        assert_eq!(e.check().unwrap_err().0, "model");
        let mut e = entry();
        e.provider = "Open AI".into();
        assert_eq!(e.check().unwrap_err().0, "provider");
        let mut e = entry();
        e.context_window = Some(0);
        assert_eq!(e.check().unwrap_err().0, "context_window");
        let mut e = entry();
        e.context_window = Some(1000);
        e.max_output_tokens = Some(2000);
        assert_eq!(e.check().unwrap_err().0, "max_output_tokens");
        let mut e = entry();
        e.base_url = Some("ftp://x".into());
        assert_eq!(e.check().unwrap_err().0, "base_url");
        e.base_url = Some("https://user:pw@host/v1".into());
        assert_eq!(e.check().unwrap_err().0, "base_url");
        e.base_url = Some("http://127.0.0.1:9/v1".into());
        assert!(e.check().is_ok());
        let dup = vec![entry(), entry()];
        assert_eq!(check_models(&dup).unwrap_err().0, "models[1].model");
        let mut bad = entry();
        bad.output_per_mtok = f64::INFINITY;
        assert_eq!(
            check_models(&[entry(), bad]).unwrap_err().0,
            "models[1].output_per_mtok"
        );
    }

    #[test]
    fn json_defaults_and_unknown_fields() {
        let e: ModelEntry = serde_json::from_str(
            r#"{"model": "m", "provider": "openai", "input_per_mtok": 1, "output_per_mtok": 2}"#,
        )
        .unwrap();
        assert!(e.enabled);
        assert_eq!(e.health.status, HealthStatus::Unknown);
        // Defaults are left out when serialised (stable hashes).
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"model":"m","provider":"openai","input_per_mtok":1.0,"output_per_mtok":2.0}"#
        );
        assert!(
            serde_json::from_str::<ModelEntry>(
                r#"{"model": "m", "provider": "openai", "input_per_mtok": 1, "output_per_mtok": 2, "api_key": "x"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<ModelEntry>(
                r#"{"model": "m", "provider": "openai", "input_per_mtok": 1, "output_per_mtok": 2, "health": {"status": "sick"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn availability_and_pricing_overlay() {
        let mut off = ModelEntry::new("openai", "gpt-4o", 9.0, 9.0);
        off.enabled = false;
        let mut sick = ModelEntry::new("local", "llama-local", 0.0, 0.0);
        sick.health = ModelHealth {
            status: HealthStatus::Unavailable,
            checked_at: Some("2026-11-24T08:00:00Z".into()),
            error: Some("HTTP 500".into()),
        };
        let cat = Catalogue::new(&[off, sick, entry()]);
        assert!(cat.unavailable("gpt-4o").unwrap().contains("disabled"));
        let r = cat.unavailable("local/llama-local").unwrap();
        assert!(r.contains("unavailable") && r.contains("HTTP 500"), "{r}");
        assert!(cat.unavailable("gpt-4o-mini").is_none());
        assert!(cat.unavailable("not-listed").is_none());
        let base = Arc::new(PricingTable::builtin());
        let t = cat.pricing(&base);
        // Catalogue prices win; the window falls back to the built-in one.
        let p = t.get("gpt-4o-mini").unwrap();
        assert_eq!((p.input_per_mtok, p.context_window), (0.1, Some(128_000)));
        assert!(t.get("llama-local").is_some());
        assert_eq!(t.get("gpt-5").unwrap().input_per_mtok, 1.25);
        // Computed once.
        assert!(Arc::ptr_eq(&t, &cat.pricing(&base)));
        // No catalogue: the base itself.
        assert!(Arc::ptr_eq(&Catalogue::new(&[]).pricing(&base), &base));
    }

    // -- through snapshots, deltas and the client ------------------------

    use crate::snapshot::{Delta, SnapshotData};
    use crate::store::Update;
    use crate::{Client, Source, context};
    use serde_json::json;

    fn prompts(policy: serde_json::Value) -> Vec<crate::PromptData> {
        serde_json::from_value(json!([{
            "name": "m/p",
            "versions": [{"version": 1, "type": "text", "template": "Hello {{ name }}",
                          "config": {"provider": "openai", "model": "gpt-4o"}}],
            "labels": {"production": 1},
            "policy": policy,
        }]))
        .unwrap()
    }

    fn failover() -> serde_json::Value {
        json!({"strategy": "failover", "targets": [
            {"provider": "local", "model": "house-model"},
            {"provider": "openai", "model": "gpt-4o-mini"}]})
    }

    fn house(status: HealthStatus, enabled: bool) -> ModelEntry {
        let mut e = ModelEntry::new("local", "house-model", 0.01, 0.02);
        e.context_window = Some(8000);
        e.enabled = enabled;
        e.health.status = status;
        if status == HealthStatus::Unavailable {
            e.health.error = Some("HTTP 500 from the health check".into());
        }
        e
    }

    #[test]
    fn hash_is_unchanged_without_a_catalogue_and_covers_it_with_one() {
        let plain = SnapshotData::new("p", 3, prompts(serde_json::Value::Null));
        // The hash of a catalogue-less snapshot is computed exactly as
        // before catalogues existed: over {"project", "prompts"} only.
        let mut h = sha2::Sha256::new();
        use sha2::Digest;
        h.update(serde_json::to_vec(&json!({"project": "p", "prompts": plain.prompts})).unwrap());
        assert_eq!(plain.hash, format!("sha256:{}", hex::encode(h.finalize())));
        assert!(
            !String::from_utf8(plain.to_json())
                .unwrap()
                .contains("models")
        );
        let with = SnapshotData::with_catalogue(
            "p",
            3,
            prompts(serde_json::Value::Null),
            vec![house(HealthStatus::Healthy, true)],
        );
        assert_ne!(with.hash, plain.hash);
        // Round trip: the hash checks out; an edited catalogue does not.
        let back = SnapshotData::from_json(&with.to_json()).unwrap();
        assert_eq!(back, with);
        let tampered = String::from_utf8(with.to_json())
            .unwrap()
            .replace("\"input_per_mtok\":0.01", "\"input_per_mtok\":0.02");
        let err = SnapshotData::from_json(tampered.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("hash mismatch"), "{err}");
        // An old snapshot (no `models` field) reads as an empty catalogue.
        let old = SnapshotData::from_json(&plain.to_json()).unwrap();
        assert!(old.models.is_empty());
    }

    #[test]
    fn bad_entries_name_the_field_and_nothing_is_applied() {
        let mut bad = house(HealthStatus::Healthy, true);
        bad.model = "aaa-model".into();
        bad.output_per_mtok = -2.0;
        let snap = SnapshotData::with_catalogue(
            "p",
            1,
            prompts(serde_json::Value::Null),
            vec![house(HealthStatus::Healthy, true), bad.clone()],
        );
        let err = snap.validate().unwrap_err();
        assert!(
            err.to_string().contains("models[0].output_per_mtok"),
            "{err}"
        );
        let client = Client::builder().project("p").build().unwrap();
        assert!(
            client
                .apply(Update::Snapshot(snap), Source::Memory)
                .is_err()
        );
        assert!(client.snapshot().is_none());
        // A good snapshot, then a delta with a bad catalogue: refused whole.
        let good = SnapshotData::with_catalogue(
            "p",
            1,
            prompts(serde_json::Value::Null),
            vec![house(HealthStatus::Healthy, true)],
        );
        client
            .apply(Update::Snapshot(good.clone()), Source::Memory)
            .unwrap();
        let mut d = Delta {
            project: "p".into(),
            base_revision: 1,
            revision: 2,
            upserts: prompts(json!(null)),
            removed: vec![],
            models: Some(vec![bad]),
        };
        let err = client
            .apply(Update::Delta(d.clone()), Source::Memory)
            .unwrap_err();
        assert!(err.to_string().contains("output_per_mtok"), "{err}");
        assert_eq!(client.snapshot().unwrap().data().revision, 1);
        assert_eq!(client.models(), good.models);
        // Absent `models` in a delta keeps the catalogue; an empty list clears it.
        d.models = None;
        client
            .apply(Update::Delta(d.clone()), Source::Memory)
            .unwrap();
        assert_eq!(client.models().len(), 1);
        d.base_revision = 2;
        d.revision = 3;
        d.models = Some(vec![]);
        client.apply(Update::Delta(d), Source::Memory).unwrap();
        assert!(client.models().is_empty());
        // A delta's JSON without `models` (an old registry) parses.
        let old: Delta = serde_json::from_value(json!({
            "project": "p", "base_revision": 3, "revision": 4, "upserts": [], "removed": []}))
        .unwrap();
        assert!(old.models.is_none());
    }

    #[test]
    fn catalogue_prices_win_and_catalogue_models_are_known() {
        let client = Client::builder().project("p").build().unwrap();
        let mut cheap4o = ModelEntry::new("openai", "gpt-4o", 1.0, 1.0);
        cheap4o.context_window = None;
        let snap = SnapshotData::with_catalogue(
            "p",
            1,
            prompts(failover()),
            vec![cheap4o, house(HealthStatus::Healthy, true)],
        );
        client
            .apply(Update::Snapshot(snap), Source::Memory)
            .unwrap();
        let r = client
            .get("m/p")
            .unwrap()
            .render(&context! { name => "Dana" })
            .unwrap();
        let n = r.input_tokens().count as f64;
        let cost = r.estimated_cost_usd().unwrap();
        assert!((cost - n * 1.0 / 1e6).abs() < 1e-12, "{cost}");
        let t = client.effective_pricing();
        assert_eq!(t.get("gpt-4o").unwrap().context_window, Some(128_000));
        assert_eq!(client.pricing().get("gpt-4o").unwrap().input_per_mtok, 2.5);
        // `house-model` is in no built-in table: the catalogue makes the
        // policy valid and routable.
        let routed = client
            .route("m/p", &context! { name => "Dana" }, None)
            .unwrap();
        assert_eq!(routed.target().model, "house-model");
        // Without the catalogue the same policy names an unknown model.
        let bare = Client::builder().project("p").build().unwrap();
        bare.apply(
            Update::Snapshot(SnapshotData::new("p", 1, prompts(failover()))),
            Source::Memory,
        )
        .unwrap();
        let err = bare
            .route("m/p", &context! { name => "Dana" }, None)
            .unwrap_err();
        assert!(
            err.to_string().contains("unknown model `house-model`"),
            "{err}"
        );
    }

    #[test]
    fn routing_skips_disabled_and_unhealthy_models() {
        for (entry, why) in [
            (house(HealthStatus::Unavailable, true), "unavailable"),
            (house(HealthStatus::Healthy, false), "disabled"),
        ] {
            let client = Client::builder().project("p").build().unwrap();
            let snap = SnapshotData::with_catalogue("p", 1, prompts(failover()), vec![entry]);
            client
                .apply(Update::Snapshot(snap), Source::Memory)
                .unwrap();
            let routed = client
                .route("m/p", &context! { name => "Dana" }, None)
                .unwrap();
            let d = &routed.decision;
            assert_eq!(routed.target().model, "gpt-4o-mini");
            assert!(
                d.reason.contains("skipped by the model catalogue"),
                "{}",
                d.reason
            );
            assert!(d.reason.contains(why), "{}", d.reason);
            assert_eq!(d.skipped.len(), 1);
            assert_eq!(d.skipped[0].target, "local/house-model");
            assert_eq!(d.order, vec![1], "an unusable model is no fallback either");
        }
        // Cheapest: the cheap model is skipped while unhealthy, picked when healthy.
        let cheapest = json!({"strategy": "cheapest", "targets": [
            {"provider": "local", "model": "house-model"},
            {"provider": "openai", "model": "gpt-4o-mini"}]});
        let client = Client::builder().project("p").build().unwrap();
        let snap = SnapshotData::with_catalogue(
            "p",
            1,
            prompts(cheapest.clone()),
            vec![house(HealthStatus::Unavailable, true)],
        );
        client
            .apply(Update::Snapshot(snap), Source::Memory)
            .unwrap();
        let d = client
            .route("m/p", &context! { name => "Dana" }, None)
            .unwrap()
            .decision;
        assert_eq!(d.target().model, "gpt-4o-mini");
        assert!(
            d.reason.contains("HTTP 500 from the health check"),
            "{}",
            d.reason
        );
        client
            .apply(
                Update::Delta(Delta {
                    project: "p".into(),
                    base_revision: 1,
                    revision: 2,
                    upserts: vec![],
                    removed: vec![],
                    models: Some(vec![house(HealthStatus::Healthy, true)]),
                }),
                Source::Memory,
            )
            .unwrap();
        let d = client
            .route("m/p", &context! { name => "Dana" }, None)
            .unwrap()
            .decision;
        assert_eq!(d.target().model, "house-model");
        assert!(d.skipped.is_empty());
        // Every target unusable: a NoRoute error that says why.
        let only = json!({"strategy": "failover", "targets": [
            {"provider": "local", "model": "house-model"}]});
        let client = Client::builder().project("p").build().unwrap();
        let snap = SnapshotData::with_catalogue(
            "p",
            1,
            prompts(only),
            vec![house(HealthStatus::Healthy, false)],
        );
        client
            .apply(Update::Snapshot(snap), Source::Memory)
            .unwrap();
        let err = client
            .route("m/p", &context! { name => "Dana" }, None)
            .unwrap_err();
        assert_eq!(err.kind(), "NO_ROUTE");
        assert!(
            err.to_string().contains("disabled in the model catalogue"),
            "{err}"
        );
    }
}
