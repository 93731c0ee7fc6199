//! `promptops._lowlevel`: the native half of the `promptops` Python package.
//!
//! This file only converts (Python values to template values and back, core
//! types to dicts), maps errors and manages the GIL; every behaviour lives in
//! `promptops-core`. The pure-Python package (`python/promptops/`) defines
//! the exception classes, the public `Client` (a subclass of the `Client`
//! here) and the types; `_lowlevel.pyi` describes this module.
//!
//! Rules kept throughout:
//! - a core [`Error`](core::Error) becomes a Python exception in one place,
//!   `core_err`;
//! - a Rust panic never unwinds into Python: every entry point runs under
//!   `guard`, which turns a panic into `promptops.PromptOpsError` (kind
//!   `PANIC`);
//! - rendering and token counting run on values copied out of Python,
//!   with the GIL released ([`Python::detach`]) when the work is long
//!   enough to pay for handing the GIL over; short renders and counts (see
//!   `Inline`, `DETACH_MIN_BYTES`) keep it;
//! - repeated lookups return the same (immutable) `Prompt` object while the
//!   store holds the same snapshot (`PromptCache`).

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use minijinja::value::Value;
use promptops_core as core;
use pyo3::Borrowed;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMapping, PySequence, PyString, PyTuple,
};

// ---------------------------------------------------------------------------
// Errors and panics
// ---------------------------------------------------------------------------

/// `promptops._errors._BY_KIND`: core error kind -> exception class.
static ERROR_CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// Kind of the error raised for a Rust panic (not a core error kind).
const PANIC_KIND: &str = "PANIC";

/// Build the `promptops` exception for `kind` (falling back to the base
/// class for a kind the Python side does not know).
fn raise(py: Python<'_>, kind: &str, message: String, details: Bound<'_, PyDict>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let classes = ERROR_CLASSES.import(py, "promptops._errors", "_BY_KIND")?;
        let cls = match classes.get_item(kind)? {
            Some(cls) => cls,
            None => classes
                .get_item("PROMPTOPS_ERROR")?
                .ok_or_else(|| PyTypeError::new_err("promptops._errors has no base class"))?,
        };
        Ok(PyErr::from_value(cls.call1((message, kind, details))?))
    };
    build().unwrap_or_else(|e| e)
}

/// The one place a core error becomes a Python exception: the class is
/// chosen by `Error::kind()`, and the exception carries `.kind` and
/// `.details` (`Error::details()` as a dict).
fn core_err(py: Python<'_>, e: &core::Error) -> PyErr {
    match json_object(py, &e.details()) {
        Ok(details) => raise(py, e.kind(), e.to_string(), details),
        Err(err) => err,
    }
}

fn panic_err(py: Python<'_>, payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    let message = format!("internal error in promptops (Rust panic): {what}");
    let details = PyDict::new(py);
    let _ = details.set_item("kind", PANIC_KIND);
    let _ = details.set_item("message", &message);
    raise(py, PANIC_KIND, message, details)
}

/// What a guarded body can fail with: a Python error or a core error.
enum Failure {
    Py(PyErr),
    Core(core::Error),
}

impl From<PyErr> for Failure {
    fn from(e: PyErr) -> Self {
        Failure::Py(e)
    }
}

impl From<core::Error> for Failure {
    fn from(e: core::Error) -> Self {
        Failure::Core(e)
    }
}

type Res<T> = Result<T, Failure>;

/// Run an entry point's body: core errors and panics become `promptops`
/// exceptions, Python errors pass through.
fn guard<T>(py: Python<'_>, f: impl FnOnce() -> Res<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(Failure::Py(e))) => Err(e),
        Ok(Err(Failure::Core(e))) => Err(core_err(py, &e)),
        Err(payload) => Err(panic_err(py, payload)),
    }
}

/// Run core work with the interpreter released (other Python threads run
/// meanwhile). A panic is caught before the interpreter is re-attached.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> core::Result<T> + Send) -> Res<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(Failure::Core),
        Err(payload) => Err(Failure::Py(panic_err(py, payload))),
    }
}

// ---------------------------------------------------------------------------
// Python -> template values
// ---------------------------------------------------------------------------

/// Whether `PyUnicode_AsUTF8AndSize` may be called: it is in the stable ABI
/// from Python 3.10 on (set at module init from the running interpreter).
static FAST_UTF8: AtomicBool = AtomicBool::new(false);

unsafe extern "C" {
    /// Part of the limited API since 3.10 (and present in every CPython 3);
    /// PyO3 does not declare it for an `abi3-py39` build.
    fn PyUnicode_AsUTF8AndSize(
        unicode: *mut pyo3::ffi::PyObject,
        size: *mut pyo3::ffi::Py_ssize_t,
    ) -> *const std::os::raw::c_char;
}

/// The UTF-8 text of a Python `str`, borrowed from the string object when
/// the interpreter allows it (no copy), else copied.
#[inline(always)]
fn py_str<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    if FAST_UTF8.load(Ordering::Relaxed) {
        let mut size: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `s` is a live str object; the returned buffer is owned by
        // it (cached UTF-8) and lives as long as the object, which `'a`
        // borrows. On failure (lone surrogates) a Python error is set.
        let ptr = unsafe { PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size) };
        if ptr.is_null() {
            return Err(PyErr::fetch(s.py()));
        }
        // SAFETY: CPython returns valid UTF-8 of `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), size as usize) };
        Ok(Cow::Borrowed(unsafe {
            std::str::from_utf8_unchecked(bytes)
        }))
    } else {
        s.to_cow()
    }
}

fn any_str<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<Cow<'a, str>> {
    match obj.cast::<PyString>() {
        Ok(s) => py_str(s),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            type_name(obj)
        ))),
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .qualname()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Deeper nesting than this is refused (it is almost surely a cycle).
const MAX_DEPTH: usize = 128;

use core::vars::{MapBuilder, fingerprint, key_fingerprint};

/// A conversion failure, with the path to the offending value (boxed: the
/// happy path returns only a `Value`).
enum ConvError {
    Py(PyErr),
    Unsupported {
        type_name: String,
        path: Vec<String>,
    },
    TooDeep {
        path: Vec<String>,
    },
}

type Conv<T> = Result<T, Box<ConvError>>;

impl From<PyErr> for Box<ConvError> {
    fn from(e: PyErr) -> Self {
        Box::new(ConvError::Py(e))
    }
}

fn at(mut e: Box<ConvError>, segment: impl FnOnce() -> String) -> Box<ConvError> {
    match &mut *e {
        ConvError::Unsupported { path, .. } | ConvError::TooDeep { path } => path.push(segment()),
        ConvError::Py(_) => {}
    }
    e
}

fn conv_err(e: ConvError, root: &str) -> PyErr {
    let show = |path: Vec<String>| {
        let mut s = root.to_string();
        for seg in path.into_iter().rev() {
            s.push_str(&seg);
        }
        s
    };
    match e {
        ConvError::Py(e) => e,
        ConvError::Unsupported { type_name, path } => PyTypeError::new_err(format!(
            "`{}`: values of type `{type_name}` cannot be template variables; \
             use dict, list, tuple, str, int, float, bool or None \
             (convert other objects first, e.g. str(x) or a dict)",
            show(path)
        )),
        ConvError::TooDeep { path } => PyTypeError::new_err(format!(
            "`{}`: variables nest deeper than {MAX_DEPTH} levels (a reference cycle?)",
            show(path)
        )),
    }
}

fn key_segment(k: &Value) -> String {
    match k.as_str() {
        Some(s) if !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            format!(".{s}")
        }
        _ => format!("[{k:?}]"),
    }
}

/// Copies Python values into template values, counting the values and
/// the string bytes copied (a measure of the work a render will do).
struct Converter {
    work: Work,
}

/// The size of a render's variables.
#[derive(Debug, Clone, Copy, Default)]
struct Work {
    /// Bytes of string text.
    bytes: usize,
    /// Values of any kind (containers and scalars).
    values: usize,
}

impl Converter {
    fn new() -> Self {
        Converter {
            work: Work::default(),
        }
    }

    #[inline(always)]
    fn str_value(&mut self, s: &Bound<'_, PyString>) -> Conv<Value> {
        let text = py_str(s)?;
        self.work.bytes += text.len();
        Ok(Value::from(&*text))
    }

    /// Exact built-in types take the fast paths (no Python code runs while
    /// a container is walked, so its items are only borrowed); subclasses,
    /// other mappings and sequences take the general path.
    #[inline(always)]
    fn value(&mut self, obj: Borrowed<'_, '_, PyAny>, depth: usize) -> Conv<Value> {
        self.work.values += 1;
        if obj.get_type_ptr() == &raw mut ffi::PyUnicode_Type {
            // SAFETY: the exact type was checked.
            let s = unsafe { obj.cast_unchecked::<PyString>() };
            return self.str_value(&s);
        }
        self.other_value(obj, depth)
    }

    #[inline(never)]
    fn other_value(&mut self, obj: Borrowed<'_, '_, PyAny>, depth: usize) -> Conv<Value> {
        let ty = obj.get_type_ptr();
        // Only the addresses of the built-in type objects are taken.
        let (t_dict, t_list, t_bool, t_int, t_float, t_tuple) = (
            &raw mut ffi::PyDict_Type,
            &raw mut ffi::PyList_Type,
            &raw mut ffi::PyBool_Type,
            &raw mut ffi::PyLong_Type,
            &raw mut ffi::PyFloat_Type,
            &raw mut ffi::PyTuple_Type,
        );
        if ty == t_dict {
            if depth >= MAX_DEPTH {
                return Err(Box::new(ConvError::TooDeep { path: Vec::new() }));
            }
            // SAFETY: the exact type was checked. Owned: Python code run
            // further down (a custom mapping) must not free it under us.
            let d = unsafe { obj.cast_unchecked::<PyDict>() }.to_owned();
            return Ok(self.dict(&d, depth + 1)?.into_value());
        }
        if ty == t_list || ty == t_tuple {
            if depth >= MAX_DEPTH {
                return Err(Box::new(ConvError::TooDeep { path: Vec::new() }));
            }
            return self.seq(&obj.to_owned(), ty == t_list, depth + 1);
        }
        if obj.is_none() {
            return Ok(Value::from(()));
        }
        if ty == t_bool {
            // SAFETY: only the address of the `True` singleton is read.
            return Ok(Value::from(obj.as_ptr() == unsafe { ffi::Py_True() }));
        }
        if ty == t_int {
            return Ok(int_value(&obj)?);
        }
        if ty == t_float {
            // SAFETY: the exact type was checked.
            return Ok(Value::from(
                unsafe { obj.cast_unchecked::<PyFloat>() }.value(),
            ));
        }
        self.general(&obj.to_owned(), depth)
    }

    fn dict(&mut self, d: &Bound<'_, PyDict>, depth: usize) -> Conv<MapBuilder> {
        let py = d.py();
        let len = d.len();
        let mut out = MapBuilder::with_capacity(len);
        let mut pos: ffi::Py_ssize_t = 0;
        let mut k: *mut ffi::PyObject = std::ptr::null_mut();
        let mut v: *mut ffi::PyObject = std::ptr::null_mut();
        // SAFETY: `d` is a live dict (owned by the caller); PyDict_Next
        // returns borrowed, non-null items. The key is converted before any
        // Python code can run; the value is converted right away (its
        // containers are taken as owned references before Python code may
        // run).
        while unsafe { ffi::PyDict_Next(d.as_ptr(), &mut pos, &mut k, &mut v) } != 0 {
            // SAFETY: PyDict_Next returned true: both are non-null borrowed
            // references into the live dict.
            let (kb, vb) = unsafe { (Borrowed::from_ptr(py, k), Borrowed::from_ptr(py, v)) };
            if kb.get_type_ptr() == &raw mut ffi::PyUnicode_Type {
                // A str key: converted without running Python code.
                // SAFETY: the exact type was checked.
                let ks = unsafe { kb.cast_unchecked::<PyString>() };
                let text = py_str(&ks)?;
                let key = Value::from(&*text);
                let print = fingerprint(&text);
                let val = self
                    .value(vb, depth)
                    .map_err(|e| at(e, || key_segment(&key)))?;
                out.push(key, print, val);
            } else {
                // Converting another key may run Python code: hold both.
                let (kb, vb) = (kb.to_owned(), vb.to_owned());
                let key = self.value(kb.as_borrowed(), depth)?;
                let print = key_fingerprint(&key);
                let val = self
                    .value(vb.as_borrowed(), depth)
                    .map_err(|e| at(e, || key_segment(&key)))?;
                out.push(key, print, val);
            }
        }
        if d.len() != len {
            return Err(
                PyRuntimeError::new_err("a dict changed size while it was converted").into(),
            );
        }
        Ok(out)
    }

