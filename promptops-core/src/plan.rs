//! Portable render plans: a prompt's templates in a subset small enough
//! that a binding can render them in its own language with exactly the
//! core's output.
//!
//! The Node binding renders in JavaScript from these plans: crossing into
//! the addon for a render costs more (encoding the variables, decoding
//! them, the output string back) than rendering a small template. The plan
//! is produced from the fast path's tree ([`crate::fast::FastTemplate`]),
//! and only when every part of the prompt's body is in the subset below
//! and the prompt has no input schema (schemas validate variables and apply
//! defaults in the core). [`crate::Prompt::portable_plan`] returns it.
//!
//! The subset, chosen so that its semantics are those of plain data in
//! any language (no string functions, whose Unicode behaviour differs
//! between languages, and no floats, which print differently):
//!
//! - literal text; `{{ expr }}`; `{% if %}/{% elif %}/{% else %}`;
//!   `{% for x in seq %}` with `{% else %}` and the loop fields `index`,
//!   `index0`, `revindex`, `revindex0`, `first`, `last`, `length`; a
//!   top-level `{% set name = expr %}`;
//! - expressions: variables and attribute/item lookups on them, constants
//!   (strings, integers within ±(2^53 − 1), booleans, `none`), `not`,
//!   `and`, `or` (which yield an operand, as in Jinja), `==` and `!=`,
//!   `x if c else y`, the tests `defined`, `undefined`, `none`, and the
//!   filter `default` (`d`) with a constant.
//!
//! A renderer must reproduce minijinja's strict-mode semantics for these
//! on the values it accepts and give up ("abandon", and render through the
//! core instead) on anything else; the contract each node and expression
//! carries is documented on it. Fuel: the renderer keeps an estimate that
//! over-counts what the fast path would charge ([`PortablePlan::fuel_step`]
//! per node, per branch tested and per expression node, two per loop
//! iteration, plus one per output byte) and abandons when it reaches
//! [`PortablePlan::fuel_budget`], so a render that could run out of fuel
//! is always the core's.

use serde::Serialize;

/// Version of the plan format (bumped on any change a renderer must know).
pub const PLAN_FORMAT: u32 = 1;

/// A prompt's body as portable plans, with the limits a render must stay
/// within.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortablePlan {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    pub body: PlanBody,
    /// Fuel units at which a render must give up (half of minijinja's
    /// limit, in the fast path's units); `None`: no fuel limit.
    pub fuel_budget: Option<u64>,
    /// Units one step of the estimate costs.
    pub fuel_step: u64,
    /// Largest output in UTF-8 bytes (text, or all messages together);
    /// over it a render must give up (the core reports the error).
    pub max_output_bytes: usize,
}

/// A text template, or the messages of a chat prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PlanBody {
    Text { template: PlanTemplate },
    Chat { messages: Vec<PlanMessage> },
}

/// One chat message: fixed role and name, rendered content.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanMessage {
    pub role: String,
    pub name: Option<String>,
    pub template: PlanTemplate,
}

/// One template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanTemplate {
    pub nodes: Vec<PlanNode>,
    /// Slots for loop targets and `set` variables, numbered from 0.
    pub slots: usize,
    /// Loops, numbered from 0.
    pub loops: usize,
}

/// A statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum PlanNode {
    /// Literal text (whitespace control already applied).
    Text { text: String },
    /// Print a value: strings as they are; integers in decimal; booleans
    /// and none as minijinja prints them, `True`, `False`, `None`. Anything
    /// else (undefined, lists, maps, floats): abandon.
    Emit { expr: PlanExpr },
    /// The first branch whose condition is true (truthiness below), else
    /// `otherwise`.
    If {
        branches: Vec<PlanBranch>,
        otherwise: Vec<PlanNode>,
    },
    /// Run `body` once per item of `iter`, which must be a list (anything
    /// else: abandon), with the item in `slot` and loop `id`'s fields set;
    /// `otherwise` when the list is empty.
    For {
        slot: usize,
        id: usize,
        iter: PlanExpr,
        body: Vec<PlanNode>,
        otherwise: Vec<PlanNode>,
    },
    /// Top level only: `slot` holds the value from here on (reads of the
    /// name before it see the variable of the same name).
    Set { slot: usize, expr: PlanExpr },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanBranch {
    pub cond: PlanExpr,
    pub body: Vec<PlanNode>,
}

