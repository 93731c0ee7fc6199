//! Node.js bindings of promptops (napi-rs). Conversion and error mapping
//! only: every behaviour lives in `promptops-core`. The idiomatic JS surface
//! (error subclasses, `client.on('change')`, lazy token getters, the prompt
//! cache) is the thin `index.js` beside this crate; this file is what it
//! calls, through the loader `binding.js` that `napi build` generates.
//!
//! Hot path (`get` + `render`): `index.js` encodes the variables into one
//! string and one `Float64Array` (`encode.js`); `render_encoded` decodes them
//! into minijinja values with a fixed handful of N-API calls, the core
//! renders, and the output goes back as one Latin-1 string (ASCII output: a
//! plain copy) or UTF-8 string. Token counts are not computed unless asked
//! for. `__renderWalk` (the JS object read value by value through N-API) and
//! `__renderJson` (JSON text) are the slower alternatives, kept for the
//! benchmark's comparison; `__profileRender` times the phases.
//!
//! Errors: `js_error` is the one place a core error becomes a JS error (an
//! instance of the class `index.js` registered for its `kind()`, with
//! `details()` attached). Every export is `catch_unwind`: a panic becomes a
//! JS exception, never an abort.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use minijinja::Value;
use napi::bindgen_prelude::{AsyncTask, Either, Function, Object, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, JsValue, Status, Task, sys};
use napi_derive::napi;
use promptops_core::{
    self as po, Change, Client, ClientBuilder, Fallback, GetOptions, Message, Prompt, Source,
    Update,
    snapshot::SnapshotData,
    tokens::{self, Encoding},
};

use napi::Result;

// ---------------------------------------------------------------------------
// Raw N-API helpers

macro_rules! check {
    ($e:expr) => {{
        let status = unsafe { $e };
        if status != sys::Status::napi_ok {
            return Err(napi::Error::new(
                Status::from(status),
                concat!("N-API call failed: ", stringify!($e)).to_string(),
            ));
        }
    }};
}

fn unknown(env: sys::napi_env, v: sys::napi_value) -> Unknown<'static> {
    // SAFETY: `v` was just produced by N-API for `env` on this thread and is
    // handed straight back to JS as the call's return value.
    unsafe { Unknown::from_raw_unchecked(env, v) }
}

/// A JS string from Rust. ASCII (the common case for prompts) goes through
/// `napi_create_string_latin1`, a plain copy into a one-byte string; other
/// text through UTF-8 decoding.
fn js_string(env: sys::napi_env, s: &str) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    if s.is_ascii() {
        check!(sys::napi_create_string_latin1(
            env,
            s.as_ptr().cast(),
            s.len() as isize,
            &mut out
        ));
    } else {
        check!(sys::napi_create_string_utf8(
            env,
            s.as_ptr().cast(),
            s.len() as isize,
            &mut out
        ));
    }
    Ok(out)
}

fn js_null(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check!(sys::napi_get_null(env, &mut out));
    Ok(out)
}

fn js_object(env: sys::napi_env) -> Result<sys::napi_value> {
    let mut out = ptr::null_mut();
    check!(sys::napi_create_object(env, &mut out));
    Ok(out)
}

fn set_prop(env: sys::napi_env, obj: sys::napi_value, key: &str, v: sys::napi_value) -> Result<()> {
    let k = js_string(env, key)?;
    check!(sys::napi_set_property(env, obj, k, v));
    Ok(())
}

/// A JSON value as a JS value (error details, model configs, diagnostics).
fn json_to_js(env: sys::napi_env, v: &serde_json::Value) -> Result<sys::napi_value> {
    use serde_json::Value as J;
    let mut out = ptr::null_mut();
    match v {
        J::Null => return js_null(env),
        J::Bool(b) => check!(sys::napi_get_boolean(env, *b, &mut out)),
        J::Number(n) => {
            check!(sys::napi_create_double(
                env,
                n.as_f64().unwrap_or(f64::NAN),
                &mut out
            ))
        }
        J::String(s) => return js_string(env, s),
        J::Array(items) => {
            check!(sys::napi_create_array_with_length(
                env,
                items.len(),
                &mut out
            ));
            for (i, item) in items.iter().enumerate() {
                let jv = json_to_js(env, item)?;
                check!(sys::napi_set_element(env, out, i as u32, jv));
            }
        }
        J::Object(map) => return json_map_to_js(env, map),
    }
    Ok(out)
}

fn json_map_to_js(
    env: sys::napi_env,
    map: &serde_json::Map<String, serde_json::Value>,
) -> Result<sys::napi_value> {
    let obj = js_object(env)?;
    for (k, v) in map {
        let jv = json_to_js(env, v)?;
        set_prop(env, obj, k, jv)?;
    }
    Ok(obj)
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

// ---------------------------------------------------------------------------
// Errors: the ONE place where core errors become JS errors.

/// Per-environment data (main thread and each worker have their own): the
/// error classes `index.js` registered, by code.
struct EnvData {
    error_classes: sys::napi_ref,
}

/// `index.js` calls this once per environment with `{ CODE: Class, … }`;
/// core errors are then thrown as instances of those classes.
#[napi(catch_unwind)]
pub fn register_error_classes(env: Env, classes: Object) -> Result<()> {
    let mut r = ptr::null_mut();
    check!(sys::napi_create_reference(
        env.raw(),
        classes.raw(),
        1,
        &mut r
    ));
    env.set_instance_data(EnvData { error_classes: r }, (), |_ctx| {
        // The environment is going away; its references die with it.
    })
}

/// A core error as a JS error: an instance of the class registered for its
/// `kind()` (or a plain `Error`), with `code` = `kind()`, `details` =
/// `details()` and, for convenience, the details' `line`, `column`,
/// `variable` and `field`, set by the class constructor from `details`.
fn js_error(env: sys::napi_env, e: &po::Error) -> napi::Error {
    match build_js_error(env, e) {
        Ok(v) => napi::Error::from(unknown(env, v)),
        Err(fallback) => napi::Error::new(Status::GenericFailure, format!("{e} ({fallback})")),
    }
}

fn build_js_error(env: sys::napi_env, e: &po::Error) -> Result<sys::napi_value> {
    let message = js_string(env, &e.to_string())?;
    let details = json_map_to_js(env, &e.details())?;
    let code = e.kind();
    let mut class = ptr::null_mut();
    if let Some(data) = Env::from_raw(env).get_instance_data::<EnvData>()? {
        let mut classes = ptr::null_mut();
        check!(sys::napi_get_reference_value(
            env,
            data.error_classes,
            &mut classes
        ));
        let key = js_string(env, code)?;
        check!(sys::napi_get_property(env, classes, key, &mut class));
        let mut t = 0;
        check!(sys::napi_typeof(env, class, &mut t));
        if t != sys::ValueType::napi_function {
            class = ptr::null_mut();
        }
    }
    let mut err = ptr::null_mut();
    if class.is_null() {
        let code_v = js_string(env, code)?;
        check!(sys::napi_create_error(env, code_v, message, &mut err));
        set_prop(env, err, "details", details)?;
    } else {
        let args = [message, details];
        check!(sys::napi_new_instance(
            env,
            class,
            2,
            args.as_ptr(),
            &mut err
        ));
    }
    Ok(err)
}

fn config_error(env: sys::napi_env, message: impl Into<String>) -> napi::Error {
    js_error(env, &po::Error::Config(message.into()))
}

// ---------------------------------------------------------------------------
// JS values -> template values

/// Objects and arrays nested deeper than this are refused (a cycle, most
/// likely; `JSON.stringify` would throw on one too).
const MAX_DEPTH: u32 = 128;

/// Why a JS value could not become a template value.
enum ConvError {
    Napi(napi::Error),
    Invalid(String),
}

impl From<napi::Error> for ConvError {
    fn from(e: napi::Error) -> Self {
        ConvError::Napi(e)
    }
}

macro_rules! conv_check {
    ($e:expr) => {{
        let status = unsafe { $e };
        if status != sys::Status::napi_ok {
            return Err(ConvError::Napi(napi::Error::new(
                Status::from(status),
                concat!("N-API call failed: ", stringify!($e)).to_string(),
            )));
        }
    }};
}

/// Read a JS string as UTF-8 (two calls: length, then copy into place).
fn read_string(env: sys::napi_env, v: sys::napi_value) -> std::result::Result<String, ConvError> {
    let mut len = 0usize;
    conv_check!(sys::napi_get_value_string_utf8(
        env,
        v,
        ptr::null_mut(),
        0,
        &mut len
    ));
    let mut buf: Vec<u8> = Vec::with_capacity(len + 1);
    let mut written = 0usize;
    conv_check!(sys::napi_get_value_string_utf8(
        env,
        v,
        buf.as_mut_ptr().cast(),
        len + 1,
        &mut written
    ));
    // SAFETY: N-API wrote `written` bytes of valid UTF-8 (plus a NUL we drop).
    unsafe { buf.set_len(written) };
    Ok(unsafe { String::from_utf8_unchecked(buf) })
}

/// A JS value as a template value, with `JSON.stringify` semantics: object
/// keys in property order, `undefined`/functions/symbols left out of objects
/// (and `null` in arrays), integral numbers as integers, `Date` as its ISO
/// string. `None` means "leave out".
fn js_to_value(
    env: sys::napi_env,
    v: sys::napi_value,
    depth: u32,
) -> std::result::Result<Option<Value>, ConvError> {
    let mut t = 0;
    conv_check!(sys::napi_typeof(env, v, &mut t));
    Ok(Some(match t {
        sys::ValueType::napi_string => Value::from(read_string(env, v)?),
        sys::ValueType::napi_number => {
            let mut n = 0f64;
            conv_check!(sys::napi_get_value_double(env, v, &mut n));
            number_value(n)
        }
        sys::ValueType::napi_boolean => {
            let mut b = false;
            conv_check!(sys::napi_get_value_bool(env, v, &mut b));
            Value::from(b)
        }
        sys::ValueType::napi_null => Value::from(()),
        sys::ValueType::napi_object => object_to_value(env, v, depth)?,
        sys::ValueType::napi_bigint => {
            let mut n = 0i64;
            let mut lossless = false;
            conv_check!(sys::napi_get_value_bigint_int64(
                env,
                v,
                &mut n,
                &mut lossless
            ));
            if !lossless {
                return Err(ConvError::Invalid(
                    "a BigInt outside the 64-bit range".into(),
                ));
            }
            Value::from(n)
        }
        _ => return Ok(None), // undefined, function, symbol, external
    }))
}

fn number_value(n: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0;
    if n.abs() <= SAFE && (n as i64) as f64 == n {
        Value::from(n as i64)
    } else if n.is_finite() {
        Value::from(n)
    } else {
        Value::from(()) // NaN and ±Infinity: JSON null
    }
}

fn object_to_value(
    env: sys::napi_env,
    v: sys::napi_value,
    depth: u32,
) -> std::result::Result<Value, ConvError> {
    if depth >= MAX_DEPTH {
        return Err(ConvError::Invalid(format!(
            "variables nest deeper than {MAX_DEPTH} levels (a circular structure?)"
        )));
    }
    let mut is_array = false;
    conv_check!(sys::napi_is_array(env, v, &mut is_array));
    if is_array {
        let mut len = 0u32;
        conv_check!(sys::napi_get_array_length(env, v, &mut len));
        let mut items = Vec::with_capacity(len as usize);
        for i in 0..len {
            let mut item = ptr::null_mut();
            conv_check!(sys::napi_get_element(env, v, i, &mut item));
            items.push(js_to_value(env, item, depth + 1)?.unwrap_or(Value::from(())));
        }
        return Ok(Value::from(items));
    }
    let mut is_date = false;
    conv_check!(sys::napi_is_date(env, v, &mut is_date));
    if is_date {
        return date_to_value(env, v);
    }
    let mut keys = ptr::null_mut();
    conv_check!(sys::napi_get_all_property_names(
        env,
        v,
        sys::KeyCollectionMode::own_only,
        sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols,
        sys::KeyConversion::numbers_to_strings,
        &mut keys
    ));
    let mut len = 0u32;
    conv_check!(sys::napi_get_array_length(env, keys, &mut len));
    let mut entries = Vec::with_capacity(len as usize);
    for i in 0..len {
        let mut key = ptr::null_mut();
        conv_check!(sys::napi_get_element(env, keys, i, &mut key));
        let mut item = ptr::null_mut();
        conv_check!(sys::napi_get_property(env, v, key, &mut item));
        if let Some(value) = js_to_value(env, item, depth + 1)? {
            entries.push((Value::from(read_string(env, key)?), value));
        }
    }
    Ok(map_value(entries))
}

fn date_to_value(env: sys::napi_env, v: sys::napi_value) -> std::result::Result<Value, ConvError> {
    let mut f = ptr::null_mut();
    conv_check!(sys::napi_get_named_property(
        env,
        v,
        c"toISOString".as_ptr(),
        &mut f
    ));
    let mut out = ptr::null_mut();
    conv_check!(sys::napi_call_function(env, v, f, 0, ptr::null(), &mut out));
    Ok(Value::from(read_string(env, out)?))
}

/// The variables of a render: a plain object (or `undefined`/`null` for none).
fn vars_from_js(env: sys::napi_env, prompt: &str, vars: sys::napi_value) -> Result<Value> {
    let invalid = |message: String| {
        js_error(
            env,
            &po::Error::Validation {
                prompt: prompt.to_string(),
                field: "vars".into(),
                message,
            },
        )
    };
    let mut t = 0;
    check!(sys::napi_typeof(env, vars, &mut t));
    match t {
        sys::ValueType::napi_undefined | sys::ValueType::napi_null => {
            return Ok(Value::from(indexmap::IndexMap::<Value, Value>::new()));
        }
        sys::ValueType::napi_object => {
            let mut is_array = false;
            check!(sys::napi_is_array(env, vars, &mut is_array));
            if is_array {
                return Err(invalid("variables must be an object, not an array".into()));
            }
        }
        _ => return Err(invalid("variables must be an object".into())),
    }
    match js_to_value(env, vars, 0) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Ok(Value::from(indexmap::IndexMap::<Value, Value>::new())),
        Err(ConvError::Napi(e)) => Err(e),
        Err(ConvError::Invalid(m)) => Err(invalid(m)),
    }
}

// ---------------------------------------------------------------------------
// Encoded variables: the fast path.
//
// `index.js` walks the variables in JS (JIT-compiled, with `JSON.stringify`
// semantics) into one string holding every key and string value back to back
// and one `Float64Array` of opcodes. Crossing the boundary then costs a fixed
// handful of N-API calls per render instead of several per value, which is
// where the object walk above spends most of its time.

const OP_NULL: f64 = 0.0;
const OP_TRUE: f64 = 1.0;
const OP_FALSE: f64 = 2.0;
const OP_NUMBER: f64 = 3.0;
const OP_STRING: f64 = 4.0;
const OP_ARRAY: f64 = 5.0;
const OP_OBJECT: f64 = 6.0;

thread_local! {
    /// Scratch space the encoded strings are copied into (one per JS thread).
    static UTF16: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same for one-byte (Latin-1) text.
    static LATIN1: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Scratch space above this many UTF-16 units is given back after use.
const SCRATCH_KEEP: usize = 1 << 20;
/// Scratch space kept between renders (UTF-16 units).
const SCRATCH_MIN: usize = 16 << 10;

/// The code units the encoded text arrives in: Latin-1 bytes when the text
/// is a one-byte string (`index.js` checks), else UTF-16.
trait Unit: Copy {
    fn to_value(units: &[Self]) -> Value;
    /// Append the text as UTF-8 (map keys).
    fn push_to(units: &[Self], out: &mut String);
}

impl Unit for u16 {
    fn to_value(units: &[u16]) -> Value {
        utf16_to_value(units)
    }

    fn push_to(units: &[u16], out: &mut String) {
        if is_ascii_utf16(units) {
            out.extend(units.iter().map(|&u| u as u8 as char));
        } else {
            out.push_str(&utf16_to_string(units));
        }
    }
}

impl Unit for u8 {
    fn to_value(units: &[u8]) -> Value {
        if units.is_ascii() {
            // SAFETY: ASCII is UTF-8. Goes straight in: inline or one copy.
            Value::from(unsafe { std::str::from_utf8_unchecked(units) })
        } else {
            Value::from(units.iter().map(|&b| b as char).collect::<String>())
        }
    }

    fn push_to(units: &[u8], out: &mut String) {
        if units.is_ascii() {
            // SAFETY: ASCII is UTF-8.
            out.push_str(unsafe { std::str::from_utf8_unchecked(units) });
        } else {
            out.extend(units.iter().map(|&b| b as char));
        }
    }
}

struct Decoder<'a, U: Unit = u16> {
    ops: &'a [f64],
    op: usize,
    text: &'a [U],
    pos: usize,
}