    fn seq(&mut self, s: &Bound<'_, PyAny>, is_list: bool, depth: usize) -> Conv<Value> {
        let py = s.py();
        let mut out = Vec::with_capacity(s.len().unwrap_or(0));
        let mut i: ffi::Py_ssize_t = 0;
        loop {
            // SAFETY: `s` is a live list or tuple (owned by the caller); the
            // length is read again each step (a list can shrink while Python
            // code runs); the item is borrowed and used at once.
            let item = unsafe {
                let n = if is_list {
                    ffi::PyList_Size(s.as_ptr())
                } else {
                    ffi::PyTuple_Size(s.as_ptr())
                };
                if i >= n {
                    break;
                }
                let p = if is_list {
                    ffi::PyList_GetItem(s.as_ptr(), i)
                } else {
                    ffi::PyTuple_GetItem(s.as_ptr(), i)
                };
                Borrowed::from_ptr_or_err(py, p)?
            };
            let idx = i;
            out.push(
                self.value(item, depth)
                    .map_err(|e| at(e, || format!("[{idx}]")))?,
            );
            i += 1;
        }
        Ok(Value::from(out))
    }

    /// Subclasses of the built-in types (str and int enums, OrderedDict,
    /// defaultdict, ...), other mappings and sequences. Containers are
    /// walked through their Python protocols (`items()`, iteration), so a
    /// subclass's own order is kept.
    fn general(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Conv<Value> {
        if let Ok(s) = obj.cast::<PyString>() {
            return self.str_value(s);
        }
        if obj.is_instance_of::<PyInt>() {
            return Ok(int_value(obj)?);
        }
        if let Ok(f) = obj.cast::<PyFloat>() {
            return Ok(Value::from(f.value()));
        }
        if obj.is_instance_of::<PyBytes>() {
            return Err(Box::new(ConvError::Unsupported {
                type_name: type_name(obj),
                path: Vec::new(),
            }));
        }
        if depth >= MAX_DEPTH {
            return Err(Box::new(ConvError::TooDeep { path: Vec::new() }));
        }
        if let Ok(m) = obj.cast::<PyMapping>() {
            return Ok(self.mapping(m, depth + 1)?.into_value());
        }
        if let Ok(s) = obj.cast::<PySequence>() {
            let mut out = Vec::new();
            for (i, item) in s.try_iter()?.enumerate() {
                let item = item?;
                out.push(
                    self.value(item.as_borrowed(), depth + 1)
                        .map_err(|e| at(e, || format!("[{i}]")))?,
                );
            }
            return Ok(Value::from(out));
        }
        Err(Box::new(ConvError::Unsupported {
            type_name: type_name(obj),
            path: Vec::new(),
        }))
    }

    fn mapping(&mut self, m: &Bound<'_, PyMapping>, depth: usize) -> Conv<MapBuilder> {
        let items = m.items()?;
        let mut out = MapBuilder::with_capacity(items.len());
        for pair in items.iter() {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
            let key = self.value(k.as_borrowed(), depth)?;
            let print = key_fingerprint(&key);
            let val = self
                .value(v.as_borrowed(), depth)
                .map_err(|e| at(e, || key_segment(&key)))?;
            out.push(key, print, val);
        }
        Ok(out)
    }
}

fn int_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if let Ok(i) = obj.extract::<i64>() {
        Ok(Value::from(i))
    } else if let Ok(u) = obj.extract::<u64>() {
        Ok(Value::from(u))
    } else {
        Ok(Value::from(obj.extract::<i128>()?))
    }
}

/// The render context: `vars` (a mapping) updated with `kwargs`, and the
/// size of what was copied into it.
fn context(
    vars: Option<&Bound<'_, PyAny>>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<(Value, Work)> {
    let mut c = Converter::new();
    let mut map = match vars {
        None => MapBuilder::with_capacity(0),
        Some(v) if v.is_none() => MapBuilder::with_capacity(0),
        Some(v) => {
            let r = if let Ok(d) = v.cast_exact::<PyDict>() {
                c.dict(d, 1)
            } else if let Ok(m) = v.cast::<PyMapping>() {
                c.mapping(m, 1)
            } else {
                return Err(PyTypeError::new_err(format!(
                    "vars must be a dict (or another mapping), not {}",
                    type_name(v)
                )));
            };
            r.map_err(|e| conv_err(*e, "vars"))?
        }
    };
    if let Some(kw) = kwargs {
        map.update(c.dict(kw, 1).map_err(|e| conv_err(*e, "kwargs"))?);
    }
    Ok((map.into_value(), c.work))
}

// ---------------------------------------------------------------------------
// Core values -> Python
// ---------------------------------------------------------------------------

fn json_value<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None().into_bound(py),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        J::String(s) => PyString::new(py, s).into_any(),
        J::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(json_value(py, x)?)?;
            }
            list.into_any()
        }
        J::Object(m) => json_object(py, m)?.into_any(),
    })
}

fn json_object<'py>(
    py: Python<'py>,
    m: &serde_json::Map<String, serde_json::Value>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in m {
        d.set_item(k, json_value(py, v)?)?;
    }
    Ok(d)
}

fn config_dict<'py>(py: Python<'py>, c: &core::ModelConfig) -> Res<Bound<'py, PyDict>> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => Ok(json_object(py, &m)?),
        Ok(_) => Ok(PyDict::new(py)),
        Err(e) => Err(core::Error::Config(format!("model config: {e}")).into()),
    }
}

fn message_dict<'py>(py: Python<'py>, m: &core::Message) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(pyo3::intern!(py, "role"), &m.role)?;
    d.set_item(pyo3::intern!(py, "content"), &m.content)?;
    if let Some(name) = &m.name {
        d.set_item(pyo3::intern!(py, "name"), name)?;
    }
    Ok(d)
}

fn token_detail<'py>(py: Python<'py>, t: &core::TokenCount) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("count", t.count)?;
    d.set_item("encoding", t.encoding.name())?;
    d.set_item("exact", t.exact)?;
    Ok(d)
}

fn changes_list<'py>(py: Python<'py>, changes: &[core::Change]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for c in changes {
        let d = PyDict::new(py);
        d.set_item("prompt", &c.prompt)?;
        d.set_item("label", &c.label)?;
        d.set_item("old", c.old)?;
        d.set_item("new", c.new)?;
        list.append(d)?;
    }
    Ok(list)
}

fn diagnostics_list<'py>(
    py: Python<'py>,
    diags: &[core::Diagnostic],
) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for diag in diags {
        let d = PyDict::new(py);
        d.set_item("prompt", &diag.prompt)?;
        d.set_item("version", diag.version)?;
        d.set_item("label", &diag.label)?;
        d.set_item("kind", diag.error.kind())?;
        d.set_item("message", diag.to_string())?;
        d.set_item("details", json_object(py, &diag.error.details())?)?;
        list.append(d)?;
    }
    Ok(list)
}

/// The mappings of a sequence `obj` (`expected`: what it should be, for the
/// error; `item`: the name and description of an item, e.g. `("messages", "a
/// dict")`).
fn dicts_of<'py>(
    obj: &Bound<'py, PyAny>,
    expected: &str,
    item: (&str, &str),
) -> PyResult<Vec<Bound<'py, PyMapping>>> {
    let seq = obj
        .cast::<PySequence>()
        .map_err(|_| PyTypeError::new_err(format!("{expected}, not {}", type_name(obj))))?;
    let mut out = Vec::new();
    for (i, it) in seq.try_iter()?.enumerate() {
        let it = it?;
        match it.cast_into::<PyMapping>() {
            Ok(m) => out.push(m),
            Err(e) => {
                return Err(PyTypeError::new_err(format!(
                    "{}[{i}] must be {}, not {}",
                    item.0,
                    item.1,
                    type_name(e.into_inner().as_any())
                )));
            }
        }
    }
    Ok(out)
}

/// Chat messages from a list of `{"role", "content"[, "name"]}` mappings.
fn messages_arg(obj: &Bound<'_, PyAny>) -> PyResult<Vec<core::Message>> {
    let items = dicts_of(
        obj,
        "expected a str or a list of messages",
        ("messages", "a dict with `role` and `content`"),
    )?;
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        let field = |key: &str| -> PyResult<Option<String>> {
            match m.get_item(key) {
                Ok(v) if v.is_none() => Ok(None),
                Ok(v) => Ok(Some(
                    any_str(&v, &format!("messages[{i}].{key}"))?.into_owned(),
                )),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(obj.py()) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let need = |key: &str| -> PyResult<String> {
            field(key)?.ok_or_else(|| PyTypeError::new_err(format!("messages[{i}] has no `{key}`")))
        };
        out.push(core::Message {
            role: need("role")?,
            content: need("content")?,
            name: field("name")?,
        });
    }
    Ok(out)
}

/// Texts shorter than this are counted without releasing the interpreter
/// (releasing and re-taking it would cost more than the count).
const DETACH_MIN_BYTES: usize = 256;

fn count(
    py: Python<'_>,
    text_or_messages: &Bound<'_, PyAny>,
    model: &str,
) -> Res<core::TokenCount> {
    if let Ok(s) = text_or_messages.cast::<PyString>() {
        let text = py_str(s)?;
        if text.len() < DETACH_MIN_BYTES {
            return Ok(core::tokens::count_text(&text, model));
        }
        let text: &str = &text;
        return detached(py, || Ok(core::tokens::count_text(text, model)));
    }
    let messages = messages_arg(text_or_messages)?;
    detached(py, || Ok(core::tokens::count_messages(&messages, model)))
}

// ---------------------------------------------------------------------------
// Classes
// ---------------------------------------------------------------------------

/// The native client. `promptops.Client` subclasses it (adding argument
/// checks, the restart of live sync in forked children and `aget`). Live
/// sync runs on the module's runtime (`module_runtime`), started by `build`
/// and restarted by `start_sync` in a forked child.
#[pyclass(module = "promptops._lowlevel", subclass, frozen)]
struct Client {
    inner: core::Client,
    cache: Mutex<PromptCache>,
    /// The default settings of provider calls (`call_options=`).
    call_defaults: core::provider::CallOptions,
}

/// The `Prompt` objects handed out for the current snapshot, by lookup
/// (name, or name + label + version). A prompt is immutable, so a repeated
/// `get` returns the same object instead of building a new one; the cache
/// is emptied when the store holds another snapshot. Lookups with a
/// fallback are not cached.
struct PromptCache {
    /// The snapshot the entries come from (held, so its address identifies it).
    snapshot: Option<Arc<core::CompiledSnapshot>>,
    prompts: Option<Py<PyDict>>,
}

/// More entries than this (an app looking up ever new names) empties the
/// cache.
const PROMPT_CACHE_MAX: usize = 4096;

impl Client {
    /// The cache entry for `key` in snapshot `snap`, if any.
    fn cached<'py>(
        &self,
        py: Python<'py>,
        snap: &Arc<core::CompiledSnapshot>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, Prompt>>> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match (&c.snapshot, &c.prompts) {
            (Some(s), Some(d)) if Arc::ptr_eq(s, snap) => match d.bind(py).get_item(key)? {
                Some(p) => Ok(Some(p.cast_into::<Prompt>()?)),
                None => Ok(None),
            },
            _ => Ok(None),
        }
    }

    fn remember(
        &self,
        py: Python<'_>,
        snap: Arc<core::CompiledSnapshot>,
        key: &Bound<'_, PyAny>,
        prompt: &Bound<'_, Prompt>,
    ) -> PyResult<()> {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = !matches!(&c.snapshot, Some(s) if Arc::ptr_eq(s, &snap));
        let full = c
            .prompts
            .as_ref()
            .is_some_and(|d| d.bind(py).len() >= PROMPT_CACHE_MAX);
        if fresh || full || c.prompts.is_none() {
            c.snapshot = Some(snap);
            c.prompts = Some(PyDict::new(py).unbind());
        }
        if let Some(d) = &c.prompts {
            d.bind(py).set_item(key, prompt)?;
        }
        Ok(())
    }
}

