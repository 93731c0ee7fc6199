//! Input schemas: the JSON-Schema subset a prompt declares for its variables
//! (types, required, defaults, enums, string/number/array bounds, nested
//! objects and arrays), and validation of render variables against it.

use std::collections::BTreeMap;

use minijinja::Value;
use minijinja::value::ValueKind;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JsonType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    Null,
}

impl JsonType {
    fn as_str(&self) -> &'static str {
        match self {
            JsonType::String => "string",
            JsonType::Integer => "integer",
            JsonType::Number => "number",
            JsonType::Boolean => "boolean",
            JsonType::Array => "array",
            JsonType::Object => "object",
            JsonType::Null => "null",
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match (self, v.kind()) {
            (JsonType::String, ValueKind::String) => true,
            (JsonType::Integer, ValueKind::Number) => v.is_integer(),
            (JsonType::Number, ValueKind::Number) => true,
            (JsonType::Boolean, ValueKind::Bool) => true,
            (JsonType::Array, ValueKind::Seq) => true,
            (JsonType::Object, ValueKind::Map) => true,
            (JsonType::Null, ValueKind::None) => true,
            _ => false,
        }
    }
}

/// `"type": "string"` or `"type": ["string", "null"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TypeSet {
    One(JsonType),
    Many(Vec<JsonType>),
}

impl TypeSet {
    fn types(&self) -> &[JsonType] {
        match self {
            TypeSet::One(t) => std::slice::from_ref(t),
            TypeSet::Many(ts) => ts,
        }
    }
}

/// The schema of one value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertySchema {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<TypeSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<Box<PropertySchema>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, PropertySchema>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    #[serde(rename = "minLength", default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    #[serde(rename = "maxLength", default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    #[serde(rename = "minItems", default, skip_serializing_if = "Option::is_none")]
    pub min_items: Option<usize>,
    #[serde(rename = "maxItems", default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<usize>,
    #[serde(
        rename = "additionalProperties",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_properties: Option<bool>,
}

/// A prompt's input schema: an object schema over the render variables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSchema {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<JsonType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub properties: BTreeMap<String, PropertySchema>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
    #[serde(
        rename = "additionalProperties",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub additional_properties: Option<bool>,
}

impl InputSchema {
    /// Check the schema itself (done when a snapshot loads, so a bad schema
    /// is reported once, not at every render).
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(t) = self.ty
            && t != JsonType::Object
        {
            return Err(format!(
                "an input schema must be of type object, not {}",
                t.as_str()
            ));
        }
        for r in &self.required {
            if !self.properties.contains_key(r) {
                return Err(format!("required field `{r}` is not in properties"));
            }
        }
        for (name, p) in &self.properties {
            check_prop(name, p)?;
        }
        Ok(())
    }

    /// Validate `vars` and return the defaults that must be merged in (the
    /// properties with a default that `vars` does not set), if any.
    pub(crate) fn validate(&self, prompt: &str, vars: &Value) -> Result<Option<Value>> {
        let is_map = vars.kind() == ValueKind::Map;
        if !is_map && !vars.is_undefined() && !vars.is_none() {
            return Err(Error::Validation {
                prompt: prompt.to_string(),
                field: "$".into(),
                message: format!("variables must be a mapping, got {}", vars.kind()),
            });
        }
        let mut defaults: Option<BTreeMap<&str, Value>> = None;
        for (name, prop) in &self.properties {
            let v = if is_map {
                vars.get_attr(name).unwrap_or(Value::UNDEFINED)
            } else {
                Value::UNDEFINED
            };
            if v.is_undefined() {
                if let Some(d) = &prop.default {
                    defaults
                        .get_or_insert_with(BTreeMap::new)
                        .insert(name.as_str(), crate::to_value(d));
                } else if self.required.iter().any(|r| r == name) {
                    return Err(Error::Validation {
                        prompt: prompt.to_string(),
                        field: name.clone(),
                        message: "is required".into(),
                    });
                }
                continue;
            }
            validate_value(prompt, name, prop, &v)?;
        }
        if self.additional_properties == Some(false)
            && is_map
            && let Ok(keys) = vars.try_iter()
        {
            for k in keys {
                if let Some(k) = k.as_str()
                    && !self.properties.contains_key(k)
                {
                    return Err(Error::Validation {
                        prompt: prompt.to_string(),
                        field: k.to_string(),
                        message: "is not declared in the input schema".into(),
                    });
                }
            }
        }
        Ok(defaults.map(|d| {
            Value::from(
                d.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<BTreeMap<String, Value>>(),
            )
        }))
    }
}