impl<U: Unit> Decoder<'_, U> {
    fn next_op(&mut self) -> std::result::Result<f64, String> {
        let v = *self
            .ops
            .get(self.op)
            .ok_or_else(|| "truncated variable encoding".to_string())?;
        self.op += 1;
        Ok(v)
    }

    #[inline]
    fn next_len(&mut self) -> std::result::Result<usize, String> {
        let n = self.next_op()?;
        let len = n as usize; // saturating; checked below without calling trunc()
        if len as f64 != n {
            return Err("bad length in variable encoding".into());
        }
        Ok(len)
    }

    fn string(&mut self) -> std::result::Result<Value, String> {
        let len = self.next_len()?;
        let end = self.pos + len;
        let units = self
            .text
            .get(self.pos..end)
            .ok_or_else(|| "truncated string data".to_string())?;
        self.pos = end;
        Ok(U::to_value(units))
    }

    /// Decode the variables into one [`Tree`]: the root and every small map
    /// and list become views into it (no per-container allocation, keys
    /// never become values); strings, numbers and large maps are values.
    fn tree(mut self) -> std::result::Result<Value, String> {
        let mut tree = Tree {
            nodes: Vec::with_capacity(self.ops.len() / 2 + 1),
            entries: Vec::new(),
            items: Vec::new(),
            keys: String::new(),
        };
        if self.ops.len() >= u32::MAX as usize || self.text.len() >= u32::MAX as usize {
            return Err("variables too large".into());
        }
        let root = self.node(&mut tree, 0)?;
        if self.op != self.ops.len() {
            return Err("trailing data in variable encoding".into());
        }
        Ok(Tree::child(&Arc::new(tree), root))
    }

    /// Entries (`per` opcodes at least each) a container of `n` can have,
    /// checked against what is left, so a bad count cannot allocate.
    fn check_count(&self, n: usize, per: usize) -> std::result::Result<(), String> {
        if n.saturating_mul(per) > self.ops.len() - self.op {
            return Err("truncated variable encoding".into());
        }
        Ok(())
    }

    fn node(&mut self, t: &mut Tree, depth: u32) -> std::result::Result<u32, String> {
        let at = self.op;
        let op = self.next_op()?;
        if op != OP_ARRAY && op != OP_OBJECT {
            self.op = at;
            let v = self.value(depth)?;
            t.nodes.push(Node::Leaf(v));
            return Ok((t.nodes.len() - 1) as u32);
        }
        if depth >= MAX_DEPTH {
            return Err(format!(
                "variables nest deeper than {MAX_DEPTH} levels (a circular structure?)"
            ));
        }
        let n = self.next_len()?;
        let idx = t.nodes.len() as u32;
        if op == OP_ARRAY {
            self.check_count(n, 1)?;
            let start = t.items.len();
            t.items.resize(start + n, 0);
            t.nodes.push(Node::Seq {
                start: start as u32,
                len: n as u32,
            });
            for i in 0..n {
                let child = self.node(t, depth + 1)?;
                t.items[start + i] = child;
            }
        } else if n > SMALL_MAP {
            // Large maps get an index: decoded as one value.
            self.op = at;
            let v = self.value(depth)?;
            t.nodes.push(Node::Leaf(v));
        } else {
            self.check_count(n, 2)?;
            let start = t.entries.len();
            t.entries.resize(start + n, (0, 0, 0));
            t.nodes.push(Node::Map {
                start: start as u32,
                len: n as u32,
            });
            for i in 0..n {
                let len = self.next_len()?;
                let end = self.pos + len;
                let units = self
                    .text
                    .get(self.pos..end)
                    .ok_or_else(|| "truncated string data".to_string())?;
                self.pos = end;
                let k0 = t.keys.len();
                U::push_to(units, &mut t.keys);
                let k1 = t.keys.len();
                if k1 >= u32::MAX as usize {
                    return Err("variables too large".into());
                }
                let child = self.node(t, depth + 1)?;
                t.entries[start + i] = (k0 as u32, k1 as u32, child);
            }
        }
        Ok(idx)
    }

    fn value(&mut self, depth: u32) -> std::result::Result<Value, String> {
        let op = self.next_op()?;
        Ok(if op == OP_STRING {
            self.string()?
        } else if op == OP_NUMBER {
            number_value(self.next_op()?)
        } else if op == OP_TRUE {
            Value::from(true)
        } else if op == OP_FALSE {
            Value::from(false)
        } else if op == OP_NULL {
            Value::from(())
        } else if op == OP_ARRAY || op == OP_OBJECT {
            if depth >= MAX_DEPTH {
                return Err(format!(
                    "variables nest deeper than {MAX_DEPTH} levels (a circular structure?)"
                ));
            }
            let n = self.next_len()?;
            if op == OP_ARRAY {
                let mut items = Vec::with_capacity(n.min(self.ops.len()));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::from(items)
            } else {
                let mut entries = Vec::with_capacity(n.min(self.ops.len()));
                for _ in 0..n {
                    let k = self.string()?;
                    let v = self.value(depth + 1)?;
                    entries.push((k, v));
                }
                map_value(entries)
            }
        } else {
            return Err(format!("unknown opcode {op} in variable encoding"));
        })
    }
}

/// UTF-16 (as JS holds strings) to a template string. ASCII, the common
/// case, is narrowed straight into the string's final allocation (short
/// strings stay inline in the value); anything else goes through UTF-8.
fn utf16_to_value(units: &[u16]) -> Value {
    if !is_ascii_utf16(units) {
        return Value::from(utf16_to_string(units));
    }
    if units.len() <= 22 {
        let mut buf = [0u8; 22];
        narrow(units, &mut buf[..units.len()]);
        // SAFETY: every byte is ASCII.
        return Value::from(unsafe { std::str::from_utf8_unchecked(&buf[..units.len()]) });
    }
    let mut arc = Arc::<[u8]>::new_uninit_slice(units.len());
    let dst = Arc::get_mut(&mut arc).expect("fresh Arc is unique");
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; every byte is
    // written by `narrow` before `assume_init`.
    let dst: &mut [u8] =
        unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u8>(), dst.len()) };
    narrow(units, dst);
    let bytes: Arc<[u8]> = unsafe { arc.assume_init() };
    // SAFETY: ASCII is valid UTF-8, and `str` has the layout of `[u8]`.
    let text: Arc<str> = unsafe { Arc::from_raw(Arc::into_raw(bytes) as *const str) };
    Value::from(text)
}

/// UTF-16 to UTF-8: runs of ASCII are narrowed in bulk, the rest decoded
/// (lone surrogates become U+FFFD, as `String::from_utf16_lossy` does).
fn utf16_to_string(units: &[u16]) -> String {
    let mut out = String::with_capacity(units.len() + units.len() / 2);
    let mut i = 0;
    while i < units.len() {
        let start = i;
        while i + 16 <= units.len() && is_ascii_utf16(&units[i..i + 16]) {
            i += 16;
        }
        while i < units.len() && units[i] < 0x80 {
            i += 1;
        }
        if i > start {
            let mut bytes = std::mem::take(&mut out).into_bytes();
            let at = bytes.len();
            bytes.resize(at + (i - start), 0);
            narrow(&units[start..i], &mut bytes[at..]);
            // SAFETY: valid UTF-8 before, ASCII appended.
            out = unsafe { String::from_utf8_unchecked(bytes) };
        }
        let start = i;
        while i < units.len() && units[i] >= 0x80 {
            i += 1;
        }
        out.extend(
            char::decode_utf16(units[start..i].iter().copied())
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
        );
    }
    out
}

/// A JS string as a Rust string through the UTF-16 scratch space: a bulk
/// copy and an ASCII fast path, where `napi_get_value_string_utf8` walks the
/// string twice character by character (it matters for counting the tokens
/// of long texts).
fn read_js_text(env: sys::napi_env, v: sys::napi_value) -> Result<String> {
    let mut units = 0usize;
    check!(sys::napi_get_value_string_utf16(
        env,
        v,
        ptr::null_mut(),
        0,
        &mut units
    ));
    let mut local = Vec::new();
    UTF16.with(|scratch| {
        let mut guard = scratch.try_borrow_mut().ok();
        let buf: &mut Vec<u16> = match guard.as_deref_mut() {
            Some(b) => b,
            None => &mut local,
        };
        if buf.len() < units + 1 {
            buf.resize(units + 1, 0);
        }
        let mut copied = 0usize;
        check!(sys::napi_get_value_string_utf16(
            env,
            v,
            buf.as_mut_ptr(),
            units + 1,
            &mut copied
        ));
        let text = utf16_to_string(&buf[..copied]);
        if buf.len() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        Ok(text)
    })
}

/// A text or a list of chat messages (`countTokens`, `inputTokens`).
fn text_or_messages(
    env: sys::napi_env,
    v: sys::napi_value,
) -> Result<Either<String, Vec<Message>>> {
    use napi::bindgen_prelude::FromNapiValue;
    let mut t = 0;
    check!(sys::napi_typeof(env, v, &mut t));
    if t == sys::ValueType::napi_string {
        return Ok(Either::A(read_js_text(env, v)?));
    }
    let msgs = unsafe { Vec::<ChatMessage>::from_napi_value(env, v) }.map_err(|e| {
        napi::Error::new(
            Status::InvalidArg,
            format!("expected a string or an array of {{ role, content }} messages: {e}"),
        )
    })?;
    Ok(Either::B(msgs.into_iter().map(Message::from).collect()))
}

#[inline]
fn is_ascii_utf16(units: &[u16]) -> bool {
    // Written to vectorise: OR whole chunks together, test once per chunk.
    let mut chunks = units.chunks_exact(16);
    for c in &mut chunks {
        if c.iter().fold(0u16, |a, &u| a | u) >= 0x80 {
            return false;
        }
    }
    chunks.remainder().iter().fold(0u16, |a, &u| a | u) < 0x80
}

#[inline]
fn narrow(src: &[u16], dst: &mut [u8]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as u8;
    }
}

/// A JS object's entries as a template map, keys in property order. Small
/// objects (the usual case: a record per retrieved chunk, a handful of top
/// level variables) are a flat list looked up by a linear scan, which beats
/// hashing every key on the way in; larger ones get an index.
fn map_value(entries: Vec<(Value, Value)>) -> Value {
    if entries.len() <= SMALL_MAP {
        Value::from_object(SmallMap(entries))
    } else {
        Value::from(
            entries
                .into_iter()
                .collect::<indexmap::IndexMap<Value, Value>>(),
        )
    }
}

const SMALL_MAP: usize = 16;

#[derive(Debug)]
struct SmallMap(Vec<(Value, Value)>);

impl minijinja::value::Object for SmallMap {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        minijinja::value::ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v.clone())
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        use minijinja::value::ObjectExt;
        self.mapped_enumerator(|this| Box::new(this.0.iter().map(|(k, _)| k.clone())))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// Decoded variables: every small map and list of a render's variables
/// lives in these few vectors, and the template sees them through [`View`]s
/// (one small allocation when a template reaches a container, none per key).
/// Leaves hold finished values; they never point back into the tree, so
/// views (which hold the tree) form no cycle.
struct Tree {
    nodes: Vec<Node>,
    /// Map entries: key start, key end (in `keys`), node.
    entries: Vec<(u32, u32, u32)>,
    /// List items: nodes.
    items: Vec<u32>,
    /// Every key's text, back to back.
    keys: String,
}

enum Node {
    Leaf(Value),
    Map { start: u32, len: u32 },
    Seq { start: u32, len: u32 },
}

impl Tree {
    fn child(tree: &Arc<Tree>, node: u32) -> Value {
        match &tree.nodes[node as usize] {
            Node::Leaf(v) => v.clone(),
            _ => Value::from_object(View {
                tree: tree.clone(),
                node,
            }),
        }
    }

    fn key(&self, entry: &(u32, u32, u32)) -> &str {
        &self.keys[entry.0 as usize..entry.1 as usize]
    }

    fn range(&self, node: u32) -> (usize, usize, bool) {
        match self.nodes[node as usize] {
            Node::Map { start, len } => (start as usize, len as usize, true),
            Node::Seq { start, len } => (start as usize, len as usize, false),
            Node::Leaf(_) => (0, 0, true),
        }
    }
}

/// A map or list of the variables, as the template sees it.
struct View {
    tree: Arc<Tree>,
    node: u32,
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values print through `Object::render`; this is for Rust debugging.
        write!(f, "View({})", self.node)
    }
}

impl minijinja::value::Object for View {
    fn repr(self: &Arc<Self>) -> minijinja::value::ObjectRepr {
        if self.tree.range(self.node).2 {
            minijinja::value::ObjectRepr::Map
        } else {
            minijinja::value::ObjectRepr::Seq
        }
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let (start, len, is_map) = self.tree.range(self.node);
        if is_map {
            return self.get_value_by_str(key.as_str()?);
        }
        let i = key.as_usize()?;
        (i < len).then(|| Tree::child(&self.tree, self.tree.items[start + i]))
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        let (start, len, is_map) = self.tree.range(self.node);
        if !is_map {
            return None;
        }
        self.tree.entries[start..start + len]
            .iter()
            .find(|e| self.tree.key(e) == key)
            .map(|e| Tree::child(&self.tree, e.2))
    }

    fn enumerate(self: &Arc<Self>) -> minijinja::value::Enumerator {
        use minijinja::value::ObjectExt;
        let (_, len, is_map) = self.tree.range(self.node);
        if !is_map {
            return minijinja::value::Enumerator::Seq(len);
        }
        self.mapped_enumerator(|this| {
            let (start, len, _) = this.tree.range(this.node);
            Box::new(
                this.tree.entries[start..start + len]
                    .iter()
                    .map(|e| Value::from(this.tree.key(e))),
            )
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.tree.range(self.node).1)
    }
}

/// Decode variables encoded by `index.js` (`text`: a string, `ops`: a
/// `Float64Array`, `n`: how many opcodes are used).
fn vars_from_encoded(
    env: sys::napi_env,
    prompt: &str,
    text: sys::napi_value,
    ops: sys::napi_value,
    n: u32,
    one_byte: bool,
) -> Result<Value> {
    let mut kind = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    check!(sys::napi_get_typedarray_info(
        env,
        ops,
        &mut kind,
        &mut len,
        &mut data,
        ptr::null_mut(),
        ptr::null_mut()
    ));
    if kind != sys::TypedarrayType::float64_array || (n as usize) > len {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "promptops: bad variable encoding".to_string(),
        ));
    }
    // SAFETY: N-API reports `len` f64s at `data`, alive while `ops` is (for
    // this call); nothing runs JS while we read them.
    let ops: &[f64] = if n == 0 {
        &[]
    } else {
        unsafe { std::slice::from_raw_parts(data as *const f64, n as usize) }
    };
    let decoded = if one_byte {
        LATIN1.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            let copied = copy_js_text(&mut buf, |ptr, len, copied| unsafe {
                sys::napi_get_value_string_latin1(env, text, ptr.cast(), len, copied)
            })?;
            let decoded = Decoder {
                ops,
                op: 0,
                text: &buf[..copied],
                pos: 0,
            }
            .tree();
            if buf.len() > SCRATCH_KEEP {
                *buf = Vec::new(); // one huge render does not pin its memory
            }
            Ok::<_, napi::Error>(decoded)
        })?
    } else {
        UTF16.with(|scratch| {
            let mut buf = scratch.borrow_mut();
            let copied = copy_js_text(&mut buf, |ptr, len, copied| unsafe {
                sys::napi_get_value_string_utf16(env, text, ptr, len, copied)
            })?;
            let decoded = Decoder {
                ops,
                op: 0,
                text: &buf[..copied],
                pos: 0,
            }
            .tree();
            if buf.len() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            Ok::<_, napi::Error>(decoded)
        })?
    };
    decoded
        .and_then(|v| match v.kind() {
            minijinja::value::ValueKind::Map => Ok(v),
            _ => Err("variables must be an object".to_string()),
        })
        .map_err(|message| {
            js_error(
                env,
                &po::Error::Validation {
                    prompt: prompt.to_string(),
                    field: "vars".into(),
                    message,
                },
            )
        })
}

/// Copy a JS string into `buf` with `get(ptr, capacity, &mut copied)` (one
/// of the `napi_get_value_string_*` calls): one call when it fits (N-API
/// copies at most `capacity - 1` units and NUL-terminates), else a second
/// call for the length and a third to copy. Returns the units copied.
fn copy_js_text<T: Copy + Default>(
    buf: &mut Vec<T>,
    get: impl Fn(*mut T, usize, *mut usize) -> sys::napi_status,
) -> Result<usize> {
    if buf.len() < SCRATCH_MIN {
        buf.resize(SCRATCH_MIN, T::default());
    }
    let ok = |status: sys::napi_status| {
        if status == sys::Status::napi_ok {
            Ok(())
        } else {
            Err(napi::Error::new(
                Status::from(status),
                "promptops: cannot read the variables' text".to_string(),
            ))
        }
    };
    let mut copied = 0usize;
    ok(get(buf.as_mut_ptr(), buf.len(), &mut copied))?;
    if copied + 1 >= buf.len() {
        let mut units = 0usize;
        ok(get(ptr::null_mut(), 0, &mut units))?;
        if buf.len() < units + 1 {
            buf.resize(units + 1, T::default());
        }
        ok(get(buf.as_mut_ptr(), units + 1, &mut copied))?;
    }
    Ok(copied)
}

// ---------------------------------------------------------------------------
// Shared object shapes

/// A chat message, as the OpenAI and Anthropic SDKs take it.
#[napi(object)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
    pub name: Option<String>,
}

impl From<ChatMessage> for Message {
    fn from(m: ChatMessage) -> Self {
        Message {
            role: m.role,
            content: m.content,
            name: m.name,
        }
    }
}