#[pymethods]
impl Client {
    #[new]
    #[pyo3(signature = (
        *,
        project=None,
        bundle=None,
        prompts_dir=None,
        strict=false,
        server=None,
        api_key=None,
        redis=None,
        redis_prefix=None,
        cache_dir=None,
        startup_wait=0.0,
        telemetry=None,
        providers=None,
        call_options=None,
        telemetry_upload=None,
        telemetry_upload_url=None,
        telemetry_interval=None,
        telemetry_max_batch=None,
        telemetry_flush_timeout=None,
        otlp=None,
        prices=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        project: Option<String>,
        bundle: Option<PathBuf>,
        prompts_dir: Option<PathBuf>,
        strict: bool,
        server: Option<String>,
        api_key: Option<String>,
        redis: Option<String>,
        redis_prefix: Option<String>,
        cache_dir: Option<PathBuf>,
        startup_wait: f64,
        telemetry: Option<&Bound<'_, PyAny>>,
        providers: Option<&Bound<'_, PyAny>>,
        call_options: Option<&Bound<'_, PyAny>>,
        telemetry_upload: Option<bool>,
        telemetry_upload_url: Option<String>,
        telemetry_interval: Option<&Bound<'_, PyAny>>,
        telemetry_max_batch: Option<&Bound<'_, PyAny>>,
        telemetry_flush_timeout: Option<&Bound<'_, PyAny>>,
        otlp: Option<&Bound<'_, PyAny>>,
        prices: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard(py, || {
            let telemetry = match telemetry {
                Some(t) => telemetry_arg(t)?,
                None => None,
            };
            let export = ExportArgs {
                upload: telemetry_upload,
                upload_url: telemetry_upload_url,
                interval: telemetry_interval.filter(|v| !v.is_none()),
                max_batch: telemetry_max_batch.filter(|v| !v.is_none()),
                flush_timeout: telemetry_flush_timeout.filter(|v| !v.is_none()),
                otlp: otlp.filter(|v| !v.is_none()),
            };
            if telemetry.is_none()
                && let Some(name) = export.first_given()
            {
                return Err(core::Error::Config(format!(
                    "{name} needs telemetry on: pass telemetry=True (or a TelemetryOptions dict)"
                ))
                .into());
            }
            let export = export.to_core()?;
            let endpoints = match providers.filter(|p| !p.is_none()) {
                Some(p) => providers_arg(p)?,
                None => Vec::new(),
            };
            let call_defaults = match call_options {
                Some(c) => call_options_arg(c)?,
                None => core::provider::CallOptions::default(),
            };
            let wait = std::time::Duration::try_from_secs_f64(startup_wait).map_err(|_| {
                core::Error::Config(format!(
                    "startup_wait must be a finite number of seconds >= 0, got {startup_wait}"
                ))
            })?;
            let mut b = core::Client::builder()
                .strict(strict)
                .startup_wait(wait)
                // Every client of the process syncs on the module's runtime
                // (the forked child's own after a fork).
                .runtime_provider(|| Ok(module_runtime()?.handle().clone()));
            if let Some(prefix) = redis_prefix {
                let mut opts = core::sync::SyncOptions::new(project.clone().unwrap_or_default());
                opts.redis_prefix = prefix;
                b = b.sync_options(opts);
            }
            if let Some(p) = project {
                b = b.project(p);
            }
            if let Some(p) = bundle {
                b = b.bundle(p);
            }
            if let Some(p) = prompts_dir {
                b = b.prompts_dir(p);
            }
            if let Some(s) = server {
                b = b.server(s);
            }
            if let Some(k) = api_key {
                b = b.api_key(k);
            }
            if let Some(r) = redis {
                b = b.redis(r);
            }
            if let Some(d) = cache_dir {
                b = b.cache_dir(d);
            }
            if let Some(t) = telemetry {
                b = b.telemetry(t);
            }
            if let Some(e) = export {
                b = b.telemetry_export(e);
            }
            for ep in endpoints {
                b = b.provider(ep);
            }
            if let Some(p) = prices.filter(|p| !p.is_none()) {
                for price in prices_arg(p)? {
                    b = b.price(price);
                }
            }
            b = b.call_options(call_defaults.clone());
            // With live sources and `startup_wait`, this blocks: other
            // Python threads run meanwhile.
            let inner = detached(py, || b.build())?;
            Ok(Client {
                inner,
                cache: Mutex::new(PromptCache {
                    snapshot: None,
                    prompts: None,
                }),
                call_defaults,
            })
        })
    }

    /// The prompt `name` under `label`, or at `version` (the label is then
    /// not used), with an optional inline fallback.
    #[pyo3(
        signature = (name, label=None, version=None, fallback=None),
        text_signature = "($self, name, label='production', version=None, fallback=None)"
    )]
    fn get<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyString>,
        label: Option<&Bound<'py, PyString>>,
        version: Option<u32>,
        fallback: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Prompt>> {
        let fallback = fallback.filter(|f| !f.is_none());
        // The cache key: the name alone for the default lookup, else
        // (name, label, version).
        let key = if fallback.is_some() {
            None
        } else if label.is_none() && version.is_none() {
            Some(name.clone().into_any())
        } else {
            Some(
                PyTuple::new(
                    py,
                    [
                        name.clone().into_any(),
                        label.into_pyobject(py)?,
                        version.into_pyobject(py)?,
                    ],
                )?
                .into_any(),
            )
        };
        let snap = self.inner.snapshot();
        if let (Some(key), Some(snap)) = (&key, &snap)
            && let Some(hit) = self.cached(py, snap, key)?
        {
            return Ok(hit);
        }
        let inner = guard(py, || {
            let name = py_str(name)?;
            let label = match label {
                Some(l) => py_str(l)?,
                None => Cow::Borrowed(core::DEFAULT_LABEL),
            };
            let fallback = match fallback {
                None => None,
                Some(f) => Some(fallback_arg(f)?),
            };
            // The client's default label is `production`: leaving it to the
            // core spares an allocation on the common path.
            let label = match version {
                Some(_) => None,
                None if label == core::DEFAULT_LABEL => None,
                None => Some(label.into_owned()),
            };
            let opts = core::GetOptions {
                label,
                version,
                fallback,
            };
            Ok(self.inner.get_with(&name, &opts)?)
        })?;
        let from_snapshot = inner.source() != core::Source::Fallback;
        let prompt = Bound::new(py, Prompt::new(inner))?;
        if let (Some(key), Some(snap), true) = (&key, snap, from_snapshot) {
            self.remember(py, snap, key, &prompt)?;
        }
        Ok(prompt)
    }

    /// The live delivery status: "initializing", "valid", "interrupted" or
    /// "off" (a client without live sources: "valid" once data is loaded).
    #[getter]
    fn status(&self) -> &'static str {
        self.inner.status().status.as_str()
    }

    /// The status with its details: `status`, `last_error`, `data_age`
    /// (seconds since a live source last confirmed the data, or None) and
    /// `sources` (per live source: its own status).
    #[getter]
    fn status_detail<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || Ok(status_dict(py, &self.inner.status())?))
    }

    /// Call `callback(status_detail)` whenever the overall status changes
    /// (from a sync thread). An exception in the callback is reported with
    /// `sys.unraisablehook` and goes no further.
    fn on_status(&self, py: Python<'_>, callback: Bound<'_, PyAny>) -> PyResult<()> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "on_status needs a callable, not {}",
                type_name(&callback)
            )));
        }
        let callback: Py<PyAny> = callback.unbind();
        guard(py, || {
            self.inner.on_status(move |status| {
                // Not during interpreter shutdown: the callback is skipped.
                Python::try_attach(|py| {
                    let cb = callback.bind(py);
                    let called = status_dict(py, status).and_then(|d| cb.call1((d,)));
                    if let Err(e) = called {
                        e.write_unraisable(py, Some(cb));
                    }
                });
            });
            Ok(())
        })
    }

    /// (Re)start live sync. The client starts it itself; the `promptops`
    /// package calls this in a forked child (`os.register_at_fork`), where
    /// the parent's sync threads do not exist. No-op without live sources.
    fn start_sync(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let inner = &self.inner;
            detached(py, || inner.start_sync())
        })
    }

    /// Stop live sync (idempotent). Lookups keep serving what is loaded.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        guard(py, || {
            let inner = &self.inner;
            detached(py, || {
                inner.close();
                Ok(())
            })
        })
    }

    #[getter]
    fn project(&self) -> Option<String> {
        match self.inner.project() {
            Some(p) => Some(p.to_string()),
            None => self.inner.snapshot().map(|s| s.data().project.clone()),
        }
    }

    #[getter]
    fn diagnostics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || Ok(diagnostics_list(py, &self.inner.diagnostics())?))
    }

    /// Call `callback(changes)` after every update that changes what a
    /// label serves. An exception in the callback is reported with
    /// `sys.unraisablehook` and goes no further.
    fn on_change(&self, py: Python<'_>, callback: Bound<'_, PyAny>) -> PyResult<()> {
        if !callback.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "on_change needs a callable, not {}",
                type_name(&callback)
            )));
        }
        let callback: Py<PyAny> = callback.unbind();
        guard(py, || {
            self.inner.on_change(move |changes| {
                // Not during interpreter shutdown: the callback is skipped.
                Python::try_attach(|py| {
                    let cb = callback.bind(py);
                    let called = changes_list(py, changes).and_then(|list| cb.call1((list,)));
                    if let Err(e) = called {
                        e.write_unraisable(py, Some(cb));
                    }
                });
            });
            Ok(())
        })
    }

    /// Push a snapshot (JSON text or bytes) into the store, as live sources
    /// do. Returns what the store did.
    fn apply_snapshot<'py>(
        &self,
        py: Python<'py>,
        snapshot: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let bytes: Vec<u8> = if let Ok(s) = snapshot.cast::<PyString>() {
                py_str(s)?.as_bytes().to_vec()
            } else if let Ok(b) = snapshot.cast::<PyBytes>() {
                b.as_bytes().to_vec()
            } else {
                return Err(PyTypeError::new_err(format!(
                    "snapshot must be JSON str or bytes, not {}",
                    type_name(snapshot)
                ))
                .into());
            };
            let inner = &self.inner;
            let out = detached(py, move || {
                let data = core::SnapshotData::from_json(&bytes)?;
                inner.apply(core::Update::Snapshot(data), core::Source::Memory)
            })?;
            let d = PyDict::new(py);
            d.set_item("applied", out.applied)?;
            d.set_item("revision", out.revision)?;
            d.set_item("hash", out.hash())?;
            d.set_item("changes", changes_list(py, &out.changes)?)?;
            d.set_item("diagnostics", diagnostics_list(py, &out.diagnostics)?)?;
            Ok(d)
        })
    }

    /// Route `name` (decision + the prompt rendered for the chosen target),
    /// for callers that make the provider call themselves.
    #[pyo3(signature = (name, vars=None, /, *, route_key=None, label=None, attributes=None, **kwargs))]
    #[allow(clippy::too_many_arguments)]
    fn route(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        vars: Option<&Bound<'_, PyAny>>,
        route_key: Option<String>,
        label: Option<String>,
        attributes: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Decision> {
        guard(py, || {
            let name = py_str(name)?.into_owned();
            let (ctx, _) = context(vars, kwargs)?;
            let opts = core::RouteOptions {
                key: route_key,
                label,
                attributes: attributes_arg(attributes)?,
            };
            let inner = &self.inner;
            let core::Routed {
                decision, rendered, ..
            } = detached(py, || inner.route_with(&name, &ctx, &opts))?;
            Ok(Decision {
                decision,
                rendered: Py::new(py, Rendered::new(rendered))?,
            })
        })
    }

    /// Feed the outcome of a call made for `decision` back (stats, breaker,
    /// telemetry). `target` (a target id) records a fallback the caller
    /// tried instead of the chosen target.
    #[pyo3(signature = (decision, outcome=None, /, *, target=None, attempt=None, **kwargs))]
    fn record(
        &self,
        py: Python<'_>,
        decision: PyRef<'_, Decision>,
        outcome: Option<&Bound<'_, PyAny>>,
        target: Option<String>,
        attempt: Option<u32>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        guard(py, || {
            let mut o = core::Outcome::default();
            if let Some(m) = outcome.filter(|o| !o.is_none()) {
                let m = m.cast::<PyMapping>().map_err(|_| {
                    PyTypeError::new_err(format!("outcome must be a mapping, not {}", type_name(m)))
                })?;
                for item in m.items()?.iter() {
                    let (k, v): (String, Bound<'_, PyAny>) = item.extract()?;
                    outcome_field(&mut o, &k, &v)?;
                }
            }
            if let Some(kw) = kwargs {
                for (k, v) in kw.iter() {
                    let k: String = k.extract()?;
                    outcome_field(&mut o, &k, &v)?;
                }
            }
            let d = &decision.decision;
            let index = match target {
                None => d.target,
                Some(id) => d.policy.target_index(&id).ok_or_else(|| {
                    core::Error::Config(format!("policy `{}` has no target `{id}`", d.policy.id))
                })?,
            };
            self.inner.record_target(d, index, &o, attempt);
            Ok(())
        })
    }

    /// Record a quality score in `[0, 1]` for the decision's target.
    fn record_quality(
        &self,
        py: Python<'_>,
        decision: PyRef<'_, Decision>,
        score: f64,
    ) -> PyResult<()> {
        guard(py, || {
            if !(0.0..=1.0).contains(&score) {
                return Err(
                    PyValueError::new_err(format!("score must be in [0, 1], got {score}")).into(),
                );
            }
            self.inner.record_quality(&decision.decision, score);
            Ok(())
        })
    }

    /// The telemetry metrics in Prometheus text format (telemetry must be
    /// on).
    fn metrics_text(&self, py: Python<'_>) -> PyResult<String> {
        guard(py, || match self.inner.telemetry() {
            Some(t) => Ok(t.prometheus()),
            None => Err(core::Error::Config(
                "telemetry is off: create the client with telemetry=True".into(),
            )
            .into()),
        })
    }

    /// Export telemetry now (upload and OTLP) and wait at most `timeout`
    /// seconds, with the GIL released. `True` when an export round finished
    /// in time; `False` without a background exporter (telemetry off, or
    /// nothing configured to leave the process) or on timeout.
    #[pyo3(signature = (timeout=None), text_signature = "($self, timeout=5.0)")]
    fn flush_telemetry(
        &self,
        py: Python<'_>,
        timeout: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        guard(py, || {
            let timeout = match timeout.filter(|t| !t.is_none()) {
                Some(t) => seconds("timeout", number_arg(t, "timeout")?)?,
                None => std::time::Duration::from_secs(5),
            };
            let inner = &self.inner;
            detached(py, || Ok(inner.flush_telemetry(timeout)))
        })
    }

    /// Wait up to `timeout` seconds (GIL released) for a live source to
    /// deliver data; whether it did.
    #[pyo3(text_signature = "($self, timeout)")]
    fn wait_ready(&self, py: Python<'_>, timeout: &Bound<'_, PyAny>) -> PyResult<bool> {
        guard(py, || {
            let t = number_arg(timeout, "timeout")?;
            let timeout = std::time::Duration::try_from_secs_f64(t).map_err(|_| {
                core::Error::Config(format!(
                    "timeout must be a finite number of seconds >= 0, got {t}"
                ))
            })?;
            let inner = &self.inner;
            detached(py, || Ok(inner.wait_ready(timeout)))
        })
    }

    /// The telemetry counters: events recorded, dropped (queue full, export
    /// buffer full, failed uploads), pending, and the OTLP exporter's
    /// (`None` without OTLP). Raises `ConfigError` when telemetry is off.
    fn telemetry_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || match self.inner.telemetry() {
            Some(t) => Ok(telemetry_stats_dict(py, t, self.inner.otlp_stats())?),
            None => Err(core::Error::Config(
                "telemetry is off: create the client with telemetry=True".into(),
            )
            .into()),
        })
    }

    /// The model catalogue of the current snapshot (the registry's
    /// `promptops models`; empty without one).
    fn models<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        guard(py, || {
            let items = self
                .inner
                .models()
                .iter()
                .map(|m| model_entry_dict(py, m))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyList::new(py, items)?)
        })
    }

    /// Cost in USD with this client's prices (the catalogue's over the
    /// built-in table), `None` for an unknown model.
    fn estimate_cost(
        &self,
        py: Python<'_>,
        model: &str,
        input_tokens: &Bound<'_, PyAny>,
        output_tokens: &Bound<'_, PyAny>,
    ) -> PyResult<Option<f64>> {
        guard(py, || {
            let i = token_arg(input_tokens, "input_tokens")?;
            let o = token_arg(output_tokens, "output_tokens")?;
            Ok(self.inner.effective_pricing().estimate_cost(model, i, o))
        })
    }

    /// The price of `model` this client uses (the catalogue's over the
    /// built-in table); an unknown model raises `UnknownModel`.
    fn model_price<'py>(&self, py: Python<'py>, model: &str) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || {
            let table = self.inner.effective_pricing();
            Ok(price_dict(py, table.require(model)?)?)
        })
    }

    /// Render `name`, route it, call the chosen provider and fail over
    /// (blocking; the GIL is released during the call).
    #[pyo3(signature = (
        name, vars=None, /, *, route_key=None, label=None, attributes=None, stream=None,
        timeout=None, ttft_timeout=None, max_attempts=None, failover_on=None, **kwargs
    ))]
    #[allow(clippy::too_many_arguments)]
    fn complete(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        vars: Option<&Bound<'_, PyAny>>,
        route_key: Option<String>,
        label: Option<String>,
        attributes: Option<&Bound<'_, PyAny>>,
        stream: Option<bool>,
        timeout: Option<f64>,
        ttft_timeout: Option<f64>,
        max_attempts: Option<u32>,
        failover_on: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Completion> {
        guard(py, || {
            let name = py_str(name)?.into_owned();
            let (ctx, _) = context(vars, kwargs)?;
            let args = CallArgs {
                route_key,
                label,
                attributes,
                timeout,
                ttft_timeout,
                max_attempts,
                failover_on,
            };
            let opts = self.complete_options(args, stream)?;
            if tokio::runtime::Handle::try_current().is_ok() {
                return Err(core::Error::Config(
                    "complete() blocks: it cannot run inside a promptops callback; use acomplete()"
                        .into(),
                )
                .into());
            }
            let rt = module_runtime()?;
            let inner = &self.inner;
            let c = detached(py, || rt.block_on(inner.complete_with(&name, &ctx, &opts)))?;
            Ok(Completion { inner: c })
        })
    }

    /// `complete` as a stream of text deltas (an iterator; see
    /// `CompletionStream`). The call starts at once on the module's runtime.
    #[pyo3(signature = (
        name, vars=None, /, *, route_key=None, label=None, attributes=None,
        timeout=None, ttft_timeout=None, max_attempts=None, failover_on=None, **kwargs
    ))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        vars: Option<&Bound<'_, PyAny>>,
        route_key: Option<String>,
        label: Option<String>,
        attributes: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        ttft_timeout: Option<f64>,
        max_attempts: Option<u32>,
        failover_on: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<CompletionStream> {
        guard(py, || {
            let name = py_str(name)?.into_owned();
            let (ctx, _) = context(vars, kwargs)?;
            let args = CallArgs {
                route_key,
                label,
                attributes,
                timeout,
                ttft_timeout,
                max_attempts,
                failover_on,
            };
            let mut opts = self.complete_options(args, Some(true))?;
            let (tx, rx) = std::sync::mpsc::channel::<StreamEvent>();
            let chunk_tx = Mutex::new(tx.clone());
            opts.on_chunk = Some(Arc::new(move |s: &str| {
                let tx = chunk_tx.lock().unwrap_or_else(|e| e.into_inner());
                let _ = tx.send(StreamEvent::Chunk(s.to_string()));
            }));
            let rt = module_runtime()?;
            let client = self.inner.clone();
            let task = rt.spawn(async move {
                let r = call_guarded(client, name, ctx, opts).await;
                let _ = tx.send(StreamEvent::Done(Box::new(r)));
            });
            Ok(CompletionStream {
                state: Mutex::new(StreamState {
                    rx,
                    end: None,
                    reported: false,
                }),
                abort: task.abort_handle(),
            })
        })
    }

    /// Start `complete` on the module's runtime and return at once; from a
    /// runtime thread, `on_chunk(text)` is called per streamed delta (with
    /// `stream=True`) and `on_done(completion, error)` once at the end
    /// (not after `cancel()`). `promptops.Client.acomplete`/`astream` wrap
    /// this for asyncio.
    #[pyo3(signature = (
        name, vars, on_done, on_chunk=None, /, *, route_key=None, label=None, attributes=None,
        stream=None, timeout=None, ttft_timeout=None, max_attempts=None, failover_on=None,
        **kwargs
    ))]
    #[allow(clippy::too_many_arguments)]
    fn spawn_complete(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyString>,
        vars: Option<&Bound<'_, PyAny>>,
        on_done: Bound<'_, PyAny>,
        on_chunk: Option<Bound<'_, PyAny>>,
        route_key: Option<String>,
        label: Option<String>,
        attributes: Option<&Bound<'_, PyAny>>,
        stream: Option<bool>,
        timeout: Option<f64>,
        ttft_timeout: Option<f64>,
        max_attempts: Option<u32>,
        failover_on: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<CallHandle> {
        guard(py, || {
            if !on_done.is_callable() {
                return Err(PyTypeError::new_err("on_done must be callable").into());
            }
            let name = py_str(name)?.into_owned();
            let (ctx, _) = context(vars, kwargs)?;
            let args = CallArgs {
                route_key,
                label,
                attributes,
                timeout,
                ttft_timeout,
                max_attempts,
                failover_on,
            };
            let on_chunk = on_chunk.filter(|c| !c.is_none());
            let stream = if on_chunk.is_some() {
                Some(true)
            } else {
                stream
            };
            let mut opts = self.complete_options(args, stream)?;
            if let Some(cb) = on_chunk {
                if !cb.is_callable() {
                    return Err(PyTypeError::new_err("on_chunk must be callable").into());
                }
                let cb: Py<PyAny> = cb.unbind();
                opts.on_chunk = Some(Arc::new(move |s: &str| {
                    Python::try_attach(|py| {
                        let cb = cb.bind(py);
                        if let Err(e) = cb.call1((s,)) {
                            e.write_unraisable(py, Some(cb));
                        }
                    });
                }));
            }
            let on_done: Py<PyAny> = on_done.unbind();
            let rt = module_runtime()?;
            let client = self.inner.clone();
            let task = rt.spawn(async move {
                let r = call_guarded(client, name, ctx, opts).await;
                Python::try_attach(|py| {
                    let cb = on_done.bind(py);
                    let args = match r {
                        Ok(c) => {
                            Py::new(py, Completion { inner: c }).map(|c| (c.into_any(), py.None()))
                        }
                        Err(f) => Ok((py.None(), f.to_py(py).into_value(py).into_any())),
                    };
                    if let Err(e) = args.and_then(|a| cb.call1(a)) {
                        e.write_unraisable(py, Some(cb));
                    }
                });
            });
            Ok(CallHandle {
                abort: task.abort_handle(),
            })
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<promptops.Client project={:?} status={:?}>",
            self.project().unwrap_or_default(),
            self.status()
        )
    }
}

/// A sync status as a dict: `status`, `last_error`, `data_age` (seconds,
/// or None), `sources`.
fn status_dict<'py>(py: Python<'py>, s: &core::sync::SyncStatus) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("status", s.status.as_str())?;
    d.set_item("last_error", s.last_error.as_deref())?;
    d.set_item("data_age", s.data_age().map(|a| a.as_secs_f64()))?;
    let sources = PyDict::new(py);
    for (name, st) in &s.sources {
        sources.set_item(name, st.as_str())?;
    }
    d.set_item("sources", sources)?;
    Ok(d)
}

