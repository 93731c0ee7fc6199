//! A small map type for template variables built by the bindings.
//!
//! A binding that copies a host-language dictionary into template values
//! (Python's `dict`, for one) builds its maps with [`MapBuilder`]: up to
//! [`SMALL_MAP`] entries become a [`SmallMap`] (keys in insertion order,
//! searched linearly by a fingerprint of their text, no hashing to build
//! it), larger ones minijinja's own insertion-ordered map. Both behave as
//! minijinja maps everywhere; the fast render path ([`crate::fast`]) knows
//! both and reads their values by reference instead of cloning them.

use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr};

/// Maps up to this size become a [`SmallMap`]; larger ones an `IndexMap`
/// (hashed, still in insertion order).
pub const SMALL_MAP: usize = 16;

/// Fingerprint of a key that is not a string (never equal to a string's:
/// a string fingerprint's low bytes are UTF-8 text, never all 0xFF).
pub const NOT_A_STR: u64 = u64::MAX;

/// The first up-to-7 bytes of a string key and its length, packed in a
/// `u64`. For keys of at most 7 bytes equal fingerprints mean equal keys;
/// longer keys are compared in full after a fingerprint match.
#[inline(always)]
pub fn fingerprint(s: &str) -> u64 {
    let b = s.as_bytes();
    let len = (b.len().min(255) as u64) << 56;
    let low = match b.first_chunk::<8>() {
        Some(head) => u64::from_le_bytes(*head) & 0x00ff_ffff_ffff_ffff,
        None => b
            .iter()
            .enumerate()
            .fold(0u64, |v, (i, &c)| v | (u64::from(c) << (8 * i))),
    };
    low | len
}

/// The fingerprint of a key value ([`NOT_A_STR`] for non-strings).
#[inline]
pub fn key_fingerprint(key: &Value) -> u64 {
    key.as_str().map_or(NOT_A_STR, fingerprint)
}

/// A template map of a few entries (see the module docs).
#[derive(Debug)]
pub struct SmallMap {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    print: u64,
    key: Value,
    value: Value,
}

impl SmallMap {
    /// The value under string key `key`, borrowed.
    #[inline]
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.find_str(key).map(|i| &self.entries[i].value)
    }

    /// The position of string key `key`.
    #[inline]
    pub fn find_str(&self, key: &str) -> Option<usize> {
        let print = fingerprint(key);
        let short = key.len() <= 7;
        self.entries
            .iter()
            .position(|e| e.print == print && (short || e.key.as_str() == Some(key)))
    }

    /// The entry at position `i` (key, value).
    #[inline]
    pub fn get_index(&self, i: usize) -> Option<(&Value, &Value)> {
        self.entries.get(i).map(|e| (&e.key, &e.value))
    }

    /// The value under any key, borrowed.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        match key.as_str() {
            Some(s) => self.get_str(s),
            None => self
                .entries
                .iter()
                .find(|e| e.key == *key)
                .map(|e| &e.value),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Object for SmallMap {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get(key).cloned()
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        self.get_str(key).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.entries.iter().map(|e| e.key.clone())))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// Collects a map's entries (unique keys, in insertion order) and makes
/// the template value.
#[derive(Debug, Default)]
pub struct MapBuilder {
    entries: Vec<Entry>,
}

impl MapBuilder {
    pub fn with_capacity(n: usize) -> Self {
        MapBuilder {
            entries: Vec::with_capacity(n),
        }
    }

    /// Append an entry whose key is not in the map yet (`print` is
    /// [`key_fingerprint`] of `key`). Host dictionaries have unique keys,
    /// so their entries are pushed without a check.
    #[inline]
    pub fn push(&mut self, key: Value, print: u64, value: Value) {
        self.entries.push(Entry { print, key, value });
    }

    /// Insert or replace (for keyword arguments over `vars`).
    pub fn set(&mut self, key: Value, print: u64, value: Value) {
        match self.entries.iter().position(|e| e.key == key) {
            Some(i) => self.entries[i].value = value,
            None => self.push(key, print, value),
        }
    }

    /// Every entry of `other`, inserted or replaced in order.
    pub fn update(&mut self, other: MapBuilder) {
        if self.entries.is_empty() {
            *self = other;
            return;
        }
        for e in other.entries {
            self.set(e.key, e.print, e.value);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn into_value(self) -> Value {
        if self.entries.len() <= SMALL_MAP {
            Value::from_object(SmallMap {
                entries: self.entries,
            })
        } else {
            Value::from_object(
                self.entries
                    .into_iter()
                    .map(|e| (e.key, e.value))
                    .collect::<indexmap::IndexMap<Value, Value>>(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(pairs: &[(&str, Value)]) -> Value {
        let mut b = MapBuilder::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = Value::from(*k);
            b.push(key.clone(), key_fingerprint(&key), v.clone());
        }
        b.into_value()
    }

    #[test]
    fn small_maps_look_up_like_minijinja_maps() {
        let v = build(&[
            ("a", Value::from(1)),
            ("a_longer_key", Value::from("x")),
            ("a_longer_kez", Value::from("y")),
        ]);
        assert!(v.downcast_object_ref::<SmallMap>().is_some());
        assert_eq!(v.get_attr("a").unwrap(), Value::from(1));
        assert_eq!(v.get_attr("a_longer_key").unwrap(), Value::from("x"));
        assert_eq!(v.get_attr("a_longer_kez").unwrap(), Value::from("y"));
        assert!(v.get_attr("b").unwrap().is_undefined());
        let keys: Vec<String> = v.try_iter().unwrap().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["a", "a_longer_key", "a_longer_kez"]);
        assert_eq!(v.len(), Some(3));
    }

    #[test]
    fn large_maps_become_index_maps_in_order() {
        let pairs: Vec<(String, Value)> =
            (0..20).map(|i| (format!("k{i}"), Value::from(i))).collect();
        let refs: Vec<(&str, Value)> = pairs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let v = build(&refs);
        assert!(v.downcast_object_ref::<SmallMap>().is_none());
        assert_eq!(v.get_attr("k17").unwrap(), Value::from(17));
        let first: Vec<String> = v
            .try_iter()
            .unwrap()
            .take(2)
            .map(|k| k.to_string())
            .collect();
        assert_eq!(first, ["k0", "k1"]);
    }

    #[test]
    fn set_replaces_and_update_merges() {
        let mut a = MapBuilder::with_capacity(2);
        for (k, v) in [("x", 1), ("y", 2)] {
            let key = Value::from(k);
            a.push(key.clone(), key_fingerprint(&key), Value::from(v));
        }
        let mut b = MapBuilder::with_capacity(2);
        for (k, v) in [("y", 20), ("z", 30)] {
            let key = Value::from(k);
            b.push(key.clone(), key_fingerprint(&key), Value::from(v));
        }
        a.update(b);
        let v = a.into_value();
        let keys: Vec<String> = v.try_iter().unwrap().map(|k| k.to_string()).collect();
        assert_eq!(keys, ["x", "y", "z"]);
        assert_eq!(v.get_attr("y").unwrap(), Value::from(20));
    }
}