/// A render's body as JS: the text, or the chat messages.
fn rendered_to_js(env: sys::napi_env, out: &po::Rendered) -> Result<sys::napi_value> {
    match (&out.text, &out.messages) {
        (Some(t), _) => js_string(env, t),
        (None, Some(m)) => messages_to_js(env, m),
        (None, None) => js_string(env, ""),
    }
}

fn messages_to_js(env: sys::napi_env, messages: &[Message]) -> Result<sys::napi_value> {
    let mut arr = ptr::null_mut();
    check!(sys::napi_create_array_with_length(
        env,
        messages.len(),
        &mut arr
    ));
    for (i, m) in messages.iter().enumerate() {
        let obj = js_object(env)?;
        set_prop(env, obj, "role", js_string(env, &m.role)?)?;
        set_prop(env, obj, "content", js_string(env, &m.content)?)?;
        if let Some(name) = &m.name {
            set_prop(env, obj, "name", js_string(env, name)?)?;
        }
        check!(sys::napi_set_element(env, arr, i as u32, obj));
    }
    Ok(arr)
}

/// One effective change of what a label serves.
#[napi(object)]
pub struct PromptChange {
    pub prompt: String,
    pub label: String,
    pub old: Option<u32>,
    #[napi(js_name = "new")]
    pub new_version: Option<u32>,
}

impl From<&Change> for PromptChange {
    fn from(c: &Change) -> Self {
        PromptChange {
            prompt: c.prompt.clone(),
            label: c.label.clone(),
            old: c.old,
            new_version: c.new,
        }
    }
}

/// A token count and how it was obtained.
#[napi(object)]
pub struct TokenCount {
    pub count: u32,
    /// `cl100k_base` or `o200k_base`.
    pub encoding: String,
    /// `false` when the count is an estimate (non-OpenAI model, or no model).
    pub exact: bool,
}

impl From<tokens::TokenCount> for TokenCount {
    fn from(c: tokens::TokenCount) -> Self {
        TokenCount {
            count: c.count.min(u32::MAX as usize) as u32,
            encoding: c.encoding.name().to_string(),
            exact: c.exact,
        }
    }
}

/// The input tokens of a rendered prompt and their estimated cost.
#[napi(object)]
pub struct InputTokens {
    pub count: u32,
    pub encoding: String,
    pub exact: bool,
    /// USD, input only; `null` when the model has no price.
    pub estimated_cost_usd: Option<f64>,
}

/// How a model's tokens are counted.
#[napi(object)]
pub struct TokenizerInfo {
    pub encoding: String,
    pub exact: bool,
    pub factor: f64,
}

// ---------------------------------------------------------------------------
// Client

/// Options of `new Client(…)`. Live delivery: `server` (+ `apiKey`) and/or
/// `redis` (+ `redisPrefix`) with a `project`; `cacheDir` keeps the
/// last-known-good snapshot; `startupWait` blocks the build until live data
/// arrived (or the wait ran out).
#[napi(object)]
#[derive(Default, Clone)]
pub struct ClientOptions {
    pub server: Option<String>,
    pub api_key: Option<String>,
    pub project: Option<String>,
    pub redis: Option<String>,
    /// Key and channel prefix in Redis (default `promptops`).
    pub redis_prefix: Option<String>,
    pub cache_dir: Option<String>,
    pub bundle: Option<String>,
    pub prompts_dir: Option<String>,
    /// Milliseconds to wait for live data at start-up.
    pub startup_wait: Option<f64>,
    /// The label `get` uses when none is given (default `production`).
    pub default_label: Option<String>,
    /// Fail on any load problem instead of reporting it in `diagnostics`.
    pub strict: Option<bool>,
    /// Most template steps one render may take (default 1,000,000; 0 = no
    /// limit). A runaway template fails with `FUEL_EXHAUSTED`.
    pub fuel: Option<f64>,
    /// Largest rendered output in bytes (default 1 MiB); larger fails with
    /// `OUTPUT_LIMIT`.
    pub max_output_bytes: Option<f64>,
    /// Record renders, routing decisions and recorded calls (metrics in
    /// `metricsText()`).
    pub telemetry: Option<TelemetryOptions>,
    /// Provider endpoints by the name policies use (`openai` and
    /// `anthropic` exist by default: these add or replace).
    pub providers: Option<std::collections::HashMap<String, ProviderOptions>>,
    /// Default settings of `complete` and `stream`.
    pub call: Option<CallSettings>,
    /// Upload telemetry batches to `server` (default true; needs
    /// `telemetry`).
    pub telemetry_upload: Option<bool>,
    /// Upload to this URL instead (a gateway; `/v1/telemetry` is
    /// appended), also without a `server`.
    pub telemetry_upload_url: Option<String>,
    /// Milliseconds between export rounds (default 10,000).
    pub telemetry_interval_ms: Option<f64>,
    /// Events per upload request (default 1000).
    pub telemetry_max_batch: Option<f64>,
    /// Longest `close()` waits for the last export round, in ms (default
    /// 5000).
    pub telemetry_flush_timeout_ms: Option<f64>,
    /// OTLP/HTTP JSON export of metrics and spans (GenAI semantic
    /// conventions).
    pub otlp: Option<OtlpOptions>,
    /// Prices over the built-in table (a registry's model catalogue, when
    /// it has prices, wins over both).
    pub prices: Option<Vec<PriceOptions>>,
}

/// A model's price, USD per million tokens (`prices` option).
#[napi(object)]
#[derive(Default, Clone)]
pub struct PriceOptions {
    pub provider: String,
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    pub cached_input_per_mtok: Option<f64>,
    pub context_window: Option<f64>,
}

/// A `prices` entry, checked.
fn model_price(i: usize, p: &PriceOptions) -> po::Result<po::ModelPrice> {
    let usd = |field: &str, v: f64| {
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(po::Error::Config(format!(
                "prices[{i}].{field} must be a price >= 0, got {v}"
            )))
        }
    };
    for (field, v) in [("provider", &p.provider), ("model", &p.model)] {
        if v.is_empty() {
            return Err(po::Error::Config(format!(
                "prices[{i}].{field} is required"
            )));
        }
    }
    let context_window = match p.context_window {
        None => None,
        Some(w) if w.is_finite() && w >= 1.0 && w.fract() == 0.0 => Some(w as u64),
        Some(w) => {
            return Err(po::Error::Config(format!(
                "prices[{i}].contextWindow must be a whole number >= 1, got {w}"
            )));
        }
    };
    Ok(po::ModelPrice {
        provider: p.provider.clone(),
        model: p.model.clone(),
        input_per_mtok: usd("inputPerMtok", p.input_per_mtok)?,
        output_per_mtok: usd("outputPerMtok", p.output_per_mtok)?,
        cached_input_per_mtok: p
            .cached_input_per_mtok
            .map(|v| usd("cachedInputPerMtok", v))
            .transpose()?,
        context_window,
    })
}

/// OTLP/HTTP JSON export settings (`otlp: 'http://…'` is `{ endpoint }`).
#[napi(object)]
#[derive(Default, Clone)]
pub struct OtlpOptions {
    /// The collector's base URL; `/v1/metrics` and `/v1/traces` are
    /// appended.
    pub endpoint: String,
    /// Request headers (auth); values are treated as secrets.
    pub headers: Option<std::collections::HashMap<String, String>>,
    /// `service.name` of the resource (default `promptops-app`).
    pub service_name: Option<String>,
    /// Request timeout in ms (default 10,000).
    pub timeout_ms: Option<f64>,
    /// Spans held between exports (default 2048).
    pub max_spans: Option<f64>,
    /// Spans per request (default 512).
    pub max_spans_per_request: Option<f64>,
    /// Distinct metric attribute sets kept (default 2000).
    pub max_series: Option<f64>,
    /// Export metrics (default true).
    pub metrics: Option<bool>,
    /// Export one span per call (default true).
    pub traces: Option<bool>,
}

/// Milliseconds (a JS number) as a `Duration` > 0.
fn millis(name: &str, v: f64) -> po::Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v / 1000.0)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            po::Error::Config(format!(
                "{name} must be a finite number of milliseconds > 0, got {v}"
            ))
        })
}

/// A whole number >= 1.
fn count(name: &str, v: f64) -> po::Result<usize> {
    if v.is_finite() && v >= 1.0 && v.fract() == 0.0 && v <= u32::MAX as f64 {
        Ok(v as usize)
    } else {
        Err(po::Error::Config(format!(
            "{name} must be a whole number >= 1, got {v}"
        )))
    }
}

/// The first export option given (they all need `telemetry`).
fn first_export_option(o: &ClientOptions) -> Option<&'static str> {
    [
        ("telemetryUpload", o.telemetry_upload.is_some()),
        ("telemetryUploadUrl", o.telemetry_upload_url.is_some()),
        ("telemetryIntervalMs", o.telemetry_interval_ms.is_some()),
        ("telemetryMaxBatch", o.telemetry_max_batch.is_some()),
        (
            "telemetryFlushTimeoutMs",
            o.telemetry_flush_timeout_ms.is_some(),
        ),
        ("otlp", o.otlp.is_some()),
    ]
    .into_iter()
    .find_map(|(name, given)| given.then_some(name))
}

/// The core's `ExportOptions` from the client options (its defaults for
/// what is not given). The core checks URLs and headers at build.
fn export_options(o: &ClientOptions) -> po::Result<po::export::ExportOptions> {
    let mut e = po::export::ExportOptions::default();
    if let Some(u) = o.telemetry_upload {
        e.upload = u;
    }
    e.upload_url.clone_from(&o.telemetry_upload_url);
    if let Some(v) = o.telemetry_interval_ms {
        e.interval = millis("telemetryIntervalMs", v)?;
    }
    if let Some(v) = o.telemetry_max_batch {
        e.max_batch = count("telemetryMaxBatch", v)?;
    }
    if let Some(v) = o.telemetry_flush_timeout_ms {
        e.flush_timeout = millis("telemetryFlushTimeoutMs", v)?;
    }
    if let Some(x) = &o.otlp {
        let mut c = po::export::otlp::OtlpConfig::new(x.endpoint.clone());
        if let Some(h) = &x.headers {
            let mut names: Vec<_> = h.keys().collect();
            names.sort();
            for k in names {
                c = c.header(k.clone(), h[k].clone());
            }
        }
        if let Some(n) = &x.service_name {
            c.service_name.clone_from(n);
        }
        if let Some(v) = x.timeout_ms {
            c.timeout = millis("otlp.timeoutMs", v)?;
        }
        if let Some(v) = x.max_spans {
            c.max_spans = count("otlp.maxSpans", v)?;
        }
        if let Some(v) = x.max_spans_per_request {
            c.max_spans_per_request = count("otlp.maxSpansPerRequest", v)?;
        }
        if let Some(v) = x.max_series {
            c.max_series = count("otlp.maxSeries", v)?;
        }
        if let Some(m) = x.metrics {
            c.metrics = m;
        }
        if let Some(t) = x.traces {
            c.traces = t;
        }
        e.otlp = Some(c);
    }
    Ok(e)
}

/// Where a provider is served. API keys come from `apiKey` or the
/// environment variable `apiKeyEnv` (default `OPENAI_API_KEY` /
/// `ANTHROPIC_API_KEY` for `openai` / `anthropic`), read at call time;
/// they are never logged nor put in errors.
#[napi(object)]
#[derive(Default, Clone)]
pub struct ProviderOptions {
    /// `openai` (Chat Completions, also OpenAI-compatible servers) or
    /// `anthropic` (Messages). Default: `anthropic` for the provider named
    /// `anthropic`, else `openai`.
    #[napi(ts_type = "'openai' | 'anthropic'")]
    pub protocol: Option<String>,
    /// Base URL including the API version path (`https://api.openai.com/v1`).
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub api_key_env: Option<String>,
    /// Extra request headers (treated as secrets).
    pub headers: Option<std::collections::HashMap<String, String>>,
}

/// Settings of a provider call (client defaults, overridable per call).
#[napi(object)]
#[derive(Default, Clone)]
pub struct CallSettings {
    /// Stream the response (SSE); `stream()` always does.
    pub stream: Option<bool>,
    /// Longest one attempt may take, in ms (default 60,000).
    pub timeout_ms: Option<f64>,
    /// Streams: longest wait for the first token, in ms (default 20,000).
    pub ttft_timeout_ms: Option<f64>,
    /// Longest a connect may take, in ms (default 5,000; client-wide only).
    pub connect_timeout_ms: Option<f64>,
    /// Failure classes failed over on (default: the policy's `failover.on`).
    #[napi(
        ts_type = "Array<'connect' | 'timeout' | 'rate_limited' | 'server_error' | 'malformed_response' | 'client_error'>"
    )]
    pub failover_on: Option<Vec<String>>,
    /// Most attempts (default: the policy's, else every target).
    pub max_attempts: Option<u32>,
}

fn call_options(
    mut c: po::provider::CallOptions,
    s: &CallSettings,
    per_call: bool,
) -> po::Result<po::provider::CallOptions> {
    let ms = |name: &str, v: f64| {
        if v.is_finite() && v > 0.0 {
            Ok(std::time::Duration::from_secs_f64(v / 1000.0))
        } else {
            Err(po::Error::Config(format!(
                "{name} must be a number of milliseconds > 0, got {v}"
            )))
        }
    };
    if let Some(b) = s.stream {
        c.stream = b;
    }
    if let Some(v) = s.timeout_ms {
        c.total_timeout = ms("timeoutMs", v)?;
    }
    if let Some(v) = s.ttft_timeout_ms {
        c.ttft_timeout = ms("ttftTimeoutMs", v)?;
    }
    if let Some(v) = s.connect_timeout_ms {
        if per_call {
            return Err(po::Error::Config(
                "connectTimeoutMs is a client setting (Client options `call`), not a per-call one"
                    .into(),
            ));
        }
        c.connect_timeout = ms("connectTimeoutMs", v)?;
    }
    if let Some(list) = &s.failover_on {
        let mut set = std::collections::BTreeSet::new();
        for name in list {
            set.insert(po::route::FailureClass::parse(name).ok_or_else(|| {
                po::Error::Config(format!(
                    "unknown failure class `{name}` in failoverOn (connect, timeout, rate_limited, server_error, malformed_response, client_error)"
                ))
            })?);
        }
        c.failover_on = Some(set);
    }
    if let Some(m) = s.max_attempts {
        if m == 0 {
            return Err(po::Error::Config("maxAttempts must be >= 1".into()));
        }
        c.max_attempts = Some(m);
    }
    Ok(c)
}

fn endpoint(name: &str, o: &ProviderOptions) -> po::Result<po::provider::Endpoint> {
    use po::provider::{Endpoint, Protocol};
    let protocol = match o.protocol.as_deref() {
        None if name == "anthropic" => Protocol::Anthropic,
        None | Some("openai") => Protocol::OpenAi,
        Some("anthropic") => Protocol::Anthropic,
        Some(p) => {
            return Err(po::Error::Config(format!(
                "provider `{name}`: unknown protocol `{p}` (openai or anthropic)"
            )));
        }
    };
    let mut e = match (name, protocol) {
        ("openai", Protocol::OpenAi) => Endpoint::openai(),
        ("anthropic", Protocol::Anthropic) => Endpoint::anthropic(),
        _ => {
            let Some(url) = &o.base_url else {
                return Err(po::Error::Config(format!(
                    "provider `{name}` needs a baseUrl"
                )));
            };
            let mut e = Endpoint::openai_compatible(name, url.as_str());
            e.protocol = protocol;
            e
        }
    };
    if let Some(u) = &o.base_url {
        e = e.base_url(u.as_str());
    }
    if let Some(k) = &o.api_key {
        e = e.api_key(k.as_str());
    }
    if let Some(v) = &o.api_key_env {
        e.api_key_env = Some(v.clone());
    }
    if let Some(h) = &o.headers {
        let mut pairs: Vec<_> = h.iter().collect();
        pairs.sort();
        for (k, v) in pairs {
            e = e.header(k.as_str(), v.as_str());
        }
    }
    Ok(e)
}

/// Telemetry settings (`telemetry: true` is `{}`).
#[napi(object)]
#[derive(Default, Clone)]
pub struct TelemetryOptions {
    /// Events the record queue holds before dropping (default 8192).
    pub capacity: Option<f64>,
    /// Events kept for upload between uploads (default 8192).
    pub export_capacity: Option<f64>,
    /// Keep events for upload at all (default true; `false`: metrics only).
    pub keep_events: Option<bool>,
    /// Mask e-mail addresses and runs of 7+ digits in recorded events.
    pub mask_pii: Option<bool>,
}