fn fallback_arg(f: &Bound<'_, PyAny>) -> Res<core::Fallback> {
    if let Ok(s) = f.cast::<PyString>() {
        return Ok(core::Fallback::Text(py_str(s)?.into_owned()));
    }
    if f.cast::<PySequence>().is_ok() {
        let msgs = messages_arg(f)?;
        if msgs.iter().any(|m| m.name.is_some()) {
            return Err(
                PyTypeError::new_err("fallback messages take `role` and `content` only").into(),
            );
        }
        return Ok(core::Fallback::Chat(
            msgs.into_iter().map(|m| (m.role, m.content)).collect(),
        ));
    }
    Err(PyTypeError::new_err(format!(
        "fallback must be a str (text) or a list of {{\"role\", \"content\"}} dicts (chat), not {}",
        type_name(f)
    ))
    .into())
}

/// Whether a render runs with the GIL held or released.
///
/// Releasing the GIL lets other Python threads run during a render, but on
/// CPython every release and re-take with another thread waiting is a
/// hand-over through a condition variable (a futex wake-up and a context
/// switch, several microseconds on a VM): measured on the shared workload's
/// T2 (~6 µs), two threads rendering at once with the GIL released around
/// each render got *less* done than one thread (0.7–0.85×), and about the
/// same with it held (0.9–1×, like every other library holding it), while
/// renders of a few hundred microseconds scale with it released (see
/// BENCHMARKS-python.md). So short renders keep the GIL and long ones
/// release it, decided by a bound on the work:
/// - templates in the core's fast-path subset (loops only over the data
///   passed in): at most `INLINE_FAST_TEMPLATE` bytes of template, whose
///   loops can repeat their text once per value passed in, at most
///   `INLINE_FAST_VALUES` values and `INLINE_FAST_BYTES` bytes of variable
///   text: at most ~100 µs of render even in the worst case;
/// - other templates (minijinja's VM: ranges, macros, includes, …) only
///   without block tags and within `INLINE_PLAIN_BYTES` of template plus
///   variable text, about a microsecond.
const INLINE_FAST_TEMPLATE: usize = 4096;
const INLINE_FAST_VALUES: usize = 128;
const INLINE_FAST_BYTES: usize = 16 * 1024;
const INLINE_PLAIN_BYTES: usize = 2048;

