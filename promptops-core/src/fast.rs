//! A faster render path for the common subset of templates.
//!
//! When a snapshot is compiled, every template is also parsed with
//! minijinja's own parser (same syntax and whitespace settings, so literal
//! text arrives with `trim_blocks`/`lstrip_blocks` and `-` markers already
//! applied) and, if it only uses the constructs below, lowered into a small
//! tree ([`FastTemplate`]) that renders without minijinja's VM:
//!
//! - literal text, `{{ expr }}`, `{% if %}/{% elif %}/{% else %}`,
//!   `{% for x in seq %}` (with `{% else %}`; `loop.index`, `index0`,
//!   `revindex`, `revindex0`, `first`, `last`, `length`), and a top-level
//!   `{% set name = expr %}`;
//! - expressions: variables, attribute and item lookups (`a.b`, `a["k"]`,
//!   `a[0]`), literals, `not`, `and`, `or`, one comparison (`==`, `!=`, `<`,
//!   `<=`, `>`, `>=`), `x if c else y`, the tests `defined`, `undefined`,
//!   `none`, and the filters `upper`, `lower`, `trim`, `title`,
//!   `capitalize` (ASCII input), `length`, `default` (literal arguments),
//!   `join` (literal joiner), `tojson` and `round` (no arguments).
//!
//! Anything else (includes, macros, blocks, calls, other filters or tests,
//! …) leaves the template on minijinja only.
//!
//! **Same output, same errors.** The fast renderer reproduces minijinja by
//! construction where it can (values print through minijinja's own
//! `Display`, truthiness and comparisons are `Value`'s own, lookups go
//! through the same object methods, `title`/`length`/`tojson`/`round` are
//! minijinja's functions) and otherwise *abandons*: on anything it is not
//! sure about — an undefined value where strict mode would raise, a value
//! of a kind it does not print (maps, lists, bytes), an unknown object
//! shape, output over the limit, a fuel estimate near the limit — it
//! returns `None` and the caller renders the same input through minijinja,
//! which produces the authoritative output or error. Abandoning has no
//! side effects: the partial output is dropped. Objects supplied by the
//! caller are assumed to be pure (lookups and iteration without side
//! effects), as minijinja itself may call them more than once.
//!
//! **Fuel.** minijinja's fuel bounds the work of one render. The fast path
//! keeps a running estimate in minijinja's own units (64 per instruction,
//! one per output byte, …) that over-counts what minijinja would charge for
//! the same render (tests check the estimate against minijinja's measured
//! consumption); when the estimate reaches half the limit the render is
//! abandoned, so any render that could run out of fuel is done by minijinja
//! and fails the same way. Loops only run over caller data, so the estimate
//! grows with every iteration and is checked there.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use minijinja::Value;
use minijinja::machinery::ast;
use minijinja::value::{Kwargs, ValueKind};

use crate::plan::{
    LoopFieldName, MAX_SAFE_INT, PlanBase, PlanBranch, PlanConst, PlanExpr, PlanNode, PlanStep,
    PlanTemplate, TestName,
};

/// minijinja's map type with `preserve_order` (the type serde and
/// `context!` build); looked up by reference without cloning.
type ValueMap = indexmap::IndexMap<Value, Value>;

/// Fuel units per instruction (minijinja charges 64 units per instruction
/// and one per byte; the limit is `fuel * 64` units).
const INSTR: u64 = 64;
/// What one IR step is charged: generous, several instructions.
const STEP: u64 = 4 * INSTR;
/// Per byte of data a filter reads or produces (covers minijinja's charge
/// for serialized output, 16 per byte).
const DATA_BYTE: u64 = 32;

/// Which engine produced a render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RenderPath {
    /// Every template part rendered on the fast path.
    Fast,
    /// Every part rendered by minijinja.
    Minijinja,
    /// Some parts (messages) on each.
    Mixed,
}

impl RenderPath {
    pub fn as_str(&self) -> &'static str {
        match self {
            RenderPath::Fast => "fast",
            RenderPath::Minijinja => "minijinja",
            RenderPath::Mixed => "mixed",
        }
    }
}

/// 0: not read yet, 1: on, 2: off.
static ENABLED: AtomicU8 = AtomicU8::new(0);

/// Whether renders may use the fast path. On unless the environment
/// variable `PROMPTOPS_FAST_RENDER` is `0`, `off` or `false` (read once), or
/// [`set_fast_render`] turned it off.
pub fn fast_render_enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = !matches!(
                std::env::var("PROMPTOPS_FAST_RENDER")
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
                    .as_str(),
                "0" | "off" | "false" | "no"
            );
            ENABLED.store(if on { 1 } else { 2 }, Ordering::Relaxed);
            on
        }
    }
}

/// Turn the fast path on or off for the whole process (a safety valve and
/// for A/B measurements); overrides `PROMPTOPS_FAST_RENDER`. Templates
/// compiled while it is off are not lowered and stay on minijinja until
/// their snapshot is compiled again.
pub fn set_fast_render(enabled: bool) {
    ENABLED.store(if enabled { 1 } else { 2 }, Ordering::Relaxed);
}

/// A template lowered to the fast path's tree.
#[derive(Debug)]
pub struct FastTemplate {
    nodes: Vec<Node>,
    locals: usize,
    loops: usize,
    /// Largest output seen so far (capacity hint for the next render).
    size_hint: AtomicUsize,
}