fn check_prop(path: &str, p: &PropertySchema) -> std::result::Result<(), String> {
    if let Some(props) = &p.properties {
        for r in &p.required {
            if !props.contains_key(r) {
                return Err(format!(
                    "`{path}`: required field `{r}` is not in properties"
                ));
            }
        }
        for (k, sub) in props {
            check_prop(&format!("{path}.{k}"), sub)?;
        }
    }
    if let Some(items) = &p.items {
        check_prop(&format!("{path}[]"), items)?;
    }
    if let (Some(a), Some(b)) = (p.minimum, p.maximum)
        && a > b
    {
        return Err(format!("`{path}`: minimum {a} is above maximum {b}"));
    }
    if let (Some(d), Some(ty)) = (&p.default, &p.ty) {
        let v = crate::to_value(d);
        if !ty.types().iter().any(|t| t.matches(&v)) {
            return Err(format!("`{path}`: default {d} does not match its type"));
        }
    }
    Ok(())
}

fn type_name(v: &Value) -> &'static str {
    match v.kind() {
        ValueKind::String => "string",
        ValueKind::Number if v.is_integer() => "integer",
        ValueKind::Number => "number",
        ValueKind::Bool => "boolean",
        ValueKind::Seq => "array",
        ValueKind::Map => "object",
        ValueKind::None => "null",
        _ => "unsupported value",
    }
}

fn validate_value(prompt: &str, path: &str, p: &PropertySchema, v: &Value) -> Result<()> {
    let fail = |message: String| Error::Validation {
        prompt: prompt.to_string(),
        field: path.to_string(),
        message,
    };
    if let Some(ty) = &p.ty
        && !ty.types().iter().any(|t| t.matches(v))
    {
        let want: Vec<&str> = ty.types().iter().map(|t| t.as_str()).collect();
        return Err(fail(format!(
            "expected {}, got {}",
            want.join(" or "),
            type_name(v)
        )));
    }
    if let Some(allowed) = &p.enum_values
        && !allowed.iter().any(|a| crate::to_value(a) == *v)
    {
        let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        return Err(fail(format!(
            "{} is not one of [{}]",
            v.to_string().chars().take(60).collect::<String>(),
            list.join(", ")
        )));
    }
    if let Some(s) = v.as_str() {
        let n = s.chars().count();
        if let Some(min) = p.min_length
            && n < min
        {
            return Err(fail(format!("length {n} is below minLength {min}")));
        }
        if let Some(max) = p.max_length
            && n > max
        {
            return Err(fail(format!("length {n} is above maxLength {max}")));
        }
    }
    if v.kind() == ValueKind::Number
        && let Ok(x) = f64::try_from(v.clone())
    {
        if let Some(min) = p.minimum
            && x < min
        {
            return Err(fail(format!("{x} is below minimum {min}")));
        }
        if let Some(max) = p.maximum
            && x > max
        {
            return Err(fail(format!("{x} is above maximum {max}")));
        }
    }
    if v.kind() == ValueKind::Seq {
        let len = v.len().unwrap_or(0);
        if let Some(min) = p.min_items
            && len < min
        {
            return Err(fail(format!("{len} items is below minItems {min}")));
        }
        if let Some(max) = p.max_items
            && len > max
        {
            return Err(fail(format!("{len} items is above maxItems {max}")));
        }
        if let Some(items) = &p.items
            && let Ok(iter) = v.try_iter()
        {
            for (i, item) in iter.enumerate() {
                validate_value(prompt, &format!("{path}[{i}]"), items, &item)?;
            }
        }
    }
    if v.kind() == ValueKind::Map
        && let Some(props) = &p.properties
    {
        for (k, sub) in props {
            let child = v.get_attr(k).unwrap_or(Value::UNDEFINED);
            if child.is_undefined() {
                if p.required.iter().any(|r| r == k) && sub.default.is_none() {
                    return Err(Error::Validation {
                        prompt: prompt.to_string(),
                        field: format!("{path}.{k}"),
                        message: "is required".into(),
                    });
                }
                continue;
            }
            validate_value(prompt, &format!("{path}.{k}"), sub, &child)?;
        }
        if p.additional_properties == Some(false)
            && let Ok(keys) = v.try_iter()
        {
            for k in keys {
                if let Some(k) = k.as_str()
                    && !props.contains_key(k)
                {
                    return Err(fail(format!("`{k}` is not declared in the schema")));
                }
            }
        }
    }
    Ok(())
}