/// Whether `t` has a `{%` (block tag): `%` is rare in prompt text, so one
/// vectorised scan for it settles most templates.
fn has_block_tag(t: &str) -> bool {
    let b = t.as_bytes();
    memchr::memchr_iter(b'%', b).any(|i| i > 0 && b[i - 1] == b'{')
}

/// How a prompt's renders may keep the GIL (see `INLINE_FAST_TEMPLATE`).
#[derive(Debug, Clone, Copy)]
enum Inline {
    /// Fast-path templates (at most `INLINE_FAST_TEMPLATE` bytes).
    Fast,
    /// Plain templates (no block tags) of this many bytes in all.
    Plain(usize),
    /// Always released.
    Never,
}

impl Inline {
    /// Computed once per `Prompt` object (prompts are immutable).
    fn of(p: &core::Prompt) -> Inline {
        let data = p.data();
        let variant = p.variant_name().and_then(|v| data.variants.get(v));
        let texts: Vec<&str> = match (
            variant.and_then(|v| v.template.as_deref()),
            variant.and_then(|v| v.messages.as_deref()),
        ) {
            (Some(t), _) => vec![t],
            (None, Some(ms)) => ms.iter().map(|m| m.content.as_str()).collect(),
            (None, None) => match &data.body {
                core::Body::Text { template } => vec![template.as_str()],
                core::Body::Chat { messages } => {
                    messages.iter().map(|m| m.content.as_str()).collect()
                }
            },
        };
        let total: usize = texts.iter().map(|t| t.len()).sum();
        if p.has_fast_path() && total <= INLINE_FAST_TEMPLATE {
            Inline::Fast
        } else if total <= INLINE_PLAIN_BYTES && !texts.iter().any(|t| has_block_tag(t)) {
            Inline::Plain(total)
        } else {
            Inline::Never
        }
    }

    /// Whether a render of variables of `var_bytes` bytes of text in
    /// `values` values keeps the GIL.
    #[inline]
    fn keeps_gil(self, var_bytes: usize, values: usize) -> bool {
        match self {
            Inline::Fast => var_bytes <= INLINE_FAST_BYTES && values <= INLINE_FAST_VALUES,
            Inline::Plain(t) => t + var_bytes <= INLINE_PLAIN_BYTES,
            Inline::Never => false,
        }
    }
}

/// A prompt ready to render (one version of one prompt).
#[pyclass(module = "promptops._lowlevel", frozen)]
struct Prompt {
    inner: core::Prompt,
    inline: Inline,
}

impl Prompt {
    fn new(inner: core::Prompt) -> Self {
        let inline = Inline::of(&inner);
        Prompt { inner, inline }
    }
}

#[pymethods]
impl Prompt {
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    #[getter]
    fn version(&self) -> u32 {
        self.inner.version()
    }

    #[getter]
    fn label(&self) -> Option<&str> {
        self.inner.label()
    }

    #[getter]
    fn source(&self) -> &'static str {
        self.inner.source().as_str()
    }

    /// The revision of the snapshot it came from (0 for local data).
    #[getter]
    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind().as_str()
    }

    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || config_dict(py, self.inner.config()))
    }

    #[getter]
    fn variants(&self) -> Vec<&str> {
        self.inner.variants().collect()
    }

    #[getter]
    fn variant_name(&self) -> Option<&str> {
        self.inner.variant_name()
    }

    /// The same prompt with variant `name` selected.
    fn variant(&self, py: Python<'_>, name: &str) -> PyResult<Prompt> {
        guard(py, || Ok(Prompt::new(self.inner.variant(name)?)))
    }

    /// The variant meant for `model` (or the prompt itself).
    fn for_model(&self, py: Python<'_>, model: &str) -> PyResult<Prompt> {
        guard(py, || Ok(Prompt::new(self.inner.for_model(model))))
    }

    /// Render with `vars` and/or keyword arguments (keywords win).
    #[pyo3(signature = (vars=None, /, **kwargs))]
    fn render(
        &self,
        py: Python<'_>,
        vars: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Rendered> {
        guard(py, || {
            let (ctx, work) = context(vars, kwargs)?;
            let prompt = &self.inner;
            let inner = if self.inline.keeps_gil(work.bytes, work.values) {
                prompt.render(&ctx)?
            } else {
                // The copy is dropped with the GIL released too.
                detached(py, move || prompt.render(&ctx))?
            };
            Ok(Rendered::new(inner))
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<promptops.Prompt {} v{} label={} source={}>",
            self.inner.name(),
            self.inner.version(),
            self.inner.label().unwrap_or("-"),
            self.inner.source().as_str()
        )
    }
}

/// The result of rendering a prompt.
#[pyclass(module = "promptops._lowlevel", frozen)]
struct Rendered {
    inner: core::Rendered,
    /// The text as a Python str, made on first access. (A std `OnceLock`:
    /// its initialiser never releases the GIL, so no thread can wait on it
    /// while holding the GIL another needs.)
    text: OnceLock<Py<PyString>>,
    tokens: OnceLock<core::TokenCount>,
}

impl Rendered {
    fn new(inner: core::Rendered) -> Self {
        Rendered {
            inner,
            text: OnceLock::new(),
            tokens: OnceLock::new(),
        }
    }

    fn tokens(&self, py: Python<'_>) -> PyResult<core::TokenCount> {
        if let Some(t) = self.tokens.get() {
            return Ok(*t);
        }
        let inner = &self.inner;
        let t = guard(py, || detached(py, || Ok(inner.input_tokens())))?;
        Ok(*self.tokens.get_or_init(|| t))
    }
}

#[pymethods]
impl Rendered {
    #[getter]
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        let Some(t) = self.inner.text.as_deref() else {
            return Ok(None);
        };
        if let Some(s) = self.text.get() {
            return Ok(Some(s.bind(py).clone()));
        }
        let s = PyString::new(py, t).unbind();
        Ok(Some(self.text.get_or_init(|| s).bind(py).clone()))
    }

    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        let Some(ms) = &self.inner.messages else {
            return Ok(None);
        };
        let list = PyList::empty(py);
        for m in ms {
            list.append(message_dict(py, m)?)?;
        }
        Ok(Some(list))
    }

    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(py, || config_dict(py, &self.inner.config))
    }

    #[getter]
    fn model(&self) -> Option<&str> {
        self.inner.model()
    }

    #[getter]
    fn input_tokens(&self, py: Python<'_>) -> PyResult<usize> {
        Ok(self.tokens(py)?.count)
    }

    #[getter]
    fn tokens_exact(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.tokens(py)?.exact)
    }

    #[getter]
    fn tokens_encoding(&self, py: Python<'_>) -> PyResult<&'static str> {
        Ok(self.tokens(py)?.encoding.name())
    }

    #[getter]
    fn estimated_cost_usd(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        self.tokens(py)?;
        Ok(self.inner.estimated_cost_usd())
    }

    #[getter]
    fn prompt(&self) -> &str {
        &self.inner.prompt.name
    }

    #[getter]
    fn version(&self) -> Option<u32> {
        self.inner.prompt.version
    }

    #[getter]
    fn label(&self) -> Option<&str> {
        self.inner.label.as_deref()
    }

    #[getter]
    fn variant(&self) -> Option<&str> {
        self.inner.variant.as_deref()
    }

    #[getter]
    fn source(&self) -> &'static str {
        self.inner.source.as_str()
    }

    /// The text, or the messages as `role: content` lines.
    fn __str__(&self) -> String {
        self.inner.as_text()
    }

    fn __repr__(&self) -> String {
        format!(
            "<promptops.Rendered {} v{} {}>",
            self.inner.prompt.name,
            self.inner.prompt.version.unwrap_or(0),
            if self.inner.text.is_some() {
                "text"
            } else {
                "chat"
            }
        )
    }
}

// ---------------------------------------------------------------------------
// Functions
// ---------------------------------------------------------------------------

/// Tokens of a text, or billed input tokens of a chat message list.
#[pyfunction]
#[pyo3(signature = (text_or_messages, model="gpt-4o"))]
fn count_tokens(
    py: Python<'_>,
    text_or_messages: &Bound<'_, PyAny>,
    model: &str,
) -> PyResult<usize> {
    guard(py, || Ok(count(py, text_or_messages, model)?.count))
}

/// Like `count_tokens`, with the encoding and whether the count is exact.
#[pyfunction]
#[pyo3(signature = (text_or_messages, model="gpt-4o"))]
fn count_tokens_detail<'py>(
    py: Python<'py>,
    text_or_messages: &Bound<'py, PyAny>,
    model: &str,
) -> PyResult<Bound<'py, PyDict>> {
    guard(py, || {
        let t = count(py, text_or_messages, model)?;
        Ok(token_detail(py, &t)?)
    })
}

/// How `model`'s tokens are counted: encoding, exact, factor.
#[pyfunction]
fn tokenizer_for_model<'py>(py: Python<'py>, model: &str) -> PyResult<Bound<'py, PyDict>> {
    guard(py, || {
        let t = core::tokens::tokenizer_for_model(model);
        let d = PyDict::new(py);
        d.set_item("encoding", t.encoding.name())?;
        d.set_item("exact", t.exact)?;
        d.set_item("factor", t.factor)?;
        Ok(d)
    })
}

static PRICING: LazyLock<core::PricingTable> = LazyLock::new(core::PricingTable::builtin);

fn token_arg(obj: &Bound<'_, PyAny>, field: &str) -> Res<u64> {
    if !obj.is_instance_of::<PyInt>() || obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{field} must be an int, not {}",
            type_name(obj)
        ))
        .into());
    }
    obj.extract::<u64>().map_err(|_| {
        core::Error::Validation {
            prompt: "estimate_cost".into(),
            field: field.into(),
            message: format!("must be an integer from 0 to {}", u64::MAX),
        }
        .into()
    })
}

/// Cost in USD of a call (built-in price table), `None` for an unknown model.
#[pyfunction]
fn estimate_cost(
    py: Python<'_>,
    model: &str,
    input_tokens: &Bound<'_, PyAny>,
    output_tokens: &Bound<'_, PyAny>,
) -> PyResult<Option<f64>> {
    guard(py, || {
        let i = token_arg(input_tokens, "input_tokens")?;
        let o = token_arg(output_tokens, "output_tokens")?;
        Ok(PRICING.estimate_cost(model, i, o))
    })
}

/// The built-in price of `model` (USD per million tokens, context window);
/// an unknown model raises `UnknownModel`.
#[pyfunction]
fn model_price<'py>(py: Python<'py>, model: &str) -> PyResult<Bound<'py, PyDict>> {
    guard(py, || Ok(price_dict(py, PRICING.require(model)?)?))
}

// ---------------------------------------------------------------------------
// Routing and telemetry
// ---------------------------------------------------------------------------

/// Telemetry settings by default, exports saying they come from Python.
fn python_telemetry() -> core::TelemetryConfig {
    core::TelemetryConfig {
        sdk_language: core::SdkLanguage::Python,
        ..Default::default()
    }
}