#[derive(Debug)]
enum Node {
    Text(Box<str>),
    Emit(Expr),
    If(Vec<(Expr, Vec<Node>)>, Vec<Node>),
    For(Box<ForNode>),
    Set(usize, Expr),
}

#[derive(Debug)]
struct ForNode {
    slot: usize,
    loop_id: usize,
    iter: Expr,
    body: Vec<Node>,
    else_body: Vec<Node>,
}

#[derive(Debug, Clone, Copy)]
enum LoopField {
    Index,
    Index0,
    RevIndex,
    RevIndex0,
    First,
    Last,
    Length,
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, Copy)]
enum TestKind {
    Defined,
    Undefined,
    None,
}

#[derive(Debug)]
enum Filter {
    Upper,
    Lower,
    Trim,
    Title,
    Capitalize,
    Length,
    Default(Value, bool),
    Join(Box<str>),
    ToJson,
    Round,
}

#[derive(Debug)]
enum Expr {
    Const(Value),
    /// A variable and a chain of attribute/item lookups on it.
    Path(Box<Path>),
    Loop(usize, LoopField),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Cond(Box<Expr>, Box<Expr>, Box<Expr>),
    Test(TestKind, Box<Expr>),
    Filter(Filter, Box<Expr>),
}

#[derive(Debug)]
struct Path {
    base: Base,
    steps: Box<[Step]>,
}

#[derive(Debug)]
enum Base {
    /// A variable of the render context.
    Root(Key),
    /// A top-level `set` variable (the context's until set).
    SetVar(usize, Key),
    /// A loop target.
    Local(usize),
}

/// A name looked up in maps.
#[derive(Debug)]
struct Key {
    name: Box<str>,
    /// The name as a key value (for hashed lookups).
    value: Value,
    /// Where the name was found in the last map it was looked up in: maps
    /// of the same shape (the records of a list, the same context shape on
    /// every render) usually have it at the same position. Only a hint:
    /// the entry there is checked, and a miss does the full lookup.
    hint: AtomicU32,
}

impl Key {
    fn new(name: &str) -> Key {
        Key {
            name: name.into(),
            value: Value::from(name),
            hint: AtomicU32::new(0),
        }
    }
}

#[derive(Debug)]
enum Step {
    /// `.name`
    Attr(Key),
    /// `[key]`, a string or a non-negative integer.
    Item(Value),
}

// ---------------------------------------------------------------------------
// Lowering

#[derive(Clone)]
enum Binding {
    Local(usize),
    Loop(usize),
}

struct Lower {
    scopes: Vec<(String, Binding)>,
    /// Top-level `set` names → slot.
    sets: Vec<(String, usize)>,
    locals: usize,
    loops: usize,
    depth: usize,
}

/// Lower `source` (parsed with `syntax`, as minijinja parses it) if it only
/// uses the subset; `None` otherwise.
pub(crate) fn lower(
    source: &str,
    name: &str,
    syntax: minijinja::syntax::SyntaxConfig,
) -> Option<FastTemplate> {
    let ast = minijinja::machinery::parse(source, name, syntax).ok()?;
    let ast::Stmt::Template(t) = ast else {
        return None;
    };
    let mut l = Lower {
        scopes: Vec::new(),
        sets: Vec::new(),
        locals: 0,
        loops: 0,
        depth: 0,
    };
    let nodes = l.stmts(&t.children)?;
    let literal: usize = nodes.iter().map(literal_len).sum();
    Some(FastTemplate {
        nodes,
        locals: l.locals,
        loops: l.loops,
        size_hint: AtomicUsize::new(literal + literal / 4 + 64),
    })
}

impl Base {
    fn into_path(self) -> Expr {
        Expr::Path(Box::new(Path {
            base: self,
            steps: Box::new([]),
        }))
    }
}

impl Expr {
    /// Extend a path with one more lookup (only paths take lookups).
    fn push_step(self, step: Step) -> Option<Expr> {
        match self {
            Expr::Path(mut p) => {
                let mut steps = std::mem::take(&mut p.steps).into_vec();
                steps.push(step);
                p.steps = steps.into_boxed_slice();
                Some(Expr::Path(p))
            }
            _ => None,
        }
    }
}

fn literal_len(n: &Node) -> usize {
    match n {
        Node::Text(t) => t.len(),
        _ => 0,
    }
}

