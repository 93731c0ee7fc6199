//! Schemas in prompt files: full JSON Schema (an object with `properties`
//! or `type: object`), or the compact form dotprompt calls Picoschema:
//!
//! ```yaml
//! name: string, the user's name       # required string with a description
//! age?: integer                       # optional
//! tags(array): string                 # array of strings
//! address(object):                    # nested object
//!   city: string
//! tone?(enum): [friendly, formal]     # enum
//! extra?: any
//! ```
//! A value may also be a full property schema (`{type: string, default: x}`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::schema::{InputSchema, JsonType, PropertySchema, TypeSet};

/// Parse a schema from a prompt file (JSON Schema or compact form).
pub fn compact_schema(v: &Value) -> Result<InputSchema, String> {
    let Value::Object(map) = v else {
        return Err("schema must be a mapping".into());
    };
    if map.contains_key("properties") || map.get("type") == Some(&Value::from("object")) {
        let s: InputSchema =
            serde_json::from_value(v.clone()).map_err(|e| format!("invalid JSON schema: {e}"))?;
        s.check()?;
        return Ok(s);
    }
    let (properties, required) = object_fields(map, "")?;
    let s = InputSchema {
        ty: Some(JsonType::Object),
        description: None,
        properties,
        required,
        additional_properties: None,
    };
    s.check()?;
    Ok(s)
}

type Fields = (BTreeMap<String, PropertySchema>, Vec<String>);

fn object_fields(map: &serde_json::Map<String, Value>, path: &str) -> Result<Fields, String> {
    let mut props = BTreeMap::new();
    let mut required = Vec::new();
    for (key, val) in map {
        let (name, optional, paren) = parse_key(key)?;
        let full = if path.is_empty() {
            name.clone()
        } else {
            format!("{path}.{name}")
        };
        let prop = property(&full, paren.as_deref(), val)?;
        if !optional {
            required.push(name.clone());
        }
        props.insert(name, prop);
    }
    Ok((props, required))
}

/// `name`, `name?`, `name(array)`, `name?(enum, description)`.
fn parse_key(key: &str) -> Result<(String, bool, Option<String>), String> {
    let (head, paren) = match key.find('(') {
        Some(i) => {
            let rest = &key[i + 1..];
            let close = rest
                .find(')')
                .ok_or_else(|| format!("schema key `{key}`: `(` without `)`"))?;
            (&key[..i], Some(rest[..close].to_string()))
        }
        None => (key, None),
    };
    let head = head.trim();
    let (name, optional) = match head.strip_suffix('?') {
        Some(n) => (n.trim(), true),
        None => (head, false),
    };
    if name.is_empty() {
        return Err(format!("schema key `{key}` has no name"));
    }
    Ok((name.to_string(), optional, paren))
}

fn scalar_type(t: &str) -> Result<Option<JsonType>, String> {
    Ok(Some(match t {
        "string" => JsonType::String,
        "integer" => JsonType::Integer,
        "number" => JsonType::Number,
        "boolean" => JsonType::Boolean,
        "null" => JsonType::Null,
        "object" => JsonType::Object,
        "array" => JsonType::Array,
        "any" => return Ok(None),
        other => return Err(format!("unknown type `{other}`")),
    }))
}

fn property(path: &str, paren: Option<&str>, val: &Value) -> Result<PropertySchema, String> {
    let (kind, paren_desc) = match paren {
        Some(p) => match p.split_once(',') {
            Some((k, d)) => (Some(k.trim().to_string()), Some(d.trim().to_string())),
            None => (Some(p.trim().to_string()), None),
        },
        None => (None, None),
    };
    let mut prop = match kind.as_deref() {
        Some("array") => PropertySchema {
            ty: Some(TypeSet::One(JsonType::Array)),
            items: Some(Box::new(property(&format!("{path}[]"), None, val)?)),
            ..Default::default()
        },
        Some("object") => {
            let Value::Object(m) = val else {
                return Err(format!("`{path}`: (object) needs a mapping of fields"));
            };
            let (props, required) = object_fields(m, path)?;
            PropertySchema {
                ty: Some(TypeSet::One(JsonType::Object)),
                properties: Some(props),
                required,
                ..Default::default()
            }
        }
        Some("enum") => {
            let Value::Array(items) = val else {
                return Err(format!("`{path}`: (enum) needs a list of values"));
            };
            PropertySchema {
                enum_values: Some(items.clone()),
                ..Default::default()
            }
        }
        Some(other) => return Err(format!("`{path}`: unknown modifier `({other})`")),
        None => match val {
            Value::String(s) => {
                let (t, desc) = match s.split_once(',') {
                    Some((t, d)) => (t.trim(), Some(d.trim().to_string())),
                    None => (s.trim(), None),
                };
                PropertySchema {
                    ty: scalar_type(t)
                        .map_err(|e| format!("`{path}`: {e}"))?
                        .map(TypeSet::One),
                    description: desc,
                    ..Default::default()
                }
            }
            // A full property schema ({type: …, …}), or Picoschema's nested
            // object shorthand (a mapping of fields).
            Value::Object(m) if is_property_schema(m) => serde_json::from_value(val.clone())
                .map_err(|e| format!("`{path}`: invalid property schema: {e}"))?,
            Value::Object(m) => {
                let (props, required) = object_fields(m, path)?;
                PropertySchema {
                    ty: Some(TypeSet::One(JsonType::Object)),
                    properties: Some(props),
                    required,
                    ..Default::default()
                }
            }
            Value::Null => PropertySchema::default(),
            other => return Err(format!("`{path}`: expected a type name, got {other}")),
        },
    };
    if paren_desc.is_some() {
        prop.description = paren_desc;
    }
    Ok(prop)
}

fn is_property_schema(m: &serde_json::Map<String, Value>) -> bool {
    m.get("type").is_some_and(|t| t.is_string() || t.is_array())
        || m.contains_key("enum")
        || m.contains_key("items")
        || m.contains_key("properties")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picoschema() {
        let s = compact_schema(&json!({
            "name": "string, the user's name",
            "age?": "integer",
            "tags(array)": "string",
            "address?(object)": {"city": "string"},
            "tone?(enum)": ["friendly", "formal"],
            "x?": "any"
        }))
        .unwrap();
        assert_eq!(s.required, vec!["name", "tags"]);
        assert_eq!(
            s.properties["name"].description.as_deref(),
            Some("the user's name")
        );
        assert_eq!(s.properties["tags"].ty, Some(TypeSet::One(JsonType::Array)));
        assert_eq!(
            s.properties["address"].properties.as_ref().unwrap()["city"].ty,
            Some(TypeSet::One(JsonType::String))
        );
        assert!(s.properties["x"].ty.is_none());
        assert!(compact_schema(&json!({"a": "strng"})).is_err());
    }

    #[test]
    fn json_schema() {
        let s = compact_schema(&json!({
            "type": "object",
            "properties": {"q": {"type": "string", "default": "hi"}},
            "required": []
        }))
        .unwrap();
        assert_eq!(s.properties["q"].default, Some(json!("hi")));
        let e = compact_schema(&json!({"type": "object", "properties": {}, "required": ["zz"]}));
        assert!(e.unwrap_err().contains("zz"));
    }
}