/// `telemetry=`: `True`/`False`, or a dict of `TelemetryConfig` options.
fn telemetry_arg(t: &Bound<'_, PyAny>) -> Res<Option<core::TelemetryConfig>> {
    if t.is_none() {
        return Ok(None);
    }
    if let Ok(b) = t.cast::<PyBool>() {
        return Ok(b.is_true().then(python_telemetry));
    }
    let Ok(d) = t.cast::<PyDict>() else {
        return Err(PyTypeError::new_err(format!(
            "telemetry must be a bool or a dict, not {}",
            type_name(t)
        ))
        .into());
    };
    let mut cfg = python_telemetry();
    for (k, v) in d.iter() {
        let k: String = k.extract()?;
        match k.as_str() {
            "capacity" => cfg.capacity = v.extract()?,
            "export_capacity" => cfg.export_capacity = v.extract()?,
            "keep_events" => cfg.keep_events = v.extract()?,
            "project" => cfg.project = v.extract()?,
            // Explicit: on (the basic masker) or off (events leave as
            // recorded). Absent: masked when telemetry leaves the process.
            "mask_pii" => cfg = cfg.mask_pii(v.extract::<bool>()?),
            _ => {
                return Err(core::Error::Config(format!(
                    "unknown telemetry option `{k}` (capacity, export_capacity, keep_events, project, mask_pii)"
                ))
                .into());
            }
        }
    }
    Ok(Some(cfg))
}

/// The telemetry export keywords of `Client(...)` (`None`: not given).
struct ExportArgs<'a, 'py> {
    upload: Option<bool>,
    upload_url: Option<String>,
    interval: Option<&'a Bound<'py, PyAny>>,
    max_batch: Option<&'a Bound<'py, PyAny>>,
    flush_timeout: Option<&'a Bound<'py, PyAny>>,
    otlp: Option<&'a Bound<'py, PyAny>>,
}

impl ExportArgs<'_, '_> {
    /// The first keyword given (they all need telemetry on).
    fn first_given(&self) -> Option<&'static str> {
        [
            ("telemetry_upload", self.upload.is_some()),
            ("telemetry_upload_url", self.upload_url.is_some()),
            ("telemetry_interval", self.interval.is_some()),
            ("telemetry_max_batch", self.max_batch.is_some()),
            ("telemetry_flush_timeout", self.flush_timeout.is_some()),
            ("otlp", self.otlp.is_some()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }

    /// The core's `ExportOptions` (its defaults for what is not given);
    /// `None` when nothing is given. The core checks the values at build.
    fn to_core(&self) -> Res<Option<core::export::ExportOptions>> {
        self.first_given().map(|_| self.options()).transpose()
    }

    fn options(&self) -> Res<core::export::ExportOptions> {
        let mut o = core::export::ExportOptions::default();
        if let Some(u) = self.upload {
            o.upload = u;
        }
        o.upload_url.clone_from(&self.upload_url);
        if let Some(v) = self.interval {
            o.interval = seconds("telemetry_interval", number_arg(v, "telemetry_interval")?)?;
        }
        if let Some(v) = self.max_batch {
            o.max_batch = count_arg(v, "telemetry_max_batch")?;
        }
        if let Some(v) = self.flush_timeout {
            o.flush_timeout = seconds(
                "telemetry_flush_timeout",
                number_arg(v, "telemetry_flush_timeout")?,
            )?;
        }
        if let Some(v) = self.otlp {
            o.otlp = Some(otlp_arg(v)?);
        }
        Ok(o)
    }
}

/// A number (int or float, not bool).
fn number_arg(v: &Bound<'_, PyAny>, what: &str) -> Res<f64> {
    if v.is_instance_of::<PyBool>()
        || !(v.is_instance_of::<PyInt>() || v.is_instance_of::<PyFloat>())
    {
        return Err(
            PyTypeError::new_err(format!("{what} must be a number, not {}", type_name(v))).into(),
        );
    }
    Ok(v.extract::<f64>()?)
}

/// A count >= 1 (an int, not bool).
fn count_arg(v: &Bound<'_, PyAny>, what: &str) -> Res<usize> {
    if v.is_instance_of::<PyBool>() || !v.is_instance_of::<PyInt>() {
        return Err(
            PyTypeError::new_err(format!("{what} must be an int, not {}", type_name(v))).into(),
        );
    }
    match v.extract::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(core::Error::Config(format!("{what} must be an int >= 1, got {v}")).into()),
    }
}

fn bool_arg(v: &Bound<'_, PyAny>, what: &str) -> Res<bool> {
    match v.cast::<PyBool>() {
        Ok(b) => Ok(b.is_true()),
        Err(_) => {
            Err(PyTypeError::new_err(format!("{what} must be a bool, not {}", type_name(v))).into())
        }
    }
}

/// `otlp=`: the collector's base URL, or a dict of `OtlpOptions`.
fn otlp_arg(v: &Bound<'_, PyAny>) -> Res<core::export::otlp::OtlpConfig> {
    use core::export::otlp::OtlpConfig;
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(OtlpConfig::new(py_str(s)?.into_owned()));
    }
    let m = v.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "otlp must be the collector's URL (str) or a dict of OTLP options, not {}",
            type_name(v)
        ))
    })?;
    let mut cfg: Option<OtlpConfig> = None;
    let mut rest = Vec::new();
    for item in m.items()?.iter() {
        let (k, v): (String, Bound<'_, PyAny>) = item.extract()?;
        if v.is_none() {
            continue;
        }
        if k == "endpoint" {
            cfg = Some(OtlpConfig::new(
                any_str(&v, "otlp['endpoint']")?.into_owned(),
            ));
        } else {
            rest.push((k, v));
        }
    }
    let Some(mut cfg) = cfg else {
        return Err(core::Error::Config(
            "otlp needs an 'endpoint' (the collector's base URL, e.g. http://127.0.0.1:4318)"
                .into(),
        )
        .into());
    };
    for (k, v) in rest {
        let field = format!("otlp['{k}']");
        match k.as_str() {
            "headers" => {
                let hm = v.cast::<PyMapping>().map_err(|_| {
                    PyTypeError::new_err(format!(
                        "{field} must be a dict of str to str, not {}",
                        type_name(&v)
                    ))
                })?;
                for h in hm.items()?.iter() {
                    let (hk, hv): (String, Bound<'_, PyAny>) = h.extract()?;
                    let hv = any_str(&hv, &format!("{field}[{hk:?}]"))?.into_owned();
                    cfg = cfg.header(hk, hv);
                }
            }
            "service_name" => cfg.service_name = any_str(&v, &field)?.into_owned(),
            "timeout" => cfg.timeout = seconds(&field, number_arg(&v, &field)?)?,
            "max_spans" => cfg.max_spans = count_arg(&v, &field)?,
            "max_spans_per_request" => cfg.max_spans_per_request = count_arg(&v, &field)?,
            "max_series" => cfg.max_series = count_arg(&v, &field)?,
            "metrics" => cfg.metrics = bool_arg(&v, &field)?,
            "traces" => cfg.traces = bool_arg(&v, &field)?,
            _ => {
                return Err(core::Error::Config(format!(
                    "unknown otlp option `{k}` (endpoint, headers, service_name, timeout, max_spans, max_spans_per_request, max_series, metrics, traces)"
                ))
                .into());
            }
        }
    }
    Ok(cfg)
}

/// A price as the `ModelPrice` dict.
fn price_dict<'py>(py: Python<'py>, p: &core::ModelPrice) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("provider", &p.provider)?;
    d.set_item("model", &p.model)?;
    d.set_item("input_per_mtok", p.input_per_mtok)?;
    d.set_item("output_per_mtok", p.output_per_mtok)?;
    d.set_item("cached_input_per_mtok", p.cached_input_per_mtok)?;
    d.set_item("context_window", p.context_window)?;
    Ok(d)
}

/// A catalogue entry as the `ModelEntry` dict (every key present).
fn model_entry_dict<'py>(py: Python<'py>, m: &core::ModelEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("model", &m.model)?;
    d.set_item("provider", &m.provider)?;
    d.set_item("context_window", m.context_window)?;
    d.set_item("max_output_tokens", m.max_output_tokens)?;
    d.set_item("input_per_mtok", m.input_per_mtok)?;
    d.set_item("output_per_mtok", m.output_per_mtok)?;
    d.set_item("cached_input_per_mtok", m.cached_input_per_mtok)?;
    d.set_item("enabled", m.enabled)?;
    d.set_item("base_url", &m.base_url)?;
    let h = PyDict::new(py);
    h.set_item("status", m.health.status.as_str())?;
    h.set_item("checked_at", &m.health.checked_at)?;
    h.set_item("error", &m.health.error)?;
    d.set_item("health", h)?;
    Ok(d)
}

/// The recorder's counters and the OTLP exporter's, as `TelemetryStats`.
fn telemetry_stats_dict<'py>(
    py: Python<'py>,
    t: &core::Telemetry,
    otlp: Option<core::export::otlp::OtlpStats>,
) -> PyResult<Bound<'py, PyDict>> {
    let c = t.counters();
    let d = PyDict::new(py);
    d.set_item("recorded", c.recorded)?;
    d.set_item("dropped_queue_full", c.dropped_queue_full)?;
    d.set_item("dropped_export_full", c.dropped_export_full)?;
    d.set_item("dropped_upload_failed", c.dropped_upload_failed)?;
    d.set_item("pending", t.pending())?;
    match otlp {
        Some(o) => {
            let od = PyDict::new(py);
            od.set_item("spans_exported", o.spans_exported)?;
            od.set_item("spans_dropped", o.spans_dropped)?;
            od.set_item("spans_failed", o.spans_failed)?;
            od.set_item("metric_exports", o.metric_exports)?;
            od.set_item("metric_exports_failed", o.metric_exports_failed)?;
            od.set_item("dropped_points", o.dropped_points)?;
            d.set_item("otlp", od)?;
        }
        None => d.set_item("otlp", py.None())?,
    }
    Ok(d)
}

/// Set one `Outcome` field from a Python value (`None` leaves it unset).
fn outcome_field(o: &mut core::Outcome, k: &str, v: &Bound<'_, PyAny>) -> Res<()> {
    if v.is_none() {
        return Ok(());
    }
    let num = |v: &Bound<'_, PyAny>| -> PyResult<f64> {
        if v.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "{k} must be a number, not bool"
            )));
        }
        v.extract::<f64>()
    };
    fn int<'py, T: FromPyObjectOwned<'py>>(k: &str, v: &Bound<'py, PyAny>) -> PyResult<T> {
        if v.is_instance_of::<PyBool>() {
            return Err(PyTypeError::new_err(format!(
                "{k} must be an int, not bool"
            )));
        }
        v.extract::<T>().map_err(Into::into)
    }
    match k {
        "error" => {
            let s: String = v.extract()?;
            o.error = Some(core::route::FailureClass::parse(&s).ok_or_else(|| {
                PyValueError::new_err(format!(
                    "error must be one of connect, timeout, rate_limited, server_error, malformed_response, client_error; got {s:?}"
                ))
            })?);
        }
        "status" => o.status = Some(int(k, v)?),
        "retry_after_ms" => o.retry_after_ms = Some(int(k, v)?),
        "latency_ms" => o.latency_ms = Some(num(v)?),
        "ttft_ms" => o.ttft_ms = Some(num(v)?),
        "input_tokens" => o.input_tokens = Some(int(k, v)?),
        "output_tokens" => o.output_tokens = Some(int(k, v)?),
        "cost_usd" => o.cost_usd = Some(num(v)?),
        "quality" => o.quality = Some(num(v)?),
        _ => {
            return Err(PyTypeError::new_err(format!(
                "unknown outcome field `{k}` (error, status, retry_after_ms, latency_ms, ttft_ms, input_tokens, output_tokens, cost_usd, quality)"
            ))
            .into());
        }
    }
    Ok(())
}

fn target_dict<'py>(py: Python<'py>, t: &core::Target) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", &t.id)?;
    d.set_item("provider", &t.provider)?;
    d.set_item("model", &t.model)?;
    d.set_item("variant", &t.variant)?;
    d.set_item("version", t.version)?;
    Ok(d)
}

/// A routing decision with the prompt rendered for the chosen target
/// (`Client.route`).
#[pyclass(module = "promptops._lowlevel", frozen)]
struct Decision {
    decision: core::Decision,
    /// The prompt rendered for the chosen target (moved here from the
    /// core's `Routed`, not copied).
    rendered: Py<Rendered>,
}

impl Decision {
    fn rendered_ref(&self) -> &core::Rendered {
        &self.rendered.get().inner
    }
}