impl Lower {
    fn stmts(&mut self, stmts: &[ast::Stmt<'_>]) -> Option<Vec<Node>> {
        let mut out: Vec<Node> = Vec::with_capacity(stmts.len());
        for s in stmts {
            let node = self.stmt(s)?;
            // Merge adjacent text (fewer steps, one copy).
            if let (Node::Text(b), Some(Node::Text(a))) = (&node, out.last_mut()) {
                let mut s = String::with_capacity(a.len() + b.len());
                s.push_str(a);
                s.push_str(b);
                *a = s.into_boxed_str();
                continue;
            }
            out.push(node);
        }
        Some(out)
    }

    fn stmt(&mut self, s: &ast::Stmt<'_>) -> Option<Node> {
        match s {
            ast::Stmt::EmitRaw(r) => Some(Node::Text(r.raw.into())),
            ast::Stmt::EmitExpr(e) => Some(Node::Emit(self.expr(&e.expr)?)),
            ast::Stmt::IfCond(c) => {
                let mut branches = Vec::new();
                let mut cond: &ast::IfCond<'_> = c;
                self.depth += 1;
                let else_body = loop {
                    let e = self.expr(&cond.expr)?;
                    let body = self.stmts(&cond.true_body)?;
                    branches.push((e, body));
                    // `elif` arrives as an `if` that is the whole else body.
                    match cond.false_body.as_slice() {
                        [ast::Stmt::IfCond(next)] => cond = next,
                        other => break self.stmts(other)?,
                    }
                };
                self.depth -= 1;
                Some(Node::If(branches, else_body))
            }
            ast::Stmt::ForLoop(f) => {
                if f.recursive || f.filter_expr.is_some() {
                    return None;
                }
                let ast::Expr::Var(target) = &f.target else {
                    return None;
                };
                if target.id == "loop" {
                    return None;
                }
                let iter = self.expr(&f.iter)?;
                let slot = self.locals;
                self.locals += 1;
                let loop_id = self.loops;
                self.loops += 1;
                self.depth += 1;
                let mark = self.scopes.len();
                self.scopes.push(("loop".into(), Binding::Loop(loop_id)));
                self.scopes
                    .push((target.id.to_string(), Binding::Local(slot)));
                let body = self.stmts(&f.body);
                self.scopes.truncate(mark);
                // The else body runs outside the loop's scope.
                let else_body = self.stmts(&f.else_body);
                self.depth -= 1;
                Some(Node::For(Box::new(ForNode {
                    slot,
                    loop_id,
                    iter,
                    body: body?,
                    else_body: else_body?,
                })))
            }
            ast::Stmt::Set(s) => {
                // Only at the top level, so the order of statements decides
                // which reads see it.
                if self.depth != 0 {
                    return None;
                }
                let ast::Expr::Var(target) = &s.target else {
                    return None;
                };
                if target.id == "loop" {
                    return None;
                }
                let e = self.expr(&s.expr)?;
                let slot = match self.sets.iter().find(|(n, _)| n == target.id) {
                    Some((_, slot)) => *slot,
                    None => {
                        let slot = self.locals;
                        self.locals += 1;
                        self.sets.push((target.id.to_string(), slot));
                        slot
                    }
                };
                Some(Node::Set(slot, e))
            }
            _ => None,
        }
    }

    fn expr(&mut self, e: &ast::Expr<'_>) -> Option<Expr> {
        if let Some(v) = e.as_const() {
            return Some(Expr::Const(v));
        }
        Some(match e {
            ast::Expr::Var(v) => {
                let id = v.id;
                match self.scopes.iter().rev().find(|(n, _)| n == id) {
                    Some((_, Binding::Local(slot))) => Base::Local(*slot),
                    // `loop` alone (printed, passed on) is not in the subset.
                    Some((_, Binding::Loop(_))) => return None,
                    None => match self.sets.iter().find(|(n, _)| n == id) {
                        Some((_, slot)) => Base::SetVar(*slot, Key::new(id)),
                        None => Base::Root(Key::new(id)),
                    },
                }
                .into_path()
            }
            ast::Expr::GetAttr(g) => {
                if let ast::Expr::Var(v) = &g.expr
                    && let Some((_, Binding::Loop(id))) =
                        self.scopes.iter().rev().find(|(n, _)| n == v.id)
                {
                    let field = match g.name {
                        "index" => LoopField::Index,
                        "index0" => LoopField::Index0,
                        "revindex" => LoopField::RevIndex,
                        "revindex0" => LoopField::RevIndex0,
                        "first" => LoopField::First,
                        "last" => LoopField::Last,
                        "length" => LoopField::Length,
                        _ => return None,
                    };
                    return Some(Expr::Loop(*id, field));
                }
                self.expr(&g.expr)?
                    .push_step(Step::Attr(Key::new(g.name)))?
            }
            ast::Expr::GetItem(g) => {
                let key = g.subscript_expr.as_const()?;
                let ok = match key.kind() {
                    ValueKind::String => true,
                    ValueKind::Number => key.as_i64().is_some_and(|i| i >= 0),
                    _ => false,
                };
                if !ok {
                    return None;
                }
                self.expr(&g.expr)?.push_step(Step::Item(key))?
            }
            ast::Expr::UnaryOp(u) => match u.op {
                ast::UnaryOpKind::Not => Expr::Not(Box::new(self.expr(&u.expr)?)),
                ast::UnaryOpKind::Neg => return None,
            },
            ast::Expr::BinOp(b) => {
                let l = Box::new(self.expr(&b.left)?);
                let r = Box::new(self.expr(&b.right)?);
                match b.op {
                    ast::BinOpKind::ScAnd => Expr::And(l, r),
                    ast::BinOpKind::ScOr => Expr::Or(l, r),
                    ast::BinOpKind::Eq => Expr::Cmp(CmpOp::Eq, l, r),
                    ast::BinOpKind::Ne => Expr::Cmp(CmpOp::Ne, l, r),
                    ast::BinOpKind::Lt => Expr::Cmp(CmpOp::Lt, l, r),
                    ast::BinOpKind::Lte => Expr::Cmp(CmpOp::Lte, l, r),
                    ast::BinOpKind::Gt => Expr::Cmp(CmpOp::Gt, l, r),
                    ast::BinOpKind::Gte => Expr::Cmp(CmpOp::Gte, l, r),
                    _ => return None,
                }
            }
            ast::Expr::Compare(c) => {
                let [op] = c.ops.as_slice() else {
                    return None;
                };
                let kind = match op.op {
                    ast::CompareOpKind::Eq => CmpOp::Eq,
                    ast::CompareOpKind::Ne => CmpOp::Ne,
                    ast::CompareOpKind::Lt => CmpOp::Lt,
                    ast::CompareOpKind::Lte => CmpOp::Lte,
                    ast::CompareOpKind::Gt => CmpOp::Gt,
                    ast::CompareOpKind::Gte => CmpOp::Gte,
                    _ => return None,
                };
                Expr::Cmp(
                    kind,
                    Box::new(self.expr(&c.expr)?),
                    Box::new(self.expr(&op.expr)?),
                )
            }
            ast::Expr::IfExpr(i) => {
                let f = i.false_expr.as_ref()?;
                Expr::Cond(
                    Box::new(self.expr(&i.test_expr)?),
                    Box::new(self.expr(&i.true_expr)?),
                    Box::new(self.expr(f)?),
                )
            }
            ast::Expr::Test(t) => {
                if !t.args.is_empty() {
                    return None;
                }
                let kind = match t.name {
                    "defined" => TestKind::Defined,
                    "undefined" => TestKind::Undefined,
                    "none" => TestKind::None,
                    _ => return None,
                };
                Expr::Test(kind, Box::new(self.expr(&t.expr)?))
            }
            ast::Expr::Filter(f) => {
                let input = self.expr(f.expr.as_ref()?)?;
                let mut args = Vec::with_capacity(f.args.len());
                for a in &f.args {
                    match a {
                        ast::CallArg::Pos(e) => args.push(e.as_const()?),
                        _ => return None,
                    }
                }
                let filter = match (f.name, args.as_slice()) {
                    ("upper", []) => Filter::Upper,
                    ("lower", []) => Filter::Lower,
                    ("trim", []) => Filter::Trim,
                    ("title", []) => Filter::Title,
                    ("capitalize", []) => Filter::Capitalize,
                    ("length" | "count", []) => Filter::Length,
                    ("default" | "d", []) => Filter::Default(Value::from(""), false),
                    ("default" | "d", [d]) => Filter::Default(d.clone(), false),
                    ("default" | "d", [d, lax]) if lax.kind() == ValueKind::Bool => {
                        Filter::Default(d.clone(), lax.is_true())
                    }
                    ("join", []) => Filter::Join("".into()),
                    ("join", [j]) => Filter::Join(j.as_str()?.into()),
                    ("tojson", []) => Filter::ToJson,
                    ("round", []) => Filter::Round,
                    _ => return None,
                };
                Expr::Filter(filter, Box::new(input))
            }
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------
// Rendering

/// The fast path gives up; minijinja renders instead.
struct Abandon;

type R<T> = Result<T, Abandon>;

/// A value, borrowed from the context where possible.
enum V<'a> {
    B(&'a Value),
    O(Value),
}

impl<'a> V<'a> {
    #[inline]
    fn get(&self) -> &Value {
        match self {
            V::B(v) => v,
            V::O(v) => v,
        }
    }

    fn to_owned_v(&self) -> V<'a> {
        match self {
            V::B(v) => V::B(v),
            V::O(v) => V::O(v.clone()),
        }
    }
}

const UNDEF: Value = Value::UNDEFINED;

#[derive(Clone, Copy, Default)]
struct LoopState {
    idx: usize,
    len: Option<usize>,
}

struct Run<'a> {
    root: &'a Value,
    locals: Vec<Option<V<'a>>>,
    loops: Vec<LoopState>,
    /// Fuel estimate (minijinja units) and where to give up.
    spent: u64,
    budget: u64,
    max_output: usize,
}

impl FastTemplate {
    /// Lower a template source (parsed with promptops' syntax settings) if
    /// it only uses the subset this module renders.
    pub fn compile(source: &str) -> Option<FastTemplate> {
        lower(source, "<template>", crate::compile::prompt_syntax())
    }

    /// Render `ctx` under minijinja fuel `fuel` and an output limit;
    /// `None` means "render with minijinja instead" (the output or error is
    /// minijinja's to decide).
    pub fn render(&self, ctx: &Value, fuel: Option<u64>, max_output: usize) -> Option<String> {
        let mut run = Run {
            root: ctx,
            locals: (0..self.locals).map(|_| None).collect(),
            loops: vec![LoopState::default(); self.loops],
            spent: 0,
            // Give up at half the limit: the estimate over-counts, and
            // anything near the limit is minijinja's to decide.
            budget: fuel.map_or(u64::MAX, |f| f.saturating_mul(INSTR) / 2),
            max_output,
        };
        let hint = self.size_hint.load(Ordering::Relaxed);
        let mut out = String::with_capacity(hint);
        run.nodes(&self.nodes, &mut out).ok()?;
        run.check(&out).ok()?;
        if out.len() > hint {
            self.size_hint.store(out.len(), Ordering::Relaxed);
        }
        Some(out)
    }

    /// The fuel estimate (in minijinja's units) of a successful render;
    /// for tests comparing it with minijinja's consumption.
    #[doc(hidden)]
    pub fn estimate_units(&self, ctx: &Value) -> Option<u64> {
        let mut run = Run {
            root: ctx,
            locals: (0..self.locals).map(|_| None).collect(),
            loops: vec![LoopState::default(); self.loops],
            spent: 0,
            budget: u64::MAX,
            max_output: usize::MAX,
        };
        let mut out = String::new();
        run.nodes(&self.nodes, &mut out).ok()?;
        Some(run.spent + out.len() as u64)
    }
}

impl<'a> Run<'a> {
    #[inline]
    fn charge(&mut self, units: u64) -> R<()> {
        self.spent = self.spent.saturating_add(units);
        if self.spent >= self.budget {
            Err(Abandon)
        } else {
            Ok(())
        }
    }

    /// Output bytes count towards fuel too (one unit each) and against the
    /// output limit.
    fn check(&self, out: &str) -> R<()> {
        if out.len() > self.max_output || self.spent.saturating_add(out.len() as u64) >= self.budget
        {
            Err(Abandon)
        } else {
            Ok(())
        }
    }

    fn nodes(&mut self, nodes: &[Node], out: &mut String) -> R<()> {
        for n in nodes {
            self.charge(STEP)?;
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Emit(e) => {
                    let v = self.eval(e)?;
                    emit(v.get(), out)?;
                }
                Node::If(branches, else_body) => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        self.charge(STEP)?;
                        let c = self.eval(cond)?;
                        if truthy(c.get())? {
                            self.nodes(body, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.nodes(else_body, out)?;
                    }
                }
                Node::For(f) => self.for_loop(f, out)?,
                Node::Set(slot, e) => {
                    let v = self.eval(e)?;
                    valid(v.get())?;
                    self.locals[*slot] = Some(v);
                }
            }
        }
        Ok(())
    }

    fn for_loop(&mut self, f: &ForNode, out: &mut String) -> R<()> {
        let seq = self.eval(&f.iter)?;
        let mut iterated = false;
        match seq {
            V::B(v) if v.downcast_object_ref::<Vec<Value>>().is_some() => {
                let items = v.downcast_object_ref::<Vec<Value>>().ok_or(Abandon)?;
                let len = items.len();
                for (i, item) in items.iter().enumerate() {
                    iterated = true;
                    self.iteration(f, i, Some(len), V::B(item), out)?;
                }
            }
            other => {
                let v = other.get();
                // Only the containers minijinja iterates the same way for
                // sure: sequences and maps (their keys).
                if !matches!(v.kind(), ValueKind::Seq | ValueKind::Map) {
                    return Err(Abandon);
                }
                let iter = v.try_iter().map_err(|_| Abandon)?;
                let len = match iter.size_hint() {
                    (lower, Some(upper)) if lower == upper => Some(lower),
                    _ => None,
                };
                for (i, item) in iter.enumerate() {
                    iterated = true;
                    self.iteration(f, i, len, V::O(item), out)?;
                }
            }
        }
        self.locals[f.slot] = None;
        if !iterated {
            self.nodes(&f.else_body, out)?;
        }
        Ok(())
    }

    fn iteration(
        &mut self,
        f: &ForNode,
        i: usize,
        len: Option<usize>,
        item: V<'a>,
        out: &mut String,
    ) -> R<()> {
        valid(item.get())?;
        self.charge(2 * STEP)?;
        self.check(out)?;
        self.locals[f.slot] = Some(item);
        self.loops[f.loop_id] = LoopState { idx: i, len };
        self.nodes(&f.body, out)
    }

    fn eval(&mut self, e: &Expr) -> R<V<'a>> {
        self.charge(STEP)?;
        Ok(match e {
            Expr::Const(v) => V::O(v.clone()),
            Expr::Path(p) => self.path(p)?,
            Expr::Loop(id, field) => {
                let l = self.loops[*id];
                let idx = l.idx as u64;
                let len = l.len.map(|x| x as u64);
                let v = match field {
                    LoopField::Index => Value::from(idx + 1),
                    LoopField::Index0 => Value::from(idx),
                    LoopField::First => Value::from(idx == 0),
                    LoopField::Length => len.map(Value::from).unwrap_or(UNDEF),
                    LoopField::RevIndex => len
                        .map(|len| Value::from(len.saturating_sub(idx)))
                        .unwrap_or(UNDEF),
                    LoopField::RevIndex0 => len
                        .map(|len| Value::from(len.saturating_sub(idx).saturating_sub(1)))
                        .unwrap_or(UNDEF),
                    LoopField::Last => len.map_or(Value::from(false), |len| {
                        Value::from(len == 0 || idx == len - 1)
                    }),
                };
                V::O(v)
            }
            Expr::Not(x) => {
                let v = self.eval(x)?;
                V::O(Value::from(!truthy(v.get())?))
            }
            Expr::And(a, b) => {
                let l = self.eval(a)?;
                if truthy(l.get())? { self.eval(b)? } else { l }
            }
            Expr::Or(a, b) => {
                let l = self.eval(a)?;
                if truthy(l.get())? { l } else { self.eval(b)? }
            }
            Expr::Cond(c, t, f) => {
                let cv = self.eval(c)?;
                if truthy(cv.get())? {
                    self.eval(t)?
                } else {
                    self.eval(f)?
                }
            }
            Expr::Cmp(op, a, b) => {
                let l = self.eval(a)?;
                let r = self.eval(b)?;
                let (l, r) = (scalar(l.get())?, scalar(r.get())?);
                V::O(Value::from(match op {
                    CmpOp::Eq => l == r,
                    CmpOp::Ne => l != r,
                    CmpOp::Lt => l < r,
                    CmpOp::Lte => l <= r,
                    CmpOp::Gt => l > r,
                    CmpOp::Gte => l >= r,
                }))
            }
            Expr::Test(kind, x) => {
                let v = self.eval(x)?;
                let v = v.get();
                valid(v)?;
                V::O(Value::from(match kind {
                    TestKind::Defined => !v.is_undefined(),
                    TestKind::Undefined => v.is_undefined(),
                    TestKind::None => {
                        if v.is_undefined() {
                            return Err(Abandon);
                        }
                        v.is_none()
                    }
                }))
            }
            Expr::Filter(filter, x) => {
                let v = self.eval(x)?;
                self.filter(filter, v)?
            }
        })
    }

    /// Resolve a variable and its lookups, borrowing from the context
    /// where the containers allow it.
    #[inline]
    fn path(&self, p: &Path) -> R<V<'a>> {
        let mut cur = match &p.base {
            Base::Root(key) => lookup(self.root, key).unwrap_or(V::O(UNDEF)),
            Base::SetVar(slot, key) => match &self.locals[*slot] {
                Some(v) => v.to_owned_v(),
                None => lookup(self.root, key).unwrap_or(V::O(UNDEF)),
            },
            Base::Local(slot) => match &self.locals[*slot] {
                Some(v) => v.to_owned_v(),
                None => return Err(Abandon),
            },
        };
        for step in p.steps.iter() {
            cur = match cur {
                V::B(v) => step_on(v, step)?.unwrap_or(V::O(UNDEF)),
                V::O(v) => match step_on(&v, step)? {
                    Some(x) => V::O(x.get().clone()),
                    None => V::O(UNDEF),
                },
            };
        }
        Ok(cur)
    }