/// An expression. Truthiness (conditions, `not`, `and`, `or`): false for
/// `false`, `none`, 0, "", an empty list or map; undefined: abandon.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum PlanExpr {
    Const {
        value: PlanConst,
    },
    /// A variable and lookups on it. A lookup on undefined: abandon. An
    /// attribute of a map: the entry, or undefined; of a string, number,
    /// boolean or none: undefined.
    Path {
        base: PlanBase,
        steps: Vec<PlanStep>,
    },
    /// A field of loop `id` (innermost iteration).
    Loop {
        id: usize,
        field: LoopFieldName,
    },
    Not {
        expr: Box<PlanExpr>,
    },
    /// `a` if it is false, else `b`.
    And {
        left: Box<PlanExpr>,
        right: Box<PlanExpr>,
    },
    /// `a` if it is true, else `b`.
    Or {
        left: Box<PlanExpr>,
        right: Box<PlanExpr>,
    },
    /// Equality of two strings, two integers, two booleans or two `none`s;
    /// operands of different kinds (or other kinds): abandon.
    Eq {
        left: Box<PlanExpr>,
        right: Box<PlanExpr>,
    },
    /// The negation of [`PlanExpr::Eq`], same operands.
    Ne {
        left: Box<PlanExpr>,
        right: Box<PlanExpr>,
    },
    /// `then` if `cond` is true, else `otherwise`.
    Cond {
        cond: Box<PlanExpr>,
        then: Box<PlanExpr>,
        otherwise: Box<PlanExpr>,
    },
    /// `defined`, `undefined` (never abandon), `none` (undefined: abandon).
    Test {
        test: TestName,
        expr: Box<PlanExpr>,
    },
    /// `expr | default(value, lax)`: `value` when `expr` is undefined (or,
    /// with `lax`, false).
    Default {
        expr: Box<PlanExpr>,
        value: PlanConst,
        lax: bool,
    },
}

/// A constant: a string, an integer within ±(2^53 − 1), a boolean or none.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PlanConst {
    Str(String),
    Int(i64),
    Bool(bool),
    None(()),
}

/// What a path starts from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanBase {
    /// A variable of the render's context.
    Root(String),
    /// A `set` variable: `slot` once set, the context's `name` before.
    Set { slot: usize, name: String },
    /// A loop target.
    Local(usize),
}