#[pymethods]
impl Decision {
    /// The chosen target.
    #[getter]
    fn target<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        target_dict(py, self.decision.target())
    }

    /// The targets to try after the chosen one, in order (failover).
    #[getter]
    fn fallbacks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .decision
            .fallbacks()
            .map(|t| target_dict(py, t))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    #[getter]
    fn policy_id(&self) -> &str {
        self.decision.policy_id()
    }

    #[getter]
    fn strategy(&self) -> &'static str {
        self.decision.strategy.as_str()
    }

    #[getter]
    fn bucket(&self) -> Option<u32> {
        self.decision.bucket
    }

    #[getter]
    fn reason(&self) -> &str {
        &self.decision.reason
    }

    /// Targets passed over, with why (`{"target": id, "reason": ...}`).
    #[getter]
    fn skipped<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .decision
            .skipped
            .iter()
            .map(|s| {
                let d = PyDict::new(py);
                d.set_item("target", &s.target)?;
                d.set_item("reason", &s.reason)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    /// The chosen target's cost/size estimate, when estimates were made.
    #[getter]
    fn estimate<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let Some(e) = &self.decision.estimate else {
            return Ok(None);
        };
        let d = PyDict::new(py);
        d.set_item("input_tokens", e.input_tokens)?;
        d.set_item("exact", e.exact)?;
        d.set_item("output_tokens", e.output_tokens)?;
        d.set_item("predicted_cost_usd", e.predicted_cost_usd)?;
        d.set_item("context_window", e.context_window)?;
        d.set_item("fits", e.fits)?;
        Ok(Some(d))
    }

    #[getter]
    fn prompt(&self) -> Option<&str> {
        self.decision.prompt.as_deref()
    }

    #[getter]
    fn version(&self) -> Option<u32> {
        self.decision.version
    }

    #[getter]
    fn label(&self) -> Option<&str> {
        self.decision.label.as_deref()
    }

    #[getter]
    fn variant(&self) -> Option<&str> {
        self.decision.variant.as_deref()
    }

    /// The prompt rendered for the chosen target.
    #[getter]
    fn rendered(&self, py: Python<'_>) -> Py<Rendered> {
        self.rendered.clone_ref(py)
    }

    /// The rendered text (text prompts), else `None`.
    #[getter]
    fn text(&self) -> Option<&str> {
        self.rendered_ref().text.as_deref()
    }

    /// The rendered messages; a text prompt becomes one `user` message
    /// (as the core's `Routed::messages`).
    #[getter]
    fn messages<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let r = self.rendered_ref();
        let items = match (&r.messages, &r.text) {
            (Some(ms), _) => ms
                .iter()
                .map(|m| message_dict(py, m))
                .collect::<PyResult<Vec<_>>>()?,
            (None, Some(t)) => {
                let d = PyDict::new(py);
                d.set_item(pyo3::intern!(py, "role"), "user")?;
                d.set_item(pyo3::intern!(py, "content"), t)?;
                vec![d]
            }
            (None, None) => Vec::new(),
        };
        PyList::new(py, items)
    }

    fn __repr__(&self) -> String {
        let t = self.decision.target();
        format!(
            "<promptops.Decision policy={} target={} ({}/{}) reason={:?}>",
            self.decision.policy_id(),
            t.id,
            t.provider,
            t.model,
            self.decision.reason
        )
    }
}

// ---------------------------------------------------------------------------
// Provider calls: complete, stream
// ---------------------------------------------------------------------------

/// The module's tokio runtime (live sync of every client, provider calls),
/// and the id of the process that built it. A forked child (gunicorn/uvicorn
/// workers) has none of the parent's runtime threads: it builds its own on
/// first use, and the parent's is leaked there (dropping it would wait on
/// threads that do not exist). Runtimes are leaked on purpose: one per
/// process, alive until exit.
static MODULE_RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);

fn module_runtime() -> core::Result<&'static tokio::runtime::Runtime> {
    let pid = std::process::id();
    let mut slot = MODULE_RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((built_by, rt)) = *slot
        && built_by == pid
    {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("promptops")
        .enable_all()
        .build()
        .map_err(|e| core::Error::Config(format!("cannot start the promptops runtime: {e}")))?;
    let rt: &'static tokio::runtime::Runtime = Box::leak(Box::new(rt));
    *slot = Some((pid, rt));
    Ok(rt)
}

/// Seconds (a Python number) as a `Duration`.
fn seconds(what: &str, v: f64) -> Res<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            core::Error::Config(format!(
                "{what} must be a finite number of seconds > 0, got {v}"
            ))
            .into()
        })
}

fn failure_classes(
    v: &Bound<'_, PyAny>,
) -> Res<std::collections::BTreeSet<core::route::FailureClass>> {
    if v.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(
            "failover_on must be a list of failure classes, not a str",
        )
        .into());
    }
    let mut out = std::collections::BTreeSet::new();
    for item in v.try_iter()? {
        let item = item?;
        let s = any_str(&item, "failover_on[]")?;
        out.insert(core::route::FailureClass::parse(&s).ok_or_else(|| {
            core::Error::Config(format!(
                "unknown failure class {s:?} in failover_on (connect, timeout, rate_limited, server_error, malformed_response, client_error)"
            ))
        })?);
    }
    Ok(out)
}

/// Per-call settings given to `complete`/`stream` (`None`: the client's).
struct CallArgs<'a, 'py> {
    route_key: Option<String>,
    label: Option<String>,
    attributes: Option<&'a Bound<'py, PyAny>>,
    timeout: Option<f64>,
    ttft_timeout: Option<f64>,
    max_attempts: Option<u32>,
    failover_on: Option<&'a Bound<'py, PyAny>>,
}

fn attributes_arg(a: Option<&Bound<'_, PyAny>>) -> Res<Vec<(String, String)>> {
    let mut attrs = Vec::new();
    if let Some(a) = a.filter(|a| !a.is_none()) {
        let m = a.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(format!(
                "attributes must be a mapping of str to str, not {}",
                type_name(a)
            ))
        })?;
        for item in m.items()?.iter() {
            let (k, v): (String, String) = item.extract()?;
            attrs.push((k, v));
        }
    }
    Ok(attrs)
}

/// `Client(call_options=...)`: a dict of `CallOptions` (seconds as floats).
fn call_options_arg(d: &Bound<'_, PyAny>) -> Res<core::provider::CallOptions> {
    let mut o = core::provider::CallOptions::default();
    if d.is_none() {
        return Ok(o);
    }
    let m = d.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!("call_options must be a dict, not {}", type_name(d)))
    })?;
    for item in m.items()?.iter() {
        let (k, v): (String, Bound<'_, PyAny>) = item.extract()?;
        if v.is_none() {
            continue;
        }
        match k.as_str() {
            "stream" => o.stream = v.extract()?,
            "timeout" => o.total_timeout = seconds("timeout", v.extract()?)?,
            "ttft_timeout" => o.ttft_timeout = seconds("ttft_timeout", v.extract()?)?,
            "connect_timeout" => o.connect_timeout = seconds("connect_timeout", v.extract()?)?,
            "max_attempts" => o.max_attempts = Some(v.extract()?),
            "failover_on" => o.failover_on = Some(failure_classes(&v)?),
            _ => {
                return Err(core::Error::Config(format!(
                    "unknown call option `{k}` (stream, timeout, ttft_timeout, connect_timeout, max_attempts, failover_on)"
                ))
                .into());
            }
        }
    }
    Ok(o)
}

/// `Client(providers=...)`: provider name -> endpoint settings. `openai`
/// and `anthropic` start from their defaults (URL, key variable); any
/// other name is an OpenAI-compatible server unless `protocol` says
/// otherwise.
/// `prices=`: a list of `ModelPrice` dicts (provider, model, input_per_mtok,
/// output_per_mtok, and optionally cached_input_per_mtok, context_window).
fn prices_arg(p: &Bound<'_, PyAny>) -> Res<Vec<core::ModelPrice>> {
    if p.is_instance_of::<PyString>() || p.is_instance_of::<PyDict>() {
        return Err(PyTypeError::new_err(format!(
            "prices must be a list of ModelPrice dicts, not {}",
            type_name(p)
        ))
        .into());
    }
    let items = dicts_of(
        p,
        "prices must be a list of ModelPrice dicts",
        ("prices", "a dict"),
    )?;
    let mut out = Vec::new();
    for (i, m) in items.iter().enumerate() {
        let mut price = core::ModelPrice {
            provider: String::new(),
            model: String::new(),
            input_per_mtok: f64::NAN,
            output_per_mtok: f64::NAN,
            cached_input_per_mtok: None,
            context_window: None,
        };
        for kv in m.items()?.iter() {
            let (k, v): (String, Bound<'_, PyAny>) = kv.extract()?;
            let what = format!("prices[{i}].{k}");
            let usd = |v: &Bound<'_, PyAny>| -> Res<f64> {
                let x = number_arg(v, &what)?;
                if x.is_finite() && x >= 0.0 {
                    Ok(x)
                } else {
                    Err(core::Error::Config(format!("{what} must be a price >= 0, got {x}")).into())
                }
            };
            match k.as_str() {
                "provider" => price.provider = any_str(&v, &what)?.into_owned(),
                "model" => price.model = any_str(&v, &what)?.into_owned(),
                "input_per_mtok" => price.input_per_mtok = usd(&v)?,
                "output_per_mtok" => price.output_per_mtok = usd(&v)?,
                "cached_input_per_mtok" if v.is_none() => {}
                "cached_input_per_mtok" => price.cached_input_per_mtok = Some(usd(&v)?),
                "context_window" if v.is_none() => {}
                "context_window" => price.context_window = Some(count_arg(&v, &what)? as u64),
                _ => {
                    return Err(core::Error::Config(format!(
                        "{what}: unknown field (use provider, model, input_per_mtok, \
                         output_per_mtok, cached_input_per_mtok, context_window)"
                    ))
                    .into());
                }
            }
        }
        for (field, missing) in [
            ("provider", price.provider.is_empty()),
            ("model", price.model.is_empty()),
            ("input_per_mtok", price.input_per_mtok.is_nan()),
            ("output_per_mtok", price.output_per_mtok.is_nan()),
        ] {
            if missing {
                return Err(core::Error::Config(format!("prices[{i}].{field} is required")).into());
            }
        }
        out.push(price);
    }
    Ok(out)
}

fn providers_arg(p: &Bound<'_, PyAny>) -> Res<Vec<core::provider::Endpoint>> {
    use core::provider::{Endpoint, Protocol};
    let m = p.cast::<PyMapping>().map_err(|_| {
        PyTypeError::new_err(format!(
            "providers must be a dict of provider name to settings, not {}",
            type_name(p)
        ))
    })?;
    let mut out = Vec::new();
    for item in m.items()?.iter() {
        let (name, cfg): (String, Bound<'_, PyAny>) = item.extract()?;
        let cfg = cfg.cast::<PyMapping>().map_err(|_| {
            PyTypeError::new_err(format!(
                "providers[{name:?}] must be a dict, not {}",
                type_name(&cfg)
            ))
        })?;
        let mut ep = match name.as_str() {
            "openai" => Endpoint::openai(),
            "anthropic" => Endpoint::anthropic(),
            _ => Endpoint::openai_compatible(name.clone(), String::new()),
        };
        for kv in cfg.items()?.iter() {
            let (k, v): (String, Bound<'_, PyAny>) = kv.extract()?;
            if v.is_none() {
                continue;
            }
            let text = |v: &Bound<'_, PyAny>| -> PyResult<String> {
                Ok(any_str(v, &format!("providers[{name:?}].{k}"))?.into_owned())
            };
            match k.as_str() {
                "protocol" => {
                    ep.protocol = match text(&v)?.as_str() {
                        "openai" => Protocol::OpenAi,
                        "anthropic" => Protocol::Anthropic,
                        other => {
                            return Err(core::Error::Config(format!(
                                "providers[{name:?}].protocol must be \"openai\" or \"anthropic\", got {other:?}"
                            ))
                            .into());
                        }
                    }
                }
                "base_url" => ep.base_url = text(&v)?,
                "api_key" => ep.api_key = Some(core::provider::Secret::new(text(&v)?)),
                "api_key_env" => ep.api_key_env = Some(text(&v)?),
                "headers" => {
                    let hm = v.cast::<PyMapping>().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "providers[{name:?}].headers must be a dict of str to str"
                        ))
                    })?;
                    for h in hm.items()?.iter() {
                        let (hk, hv): (String, String) = h.extract()?;
                        ep.headers.push((hk, core::provider::Secret::new(hv)));
                    }
                }
                _ => {
                    return Err(core::Error::Config(format!(
                        "unknown provider setting `{k}` in providers[{name:?}] (protocol, base_url, api_key, api_key_env, headers)"
                    ))
                    .into());
                }
            }
        }
        if ep.base_url.is_empty() {
            return Err(core::Error::Config(format!(
                "providers[{name:?}] needs a base_url (e.g. http://localhost:8000/v1)"
            ))
            .into());
        }
        out.push(ep);
    }
    Ok(out)
}