    fn filter(&mut self, filter: &Filter, v: V<'a>) -> R<V<'a>> {
        let val = v.get();
        valid(val)?;
        // `default` is the only one here that takes undefined.
        if let Filter::Default(other, lax) = filter {
            return Ok(if val.is_undefined() || (*lax && !truthy(val)?) {
                V::O(other.clone())
            } else {
                v
            });
        }
        if val.is_undefined() {
            return Err(Abandon);
        }
        let out = match filter {
            Filter::Upper | Filter::Lower | Filter::Trim | Filter::Title | Filter::Capitalize => {
                let s = string_in(val)?;
                self.charge(DATA_BYTE.saturating_mul(s.len() as u64 * 3 + 8))?;
                Value::from(match filter {
                    Filter::Upper => s.to_uppercase(),
                    Filter::Lower => s.to_lowercase(),
                    Filter::Trim => s.trim().to_string(),
                    Filter::Title => minijinja::filters::title(Cow::Borrowed(s)),
                    _ => {
                        if !s.is_ascii() {
                            return Err(Abandon);
                        }
                        let mut o = String::with_capacity(s.len());
                        let mut chars = s.chars();
                        if let Some(c) = chars.next() {
                            o.push(c.to_ascii_uppercase());
                        }
                        o.extend(chars.map(|c| c.to_ascii_lowercase()));
                        o
                    }
                })
            }
            Filter::Length => {
                if let Some(s) = val.as_str() {
                    self.charge(DATA_BYTE.saturating_mul(s.len() as u64))?;
                }
                let n = minijinja::filters::length(val).map_err(|_| Abandon)?;
                Value::from(n)
            }
            Filter::Join(joiner) => {
                if !matches!(val.kind(), ValueKind::Seq) {
                    return Err(Abandon);
                }
                let iter = val.try_iter().map_err(|_| Abandon)?;
                let mut s = String::new();
                for (i, item) in iter.enumerate() {
                    valid(&item)?;
                    if item.kind() == ValueKind::Undefined || item.as_object().is_some() {
                        return Err(Abandon);
                    }
                    if i > 0 {
                        s.push_str(joiner);
                    }
                    match item.as_str() {
                        Some(x) if item.kind() == ValueKind::String => s.push_str(x),
                        _ => {
                            if item.kind() == ValueKind::Bytes {
                                return Err(Abandon);
                            }
                            let _ = write!(s, "{item}");
                        }
                    }
                    self.charge(STEP)?;
                }
                self.charge(DATA_BYTE.saturating_mul(s.len() as u64 * 2))?;
                Value::from(s)
            }
            Filter::ToJson => {
                let j = minijinja::filters::tojson(
                    val,
                    None,
                    Kwargs::from_iter(std::iter::empty::<(&str, Value)>()),
                )
                .map_err(|_| Abandon)?;
                let n = j.as_str().map_or(0, str::len) as u64;
                self.charge(DATA_BYTE.saturating_mul(n * 2 + 8))?;
                j
            }
            Filter::Round => {
                if !val.is_number() {
                    return Err(Abandon);
                }
                minijinja::filters::round(
                    val.clone(),
                    None,
                    None,
                    Kwargs::from_iter(std::iter::empty::<(&str, Value)>()),
                )
                .map_err(|_| Abandon)?
            }
            Filter::Default(..) => return Err(Abandon),
        };
        Ok(V::O(out))
    }
}

/// The string a string filter works on (other kinds: minijinja converts,
/// the fast path does not).
#[inline]
fn string_in(v: &Value) -> R<&str> {
    match v.kind() {
        ValueKind::String => v.as_str().ok_or(Abandon),
        _ => Err(Abandon),
    }
}

/// One lookup step on `v` as minijinja's `GetAttr`/`GetItem`: `Ok(None)`
/// is "undefined"; strict mode's error for a lookup on undefined (and
/// anything unusual) abandons.
#[inline]
fn step_on<'a>(v: &'a Value, step: &Step) -> R<Option<V<'a>>> {
    match step {
        Step::Attr(key) => {
            if v.as_object().is_none() {
                // Not an object: undefined, unless the parent is undefined
                // (an error in strict mode) or invalid (an error).
                return match v.kind() {
                    ValueKind::Undefined | ValueKind::Invalid => Err(Abandon),
                    _ => Ok(None),
                };
            }
            Ok(lookup(v, key))
        }
        Step::Item(key) => item(v, key),
    }
}