fn build_client(opts: &ClientOptions) -> po::Result<(Client, po::provider::CallOptions)> {
    if let Some(w) = opts.startup_wait
        && !(w.is_finite() && w >= 0.0)
    {
        return Err(po::Error::Config(format!(
            "startupWait must be a number of milliseconds >= 0, got {w}"
        )));
    }
    let mut b: ClientBuilder = Client::builder();
    // Live delivery runs on a runtime the core owns (its own threads, not
    // libuv handles): it never keeps the Node process alive.
    if let Some(s) = &opts.server {
        b = b.server(s);
    }
    if let Some(k) = &opts.api_key {
        b = b.api_key(k);
    }
    if let Some(r) = &opts.redis {
        b = b.redis(r);
    }
    if let Some(p) = &opts.redis_prefix {
        let mut sync = po::sync::SyncOptions::new(opts.project.clone().unwrap_or_default());
        sync.redis_prefix.clone_from(p);
        b = b.sync_options(sync);
    }
    if let Some(d) = &opts.cache_dir {
        b = b.cache_dir(d);
    }
    if let Some(w) = opts.startup_wait {
        b = b.startup_wait(std::time::Duration::from_secs_f64(w / 1000.0));
    }
    if let Some(p) = &opts.project {
        b = b.project(p);
    }
    if let Some(p) = &opts.bundle {
        b = b.bundle(p);
    }
    if let Some(p) = &opts.prompts_dir {
        b = b.prompts_dir(p);
    }
    if let Some(l) = &opts.default_label {
        b = b.default_label(l);
    }
    if let Some(s) = opts.strict {
        b = b.strict(s);
    }
    if opts.fuel.is_some() || opts.max_output_bytes.is_some() {
        let mut limits = po::Limits::default();
        let count = |name: &str, v: f64| {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 {
                Ok(v as u64)
            } else {
                Err(po::Error::Config(format!(
                    "{name} must be a whole number >= 0, got {v}"
                )))
            }
        };
        if let Some(f) = opts.fuel {
            limits.fuel = Some(count("fuel", f)?).filter(|&f| f > 0);
        }
        if let Some(m) = opts.max_output_bytes {
            limits.max_output_bytes = count("maxOutputBytes", m)? as usize;
        }
        b = b.limits(limits);
    }
    if let Some(t) = &opts.telemetry {
        let mut cfg = po::TelemetryConfig {
            sdk_language: po::SdkLanguage::Node,
            ..Default::default()
        };
        let size = |name: &str, v: f64| {
            if v.is_finite() && v >= 1.0 && v.fract() == 0.0 {
                Ok(v as usize)
            } else {
                Err(po::Error::Config(format!(
                    "telemetry.{name} must be a whole number >= 1, got {v}"
                )))
            }
        };
        if let Some(c) = t.capacity {
            cfg.capacity = size("capacity", c)?;
        }
        if let Some(c) = t.export_capacity {
            cfg.export_capacity = size("exportCapacity", c)?;
        }
        if let Some(k) = t.keep_events {
            cfg.keep_events = k;
        }
        // Explicit: on (the basic masker) or off (events leave as
        // recorded). Absent: masked when telemetry leaves the process.
        if let Some(m) = t.mask_pii {
            cfg = cfg.mask_pii(m);
        }
        b = b.telemetry(cfg);
    }
    if let Some(name) = first_export_option(opts) {
        if opts.telemetry.is_none() {
            return Err(po::Error::Config(format!(
                "{name} needs telemetry on: pass telemetry: true (or telemetry options)"
            )));
        }
        b = b.telemetry_export(export_options(opts)?);
    }
    for (i, p) in opts.prices.iter().flatten().enumerate() {
        b = b.price(model_price(i, p)?);
    }
    if let Some(ps) = &opts.providers {
        let mut names: Vec<_> = ps.keys().collect();
        names.sort();
        for name in names {
            b = b.provider(endpoint(name, &ps[name])?);
        }
    }
    let call = match &opts.call {
        Some(c) => call_options(Default::default(), c, false)?,
        None => Default::default(),
    };
    b = b.call_options(call.clone());
    Ok((b.build()?, call))
}

thread_local! {
    /// Set while `applySnapshot` runs on this (JS) thread: its changes go
    /// back to JS in its return value, not through the change callback.
    static IN_JS_APPLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

type ChangeTsfn = ThreadsafeFunction<Vec<PromptChange>, (), Vec<PromptChange>, Status, false, true>;
type StatusTsfn = ThreadsafeFunction<SyncStatusInfo, (), SyncStatusInfo, Status, false, true>;

/// The state of live delivery (`client.syncStatus()`).
#[napi(object)]
pub struct SyncStatusInfo {
    /// `initializing`, `valid`, `interrupted` or `off`.
    #[napi(ts_type = "'initializing' | 'valid' | 'interrupted' | 'off'")]
    pub status: String,
    /// The most recent error of any live source (kept after recovery).
    pub last_error: Option<String>,
    /// Milliseconds since a live source last confirmed the data (`null` if
    /// none ever did).
    pub data_age_ms: Option<f64>,
    /// Per source (`http`, `redis`): its own state.
    #[napi(ts_type = "Record<string, 'initializing' | 'valid' | 'interrupted' | 'off'>")]
    pub sources: std::collections::HashMap<String, String>,
}

impl From<&po::sync::SyncStatus> for SyncStatusInfo {
    fn from(s: &po::sync::SyncStatus) -> Self {
        SyncStatusInfo {
            status: s.status.as_str().to_string(),
            last_error: s.last_error.clone(),
            data_age_ms: s.data_age().map(|d| d.as_secs_f64() * 1000.0),
            sources: s
                .sources
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().to_string()))
                .collect(),
        }
    }
}

/// State shared with the store's change listener (which may run on any
/// thread).
struct Shared {
    /// Bumped on every change; `index.js` uses it to drop cached prompts.
    generation: AtomicU32,
    closed: AtomicBool,
    listener: Mutex<Option<ChangeTsfn>>,
    status_listener: Mutex<Option<StatusTsfn>>,
    /// Set to `true` by `close()`: calls in flight end at once.
    close_signal: tokio::sync::watch::Sender<bool>,
}

/// The native client. Use `Client` from `promptops` instead.
#[napi]
pub struct NativeClient {
    client: Client,
    shared: Arc<Shared>,
    /// The client's default call settings (per-call settings start here).
    call_defaults: po::provider::CallOptions,
}

impl NativeClient {
    fn from_core((client, call_defaults): (Client, po::provider::CallOptions)) -> Self {
        let shared = Arc::new(Shared {
            generation: AtomicU32::new(0),
            closed: AtomicBool::new(false),
            listener: Mutex::new(None),
            status_listener: Mutex::new(None),
            close_signal: tokio::sync::watch::Sender::new(false),
        });
        let s = shared.clone();
        client.on_change(move |changes| {
            s.generation.fetch_add(1, Ordering::Release);
            // `applySnapshot` hands its changes back to JS itself.
            if s.closed.load(Ordering::Acquire) || IN_JS_APPLY.with(|f| f.get()) {
                return;
            }
            if let Ok(guard) = s.listener.lock()
                && let Some(tsfn) = guard.as_ref()
            {
                let list = changes.iter().map(PromptChange::from).collect();
                tsfn.call(list, ThreadsafeFunctionCallMode::NonBlocking);
            }
        });
        let s = shared.clone();
        client.on_status(move |status| {
            if s.closed.load(Ordering::Acquire) {
                return;
            }
            if let Ok(guard) = s.status_listener.lock()
                && let Some(tsfn) = guard.as_ref()
            {
                tsfn.call(
                    SyncStatusInfo::from(status),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        });
        NativeClient {
            client,
            shared,
            call_defaults,
        }
    }

    /// What `close` does on the JS thread: refuse lookups, end calls in
    /// flight, release the change and status callbacks.
    fn begin_close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        // Calls in flight end now (their callbacks are released, so a
        // pending call never keeps the process alive after `close()`).
        self.shared.close_signal.send_replace(true);
        if let Ok(mut guard) = self.shared.listener.lock()
            && let Some(tsfn) = guard.take()
        {
            drop(tsfn); // the last reference: releases the function
        }
        if let Ok(mut guard) = self.shared.status_listener.lock() {
            drop(guard.take());
        }
    }

    fn check_open(&self, env: &Env) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(config_error(env.raw(), "this client is closed"));
        }
        Ok(())
    }
}

pub struct CreateClient {
    opts: ClientOptions,
}

impl Task for CreateClient {
    type Output = po::Result<(Client, po::provider::CallOptions)>;
    type JsValue = NativeClient;

    fn compute(&mut self) -> Result<Self::Output> {
        // Runs on the libuv thread pool: reading and compiling files never
        // blocks the event loop. A panic becomes a rejected promise.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_client(&self.opts))).map_err(
            |_| napi::Error::from_reason("promptops: internal error (panic) while loading"),
        )
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        guard(|| {
            output
                .map(NativeClient::from_core)
                .map_err(|e| js_error(env.raw(), &e))
        })
    }
}

/// Run `f`, turning a panic into an error (for the code that napi-rs's
/// `catch_unwind` does not wrap: the async tasks' `resolve`).
fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(napi::Error::from_reason(
            "promptops: internal error (panic)",
        ))
    })
}

fn apply_outcome_to_js(env: sys::napi_env, out: &po::ApplyOutcome) -> Result<sys::napi_value> {
    let obj = js_object(env)?;
    let mut b = ptr::null_mut();
    check!(sys::napi_get_boolean(env, out.applied, &mut b));
    set_prop(env, obj, "applied", b)?;
    set_prop(
        env,
        obj,
        "revision",
        json_to_js(env, &to_json(&out.revision))?,
    )?;
    set_prop(env, obj, "hash", js_string(env, out.hash())?)?;
    let changes: Vec<serde_json::Value> = out.changes.iter().map(to_json).collect();
    set_prop(
        env,
        obj,
        "changes",
        json_to_js(env, &serde_json::Value::Array(changes))?,
    )?;
    Ok(obj)
}

pub struct ApplySnapshot {
    client: Client,
    json: String,
}

impl Task for ApplySnapshot {
    type Output = po::Result<po::ApplyOutcome>;
    type JsValue = Unknown<'static>;

    fn compute(&mut self) -> Result<Self::Output> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            SnapshotData::from_json(self.json.as_bytes())
                .and_then(|s| self.client.apply(Update::Snapshot(s), Source::Memory))
        }))
        .map_err(|_| napi::Error::from_reason("promptops: internal error (panic) while applying"))
    }

    fn resolve(&mut self, env: Env, output: Self::Output) -> Result<Self::JsValue> {
        guard(|| {
            let raw = env.raw();
            let out = output.map_err(|e| js_error(raw, &e))?;
            Ok(unknown(raw, apply_outcome_to_js(raw, &out)?))
        })
    }
}

/// Build a client, reading its sources synchronously.
#[napi(catch_unwind)]
pub fn open_client(env: Env, options: Option<ClientOptions>) -> Result<NativeClient> {
    let opts = options.unwrap_or_default();
    build_client(&opts)
        .map(NativeClient::from_core)
        .map_err(|e| js_error(env.raw(), &e))
}

/// Build a client on the libuv thread pool; resolves to a `NativeClient`.
#[napi(catch_unwind, ts_return_type = "Promise<NativeClient>")]
pub fn create_client(options: Option<ClientOptions>) -> AsyncTask<CreateClient> {
    AsyncTask::new(CreateClient {
        opts: options.unwrap_or_default(),
    })
}

#[napi]
impl NativeClient {
    /// Look a prompt up (`label`, or pinned `version`; `fallback`: text or
    /// messages served when the prompt is in no source).
    #[napi(catch_unwind)]
    pub fn get(
        &self,
        env: Env,
        name: String,
        label: Option<String>,
        version: Option<u32>,
        fallback: Option<Either<String, Vec<ChatMessage>>>,
    ) -> Result<NativePrompt> {
        self.check_open(&env)?;
        let opts = GetOptions {
            label,
            version,
            fallback: fallback.map(|f| match f {
                Either::A(text) => Fallback::Text(text),
                Either::B(msgs) => {
                    Fallback::Chat(msgs.into_iter().map(|m| (m.role, m.content)).collect())
                }
            }),
        };
        match self.client.get_with(&name, &opts) {
            Ok(prompt) => Ok(NativePrompt {
                prompt,
                client: self.client.clone(),
            }),
            Err(e) => Err(js_error(env.raw(), &e)),
        }
    }