impl Client {
    /// The core's options of one call: the client's call defaults with the
    /// caller's overrides.
    fn complete_options(
        &self,
        a: CallArgs<'_, '_>,
        stream: Option<bool>,
    ) -> Res<core::provider::CompleteOptions> {
        let mut call = self.call_defaults.clone();
        if let Some(s) = stream {
            call.stream = s;
        }
        if let Some(t) = a.timeout {
            call.total_timeout = seconds("timeout", t)?;
        }
        if let Some(t) = a.ttft_timeout {
            call.ttft_timeout = seconds("ttft_timeout", t)?;
        }
        if let Some(m) = a.max_attempts {
            call.max_attempts = Some(m);
        }
        if let Some(f) = a.failover_on.filter(|f| !f.is_none()) {
            call.failover_on = Some(failure_classes(f)?);
        }
        Ok(core::provider::CompleteOptions {
            route: core::RouteOptions {
                key: a.route_key,
                label: a.label,
                attributes: attributes_arg(a.attributes)?,
            },
            call: Some(call),
            on_chunk: None,
        })
    }
}

/// A provider call as a future that never panics (a panic becomes the
/// error `on_done`/the stream reports).
async fn call_guarded(
    client: core::Client,
    name: String,
    ctx: Value,
    opts: core::provider::CompleteOptions,
) -> Result<core::provider::Completion, CallFailure> {
    use futures_util::FutureExt;
    match AssertUnwindSafe(client.complete_with(&name, &ctx, &opts))
        .catch_unwind()
        .await
    {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(CallFailure::Core(e)),
        Err(payload) => Err(CallFailure::Panic(
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into()),
        )),
    }
}

/// Why a spawned call ended without a completion.
#[derive(Clone)]
enum CallFailure {
    Core(core::Error),
    Panic(String),
    /// The task ended without a word (cancelled).
    Gone,
}

impl CallFailure {
    fn to_py(&self, py: Python<'_>) -> PyErr {
        match self {
            CallFailure::Core(e) => core_err(py, e),
            CallFailure::Panic(what) => panic_err(py, Box::new(what.clone())),
            CallFailure::Gone => raise(
                py,
                PANIC_KIND,
                "the provider call ended without a result".into(),
                PyDict::new(py),
            ),
        }
    }
}

/// A call started by `Client.spawn_complete`.
#[pyclass(module = "promptops._lowlevel", frozen)]
struct CallHandle {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl CallHandle {
    /// Stop the call (its HTTP request is dropped); `on_done` is not called.
    fn cancel(&self) {
        self.abort.abort();
    }

    #[getter]
    fn done(&self) -> bool {
        self.abort.is_finished()
    }
}

enum StreamEvent {
    Chunk(String),
    Done(Box<Result<core::provider::Completion, CallFailure>>),
}

struct StreamState {
    rx: std::sync::mpsc::Receiver<StreamEvent>,
    /// How the call ended, once it has.
    end: Option<Result<core::provider::Completion, CallFailure>>,
    /// Whether the iterator has raised the error / stopped already.
    reported: bool,
}

/// What waiting on a stream gave.
enum Next {
    Chunk(String),
    End,
}

impl StreamState {
    /// The next event (blocking; called with the GIL released).
    fn next(&mut self) -> Next {
        if self.end.is_some() {
            return Next::End;
        }
        match self.rx.recv() {
            Ok(StreamEvent::Chunk(s)) => Next::Chunk(s),
            Ok(StreamEvent::Done(r)) => {
                self.end = Some(*r);
                Next::End
            }
            Err(_) => {
                self.end = Some(Err(CallFailure::Gone));
                Next::End
            }
        }
    }
}

/// A streaming call (`Client.stream`): iterate for the text deltas as they
/// arrive; `completion()` waits for the end and returns the `Completion`
/// (usage, cost, latency, attempts). A stream that fails before its first
/// token fails over to the next target; after it, the error is raised by
/// the iteration. Closing it (or leaving its `with` block) cancels the call.
#[pyclass(module = "promptops._lowlevel", frozen)]
struct CompletionStream {
    state: Mutex<StreamState>,
    abort: tokio::task::AbortHandle,
}

impl Drop for CompletionStream {
    fn drop(&mut self) {
        self.abort.abort();
    }
}

impl CompletionStream {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[pymethods]
impl CompletionStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<String>> {
        // The lock is taken with the GIL released: another thread may be
        // waiting on this stream while holding it.
        let (next, failure) = py.detach(|| {
            let mut st = self.lock();
            let next = st.next();
            let failure = match (&next, &st.end, st.reported) {
                (Next::End, Some(Err(f)), false) => Some(f.clone()),
                _ => None,
            };
            if matches!(next, Next::End) {
                st.reported = true;
            }
            (next, failure)
        });
        match (next, failure) {
            (Next::Chunk(s), _) => Ok(Some(s)),
            (Next::End, Some(f)) => Err(f.to_py(py)),
            (Next::End, None) => Ok(None),
        }
    }

    /// Wait for the end of the call (the remaining deltas are read and
    /// dropped) and return its `Completion`, or raise its error.
    fn completion(&self, py: Python<'_>) -> PyResult<Completion> {
        let end = py.detach(|| {
            let mut st = self.lock();
            while let Next::Chunk(_) = st.next() {}
            st.reported = true;
            st.end.clone()
        });
        match end {
            Some(Ok(c)) => Ok(Completion { inner: c }),
            Some(Err(f)) => Err(f.to_py(py)),
            None => Err(CallFailure::Gone.to_py(py)),
        }
    }

    /// Cancel the call if it is still running (idempotent).
    fn close(&self, py: Python<'_>) {
        self.abort.abort();
        py.detach(|| {
            let mut st = self.lock();
            if st.end.is_none() {
                st.end = Some(Err(CallFailure::Gone));
                st.reported = true;
            }
        });
    }

    fn __enter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, PyTuple>) {
        self.close(py);
    }

    fn __repr__(&self) -> &'static str {
        "<promptops.CompletionStream>"
    }
}

fn attempt_dict<'py>(py: Python<'py>, a: &core::provider::Attempt) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("target", &a.target)?;
    d.set_item("provider", &a.provider)?;
    d.set_item("model", &a.model)?;
    d.set_item("ok", a.ok)?;
    d.set_item("skipped", a.skipped)?;
    d.set_item("error_type", a.error_type.as_deref())?;
    d.set_item("status", a.status)?;
    d.set_item("message", a.message.as_deref())?;
    d.set_item("retry_after_ms", a.retry_after_ms)?;
    d.set_item("latency_ms", a.latency_ms)?;
    Ok(d)
}

/// The result of `Client.complete`: the response text with usage, cost,
/// latency, the target that answered and every attempt.
#[pyclass(module = "promptops._lowlevel", frozen)]
struct Completion {
    inner: core::provider::Completion,
}

#[pymethods]
impl Completion {
    #[getter]
    fn text(&self) -> &str {
        &self.inner.text
    }

    /// `input_tokens`, `output_tokens`, `cached_input_tokens` and
    /// `reported` (False: counted here, the provider sent no usage).
    #[getter]
    fn usage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let u = &self.inner.usage;
        let d = PyDict::new(py);
        d.set_item("input_tokens", u.input_tokens)?;
        d.set_item("output_tokens", u.output_tokens)?;
        d.set_item("cached_input_tokens", u.cached_input_tokens)?;
        d.set_item("reported", u.reported)?;
        Ok(d)
    }

    #[getter]
    fn input_tokens(&self) -> u64 {
        self.inner.usage.input_tokens
    }

    #[getter]
    fn output_tokens(&self) -> u64 {
        self.inner.usage.output_tokens
    }

    #[getter]
    fn cost_usd(&self) -> Option<f64> {
        self.inner.cost_usd
    }

    #[getter]
    fn latency_ms(&self) -> f64 {
        self.inner.latency_ms
    }

    #[getter]
    fn ttft_ms(&self) -> Option<f64> {
        self.inner.ttft_ms
    }

    #[getter]
    fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason.as_deref()
    }

    #[getter]
    fn response_model(&self) -> Option<&str> {
        self.inner.response_model.as_deref()
    }

    #[getter]
    fn target<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        target_dict(py, &self.inner.target)
    }

    #[getter]
    fn prompt(&self) -> &str {
        &self.inner.prompt
    }

    #[getter]
    fn version(&self) -> u32 {
        self.inner.version
    }

    #[getter]
    fn variant(&self) -> Option<&str> {
        self.inner.variant.as_deref()
    }

    #[getter]
    fn policy_id(&self) -> &str {
        self.inner.decision.policy_id()
    }

    #[getter]
    fn strategy(&self) -> &'static str {
        self.inner.decision.strategy.as_str()
    }

    /// Why the router chose the first target, in words.
    #[getter]
    fn reason(&self) -> &str {
        &self.inner.decision.reason
    }

    #[getter]
    fn attempts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = self
            .inner
            .attempts
            .iter()
            .map(|a| attempt_dict(py, a))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn __str__(&self) -> &str {
        &self.inner.text
    }

    fn __repr__(&self) -> String {
        let t = &self.inner.target;
        format!(
            "<promptops.Completion {} v{} target={} ({}/{}) attempts={}>",
            self.inner.prompt,
            self.inner.version,
            t.id,
            t.provider,
            t.model,
            self.inner.attempts.len()
        )
    }
}

/// Parse and check a routing policy (JSON text) as the registry does at
/// publish, against the built-in price table; returns the normalised policy.
#[pyfunction]
#[pyo3(signature = (policy, prompt=None))]
fn validate_policy<'py>(
    py: Python<'py>,
    policy: &str,
    prompt: Option<&str>,
) -> PyResult<Bound<'py, PyAny>> {
    guard(py, || {
        let value: serde_json::Value = serde_json::from_str(policy)
            .map_err(|e| core::Error::Config(format!("policy is not valid JSON: {e}")))?;
        let p = core::validate_policy(&value, prompt, &PRICING)?;
        let out =
            serde_json::to_value(&p).map_err(|e| core::Error::Config(format!("policy: {e}")))?;
        Ok(json_value(py, &out)?)
    })
}

/// The sticky bucket in `[0, 10000)` of `key` for `policy_id` and
/// `experiment` (the same in every binding).
#[pyfunction]
fn route_bucket(policy_id: &str, experiment: &str, key: &str) -> u32 {
    core::route::bucket(policy_id, experiment, key)
}

/// Panics in Rust on purpose: the test suite uses it to check that a panic
/// becomes `promptops.PromptOpsError` and never reaches the interpreter.
#[pyfunction]
fn _test_panic(py: Python<'_>, message: &str) -> PyResult<()> {
    guard(py, || -> Res<()> { panic!("{message}") })?;
    Ok(())
}

#[pymodule]
fn _lowlevel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    FAST_UTF8.store(py.version_info() >= (3, 10), Ordering::Relaxed);
    m.add_class::<Client>()?;
    m.add_class::<Prompt>()?;
    m.add_class::<Rendered>()?;
    m.add_class::<Decision>()?;
    m.add_class::<Completion>()?;
    m.add_class::<CompletionStream>()?;
    m.add_class::<CallHandle>()?;
    m.add_function(wrap_pyfunction!(validate_policy, m)?)?;
    m.add_function(wrap_pyfunction!(route_bucket, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens, m)?)?;
    m.add_function(wrap_pyfunction!(count_tokens_detail, m)?)?;
    m.add_function(wrap_pyfunction!(tokenizer_for_model, m)?)?;
    m.add_function(wrap_pyfunction!(estimate_cost, m)?)?;
    m.add_function(wrap_pyfunction!(model_price, m)?)?;
    m.add_function(wrap_pyfunction!(_test_panic, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("BUILTIN_PRICES_AS_OF", core::pricing::BUILTIN_PRICES_AS_OF)?;
    Ok(())
}