/// Attribute lookup as minijinja's `GetAttr` (and a context variable's
/// lookup): `None` is "undefined". The result is not checked for validity
/// here; every consumer rejects invalid values.
#[inline]
fn lookup<'a>(v: &'a Value, key: &Key) -> Option<V<'a>> {
    let obj = v.as_object()?;
    if let Some(map) = obj.downcast_ref::<ValueMap>() {
        return hinted(key, |i| map.get_index(i), || full_lookup(map, key));
    }
    if let Some(map) = obj.downcast_ref::<crate::vars::SmallMap>() {
        return hinted(
            key,
            |i| map.get_index(i),
            || {
                let i = map.find_str(&key.name)?;
                Some((Some(i), map.get_index(i)?.1))
            },
        );
    }
    obj.get_value_by_str(&key.name).map(V::O)
}

/// A lookup by name in a map with positions: the entry at the key's hinted
/// position if it is this key (keys are unique, so it is the one the full
/// lookup would find), else `full`, whose position (if any) becomes the
/// new hint.
#[inline]
fn hinted<'a>(
    key: &Key,
    at: impl Fn(usize) -> Option<(&'a Value, &'a Value)>,
    full: impl FnOnce() -> Option<(Option<usize>, &'a Value)>,
) -> Option<V<'a>> {
    let hint = key.hint.load(Ordering::Relaxed) as usize;
    if let Some((k, found)) = at(hint)
        && k.as_str() == Some(&*key.name)
        && k.kind() == ValueKind::String
    {
        return Some(V::B(found));
    }
    let (i, found) = full()?;
    if let Some(i) = i.and_then(|i| u32::try_from(i).ok()) {
        key.hint.store(i, Ordering::Relaxed);
    }
    Some(V::B(found))
}