    /// `initializing`, `valid`, `interrupted` or `off` (live delivery); for
    /// a client without live sources `valid` once data is loaded, else `off`.
    #[napi(
        getter,
        catch_unwind,
        ts_return_type = "'initializing' | 'valid' | 'interrupted' | 'off'"
    )]
    pub fn status(&self) -> &'static str {
        self.client.status().status.as_str()
    }

    /// The state of live delivery in detail.
    #[napi(catch_unwind)]
    pub fn sync_status(&self) -> SyncStatusInfo {
        SyncStatusInfo::from(&self.client.status())
    }

    /// Bumped on every change of what some label serves.
    #[napi(getter, catch_unwind)]
    pub fn generation(&self) -> u32 {
        self.shared.generation.load(Ordering::Acquire)
    }

    /// A 4-byte `ArrayBuffer` over the generation counter, so that JS can
    /// see a change without a call into the addon (`new Uint32Array(buf)[0]`).
    #[napi(catch_unwind, ts_return_type = "ArrayBuffer")]
    pub fn generation_buffer(&self, env: Env) -> Result<Unknown<'static>> {
        unsafe extern "C" fn release(
            _env: sys::napi_env,
            _data: *mut std::ffi::c_void,
            hint: *mut std::ffi::c_void,
        ) {
            // SAFETY: `hint` is the `Box<Arc<Shared>>` leaked below, given
            // back exactly once by this finalizer.
            drop(unsafe { Box::from_raw(hint.cast::<Arc<Shared>>()) });
        }
        let keep = Box::into_raw(Box::new(self.shared.clone()));
        let data = self.shared.generation.as_ptr().cast::<std::ffi::c_void>();
        let mut buf = ptr::null_mut();
        let status = unsafe {
            sys::napi_create_external_arraybuffer(
                env.raw(),
                data,
                std::mem::size_of::<u32>(),
                Some(release),
                keep.cast(),
                &mut buf,
            )
        };
        if status != sys::Status::napi_ok {
            drop(unsafe { Box::from_raw(keep) });
            return Err(napi::Error::new(
                Status::from(status),
                "promptops: cannot share the generation counter".to_string(),
            ));
        }
        Ok(unknown(env.raw(), buf))
    }

    #[napi(getter, catch_unwind)]
    pub fn project(&self) -> Option<String> {
        self.client.project().map(String::from)
    }

    #[napi(getter, catch_unwind)]
    pub fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Problems found while loading: `[{ prompt, version, label, code,
    /// message, details }]`.
    #[napi(
        catch_unwind,
        ts_return_type = "Array<{ prompt: string; version: number | null; label: string | null; code: string; message: string; details: Record<string, unknown> }>"
    )]
    pub fn diagnostics(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let diags = self.client.diagnostics();
        let mut arr = ptr::null_mut();
        check!(sys::napi_create_array_with_length(
            raw,
            diags.len(),
            &mut arr
        ));
        for (i, d) in diags.iter().enumerate() {
            let obj = js_object(raw)?;
            set_prop(raw, obj, "prompt", js_string(raw, &d.prompt)?)?;
            set_prop(raw, obj, "version", json_to_js(raw, &to_json(&d.version))?)?;
            set_prop(raw, obj, "label", json_to_js(raw, &to_json(&d.label))?)?;
            set_prop(raw, obj, "code", js_string(raw, d.error.kind())?)?;
            set_prop(raw, obj, "message", js_string(raw, &d.to_string())?)?;
            set_prop(
                raw,
                obj,
                "details",
                json_map_to_js(raw, &d.error.details())?,
            )?;
            check!(sys::napi_set_element(raw, arr, i as u32, obj));
        }
        Ok(unknown(raw, arr))
    }

    /// Deliver changes made off the JS thread (live sources) to
    /// `callback(changes)` on the JS thread. Replaces any previous callback.
    /// The callback never keeps the process alive.
    #[napi(
        catch_unwind,
        ts_args_type = "callback: (changes: PromptChange[]) => void"
    )]
    pub fn set_change_callback(
        &self,
        env: Env,
        callback: Function<'_, Vec<PromptChange>, ()>,
    ) -> Result<()> {
        self.check_open(&env)?;
        let tsfn: ChangeTsfn = callback
            .build_threadsafe_function::<Vec<PromptChange>>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        if let Ok(mut guard) = self.shared.listener.lock() {
            *guard = Some(tsfn);
        }
        Ok(())
    }

    /// Deliver status transitions of live delivery to `callback(status)` on
    /// the JS thread. Replaces any previous callback; never keeps the
    /// process alive.
    #[napi(
        catch_unwind,
        ts_args_type = "callback: (status: SyncStatusInfo) => void"
    )]
    pub fn set_status_callback(
        &self,
        env: Env,
        callback: Function<'_, SyncStatusInfo, ()>,
    ) -> Result<()> {
        self.check_open(&env)?;
        let tsfn: StatusTsfn = callback
            .build_threadsafe_function::<SyncStatusInfo>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        if let Ok(mut guard) = self.shared.status_listener.lock() {
            *guard = Some(tsfn);
        }
        Ok(())
    }

    /// Push a snapshot (JSON text) into the store, as live sources do.
    /// Returns `{ applied, revision, hash, changes }`.
    #[napi(
        catch_unwind,
        ts_return_type = "{ applied: boolean; revision: number; hash: string; changes: PromptChange[] }"
    )]
    pub fn apply_snapshot(&self, env: Env, json: String) -> Result<Unknown<'static>> {
        self.check_open(&env)?;
        let raw = env.raw();
        let result = SnapshotData::from_json(json.as_bytes()).and_then(|s| {
            IN_JS_APPLY.with(|f| f.set(true));
            let out = self.client.apply(Update::Snapshot(s), Source::Memory);
            IN_JS_APPLY.with(|f| f.set(false));
            out
        });
        let out = result.map_err(|e| js_error(raw, &e))?;
        Ok(unknown(raw, apply_outcome_to_js(raw, &out)?))
    }

    /// `applySnapshot` on the libuv thread pool (parsing and compiling a
    /// large snapshot is CPU work that should not hold the event loop). The
    /// changes arrive through the change callback.
    #[napi(
        catch_unwind,
        ts_return_type = "Promise<{ applied: boolean; revision: number; hash: string; changes: PromptChange[] }>"
    )]
    pub fn apply_snapshot_async(&self, env: Env, json: String) -> Result<AsyncTask<ApplySnapshot>> {
        self.check_open(&env)?;
        Ok(AsyncTask::new(ApplySnapshot {
            client: self.client.clone(),
            json,
        }))
    }

    /// Stop live delivery and change deliveries, and refuse further
    /// lookups. Idempotent. Waits (blocking) for the last telemetry export
    /// round, at most `telemetryFlushTimeoutMs`.
    #[napi(catch_unwind)]
    pub fn close(&self) {
        self.begin_close();
        self.client.close();
    }

    /// `close()` with the core's part (the last telemetry export round,
    /// stopping live delivery) on the libuv thread pool: the client refuses
    /// lookups and sends no more events at once; the promise resolves when
    /// the core is closed.
    #[napi(catch_unwind, ts_return_type = "Promise<void>")]
    pub fn close_async(&self) -> AsyncTask<CloseClient> {
        self.begin_close();
        AsyncTask::new(CloseClient {
            client: self.client.clone(),
        })
    }

    /// Estimated cost in USD with this client's price table (`null` for an
    /// unknown model).
    #[napi(catch_unwind)]
    pub fn estimate_cost(
        &self,
        model: String,
        input_tokens: f64,
        output_tokens: f64,
    ) -> Option<f64> {
        // The catalogue's prices over the built-in table.
        self.client.effective_pricing().estimate_cost(
            &model,
            to_u64(input_tokens),
            to_u64(output_tokens),
        )
    }

    /// Route `name` (sticky `key`, `label`, telemetry `attributes`) with
    /// the variables encoded as for rendering (`encode.js`): the decision
    /// and the prompt rendered for the chosen target (`Client::route_with`),
    /// as a route handle (`routeInfo` gives the decision). `index.js` uses
    /// it where `routeDecide` declines (strategies that render every target).
    #[napi(
        catch_unwind,
        ts_args_type = "name: string, text: string, ops: Float64Array, n: number, oneByte: boolean, key?: string | undefined | null, label?: string | undefined | null, attributes?: Record<string, string> | undefined | null",
        ts_return_type = "unknown"
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &self,
        env: Env,
        name: String,
        text: Unknown<'_>,
        ops: Unknown<'_>,
        n: u32,
        one_byte: bool,
        key: Option<String>,
        label: Option<String>,
        attributes: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Unknown<'static>> {
        self.check_open(&env)?;
        let raw = env.raw();
        let vars = vars_from_encoded(raw, &name, text.raw(), ops.raw(), n, one_byte)?;
        let opts = route_options(key, label, attributes);
        let routed = self
            .client
            .route_with(&name, &vars, &opts)
            .map_err(|e| js_error(raw, &e))?;
        Ok(unknown(
            raw,
            tagged_external(raw, RouteHandle::Routed(routed), &ROUTE_TAG)?,
        ))
    }

    /// An opaque handle to this client for `routeDecide` (`index.js` makes
    /// one per client).
    #[napi(catch_unwind, ts_return_type = "unknown")]
    pub fn route_handle(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let data = FastClient {
            client: self.client.clone(),
            shared: self.shared.clone(),
            slots: std::cell::RefCell::new(Vec::new()),
            policy_ids: std::cell::RefCell::new(PolicyIds::default()),
        };
        Ok(unknown(raw, tagged_external(raw, data, &FAST_CLIENT_TAG)?))
    }

    /// Feed the outcome of a call back (`Client::record` /
    /// `Client::record_target` when `target`, a target id, is given).
    /// `decision`: the route handle of a decision.
    #[napi(
        catch_unwind,
        ts_args_type = "decision: unknown, outcome: OutcomeInput, target?: string | undefined | null, attempt?: number | undefined | null"
    )]
    pub fn record(
        &self,
        env: Env,
        decision: Unknown<'_>,
        outcome: OutcomeInput,
        target: Option<String>,
        attempt: Option<u32>,
    ) -> Result<()> {
        self.check_open(&env)?;
        let raw = env.raw();
        let d = from_tagged::<RouteHandle>(raw, decision.raw(), &ROUTE_TAG)?.decision();
        let out = outcome_from_js(&outcome).map_err(|m| config_error(raw, m))?;
        match target {
            None if attempt.is_none() => self.client.record(d, &out),
            None => self.client.record_target(d, d.target, &out, attempt),
            Some(id) => {
                let Some(i) = d.policy.target_index(&id) else {
                    return Err(config_error(
                        raw,
                        format!("policy `{}` has no target `{id}`", d.policy.id),
                    ));
                };
                self.client.record_target(d, i, &out, attempt)
            }
        }
        Ok(())
    }

    /// A quality score in `[0, 1]` for the decision's target.
    #[napi(catch_unwind, ts_args_type = "decision: unknown, score: number")]
    pub fn record_quality(&self, env: Env, decision: Unknown<'_>, score: f64) -> Result<()> {
        self.check_open(&env)?;
        let raw = env.raw();
        let d = from_tagged::<RouteHandle>(raw, decision.raw(), &ROUTE_TAG)?.decision();
        if !(0.0..=1.0).contains(&score) {
            return Err(config_error(
                raw,
                format!("quality must be a number in [0, 1], got {score}"),
            ));
        }
        self.client.record_quality(d, score);
        Ok(())
    }

    /// Render `name` with the encoded variables, route it, call the chosen
    /// provider with failover and record the outcome
    /// (`Client::complete_with`), off the JS thread. `callback` gets, in
    /// order: each streamed text chunk (a string; `streaming` only), then
    /// the completion (an object) or the error (an `Error`), exactly once.
    #[napi(
        catch_unwind,
        ts_args_type = "name: string, text: string, ops: Float64Array, n: number, oneByte: boolean, options: CompleteSettings, streaming: boolean, callback: (event: string | Error | Record<string, any>) => void"
    )]
    #[allow(clippy::too_many_arguments)]
    pub fn complete(
        &self,
        env: Env,
        name: String,
        text: Unknown<'_>,
        ops: Unknown<'_>,
        n: u32,
        one_byte: bool,
        options: CompleteSettings,
        streaming: bool,
        callback: Function<'_, CallEvent, ()>,
    ) -> Result<NativeCall> {
        self.check_open(&env)?;
        let raw = env.raw();
        let vars = vars_from_encoded(raw, &name, text.raw(), ops.raw(), n, one_byte)?;
        let mut call = match &options.call {
            Some(c) => call_options(self.call_defaults.clone(), c, true),
            None => Ok(self.call_defaults.clone()),
        }
        .map_err(|e| js_error(raw, &e))?;
        if streaming {
            call.stream = true;
        }
        let rt = call_runtime().map_err(|e| js_error(raw, &e))?;
        let tsfn: Arc<CallTsfn> = Arc::new(
            callback
                .build_threadsafe_function::<CallEvent>()
                .callee_handled::<false>()
                .weak::<false>()
                .build()?,
        );
        let mut attributes: Vec<(String, String)> =
            options.attributes.unwrap_or_default().into_iter().collect();
        attributes.sort();
        let mut opts = po::provider::CompleteOptions {
            route: po::RouteOptions {
                key: options.route_key,
                label: options.label,
                attributes,
            },
            call: Some(call),
            on_chunk: None,
        };
        if streaming {
            let sink = tsfn.clone();
            opts.on_chunk = Some(Arc::new(move |t: &str| {
                sink.call(
                    CallEvent::Chunk(t.to_string()),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }));
        }
        let (cancel, cancelled) = tokio::sync::watch::channel(false);
        let closed = self.shared.close_signal.subscribe();
        let client = self.client.clone();
        rt.spawn(async move {
            let outcome = tokio::select! {
                r = client.complete_with(&name, &vars, &opts) => r,
                _ = signalled(closed) => Err(po::Error::Config(
                    "the client was closed while the call was in flight".into(),
                )),
                _ = signalled(cancelled) => Err(po::Error::Config("the call was cancelled".into())),
            };
            // The chunk sink goes first, so this is the function's last use.
            drop(opts);
            let event = match outcome {
                Ok(c) => CallEvent::Done(Box::new(c)),
                Err(e) => CallEvent::Failed(e),
            };
            tsfn.call(event, ThreadsafeFunctionCallMode::NonBlocking);
        });
        Ok(NativeCall { cancel })
    }

    /// The telemetry metrics in Prometheus text format (`null` when
    /// telemetry is off).
    #[napi(catch_unwind)]
    pub fn metrics_text(&self) -> Option<String> {
        self.client.telemetry().map(|t| t.prometheus())
    }

    /// Export telemetry now (upload, OTLP) on the libuv thread pool, waiting
    /// at most `timeoutMs` (default 5000); resolves to whether the round
    /// finished in time (`false` without an exporter).
    #[napi(catch_unwind, ts_return_type = "Promise<boolean>")]
    pub fn flush_telemetry(
        &self,
        env: Env,
        timeout_ms: Option<f64>,
    ) -> Result<AsyncTask<FlushTelemetry>> {
        let timeout = match timeout_ms {
            Some(t) => millis("timeoutMs", t).map_err(|e| js_error(env.raw(), &e))?,
            None => std::time::Duration::from_secs(5),
        };
        Ok(AsyncTask::new(FlushTelemetry {
            client: self.client.clone(),
            timeout,
        }))
    }

    /// The telemetry counters (`null` when telemetry is off).
    #[napi(catch_unwind)]
    pub fn telemetry_stats(&self) -> Option<TelemetryStats> {
        let t = self.client.telemetry()?;
        let c = t.counters();
        Some(TelemetryStats {
            recorded: c.recorded as f64,
            dropped_queue_full: c.dropped_queue_full as f64,
            dropped_export_full: c.dropped_export_full as f64,
            dropped_upload_failed: c.dropped_upload_failed as f64,
            pending: t.pending() as f64,
            otlp: self.client.otlp_stats().map(|o| OtlpStats {
                spans_exported: o.spans_exported as f64,
                spans_dropped: o.spans_dropped as f64,
                spans_failed: o.spans_failed as f64,
                metric_exports: o.metric_exports as f64,
                metric_exports_failed: o.metric_exports_failed as f64,
                dropped_points: o.dropped_points as f64,
            }),
        })
    }

    /// The model catalogue of the current snapshot, as plain objects
    /// (camelCase fields, `null` for what is not set).
    #[napi(catch_unwind, ts_return_type = "Array<Record<string, unknown>>")]
    pub fn models(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let list: Vec<serde_json::Value> = self.client.models().iter().map(model_json).collect();
        Ok(unknown(
            raw,
            json_to_js(raw, &serde_json::Value::Array(list))?,
        ))
    }

    /// The price this client uses for `model` (the catalogue's over the
    /// built-in table); `UnknownModelError` when it has none.
    #[napi(catch_unwind, ts_return_type = "Record<string, unknown>")]
    pub fn model_price(&self, env: Env, model: String) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let table = self.client.effective_pricing();
        let p = table.require(&model).map_err(|e| js_error(raw, &e))?;
        let v = serde_json::json!({
            "provider": p.provider,
            "model": p.model,
            "inputPerMtok": p.input_per_mtok,
            "outputPerMtok": p.output_per_mtok,
            "cachedInputPerMtok": p.cached_input_per_mtok,
            "contextWindow": p.context_window,
        });
        Ok(unknown(raw, json_to_js(raw, &v)?))
    }
}

/// A catalogue entry as a plain object (camelCase fields).
fn model_json(m: &po::ModelEntry) -> serde_json::Value {
    serde_json::json!({
        "model": m.model,
        "provider": m.provider,
        "contextWindow": m.context_window,
        "maxOutputTokens": m.max_output_tokens,
        "inputPerMtok": m.input_per_mtok,
        "outputPerMtok": m.output_per_mtok,
        "cachedInputPerMtok": m.cached_input_per_mtok,
        "enabled": m.enabled,
        "baseUrl": m.base_url,
        "health": {
            "status": m.health.status.as_str(),
            "checkedAt": m.health.checked_at,
            "error": m.health.error,
        },
    })
}

/// The core's part of `closeAsync` off the event loop: the last export
/// round waits up to `telemetryFlushTimeoutMs`.
pub struct CloseClient {
    client: Client,
}

impl Task for CloseClient {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<Self::Output> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.client.close())).map_err(
            |_| napi::Error::from_reason("promptops: internal error (panic) while closing"),
        )
    }

    fn resolve(&mut self, _env: Env, _output: Self::Output) -> Result<Self::JsValue> {
        Ok(())
    }
}

/// `flushTelemetry` off the event loop: the core's flush blocks its thread
/// (a libuv pool thread) until the round ends or the timeout.
pub struct FlushTelemetry {
    client: Client,
    timeout: std::time::Duration,
}

impl Task for FlushTelemetry {
    type Output = bool;
    type JsValue = bool;

    fn compute(&mut self) -> Result<Self::Output> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.client.flush_telemetry(self.timeout)
        }))
        .map_err(|_| napi::Error::from_reason("promptops: internal error (panic) while flushing"))
    }

    fn resolve(&mut self, _env: Env, output: Self::Output) -> Result<Self::JsValue> {
        Ok(output)
    }
}

/// Telemetry counters (`client.telemetryStats()`).
#[napi(object)]
pub struct TelemetryStats {
    /// Events accepted into the record queue.
    pub recorded: f64,
    /// Dropped because the record queue was full.
    pub dropped_queue_full: f64,
    /// Dropped from the export buffer before they could be uploaded.
    pub dropped_export_full: f64,
    /// In uploads that failed.
    pub dropped_upload_failed: f64,
    /// Waiting for the next upload.
    pub pending: f64,
    /// The OTLP exporter's counters (`null` without OTLP).
    pub otlp: Option<OtlpStats>,
}

/// The OTLP exporter's counters.
#[napi(object)]
pub struct OtlpStats {
    pub spans_exported: f64,
    /// Dropped because the span queue was full.
    pub spans_dropped: f64,
    /// In requests that failed.
    pub spans_failed: f64,
    pub metric_exports: f64,
    pub metric_exports_failed: f64,
    /// Metric observations dropped at the series limit.
    pub dropped_points: f64,
}

/// The outcome of one call (`client.record`): `ok` (default: no
/// `errorType`), latencies in ms, token counts, cost, the failure class
/// (`errorType`), HTTP `status`, `retryAfterS` and a `quality` score.
#[napi(object)]
#[derive(Default, Clone)]
pub struct OutcomeInput {
    pub ok: Option<bool>,
    pub latency_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<f64>,
    pub output_tokens: Option<f64>,
    pub cost_usd: Option<f64>,
    #[napi(
        ts_type = "'connect' | 'timeout' | 'rate_limited' | 'server_error' | 'malformed_response' | 'client_error'"
    )]
    pub error_type: Option<String>,
    pub status: Option<u32>,
    pub retry_after_s: Option<f64>,
    pub quality: Option<f64>,
}

fn outcome_from_js(o: &OutcomeInput) -> std::result::Result<po::Outcome, String> {
    use po::route::FailureClass;
    let error = match o.error_type.as_deref() {
        Some(s) => Some(FailureClass::parse(s).ok_or_else(|| {
            format!(
                "unknown errorType `{s}` (connect, timeout, rate_limited, server_error, malformed_response, client_error)"
            )
        })?),
        None => None,
    };
    let error = match (o.ok, error) {
        (Some(true), Some(_)) => return Err("an outcome with ok: true has no errorType".into()),
        (Some(false), None) => Some(match o.status {
            Some(429) => FailureClass::RateLimited,
            Some(s) if s >= 500 => FailureClass::ServerError,
            Some(s) if s >= 400 => FailureClass::ClientError,
            _ => {
                return Err(
                    "an outcome with ok: false needs an errorType (or an HTTP status >= 400)"
                        .into(),
                );
            }
        }),
        (_, e) => e,
    };
    let num = |name: &str, v: Option<f64>| match v {
        Some(n) if !(n.is_finite() && n >= 0.0) => {
            Err(format!("{name} must be a number >= 0, got {n}"))
        }
        _ => Ok(v),
    };
    let count = |name: &str, v: Option<f64>| {
        num(name, v).and_then(|v| match v {
            Some(n) if n.fract() != 0.0 => Err(format!("{name} must be a whole number, got {n}")),
            _ => Ok(v.map(|n| n as u64)),
        })
    };
    let quality = num("quality", o.quality)?;
    if let Some(q) = quality
        && q > 1.0
    {
        return Err(format!("quality must be in [0, 1], got {q}"));
    }
    let status = match o.status {
        Some(s) if s > u16::MAX as u32 => return Err(format!("status {s} is not an HTTP status")),
        s => s.map(|s| s as u16),
    };
    Ok(po::Outcome {
        error,
        status,
        retry_after_ms: num("retryAfterS", o.retry_after_s)?.map(|s| (s * 1000.0).round() as u64),
        latency_ms: num("latencyMs", o.latency_ms)?,
        ttft_ms: num("ttftMs", o.ttft_ms)?,
        input_tokens: count("inputTokens", o.input_tokens)?,
        output_tokens: count("outputTokens", o.output_tokens)?,
        cost_usd: num("costUsd", o.cost_usd)?,
        quality,
    })
}