/// One lookup.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanStep {
    /// `.name` on a map (other containers: abandon).
    Attr(String),
    /// `["key"]` on a map (other containers: abandon).
    Key(String),
    /// `[i]` on a list: the item, or undefined past its end (other
    /// containers: abandon).
    Index(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoopFieldName {
    Index,
    Index0,
    Revindex,
    Revindex0,
    First,
    Last,
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TestName {
    Defined,
    Undefined,
    None,
}

/// Largest integer a plan carries (JavaScript's `Number.MAX_SAFE_INTEGER`).
pub const MAX_SAFE_INT: i64 = (1 << 53) - 1;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fast::FastTemplate;
    use crate::model::{Body, MessageTemplate, PromptData, PromptVersion};
    use crate::{Client, Limits, SnapshotData, Source, Update};

    fn plan_of(source: &str) -> Option<serde_json::Value> {
        let t = FastTemplate::compile(source).expect("in the fast path's subset");
        t.portable()
            .map(|p| serde_json::to_value(p).expect("serializable"))
    }

    #[test]
    fn text_loop_and_branches() {
        let p = plan_of(concat!(
            "Hi {{ name }}!\n",
            "{% if a and not b %}A{% elif c == \"x\" %}C{% else %}E{% endif %}\n",
            "{% for c in items %}{{ loop.index }} {{ c.id }}{% else %}none{% endfor %}",
        ))
        .expect("portable");
        let path = |base: serde_json::Value, steps: serde_json::Value| json!({"t": "path", "base": base, "steps": steps});
        assert_eq!(
            p,
            json!({
                "nodes": [
                    {"t": "text", "text": "Hi "},
                    {"t": "emit", "expr": path(json!({"root": "name"}), json!([]))},
                    {"t": "text", "text": "!\n"},
                    {"t": "if", "branches": [
                        {"cond": {"t": "and",
                            "left": path(json!({"root": "a"}), json!([])),
                            "right": {"t": "not", "expr": path(json!({"root": "b"}), json!([]))}},
                         "body": [{"t": "text", "text": "A"}]},
                        {"cond": {"t": "eq",
                            "left": path(json!({"root": "c"}), json!([])),
                            "right": {"t": "const", "value": "x"}},
                         "body": [{"t": "text", "text": "C"}]},
                    ], "otherwise": [{"t": "text", "text": "E"}]},
                    // (trim_blocks ate the newline after `endif`)
                    {"t": "for", "slot": 0, "id": 0,
                     "iter": path(json!({"root": "items"}), json!([])),
                     "body": [
                        {"t": "emit", "expr": {"t": "loop", "id": 0, "field": "index"}},
                        {"t": "text", "text": " "},
                        {"t": "emit", "expr": path(json!({"local": 0}), json!([{"attr": "id"}]))},
                     ],
                     "otherwise": [{"t": "text", "text": "none"}]},
                ],
                "slots": 1,
                "loops": 1,
            })
        );
    }

    #[test]
    fn expressions_and_constants() {
        let p = plan_of(concat!(
            "{% set greeting = \"hi\" %}{{ greeting }} {{ user[\"first\"] }} {{ xs[2] }}",
            "{{ 42 }}{{ 7 if flag is defined else none }}{{ a or \"x\" }}",
            "{{ nick | default(\"anon\") }}{{ x is none }}{{ a != 3 }}",
        ))
        .expect("portable");
        let s = p.to_string();
        for part in [
            r#"{"t":"set","slot":0,"expr":{"t":"const","value":"hi"}}"#,
            r#""base":{"set":{"slot":0,"name":"greeting"}}"#,
            r#""steps":[{"key":"first"}]"#,
            r#""steps":[{"index":2}]"#,
            r#"{"t":"const","value":42}"#,
            r#"{"t":"test","test":"defined""#,
            r#"{"t":"const","value":null}"#,
            r#"{"t":"or","left":{"t":"path","base":{"root":"a"},"steps":[]},"right":{"t":"const","value":"x"}}"#,
            r#"{"t":"default","expr":"#,
            r#""value":"anon","lax":false}"#,
            r#"{"t":"test","test":"none""#,
            r#"{"t":"ne","left":"#,
        ] {
            assert!(s.contains(part), "{part} not in {s}");
        }
    }

    #[test]
    fn outside_the_portable_subset() {
        // In the fast path's subset, not in the portable one.
        for source in [
            "{{ name | upper }}",
            "{{ name | length }}",
            "{{ name | trim }}",
            "{{ xs | join(\", \") }}",
            "{{ x | tojson }}",
            "{{ x | round }}",
            "{{ 1.5 }}",
            "{% if n < 3 %}x{% endif %}",
            "{% if s >= \"b\" %}x{% endif %}",
            "{{ x | default(1.5) }}",
            "{{ 9007199254740992 }}",
        ] {
            assert_eq!(plan_of(source), None, "{source}");
        }
        // Outside the fast path altogether.
        assert!(FastTemplate::compile("{{ range(3) }}").is_none());
    }

    fn client(limits: Limits, versions: Vec<PromptVersion>) -> Client {
        let client = Client::builder()
            .project("plan")
            .limits(limits)
            .build()
            .expect("client");
        let prompts = versions
            .into_iter()
            .enumerate()
            .map(|(i, v)| PromptData {
                name: format!("plan/p{i}"),
                versions: vec![v],
                labels: [("production".to_string(), 1)].into_iter().collect(),
                policy: None,
            })
            .collect();
        client
            .apply(
                Update::Snapshot(SnapshotData::new("plan", 1, prompts)),
                Source::Memory,
            )
            .expect("snapshot");
        client
    }

    #[test]
    fn prompt_plans() {
        crate::set_fast_render(true);
        let mut chat = PromptVersion::with_body(
            1,
            Body::Chat {
                messages: vec![
                    MessageTemplate {
                        role: "system".into(),
                        content: "You are {{ who }}.".into(),
                        name: None,
                    },
                    MessageTemplate {
                        role: "user".into(),
                        content: "{{ q }}".into(),
                        name: Some("dana".into()),
                    },
                ],
            },
        );
        chat.config.model = Some("gpt-4o-mini".into());
        let mut schema = PromptVersion::text(1, "Hi {{ name }}");
        schema.schema = Some(
            serde_json::from_value(json!({
                "type": "object",
                "properties": {"name": {"type": "string", "default": "you"}}
            }))
            .expect("schema"),
        );
        let c = client(
            Limits {
                fuel: Some(1000),
                max_output_bytes: 4096,
            },
            vec![
                PromptVersion::text(1, "Hi {{ name }}"),
                chat,
                schema,
                PromptVersion::text(1, "Hi {{ name | upper }}"),
                PromptVersion::chat(1, [("user", "{{ q }}"), ("user", "{{ q | trim }}")]),
            ],
        );
        let plan = |i: usize| {
            c.get(&format!("plan/p{i}"))
                .expect("prompt")
                .portable_plan()
                .map(|p| serde_json::to_value(p).expect("serializable"))
        };
        let text = plan(0).expect("text plan");
        assert_eq!(text["format"], json!(PLAN_FORMAT));
        assert_eq!(text["body"]["kind"], json!("text"));
        assert_eq!(text["body"]["template"]["nodes"][0]["text"], json!("Hi "));
        assert_eq!(text["fuel_budget"], json!(1000 * 64 / 2));
        assert_eq!(text["fuel_step"], json!(256));
        assert_eq!(text["max_output_bytes"], json!(4096));
        let chat = plan(1).expect("chat plan");
        assert_eq!(chat["body"]["kind"], json!("chat"));
        let msgs = chat["body"]["messages"].as_array().expect("messages");
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0]["role"], json!("system"));
        assert_eq!(msgs[0]["name"], json!(null));
        assert_eq!(msgs[1]["name"], json!("dana"));
        assert_eq!(msgs[1]["template"]["nodes"][0]["t"], json!("emit"));
        // A schema validates and applies defaults in the core: no plan.
        assert_eq!(plan(2), None);
        // One part outside the subset: no plan for the whole body.
        assert_eq!(plan(3), None);
        assert_eq!(plan(4), None);

        let unlimited = client(
            Limits {
                fuel: None,
                max_output_bytes: 10,
            },
            vec![PromptVersion::text(1, "x")],
        );
        let p = unlimited
            .get("plan/p0")
            .expect("prompt")
            .portable_plan()
            .expect("plan");
        assert_eq!(p.fuel_budget, None);
        assert_eq!(p.max_output_bytes, 10);
        assert!(
            !unlimited
                .get("plan/p0")
                .expect("prompt")
                .telemetry_enabled()
        );
    }

    #[test]
    fn plan_renders_are_recorded_like_renders() {
        let c = Client::builder()
            .project("plan")
            .telemetry(crate::TelemetryConfig::default())
            .build()
            .expect("client");
        c.apply(
            Update::Snapshot(SnapshotData::new(
                "plan",
                1,
                vec![PromptData {
                    name: "plan/t".into(),
                    versions: vec![PromptVersion::text(1, "Hi {{ name }}")],
                    labels: [("production".to_string(), 1)].into_iter().collect(),
                    policy: None,
                }],
            )),
            Source::Memory,
        )
        .expect("snapshot");
        let p = c.get("plan/t").expect("prompt");
        assert!(p.telemetry_enabled());
        p.render(&crate::context! { name => "Dana" })
            .expect("render");
        p.record_plan_render(std::time::Duration::from_micros(3));
        let text = c.telemetry().expect("telemetry").prometheus();
        let line = "promptops_renders_total{promptops_prompt_name=\"plan/t\",promptops_prompt_version=\"1\",promptops_prompt_label=\"production\",promptops_prompt_variant=\"\"} 2";
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
}