/// minijinja's own map lookup: a scan over string keys for small maps, a
/// hashed lookup otherwise. The position is `None` when the entry was found
/// through a non-string key equal to the name (fine, but not hinted: the
/// hint check is for string keys).
fn full_lookup<'a>(map: &'a ValueMap, key: &Key) -> Option<(Option<usize>, &'a Value)> {
    let name = &*key.name;
    if map.len() <= 12 {
        map.iter()
            .enumerate()
            .find(|(_, (k, _))| k.as_str() == Some(name) && k.kind() == ValueKind::String)
            .map(|(i, (_, v))| (Some(i), v))
    } else {
        let (i, k, found) = map.get_full(&key.value)?;
        Some(((k.kind() == ValueKind::String).then_some(i), found))
    }
}

/// Item lookup as minijinja's `GetItem` for the keys the subset allows
/// (strings, non-negative integers).
fn item<'a>(v: &'a Value, key: &Value) -> R<Option<V<'a>>> {
    let Some(obj) = v.as_object() else {
        return Err(Abandon);
    };
    let found = if let Some(seq) = obj.downcast_ref::<Vec<Value>>() {
        match key.as_i64() {
            Some(i) if i >= 0 && key.kind() == ValueKind::Number => {
                usize::try_from(i).ok().and_then(|i| seq.get(i)).map(V::B)
            }
            _ => return Err(Abandon),
        }
    } else if let Some(map) = obj.downcast_ref::<ValueMap>() {
        map.get(key).map(V::B)
    } else if let Some(map) = obj.downcast_ref::<crate::vars::SmallMap>() {
        map.get(key).map(V::B)
    } else if obj.repr() == minijinja::value::ObjectRepr::Map {
        obj.get_value(key).map(V::O)
    } else {
        return Err(Abandon);
    };
    Ok(found)
}

