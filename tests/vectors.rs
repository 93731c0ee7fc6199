//! The shared vectors in `tests/vectors/*.json`, run through the Rust API.
//! The Python and Node suites run the same files through their APIs.

use promptops_core::{Client, Fallback, GetOptions, PricingTable, Prompt, tokens};
use promptops_tests::{load_vector, render_vector_client};
use serde_json::{Value, json};

fn get(client: &Client, case: &Value) -> promptops_core::Result<Prompt> {
    let g = case.get("get").cloned().unwrap_or(json!({}));
    let opts = GetOptions {
        label: g["label"].as_str().map(String::from),
        version: g["version"].as_u64().map(|v| v as u32),
        fallback: g["fallback"]
            .as_str()
            .map(|f| Fallback::Text(f.to_string())),
    };
    let mut p = client.get_with(case["prompt"].as_str().unwrap(), &opts)?;
    if let Some(v) = g["variant"].as_str() {
        p = p.variant(v)?;
    }
    if let Some(m) = g["for_model"].as_str() {
        p = p.for_model(m);
    }
    Ok(p)
}

#[test]
fn render_vectors() {
    let doc = load_vector("render.json");
    let (_dir, client) = render_vector_client(&doc);
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expect = &case["expect"];
        let vars = promptops_core::to_value(&case.get("vars").cloned().unwrap_or(json!({})));
        let result = get(&client, case).and_then(|p| p.render(&vars).map(|r| (p, r)));
        match (expect.get("error"), result) {
            (Some(kind), Err(e)) => {
                let d = e.details();
                assert_eq!(json!(e.kind()), *kind, "{name}: {e}");
                for (k, v) in expect.as_object().unwrap() {
                    if k != "error" {
                        assert_eq!(d.get(k), Some(v), "{name}: detail {k} of {e}");
                    }
                }
            }
            (Some(kind), Ok((_, r))) => panic!("{name}: expected {kind}, rendered {r:?}"),
            (None, Err(e)) => panic!("{name}: unexpected error {e}"),
            (None, Ok((p, r))) => {
                for (k, v) in expect.as_object().unwrap() {
                    let actual = match k.as_str() {
                        "text" => json!(r.text),
                        "messages" => json!(r.messages),
                        "version" => json!(p.version()),
                        "label" => json!(p.label()),
                        "source" => json!(p.source().as_str()),
                        "model" => json!(r.model()),
                        other => panic!("{name}: unknown expectation {other}"),
                    };
                    assert_eq!(&actual, v, "{name}: {k}");
                }
            }
        }
    }
}

#[test]
fn token_vectors() {
    let doc = load_vector("tokens.json");
    let cl = tiktoken_rs::cl100k_base().unwrap();
    let o2 = tiktoken_rs::o200k_base().unwrap();
    for t in doc["texts"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let (c, o) = (
            t["cl100k_base"].as_u64().unwrap() as usize,
            t["o200k_base"].as_u64().unwrap() as usize,
        );
        assert_eq!(
            tokens::Encoding::Cl100kBase.count(text),
            c,
            "cl100k {text:.40}"
        );
        assert_eq!(
            tokens::Encoding::O200kBase.count(text),
            o,
            "o200k {text:.40}"
        );
        // The counter we ship agrees with tiktoken-rs, an independent port.
        assert_eq!(
            cl.encode_ordinary(text).len(),
            c,
            "tiktoken-rs cl100k {text:.40}"
        );
        assert_eq!(
            o2.encode_ordinary(text).len(),
            o,
            "tiktoken-rs o200k {text:.40}"
        );
    }
    for c in doc["chat"].as_array().unwrap() {
        let msgs: Vec<promptops_core::Message> =
            serde_json::from_value(c["messages"].clone()).unwrap();
        let n = tokens::count_messages(&msgs, c["model"].as_str().unwrap());
        assert_eq!(
            n.count as u64,
            c["count"].as_u64().unwrap(),
            "chat {}",
            c["model"]
        );
        assert_eq!(json!(n.exact), c["exact"]);
        assert_eq!(json!(n.encoding.name()), c["encoding"]);
    }
    for m in doc["models"].as_array().unwrap() {
        let t = tokens::tokenizer_for_model(m["model"].as_str().unwrap());
        assert_eq!(json!(t.encoding.name()), m["encoding"], "{}", m["model"]);
        assert_eq!(json!(t.exact), m["exact"], "{}", m["model"]);
        if let Some(f) = m["factor"].as_f64() {
            assert_eq!(t.factor, f);
        }
    }
    for c in doc["text_model"].as_array().unwrap() {
        let n = tokens::count_text(c["text"].as_str().unwrap(), c["model"].as_str().unwrap());
        assert_eq!(n.count as u64, c["count"].as_u64().unwrap());
        assert_eq!(json!(n.exact), c["exact"]);
    }
}

#[test]
fn pricing_vectors() {
    let doc = load_vector("pricing.json");
    let table = PricingTable::builtin();
    for c in doc["cases"].as_array().unwrap() {
        let got = table.estimate_cost(
            c["model"].as_str().unwrap(),
            c["input_tokens"].as_u64().unwrap(),
            c["output_tokens"].as_u64().unwrap(),
        );
        match c["cost"].as_f64() {
            Some(want) => {
                let got = got.unwrap_or_else(|| panic!("{} unpriced", c["model"]));
                assert!((got - want).abs() < 1e-9, "{}: {got} != {want}", c["model"]);
            }
            None => assert!(got.is_none(), "{} should be unknown", c["model"]),
        }
    }
}