fn target_json(t: &po::route::Target) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "provider": t.provider,
        "model": t.model,
        "variant": t.variant,
        "version": t.version,
    })
}

// ---------------------------------------------------------------------------
// Routing: `client.route` decides natively and renders in JS
//
// `routeDecide` makes the decision without rendering (`Client::route_decide`)
// and hands it back in a compact form: the reason as a string, and numbers in
// the caller's `Float64Array`, among them the id this client handle gave the
// parts that only change with the prompt, label and policy (`index.js` caches
// its frozen objects for them under it and asks for them once with
// `routePolicy`). No handle is made per decision, the costliest part
// of a call (an external with a finalizer, which Node runs only when the event
// loop turns): the choice waits in the client handle's slot for the call's
// depth (a route started from a getter of the variables uses the next one)
// until the next decision there. `index.js` takes it out as a route handle
// when it needs one (`routeTake`: a native render, an uncommon decision),
// asks for what it caches on a miss (`routeTarget`,
// `routeTemplate`), renders the target's prompt from its portable plan and
// reports that render with `routeRecordPlan` when telemetry is on, or renders
// natively with `routeRender`. Either way the core records the same render
// and decision events as `Client::route_with`. `record` gets a route handle:
// the one taken, or one `routeDecision` rebuilds from the decision object
// and the template decision cached with its policy.

/// What a client handle (`NativeClient::route_handle`) points to.
struct FastClient {
    client: Client,
    shared: Arc<Shared>,
    /// The last decision of each call depth, until `routeTake` or the next
    /// decision at that depth (JS thread only).
    slots: std::cell::RefCell<Vec<Option<po::RouteChoice>>>,
    /// Ids of policy keys (`policy_key`), never reused.
    policy_ids: std::cell::RefCell<PolicyIds>,
}

/// The ids `routeDecide` gives policy keys: equal keys get the same id
/// (while the table holds them; it starts over past `MAX_POLICY_IDS`, with
/// new ids), so `index.js` can cache by a number.
#[derive(Default)]
struct PolicyIds {
    ids: std::collections::HashMap<Vec<u8>, u32, foldhash::fast::RandomState>,
    next: u32,
    buf: Vec<u8>,
}

const MAX_POLICY_IDS: usize = 4096;

impl PolicyIds {
    /// The id of the decision's policy key.
    fn id(&mut self, d: &po::Decision) -> u32 {
        policy_key(&mut self.buf, d);
        if let Some(&id) = self.ids.get(self.buf.as_slice()) {
            return id;
        }
        if self.ids.len() >= MAX_POLICY_IDS {
            self.ids.clear();
        }
        self.next = self.next.wrapping_add(1);
        self.ids.insert(self.buf.clone(), self.next);
        self.next
    }
}

/// Deeper than this, `routeDecide` refuses (routes started from getters of
/// the variables of routes, … ).
const MAX_ROUTE_DEPTH: usize = 64;

impl FastClient {
    /// Run `f` on the choice in the slot of `depth`.
    fn with_slot<T>(
        &self,
        depth: u32,
        f: impl FnOnce(&mut Option<po::RouteChoice>) -> T,
    ) -> Result<T> {
        let mut slots = self
            .slots
            .try_borrow_mut()
            .map_err(|_| napi::Error::from_reason("promptops: route slots busy"))?;
        let d = depth as usize;
        if d >= MAX_ROUTE_DEPTH {
            return Err(napi::Error::from_reason(
                "promptops: client.route nested too deep (from getters of its variables)",
            ));
        }
        if slots.len() <= d {
            slots.resize_with(d + 1, || None);
        }
        Ok(f(&mut slots[d]))
    }
}

/// What a route handle points to: a decision made before rendering, a
/// whole route (`NativeClient::route`), or a decision rebuilt for `record`
/// (`routeDecision`).
enum RouteHandle {
    Choice(po::RouteChoice),
    Routed(po::Routed),
    Decision(po::Decision),
}

impl RouteHandle {
    fn decision(&self) -> &po::Decision {
        match self {
            RouteHandle::Choice(c) => &c.decision,
            RouteHandle::Routed(r) => &r.decision,
            RouteHandle::Decision(d) => d,
        }
    }

    fn choice(&self, env: sys::napi_env) -> Result<&po::RouteChoice> {
        match self {
            RouteHandle::Choice(c) => Ok(c),
            _ => Err(config_error(env, "this decision is already rendered")),
        }
    }
}

const FAST_CLIENT_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x7072_6f6d_7074_6f70, // "promptop"
    upper: 0x7343_6c69_656e_7448, // "sClientH"
};

const ROUTE_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x7072_6f6d_7074_6f70, // "promptop"
    upper: 0x7352_6f75_7465_4841, // "sRouteHA"
};

/// Where `routeDecide` writes a decision's numbers (`Float64Array`):
/// target index, bucket (-1: none), body id of the target's prompt,
/// telemetry (1/0), skipped targets, the policy key's id, then the attempt
/// order's length (-1 when it does not fit) and the order itself.
const OUT_TARGET: usize = 0;
const OUT_BUCKET: usize = 1;
const OUT_BODY: usize = 2;
const OUT_TELEMETRY: usize = 3;
const OUT_SKIPPED: usize = 4;
const OUT_POLICY: usize = 5;
const OUT_ORDER_LEN: usize = 6;
const OUT_ORDER: usize = 7;

/// The caller's `Float64Array`, writable.
fn f64_array_mut<'a>(env: sys::napi_env, v: sys::napi_value) -> Result<&'a mut [f64]> {
    let mut kind = 0;
    let mut len = 0usize;
    let mut data = ptr::null_mut();
    check!(sys::napi_get_typedarray_info(
        env,
        v,
        &mut kind,
        &mut len,
        &mut data,
        ptr::null_mut(),
        ptr::null_mut()
    ));
    if kind != sys::TypedarrayType::float64_array || data.is_null() {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "promptops: expected a Float64Array".to_string(),
        ));
    }
    // SAFETY: N-API reports `len` f64s at `data` (adjusted for the view's
    // offset, so aligned as a Float64Array is), alive while `v` is (for
    // this call); nothing runs JS while we write them.
    Ok(unsafe { std::slice::from_raw_parts_mut(data.cast::<f64>(), len) })
}

fn route_options(
    key: Option<String>,
    label: Option<String>,
    attributes: Option<std::collections::HashMap<String, String>>,
) -> po::RouteOptions {
    let mut attributes: Vec<(String, String)> =
        attributes.unwrap_or_default().into_iter().collect();
    attributes.sort();
    po::RouteOptions {
        key,
        label,
        attributes,
    }
}

/// The parts of a decision that only change with the prompt, label and
/// policy: prompt, label, policy id, strategy and every target's id,
/// provider, model, variant and version, length-prefixed into `buf`.
/// Decisions with equal keys share `index.js`'s frozen objects for them
/// and, for `record`, have an equivalent policy (the same ids, providers
/// and models, so the same stats keys and endpoints).
fn policy_key(buf: &mut Vec<u8>, d: &po::Decision) {
    fn put(buf: &mut Vec<u8>, s: Option<&str>) {
        match s {
            Some(s) => {
                buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
                buf.extend_from_slice(s.as_bytes());
            }
            None => buf.extend_from_slice(&u64::MAX.to_le_bytes()),
        }
    }
    buf.clear();
    put(buf, d.prompt.as_deref());
    put(buf, d.label.as_deref());
    put(buf, Some(d.policy_id()));
    put(buf, Some(d.strategy.as_str()));
    buf.extend_from_slice(&(d.policy.targets.len() as u64).to_le_bytes());
    for t in &d.policy.targets {
        put(buf, Some(&t.id));
        put(buf, Some(&t.provider));
        put(buf, Some(&t.model));
        put(buf, t.variant.as_deref());
        buf.extend_from_slice(&t.version.map_or(u64::MAX, u64::from).to_le_bytes());
    }
}

/// The policy key as `index.js` reads it: a JSON array `[prompt, label,
/// policyId, strategy, [[id, provider, model, variant, version], …]]`.
#[derive(serde::Serialize)]
struct PolicyInfo<'a>(
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
    &'static str,
    Vec<TargetTuple<'a>>,
);

/// A target in `PolicyInfo`: id, provider, model, variant, version.
type TargetTuple<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<u32>);

/// Strings up to this many UTF-8 bytes (less one) are read in one N-API
/// call into a buffer on the stack (`short_string`).
const SHORT_STRING: usize = 256;

/// A JS string argument: short ones in one N-API call into `buf` (napi-rs'
/// `String` asks for the length first, which walks the string, then copies
/// into a new allocation), longer ones as napi-rs reads them.
fn short_string<'b>(
    env: sys::napi_env,
    v: sys::napi_value,
    buf: &'b mut [u8; SHORT_STRING],
) -> Result<std::borrow::Cow<'b, str>> {
    let mut len = 0usize;
    check!(sys::napi_get_value_string_utf8(
        env,
        v,
        buf.as_mut_ptr().cast(),
        SHORT_STRING,
        &mut len
    ));
    // N-API writes whole characters only (lone surrogates replaced), at
    // most SHORT_STRING - 1 bytes: a string that did not fit filled the
    // buffer to within 3 bytes (the longest character is 4).
    if len + 4 < SHORT_STRING {
        return std::str::from_utf8(&buf[..len])
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| napi::Error::from_reason(e.to_string()));
    }
    // SAFETY: `v` is a live value of this call, a string (checked above).
    let s = unsafe { <String as napi::bindgen_prelude::FromNapiValue>::from_napi_value(env, v) }?;
    Ok(std::borrow::Cow::Owned(s))
}

/// Decide how `name` is routed without rendering (`Client::route_decide`):
/// the reason, with the numbers in `out` (see `OUT_*`); the choice waits in
/// the slot of `depth`. `null` when the strategy renders every target to decide
/// (`cheapest`, `best_quality`: use `NativeClient.route`).
#[napi(
    catch_unwind,
    js_name = "routeDecide",
    ts_args_type = "client: unknown, name: string, key: string | undefined, label: string | undefined, attributes: Record<string, string> | undefined, out: Float64Array, depth: number",
    ts_return_type = "string | null"
)]
#[allow(clippy::too_many_arguments)]
pub fn route_decide(
    env: Env,
    client: Unknown<'_>,
    name: Unknown<'_>,
    key: Unknown<'_>,
    label: Option<String>,
    attributes: Option<std::collections::HashMap<String, String>>,
    out: Unknown<'_>,
    depth: u32,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let fc = from_tagged::<FastClient>(raw, client.raw(), &FAST_CLIENT_TAG)?;
    let mut buf = [0u8; SHORT_STRING];
    let name = short_string(raw, name.raw(), &mut buf)?;
    let key = match key.get_type()? {
        napi::ValueType::Undefined | napi::ValueType::Null => None,
        _ => Some(short_string(raw, key.raw(), &mut [0u8; SHORT_STRING])?.into_owned()),
    };
    if fc.shared.closed.load(Ordering::Acquire) {
        return Err(config_error(raw, "this client is closed"));
    }
    let out = f64_array_mut(raw, out.raw())?;
    if out.len() < OUT_ORDER {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "promptops: route output array too short".to_string(),
        ));
    }
    let opts = route_options(key, label, attributes);
    let choice = match fc.client.route_decide(&name, &opts) {
        Ok(Some(c)) => c,
        Ok(None) => return Ok(unknown(raw, js_null(raw)?)),
        Err(e) => return Err(js_error(raw, &e)),
    };
    let d = &choice.decision;
    out[OUT_TARGET] = d.target as f64;
    out[OUT_BUCKET] = d.bucket.map_or(-1.0, f64::from);
    out[OUT_BODY] = choice.prompt.body_id() as f64;
    out[OUT_TELEMETRY] = if choice.telemetry_enabled() { 1.0 } else { 0.0 };
    out[OUT_SKIPPED] = d.skipped.len() as f64;
    out[OUT_POLICY] = f64::from(
        fc.policy_ids
            .try_borrow_mut()
            .map_err(|_| napi::Error::from_reason("promptops: route policy ids busy"))?
            .id(d),
    );
    if OUT_ORDER + d.order.len() <= out.len() {
        out[OUT_ORDER_LEN] = d.order.len() as f64;
        for (slot, &i) in out[OUT_ORDER..].iter_mut().zip(&d.order) {
            *slot = i as f64;
        }
    } else {
        out[OUT_ORDER_LEN] = -1.0;
    }
    let reason = js_string(raw, &d.reason)?;
    fc.with_slot(depth, |slot| *slot = Some(choice))?;
    Ok(unknown(raw, reason))
}

/// The decision waiting in the slot of `depth`, taken out as a route
/// handle (for `routeRender`, `routeInfo`, `record`).
#[napi(
    catch_unwind,
    js_name = "routeTake",
    ts_args_type = "client: unknown, depth: number",
    ts_return_type = "unknown"
)]
pub fn route_take(env: Env, client: Unknown<'_>, depth: u32) -> Result<Unknown<'static>> {
    slot_handle(env, client, depth, |slot| {
        slot.take().map(RouteHandle::Choice)
    })
}

/// A route handle made from the decision slot of `depth` of `client`.
fn slot_handle(
    env: Env,
    client: Unknown<'_>,
    depth: u32,
    f: impl FnOnce(&mut Option<po::RouteChoice>) -> Option<RouteHandle>,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let fc = from_tagged::<FastClient>(raw, client.raw(), &FAST_CLIENT_TAG)?;
    let handle = fc
        .with_slot(depth, f)?
        .ok_or_else(|| napi::Error::from_reason("promptops: no decision"))?;
    Ok(unknown(raw, tagged_external(raw, handle, &ROUTE_TAG)?))
}

/// What `index.js` caches per body id for the target's prompt of the
/// decision in the slot of `depth`: `{ plan, config, version, variant }`
/// as JSON text (`plan`: the portable plan's JSON text, or `null`).
#[napi(
    catch_unwind,
    js_name = "routeTarget",
    ts_args_type = "client: unknown, depth: number"
)]
pub fn route_target(env: Env, client: Unknown<'_>, depth: u32) -> Result<String> {
    #[derive(serde::Serialize)]
    struct TargetPrompt<'a> {
        plan: Option<String>,
        config: &'a po::ModelConfig,
        version: u32,
        variant: Option<&'a str>,
    }
    let raw = env.raw();
    let fc = from_tagged::<FastClient>(raw, client.raw(), &FAST_CLIENT_TAG)?;
    fc.with_slot(depth, |slot| {
        let Some(c) = slot.as_ref() else {
            return Err(napi::Error::from_reason("promptops: no decision"));
        };
        let p = &c.prompt;
        let info = TargetPrompt {
            plan: p
                .portable_plan()
                .map(|plan| serde_json::to_string(&plan))
                .transpose()
                .map_err(|e| napi::Error::from_reason(e.to_string()))?,
            config: p.config(),
            version: p.version(),
            variant: p.variant_name(),
        };
        serde_json::to_string(&info).map_err(|e| napi::Error::from_reason(e.to_string()))
    })?
}

/// The policy key of the decision in the slot of `depth` as JSON text
/// (`PolicyInfo`), for `index.js` to build and cache its frozen objects.
#[napi(
    catch_unwind,
    js_name = "routePolicy",
    ts_args_type = "client: unknown, depth: number"
)]
pub fn route_policy(env: Env, client: Unknown<'_>, depth: u32) -> Result<String> {
    let raw = env.raw();
    let fc = from_tagged::<FastClient>(raw, client.raw(), &FAST_CLIENT_TAG)?;
    fc.with_slot(depth, |slot| {
        let Some(c) = slot.as_ref() else {
            return Err(napi::Error::from_reason("promptops: no decision"));
        };
        let d = &c.decision;
        let info = PolicyInfo(
            d.prompt.as_deref(),
            d.label.as_deref(),
            d.policy_id(),
            d.strategy.as_str(),
            d.policy
                .targets
                .iter()
                .map(|t| {
                    (
                        t.id.as_str(),
                        t.provider.as_str(),
                        t.model.as_str(),
                        t.variant.as_deref(),
                        t.version,
                    )
                })
                .collect(),
        );
        serde_json::to_string(&info).map_err(|e| napi::Error::from_reason(e.to_string()))
    })?
}