#[inline]
fn valid(v: &Value) -> R<()> {
    if v.kind() == ValueKind::Invalid {
        Err(Abandon)
    } else {
        Ok(())
    }
}

/// Truthiness as minijinja's strict mode: undefined raises.
#[inline]
fn truthy(v: &Value) -> R<bool> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::Invalid => Err(Abandon),
        _ => Ok(v.is_true()),
    }
}

/// Comparison operands: scalars only (containers are charged and compared
/// item by item).
#[inline]
fn scalar(v: &Value) -> R<&Value> {
    match v.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number | ValueKind::String => Ok(v),
        _ => Err(Abandon),
    }
}

/// Write a value as minijinja does with no auto-escaping (its `Display`).
#[inline]
fn emit(v: &Value, out: &mut String) -> R<()> {
    // Strings (and UTF-8 bytes, which print the same) as they are.
    if let Some(s) = v.as_str() {
        out.push_str(s);
        return Ok(());
    }
    match v.kind() {
        ValueKind::None | ValueKind::Bool | ValueKind::Number => {
            let _ = write!(out, "{v}");
            Ok(())
        }
        _ => Err(Abandon),
    }
}

// ---------------------------------------------------------------------------
// Portable plans (see `crate::plan`)

impl FastTemplate {
    /// This template as a portable plan, if every part of it is in the
    /// portable subset (see [`crate::plan`]); `None` otherwise.
    pub fn portable(&self) -> Option<PlanTemplate> {
        Some(PlanTemplate {
            nodes: portable_nodes(&self.nodes)?,
            slots: self.locals,
            loops: self.loops,
        })
    }
}

/// Units one IR step is charged (for [`crate::plan::PortablePlan`]).
pub(crate) const PLAN_STEP_UNITS: u64 = STEP;

/// The fuel units at which a portable render gives up, as the fast path.
pub(crate) fn plan_fuel_budget(fuel: Option<u64>) -> Option<u64> {
    fuel.map(|f| f.saturating_mul(INSTR) / 2)
}

fn portable_nodes(nodes: &[Node]) -> Option<Vec<PlanNode>> {
    nodes.iter().map(portable_node).collect()
}

fn portable_node(n: &Node) -> Option<PlanNode> {
    Some(match n {
        Node::Text(t) => PlanNode::Text {
            text: t.to_string(),
        },
        Node::Emit(e) => PlanNode::Emit {
            expr: portable_expr(e)?,
        },
        Node::If(branches, else_body) => PlanNode::If {
            branches: branches
                .iter()
                .map(|(c, body)| {
                    Some(PlanBranch {
                        cond: portable_expr(c)?,
                        body: portable_nodes(body)?,
                    })
                })
                .collect::<Option<_>>()?,
            otherwise: portable_nodes(else_body)?,
        },
        Node::For(f) => PlanNode::For {
            slot: f.slot,
            id: f.loop_id,
            iter: portable_expr(&f.iter)?,
            body: portable_nodes(&f.body)?,
            otherwise: portable_nodes(&f.else_body)?,
        },
        Node::Set(slot, e) => PlanNode::Set {
            slot: *slot,
            expr: portable_expr(e)?,
        },
    })
}

/// A constant in the portable subset: strings, safe integers, booleans and
/// none (floats print differently across languages).
fn portable_const(v: &Value) -> Option<PlanConst> {
    Some(match v.kind() {
        ValueKind::String => PlanConst::Str(v.as_str()?.to_string()),
        ValueKind::Number if v.is_integer() => {
            let i = v.as_i64()?;
            if !(-MAX_SAFE_INT..=MAX_SAFE_INT).contains(&i) {
                return None;
            }
            PlanConst::Int(i)
        }
        ValueKind::Bool => PlanConst::Bool(v.is_true()),
        ValueKind::None => PlanConst::None(()),
        _ => return None,
    })
}

/// A name looked up in maps. U+FFFD is left out: a key of the caller's
/// data with an unpaired surrogate (UTF-16) becomes U+FFFD in the core and
/// would match it there only.
fn portable_name(name: &str) -> Option<String> {
    (!name.contains('\u{FFFD}')).then(|| name.to_string())
}

fn portable_expr(e: &Expr) -> Option<PlanExpr> {
    let b = |e: &Expr| portable_expr(e).map(Box::new);
    Some(match e {
        Expr::Const(v) => PlanExpr::Const {
            value: portable_const(v)?,
        },
        Expr::Path(p) => PlanExpr::Path {
            base: match &p.base {
                Base::Root(key) => PlanBase::Root(portable_name(&key.name)?),
                Base::SetVar(slot, key) => PlanBase::Set {
                    slot: *slot,
                    name: portable_name(&key.name)?,
                },
                Base::Local(slot) => PlanBase::Local(*slot),
            },
            steps: p
                .steps
                .iter()
                .map(|s| match s {
                    Step::Attr(key) => Some(PlanStep::Attr(portable_name(&key.name)?)),
                    Step::Item(v) => match v.kind() {
                        ValueKind::String => Some(PlanStep::Key(portable_name(v.as_str()?)?)),
                        ValueKind::Number if v.is_integer() => {
                            let i = u64::try_from(v.as_i64()?).ok()?;
                            (i <= MAX_SAFE_INT as u64).then_some(PlanStep::Index(i))
                        }
                        _ => None,
                    },
                })
                .collect::<Option<_>>()?,
        },
        Expr::Loop(id, field) => PlanExpr::Loop {
            id: *id,
            field: match field {
                LoopField::Index => LoopFieldName::Index,
                LoopField::Index0 => LoopFieldName::Index0,
                LoopField::RevIndex => LoopFieldName::Revindex,
                LoopField::RevIndex0 => LoopFieldName::Revindex0,
                LoopField::First => LoopFieldName::First,
                LoopField::Last => LoopFieldName::Last,
                LoopField::Length => LoopFieldName::Length,
            },
        },
        Expr::Not(x) => PlanExpr::Not { expr: b(x)? },
        Expr::And(l, r) => PlanExpr::And {
            left: b(l)?,
            right: b(r)?,
        },
        Expr::Or(l, r) => PlanExpr::Or {
            left: b(l)?,
            right: b(r)?,
        },
        Expr::Cmp(CmpOp::Eq, l, r) => PlanExpr::Eq {
            left: b(l)?,
            right: b(r)?,
        },
        Expr::Cmp(CmpOp::Ne, l, r) => PlanExpr::Ne {
            left: b(l)?,
            right: b(r)?,
        },
        // Ordering of strings differs (UTF-8 bytes vs UTF-16 units).
        Expr::Cmp(..) => return None,
        Expr::Cond(c, t, f) => PlanExpr::Cond {
            cond: b(c)?,
            then: b(t)?,
            otherwise: b(f)?,
        },
        Expr::Test(kind, x) => PlanExpr::Test {
            test: match kind {
                TestKind::Defined => TestName::Defined,
                TestKind::Undefined => TestName::Undefined,
                TestKind::None => TestName::None,
            },
            expr: b(x)?,
        },
        Expr::Filter(Filter::Default(v, lax), x) => PlanExpr::Default {
            expr: b(x)?,
            value: portable_const(v)?,
            lax: *lax,
        },
        // String filters depend on Unicode tables and string lengths on the
        // encoding; tojson, round and join print values.
        Expr::Filter(..) => return None,
    })
}