/// A copy of the decision in the slot of `depth`, as a route handle:
/// `index.js` keeps it with the policy key's cached objects, and
/// `routeDecision` rebuilds later decisions under the same key from it.
#[napi(
    catch_unwind,
    js_name = "routeTemplate",
    ts_args_type = "client: unknown, depth: number",
    ts_return_type = "unknown"
)]
pub fn route_template(env: Env, client: Unknown<'_>, depth: u32) -> Result<Unknown<'static>> {
    slot_handle(env, client, depth, |slot| {
        slot.as_ref()
            .map(|c| RouteHandle::Decision(c.decision.clone()))
    })
}

/// A decision `client.route` returned without a handle, rebuilt for
/// `record` from its fields and the template decision of its policy key
/// (`routeTemplate`; same policy id, strategy and targets): `order` is the
/// target followed by the fallbacks (indices into the policy's targets).
#[napi(
    catch_unwind,
    js_name = "routeDecision",
    ts_args_type = "template: unknown, order: number[], bucket: number | null, reason: string, version: number, variant: string | null",
    ts_return_type = "unknown"
)]
pub fn route_decision(
    env: Env,
    template: Unknown<'_>,
    order: Vec<u32>,
    bucket: Option<u32>,
    reason: String,
    version: u32,
    variant: Option<String>,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let t = from_tagged::<RouteHandle>(raw, template.raw(), &ROUTE_TAG)?.decision();
    let n = t.policy.targets.len();
    let order: Vec<usize> = order.into_iter().map(|i| i as usize).collect();
    if order.is_empty() || order.iter().any(|&i| i >= n) {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "promptops: bad decision order".to_string(),
        ));
    }
    let mut d = t.clone();
    d.target = order[0];
    d.order = order;
    d.bucket = bucket;
    d.reason = reason;
    d.version = Some(version);
    d.variant = variant;
    d.skipped.clear();
    d.estimate = None;
    Ok(unknown(
        raw,
        tagged_external(raw, RouteHandle::Decision(d), &ROUTE_TAG)?,
    ))
}

/// The target's prompt of the decision in the slot of `depth` was
/// rendered in JS from its plan, taking `elapsedNs`: record the render and
/// the decision events (`RouteChoice::record_plan_render`; `index.js` calls
/// it only when telemetry is on, right after the render, which runs routes
/// it starts at the next depth).
#[napi(
    catch_unwind,
    js_name = "routeRecordPlan",
    ts_args_type = "client: unknown, depth: number, elapsedNs: number"
)]
pub fn route_record_plan(env: Env, client: Unknown<'_>, depth: u32, elapsed_ns: f64) -> Result<()> {
    let raw = env.raw();
    let fc = from_tagged::<FastClient>(raw, client.raw(), &FAST_CLIENT_TAG)?;
    let ns = if elapsed_ns.is_finite() && elapsed_ns > 0.0 {
        elapsed_ns as u64
    } else {
        0
    };
    fc.with_slot(depth, |slot| match slot.as_ref() {
        Some(c) => {
            c.record_plan_render(std::time::Duration::from_nanos(ns));
            Ok(())
        }
        None => Err(napi::Error::from_reason("promptops: no decision")),
    })?
}

/// Render the target's prompt of a decision natively with variables
/// encoded by `encode.js` (`RouteChoice::render`: records the render and,
/// when it succeeds, the decision event).
#[napi(
    catch_unwind,
    js_name = "routeRender",
    ts_args_type = "handle: unknown, text: string, ops: Float64Array, n: number, oneByte: boolean",
    ts_return_type = "string | ChatMessage[]"
)]
pub fn route_render(
    env: Env,
    handle: Unknown<'_>,
    text: Unknown<'_>,
    ops: Unknown<'_>,
    n: u32,
    one_byte: bool,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let choice = from_tagged::<RouteHandle>(raw, handle.raw(), &ROUTE_TAG)?.choice(raw)?;
    let vars = vars_from_encoded(
        raw,
        choice.prompt.name(),
        text.raw(),
        ops.raw(),
        n,
        one_byte,
    )?;
    let out = choice.render(&vars).map_err(|e| js_error(raw, &e))?;
    Ok(unknown(raw, rendered_to_js(raw, &out)?))
}

/// The decision of a route handle as JSON text (camelCase fields; with
/// `text`, `messages` and `config` of the rendered prompt for a handle of
/// `NativeClient.route`, else `null` text and messages and the target
/// prompt's config), for `JSON.parse`: building the object through N-API
/// costs several times more (one call per property and value; see
/// BENCHMARKS-node.md).
#[napi(catch_unwind, js_name = "routeInfo", ts_args_type = "handle: unknown")]
pub fn route_info(env: Env, handle: Unknown<'_>) -> Result<String> {
    let raw = env.raw();
    let h = from_tagged::<RouteHandle>(raw, handle.raw(), &ROUTE_TAG)?;
    let d = h.decision();
    let (text, messages, config) = match h {
        RouteHandle::Routed(r) => (
            r.rendered.text.as_deref(),
            r.rendered.messages.as_deref(),
            Some(&*r.rendered.config),
        ),
        RouteHandle::Choice(c) => (None, None, Some(c.prompt.config())),
        RouteHandle::Decision(_) => (None, None, None),
    };
    let info = DecisionInfo {
        policy_id: d.policy_id(),
        strategy: d.strategy.as_str(),
        target: TargetInfo::of(d.target()),
        fallbacks: d.fallbacks().map(TargetInfo::of).collect(),
        bucket: d.bucket,
        reason: &d.reason,
        estimate: d.estimate.as_ref().map(|e| EstimateInfo {
            input_tokens: e.input_tokens,
            exact: e.exact,
            output_tokens: e.output_tokens,
            predicted_cost_usd: e.predicted_cost_usd,
            context_window: e.context_window,
            fits: e.fits,
        }),
        skipped: &d.skipped,
        prompt: d.prompt.as_deref(),
        version: d.version,
        label: d.label.as_deref(),
        variant: d.variant.as_deref(),
        text,
        messages,
        config,
    };
    serde_json::to_string(&info).map_err(|e| napi::Error::from_reason(e.to_string()))
}

/// `routeInfo`'s document, serialised straight from the
/// decision (no intermediate `serde_json::Value`).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct DecisionInfo<'a> {
    policy_id: &'a str,
    strategy: &'static str,
    target: TargetInfo<'a>,
    fallbacks: Vec<TargetInfo<'a>>,
    bucket: Option<u32>,
    reason: &'a str,
    estimate: Option<EstimateInfo>,
    skipped: &'a [po::route::Skipped],
    prompt: Option<&'a str>,
    version: Option<u32>,
    label: Option<&'a str>,
    variant: Option<&'a str>,
    text: Option<&'a str>,
    messages: Option<&'a [Message]>,
    config: Option<&'a po::ModelConfig>,
}

#[derive(serde::Serialize)]
struct TargetInfo<'a> {
    id: &'a str,
    provider: &'a str,
    model: &'a str,
    variant: Option<&'a str>,
    version: Option<u32>,
}

impl<'a> TargetInfo<'a> {
    fn of(t: &'a po::route::Target) -> Self {
        TargetInfo {
            id: &t.id,
            provider: &t.provider,
            model: &t.model,
            variant: t.variant.as_deref(),
            version: t.version,
        }
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct EstimateInfo {
    input_tokens: u64,
    exact: bool,
    output_tokens: u64,
    predicted_cost_usd: f64,
    context_window: Option<u64>,
    fits: bool,
}

/// A routing decision as a plain object (camelCase fields).
fn decision_json(d: &po::Decision) -> serde_json::Value {
    let estimate = d.estimate.as_ref().map(|e| {
        serde_json::json!({
            "inputTokens": e.input_tokens,
            "exact": e.exact,
            "outputTokens": e.output_tokens,
            "predictedCostUsd": e.predicted_cost_usd,
            "contextWindow": e.context_window,
            "fits": e.fits,
        })
    });
    serde_json::json!({
        "policyId": d.policy_id(),
        "strategy": d.strategy.as_str(),
        "target": target_json(d.target()),
        "fallbacks": d.fallbacks().map(target_json).collect::<Vec<_>>(),
        "bucket": d.bucket,
        "reason": d.reason,
        "estimate": estimate,
        "skipped": d.skipped.iter().map(|s| serde_json::json!({"target": s.target, "reason": s.reason})).collect::<Vec<_>>(),
        "prompt": d.prompt,
        "version": d.version,
        "label": d.label,
        "variant": d.variant,
    })
}

// ---------------------------------------------------------------------------
// Provider calls: `complete` and `stream`
//
// A call runs on a runtime of the addon's own (its threads are not libuv
// handles). Everything it reports reaches JS through ONE thread-safe
// function, in order: each streamed chunk (a string), then the result (an
// object) or the error (an `Error`). That function is referenced while the
// call is pending — an awaited call keeps the process alive, as `fetch`
// does — and released when the call settles, is cancelled, or its client
// closes.

/// The runtime provider calls run on (started on first use).
fn call_runtime() -> po::Result<&'static tokio::runtime::Runtime> {
    static RT: std::sync::OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("promptops-call")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| po::Error::Config(format!("cannot start the provider-call runtime: {e}")))
}

/// What a call reports to JS.
pub enum CallEvent {
    Chunk(String),
    Done(Box<po::provider::Completion>),
    Failed(po::Error),
}

impl napi::bindgen_prelude::TypeName for CallEvent {
    fn type_name() -> &'static str {
        "CallEvent"
    }

    fn value_type() -> napi::ValueType {
        napi::ValueType::Unknown
    }
}

impl napi::bindgen_prelude::ToNapiValue for CallEvent {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        match val {
            CallEvent::Chunk(text) => js_string(env, &text),
            CallEvent::Done(c) => json_to_js(env, &completion_json(&c)),
            CallEvent::Failed(e) => build_js_error(env, &e).or_else(|_| {
                let mut err = ptr::null_mut();
                let msg = js_string(env, &e.to_string())?;
                check!(sys::napi_create_error(env, ptr::null_mut(), msg, &mut err));
                Ok(err)
            }),
        }
    }
}

type CallTsfn = ThreadsafeFunction<CallEvent, (), CallEvent, Status, false, false>;

/// Per-call settings (`client.complete` / `client.stream` options).
#[napi(object)]
#[derive(Default, Clone)]
pub struct CompleteSettings {
    /// The sticky routing key (user id, session id, …).
    pub route_key: Option<String>,
    /// The label to look the prompt up under (default: the client's).
    pub label: Option<String>,
    /// Caller attributes attached to telemetry events (masked on export).
    pub attributes: Option<std::collections::HashMap<String, String>>,
    /// Overrides of the client's call settings.
    pub call: Option<CallSettings>,
}

/// A call in flight (`cancel()` ends it: the request is dropped and the
/// call fails with `CONFIG_ERROR` "cancelled").
#[napi]
pub struct NativeCall {
    cancel: tokio::sync::watch::Sender<bool>,
}

#[napi]
impl NativeCall {
    /// End the call now (no effect once it settled).
    #[napi(catch_unwind)]
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

/// Resolves when `rx` turns `true`; never when its sender is gone.
async fn signalled(mut rx: tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn completion_json(c: &po::provider::Completion) -> serde_json::Value {
    serde_json::json!({
        "text": c.text,
        "usage": {
            "inputTokens": c.usage.input_tokens,
            "outputTokens": c.usage.output_tokens,
            "cachedInputTokens": c.usage.cached_input_tokens,
            "reported": c.usage.reported,
        },
        "costUsd": c.cost_usd,
        "latencyMs": c.latency_ms,
        "ttftMs": c.ttft_ms,
        "finishReason": c.finish_reason,
        "responseModel": c.response_model,
        "target": target_json(&c.target),
        "prompt": c.prompt,
        "version": c.version,
        "variant": c.variant,
        "decision": decision_json(&c.decision),
        "attempts": c.attempts.iter().map(|a| serde_json::json!({
            "target": a.target,
            "provider": a.provider,
            "model": a.model,
            "ok": a.ok,
            "skipped": a.skipped,
            "errorType": a.error_type,
            "status": a.status,
            "message": a.message,
            "retryAfterMs": a.retry_after_ms,
            "latencyMs": a.latency_ms,
        })).collect::<Vec<_>>(),
    })
}

/// Parse and check a routing policy (JSON text) the way the registry does
/// at publish, with the built-in price table; throws `POLICY_ERROR` (with
/// `field`). Returns the policy's id, strategy and target ids.
#[napi(
    catch_unwind,
    ts_return_type = "{ id: string; strategy: string; targets: string[] }"
)]
pub fn validate_policy(
    env: Env,
    policy: String,
    prompt: Option<String>,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let value: serde_json::Value = serde_json::from_str(&policy).map_err(|e| {
        js_error(
            raw,
            &po::Error::Policy {
                prompt: prompt.clone(),
                field: "policy".into(),
                message: format!("not JSON: {e}"),
            },
        )
    })?;
    let p = po::validate_policy(&value, prompt.as_deref(), &po::PricingTable::builtin())
        .map_err(|e| js_error(raw, &e))?;
    let v = serde_json::json!({
        "id": p.id,
        "strategy": p.strategy.as_str(),
        "targets": p.targets.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
    });
    Ok(unknown(raw, json_to_js(raw, &v)?))
}

/// The sticky bucket in `[0, 10000)` of `key` for a policy id and
/// experiment (the shared hash every binding uses).
#[napi(catch_unwind)]
pub fn route_bucket(policy_id: String, experiment: String, key: String) -> u32 {
    po::route::bucket(&policy_id, &experiment, &key)
}

fn to_u64(n: f64) -> u64 {
    if n.is_finite() && n > 0.0 {
        n as u64
    } else {
        0
    }
}

// ---------------------------------------------------------------------------
// Prompt

/// The native prompt. Use `Prompt` from `promptops` instead.
#[napi]
pub struct NativePrompt {
    prompt: Prompt,
    client: Client,
}

#[napi]
impl NativePrompt {
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> String {
        self.prompt.name().to_string()
    }

    #[napi(getter, catch_unwind)]
    pub fn version(&self) -> u32 {
        self.prompt.version()
    }

    #[napi(getter, catch_unwind)]
    pub fn label(&self) -> Option<String> {
        self.prompt.label().map(String::from)
    }

    /// `memory`, `disk`, `bundle` or `fallback`.
    #[napi(getter, catch_unwind)]
    pub fn source(&self) -> &'static str {
        self.prompt.source().as_str()
    }

    /// `text` or `chat`.
    #[napi(getter, catch_unwind)]
    pub fn kind(&self) -> &'static str {
        self.prompt.kind().as_str()
    }

    #[napi(getter, catch_unwind)]
    pub fn variant_name(&self) -> Option<String> {
        self.prompt.variant_name().map(String::from)
    }

    #[napi(getter, catch_unwind)]
    pub fn variants(&self) -> Vec<String> {
        self.prompt.variants().map(String::from).collect()
    }

    #[napi(getter, catch_unwind)]
    pub fn description(&self) -> Option<String> {
        self.prompt.description().map(String::from)
    }

    #[napi(getter, catch_unwind)]
    pub fn tags(&self) -> Vec<String> {
        self.prompt.tags().to_vec()
    }

    #[napi(getter, catch_unwind)]
    pub fn revision(&self) -> f64 {
        self.prompt.revision() as f64
    }

    #[napi(getter, catch_unwind)]
    pub fn snapshot_hash(&self) -> Option<String> {
        self.prompt.snapshot_hash().map(String::from)
    }

    /// The model config rendering returns (provider, model, temperature, …).
    #[napi(getter, catch_unwind, ts_return_type = "Record<string, unknown>")]
    pub fn config(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        Ok(unknown(
            raw,
            json_to_js(raw, &to_json(self.prompt.config()))?,
        ))
    }

    /// The input schema (JSON Schema), if the prompt has one.
    #[napi(
        getter,
        catch_unwind,
        ts_return_type = "Record<string, unknown> | null"
    )]
    pub fn schema(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        Ok(unknown(
            raw,
            json_to_js(raw, &to_json(&self.prompt.schema()))?,
        ))
    }

    #[napi(catch_unwind)]
    pub fn variant(&self, env: Env, name: String) -> Result<NativePrompt> {
        match self.prompt.variant(&name) {
            Ok(prompt) => Ok(NativePrompt {
                prompt,
                client: self.client.clone(),
            }),
            Err(e) => Err(js_error(env.raw(), &e)),
        }
    }

    #[napi(catch_unwind)]
    pub fn for_model(&self, model: String) -> NativePrompt {
        NativePrompt {
            prompt: self.prompt.for_model(&model),
            client: self.client.clone(),
        }
    }

    /// Render with `vars` (a plain object) read value by value through N-API.
    /// Slower than `renderEncoded`; kept for the benchmark's comparison.
    #[napi(
        catch_unwind,
        js_name = "__renderWalk",
        ts_args_type = "vars?: Record<string, unknown> | null",
        ts_return_type = "string | ChatMessage[]"
    )]
    pub fn render_walk(&self, env: Env, vars: Unknown<'_>) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let vars = vars_from_js(raw, self.prompt.name(), vars.raw())?;
        let out = self.prompt.render(&vars).map_err(|e| js_error(raw, &e))?;
        Ok(unknown(raw, rendered_to_js(raw, &out)?))
    }

    /// Render with variables encoded by `index.js` (the fast path).
    #[napi(
        catch_unwind,
        ts_args_type = "text: string, ops: Float64Array, n: number, oneByte: boolean",
        ts_return_type = "string | ChatMessage[]"
    )]
    pub fn render_encoded(
        &self,
        env: Env,
        text: Unknown<'_>,
        ops: Unknown<'_>,
        n: u32,
        one_byte: bool,
    ) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let vars = vars_from_encoded(raw, self.prompt.name(), text.raw(), ops.raw(), n, one_byte)?;
        let out = self.prompt.render(&vars).map_err(|e| js_error(raw, &e))?;
        Ok(unknown(raw, rendered_to_js(raw, &out)?))
    }

    /// The prompt's portable render plan as JSON text (see
    /// `promptops_core::plan`), or `null` when its body is not in the
    /// portable subset or it has an input schema. `plan.js` renders from
    /// it in JS.
    #[napi(catch_unwind)]
    pub fn plan(&self) -> Option<String> {
        self.prompt
            .portable_plan()
            .and_then(|p| serde_json::to_string(&p).ok())
    }

    /// Whether renders of this prompt are recorded as telemetry events (a
    /// render done in JS then reports itself with `recordRender`).
    #[napi(getter, catch_unwind)]
    pub fn telemetry_enabled(&self) -> bool {
        self.prompt.telemetry_enabled()
    }

    /// An opaque handle to this prompt for `renderFast`, the render fast
    /// path (`index.js` makes one per prompt, on its first render).
    #[napi(catch_unwind, ts_return_type = "unknown")]
    pub fn handle(&self, env: Env) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let data = FastPrompt {
            prompt: self.prompt.clone(),
        };
        Ok(unknown(raw, tagged_external(raw, data, &FAST_PROMPT_TAG)?))
    }

    /// Where a render's time goes, for the benchmark report: runs the fast
    /// path `iterations` times and returns mean nanoseconds of `[decode the
    /// variables, render in the core, create the JS result]`.
    #[napi(
        catch_unwind,
        js_name = "__profileRender",
        ts_args_type = "text: string, ops: Float64Array, n: number, oneByte: boolean, iterations: number"
    )]
    pub fn profile_render(
        &self,
        env: Env,
        text: Unknown<'_>,
        ops: Unknown<'_>,
        n: u32,
        one_byte: bool,
        iterations: u32,
    ) -> Result<Vec<f64>> {
        use std::time::Instant;
        let raw = env.raw();
        let iterations = iterations.max(1);
        let (mut decode, mut render, mut to_js) = (0u128, 0u128, 0u128);
        for _ in 0..iterations {
            let mut scope = ptr::null_mut();
            check!(sys::napi_open_handle_scope(raw, &mut scope));
            let t0 = Instant::now();
            let vars =
                vars_from_encoded(raw, self.prompt.name(), text.raw(), ops.raw(), n, one_byte)?;
            let t1 = Instant::now();
            let out = self.prompt.render(&vars).map_err(|e| js_error(raw, &e))?;
            let t2 = Instant::now();
            rendered_to_js(raw, &out)?;
            let t3 = Instant::now();
            drop(out);
            drop(vars);
            check!(sys::napi_close_handle_scope(raw, scope));
            decode += (t1 - t0).as_nanos();
            render += (t2 - t1).as_nanos();
            to_js += (t3 - t2).as_nanos();
        }
        let n = iterations as f64;
        Ok(vec![decode as f64 / n, render as f64 / n, to_js as f64 / n])
    }

    /// Render with variables given as JSON text. Slower than
    /// `renderEncoded`; kept for the benchmark's comparison.
    #[napi(
        catch_unwind,
        js_name = "__renderJson",
        ts_return_type = "string | ChatMessage[]"
    )]
    pub fn render_json(&self, env: Env, json: String) -> Result<Unknown<'static>> {
        let raw = env.raw();
        let vars: Value = serde_json::from_str(&json).map_err(|e| {
            js_error(
                raw,
                &po::Error::Validation {
                    prompt: self.prompt.name().to_string(),
                    field: "vars".into(),
                    message: format!("not JSON: {e}"),
                },
            )
        })?;
        let out = self.prompt.render(&vars).map_err(|e| js_error(raw, &e))?;
        Ok(unknown(raw, rendered_to_js(raw, &out)?))
    }

    /// Input tokens of a rendering of this prompt (its text or messages) for
    /// the config's model, and the estimated input cost.
    #[napi(catch_unwind)]
    pub fn input_tokens(
        &self,
        env: Env,
        #[napi(ts_arg_type = "string | ChatMessage[]")] rendered: Unknown<'_>,
    ) -> Result<InputTokens> {
        let model = self.prompt.config().model.as_deref();
        let count = match text_or_messages(env.raw(), rendered.raw())? {
            Either::A(text) => tokens::count_input(Some(&text), None, model),
            Either::B(msgs) => tokens::count_input(None, Some(&msgs), model),
        };
        let cost = model.and_then(|m| {
            self.client
                .effective_pricing()
                .estimate_cost(m, count.count as u64, 0)
        });
        let c = TokenCount::from(count);
        Ok(InputTokens {
            count: c.count,
            encoding: c.encoding,
            exact: c.exact,
            estimated_cost_usd: cost,
        })
    }
}

/// What a prompt handle (`NativePrompt::handle`) points to.
struct FastPrompt {
    prompt: Prompt,
}

/// The type tag of prompt handles: `renderFast` checks it before it reads
/// the external's pointer, so no other value can pass for a handle.
const FAST_PROMPT_TAG: sys::napi_type_tag = sys::napi_type_tag {
    lower: 0x7072_6f6d_7074_6f70, // "promptop"
    upper: 0x7346_6173_7452_656e, // "sFastRen"
};

/// A JS external owning `data`, type-tagged with `tag` (N-API 8): the
/// handles `index.js` passes back to the free functions here instead of
/// napi-rs class instances (cheaper to make, and to call with).
fn tagged_external<T: 'static>(
    env: sys::napi_env,
    data: T,
    tag: &'static sys::napi_type_tag,
) -> Result<sys::napi_value> {
    unsafe extern "C" fn finalize<T>(
        _env: sys::napi_env,
        data: *mut std::ffi::c_void,
        _hint: *mut std::ffi::c_void,
    ) {
        // SAFETY: `data` is the `Box<T>` leaked by `tagged_external`, given
        // back exactly once by this finalizer.
        drop(unsafe { Box::from_raw(data.cast::<T>()) });
    }
    let data = Box::into_raw(Box::new(data));
    let mut out = ptr::null_mut();
    let status = unsafe {
        sys::napi_create_external(
            env,
            data.cast(),
            Some(finalize::<T>),
            ptr::null_mut(),
            &mut out,
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: N-API did not take `data`; it is still ours.
        drop(unsafe { Box::from_raw(data) });
        return Err(napi::Error::new(
            Status::from(status),
            "promptops: cannot create a handle".to_string(),
        ));
    }
    check!(sys::napi_type_tag_object(env, out, tag));
    Ok(out)
}

/// The data behind a handle made by `tagged_external` with `tag`.
fn from_tagged<'a, T>(
    env: sys::napi_env,
    handle: sys::napi_value,
    tag: &'static sys::napi_type_tag,
) -> Result<&'a T> {
    let mut tagged = false;
    check!(sys::napi_check_object_type_tag(
        env,
        handle,
        tag,
        &mut tagged
    ));
    if !tagged {
        return Err(napi::Error::new(
            Status::InvalidArg,
            "promptops: not a handle of the expected kind".to_string(),
        ));
    }
    let mut data = ptr::null_mut();
    check!(sys::napi_get_value_external(env, handle, &mut data));
    // SAFETY: only `tagged_external::<T>` puts `tag` on an external (one
    // tag per type), so `data` is a live `T` (freed only by its finalizer,
    // after `handle` died; `handle` is alive for the call that passed it).
    Ok(unsafe { &*data.cast::<T>() })
}

/// The prompt behind a handle made by `NativePrompt::handle`.
fn fast_prompt<'a>(raw: sys::napi_env, handle: sys::napi_value) -> Result<&'a FastPrompt> {
    from_tagged(raw, handle, &FAST_PROMPT_TAG)
}

/// `renderEncoded` without the class-method machinery of napi-rs (the
/// `this` unwrap and borrow tracking cost more than the rest of the call on
/// small prompts): the prompt comes as a type-tagged external.
#[napi(
    catch_unwind,
    js_name = "renderFast",
    ts_args_type = "handle: unknown, text: string, ops: Float64Array, n: number, oneByte: boolean",
    ts_return_type = "string | ChatMessage[]"
)]
pub fn render_fast(
    env: Env,
    handle: Unknown<'_>,
    text: Unknown<'_>,
    ops: Unknown<'_>,
    n: u32,
    one_byte: bool,
) -> Result<Unknown<'static>> {
    let raw = env.raw();
    let fp = fast_prompt(raw, handle.raw())?;
    let vars = vars_from_encoded(raw, fp.prompt.name(), text.raw(), ops.raw(), n, one_byte)?;
    let out = fp.prompt.render(&vars).map_err(|e| js_error(raw, &e))?;
    Ok(unknown(raw, rendered_to_js(raw, &out)?))
}

/// Record a render `plan.js` did in JS from the prompt's plan as a
/// telemetry event, as a render in the core records itself (index.js calls
/// it only for prompts with telemetry on). `elapsedNs`: the render's time.
#[napi(
    catch_unwind,
    js_name = "recordRender",
    ts_args_type = "handle: unknown, elapsedNs: number"
)]
pub fn record_render(env: Env, handle: Unknown<'_>, elapsed_ns: f64) -> Result<()> {
    let fp = fast_prompt(env.raw(), handle.raw())?;
    let ns = if elapsed_ns.is_finite() && elapsed_ns > 0.0 {
        elapsed_ns as u64
    } else {
        0
    };
    fp.prompt
        .record_plan_render(std::time::Duration::from_nanos(ns));
    Ok(())
}

// ---------------------------------------------------------------------------
// Tokens and pricing

/// Tokens of a text or a chat request for `model` (OpenAI models exact;
/// others a flagged estimate), or of a text in `encoding`.
#[napi(catch_unwind)]
pub fn count_tokens(
    env: Env,
    #[napi(ts_arg_type = "string | ChatMessage[]")] input: Unknown<'_>,
    model: Option<String>,
    encoding: Option<String>,
) -> Result<TokenCount> {
    let input = text_or_messages(env.raw(), input.raw())?;
    if let Some(name) = encoding {
        let Some(enc) = Encoding::from_name(&name) else {
            return Err(config_error(
                env.raw(),
                format!("unknown encoding `{name}` (use cl100k_base or o200k_base)"),
            ));
        };
        let Either::A(text) = input else {
            return Err(config_error(
                env.raw(),
                "an encoding counts text; count messages with a model",
            ));
        };
        return Ok(TokenCount {
            count: enc.count(&text).min(u32::MAX as usize) as u32,
            encoding: enc.name().to_string(),
            exact: true,
        });
    }
    let model = model.as_deref().unwrap_or(DEFAULT_COUNT_MODEL);
    Ok(match input {
        Either::A(text) => tokens::count_text(&text, model).into(),
        Either::B(msgs) => tokens::count_messages(&msgs, model).into(),
    })
}

/// The model `countTokens` counts for when none is given.
const DEFAULT_COUNT_MODEL: &str = "gpt-4o";

/// Which encoding a model is counted with, whether exactly, and the
/// estimate factor.
#[napi(catch_unwind)]
pub fn tokenizer_for_model(model: String) -> TokenizerInfo {
    let t = tokens::tokenizer_for_model(&model);
    TokenizerInfo {
        encoding: t.encoding.name().to_string(),
        exact: t.exact,
        factor: t.factor,
    }
}

/// Cost in USD with the built-in price table; `null` for an unknown model.
#[napi(catch_unwind)]
pub fn estimate_cost(model: String, input_tokens: f64, output_tokens: f64) -> Option<f64> {
    static BUILTIN: std::sync::OnceLock<po::PricingTable> = std::sync::OnceLock::new();
    BUILTIN
        .get_or_init(po::PricingTable::builtin)
        .estimate_cost(&model, to_u64(input_tokens), to_u64(output_tokens))
}

/// For the test suite only: panics inside a native call, which must surface
/// as a JS exception and never end the process.
#[napi(catch_unwind, js_name = "__panicForTests")]
pub fn panic_for_tests() {
    panic!("deliberate panic for the test suite");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn utf16_conversions() {
        for s in [
            "",
            "hello",
            "a much longer ascii text that spans several sixteen unit chunks.",
            "Zoë's café — “quotes” 😀👍🏽 中文 and ascii after it, long enough to chunk",
            "😀",
        ] {
            assert_eq!(utf16_to_string(&utf16(s)), s);
            assert_eq!(utf16_to_value(&utf16(s)).as_str(), Some(s));
        }
        // A lone surrogate becomes U+FFFD, as with from_utf16_lossy.
        let lone = [0x61, 0xD800, 0x62];
        assert_eq!(utf16_to_string(&lone), String::from_utf16_lossy(&lone));
    }

    #[test]
    fn numbers_like_json() {
        assert_eq!(number_value(3.0).as_i64(), Some(3));
        assert_eq!(number_value(-0.0).as_i64(), Some(0));
        assert!(number_value(3.5).as_i64().is_none());
        assert!(number_value(f64::NAN).is_none());
        assert!(number_value(1e300).as_i64().is_none());
    }

    /// The tree views render exactly like ordinary values.
    #[test]
    fn tree_views_render_like_values() {
        // {"a": "x", "s": {"k": "v", "n2": {"deep": 1}}, "n": [1, "two", [3]], "e": {}, "l": []}
        let text = utf16("axskvn2deepntwoel");
        let ops = [
            OP_OBJECT, 5.0, //
            1.0, OP_STRING, 1.0, //
            1.0, OP_OBJECT, 2.0, 1.0, OP_STRING, 1.0, 2.0, OP_OBJECT, 1.0, 4.0, OP_NUMBER,
            1.0, //
            1.0, OP_ARRAY, 3.0, OP_NUMBER, 1.0, OP_STRING, 3.0, OP_ARRAY, 1.0, OP_NUMBER,
            3.0, //
            1.0, OP_OBJECT, 0.0, //
            1.0, OP_ARRAY, 0.0,
        ];
        let tree = Decoder {
            ops: &ops,
            op: 0,
            text: &text,
            pos: 0,
        }
        .tree()
        .unwrap();
        let plain: Value = serde_json::from_str(
            r#"{"a": "x", "s": {"k": "v", "n2": {"deep": 1}}, "n": [1, "two", [3]], "e": {}, "l": []}"#,
        )
        .unwrap();
        let tpl = "{{ a }}|{{ s.k }}|{{ s['n2'].deep }}|{% for x in n %}{{ x }},{% endfor %}|{{ n|length }}|\
                   {{ n[-1] }}|{{ n[1:] }}|{{ s|tojson }}|{% for k, v in s|items %}{{ k }}={{ v }};{% endfor %}|\
                   {{ 'k' in s }}|{{ 'z' in s }}|{{ 2 in n }}|{{ n|reverse|list }}|{{ s.missing is undefined }}|\
                   {{ e|length }}{{ l|length }}|{{ e is mapping }}{{ l is sequence }}|{{ s }}|{{ n }}|{{ n|join('-') }}|\
                   {{ s|dictsort }}|{{ n[0] + n[2][0] }}|{% if e %}full{% else %}empty{% endif %}|{{ l|first is undefined }}";
        let env = minijinja::Environment::new();
        let a = env.render_str(tpl, &tree).unwrap();
        let b = env.render_str(tpl, &plain).unwrap();
        assert_eq!(a, b);
        assert!(a.starts_with("x|v|1|1,two,[3],|3|[3]|"), "{a}");
        assert_eq!(tree.get_attr("s").unwrap().len(), Some(2));
        // Bad input is an error, not a panic.
        for bad in [
            &ops[..9],
            &[OP_OBJECT, 1e12][..],
            &[OP_ARRAY, 5.0, OP_NULL][..],
        ] {
            let d = Decoder {
                ops: bad,
                op: 0,
                text: &text,
                pos: 0,
            };
            assert!(d.tree().is_err());
        }
    }

    #[test]
    fn decode_encoded_vars() {
        // {"name": "Dana", "n": [1, true, null], "s": {"k": "v"}}
        let text = utf16("nameDananskv");
        let ops = [
            OP_OBJECT, 3.0, //
            4.0, OP_STRING, 4.0, //
            1.0, OP_ARRAY, 3.0, OP_NUMBER, 1.0, OP_TRUE, OP_NULL, //
            1.0, OP_OBJECT, 1.0, 1.0, OP_STRING, 1.0,
        ];
        let mut d = Decoder {
            ops: &ops,
            op: 0,
            text: &text,
            pos: 0,
        };
        let v = d.value(0).unwrap();
        assert_eq!(v.get_attr("name").unwrap().as_str(), Some("Dana"));
        assert_eq!(v.get_attr("n").unwrap().len(), Some(3));
        assert_eq!(
            v.get_attr("s").unwrap().get_attr("k").unwrap().as_str(),
            Some("v")
        );
        let keys: Vec<String> = v.try_iter().unwrap().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["name", "n", "s"]);
        // Truncated input is an error, not a panic.
        let mut short = Decoder {
            ops: &ops[..5],
            op: 0,
            text: &text,
            pos: 0,
        };
        assert!(short.value(0).is_err());
    }
}
