//! The OpenAPI 3.1 document, generated from the same route table the
//! router is built from (so every route is documented and every documented
//! route exists).

use serde_json::{Map, Value, json};

use crate::api::routes;

fn schemas() -> Value {
    let s = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required});
    let any = json!({"type": "object", "additionalProperties": true});
    let version_fields = json!({
        "type": {"type": "string", "enum": ["text", "chat"]},
        "template": {"type": "string", "description": "text prompts"},
        "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
        "config": {"type": "object", "description": "provider, model, temperature, max_tokens, top_p, stop, …"},
        "variants": {"type": "object", "additionalProperties": {"type": "object"}},
        "compatibility": {"type": "object", "additionalProperties": {"type": "string", "enum": ["works", "needs_tuning", "untested"]}},
        "schema": {"type": "object", "description": "JSON-Schema subset for the variables"},
        "compliance": {"type": "object", "properties": {
            "intent": {"type": "string"}, "owner": {"type": "string"},
            "fairness_notes": {"type": "string"}, "data_classification": {"type": "string"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string"},
        "policy": {"type": "object", "description": "routing policy of the prompt"},
        "labels": {"type": "array", "items": {"type": "string"}, "description": "labels to point at the new version"},
    });
    let telemetry_sdk = s(
        json!({"name": {"type": "string"}, "version": {"type": "string"}}),
        &["name", "version"],
    );
    let telemetry_dropped = s(
        json!({"recorded": {"type": "integer"}, "dropped_queue_full": {"type": "integer"}, "dropped_export_full": {"type": "integer"}, "dropped_upload_failed": {"type": "integer"}}),
        &[],
    );
    let telemetry_batch = s(
        json!({
            "schema": {"type": "string", "const": "promptops.telemetry.v1"},
            "project": {"type": ["string", "null"], "description": "default: the key's project"},
            "sdk": telemetry_sdk,
            "sent_at_ms": {"type": "integer"},
            "dropped": telemetry_dropped,
            "events": {"type": "array", "maxItems": 10000, "items": {"$ref": "#/components/schemas/TelemetryEvent"}}
        }),
        &["schema", "sdk", "sent_at_ms", "dropped", "events"],
    );
    let telemetry_event = s(
        json!({
            "kind": {"type": "string", "enum": ["render", "decision", "call"]},
            "ts_ms": {"type": "integer"}, "prompt": {"type": "string"},
            "version": {"type": ["integer", "null"]}, "label": {"type": ["string", "null"]},
            "variant": {"type": ["string", "null"]}, "provider": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]}, "target": {"type": ["string", "null"]},
            "input_tokens": {"type": ["integer", "null"]}, "output_tokens": {"type": ["integer", "null"]},
            "cost_usd": {"type": ["number", "null"]}, "latency_ms": {"type": ["number", "null"]},
            "ttft_ms": {"type": ["number", "null"]}, "error_type": {"type": ["string", "null"]},
            "error_message": {"type": ["string", "null"]}, "route_reason": {"type": ["string", "null"]},
            "strategy": {"type": ["string", "null"]}, "attempt": {"type": ["integer", "null"]},
            "stream": {"type": ["boolean", "null"]},
            "attributes": {"type": "object", "additionalProperties": {"type": "string"}}
        }),
        &["kind", "ts_ms", "prompt"],
    );
    let telemetry_accepted = s(
        json!({"project": {"type": "string"}, "accepted": {"type": "integer"}, "calls": {"type": "integer"}}),
        &["project", "accepted", "calls"],
    );
    let put_model = s(
        json!({
            "provider": {"type": "string", "description": "openai, anthropic, or an OpenAI-compatible provider name (then base_url is required)"},
            "input_per_mtok": {"type": "number", "description": "USD per million input tokens (default: the built-in table's, for a model it lists)"},
            "output_per_mtok": {"type": "number"},
            "cached_input_per_mtok": {"type": "number"},
            "context_window": {"type": "integer"},
            "max_output_tokens": {"type": "integer"},
            "enabled": {"type": "boolean", "default": true},
            "base_url": {"type": "string", "description": "API base including the version path, e.g. http://host:8000/v1"}
        }),
        &["provider"],
    );
    let model_entry = s(
        json!({
            "model": {"type": "string"}, "provider": {"type": "string"},
            "input_per_mtok": {"type": "number"}, "output_per_mtok": {"type": "number"},
            "cached_input_per_mtok": {"type": "number"}, "context_window": {"type": "integer"},
            "max_output_tokens": {"type": "integer"}, "enabled": {"type": "boolean", "default": true},
            "base_url": {"type": "string"},
            "health": {"type": "object", "properties": {
                "status": {"type": "string", "enum": ["unknown", "healthy", "unavailable"]},
                "checked_at": {"type": "string"}, "error": {"type": "string"}}}
        }),
        &["model", "provider", "input_per_mtok", "output_per_mtok"],
    );
    let mut create_prompt = version_fields.clone();
    create_prompt["name"] = json!({"type": "string", "description": "module/name"});
    let mut doc = json!({
        "Error": s(json!({
            "code": {"type": "string", "description": "e.g. TEMPLATE_ERROR, INCLUDE_CYCLE, VALIDATION_ERROR, APPROVAL_REQUIRED, FORBIDDEN"},
            "message": {"type": "string"},
            "field": {"type": ["string", "null"]},
            "details": {"type": "object", "description": "prompt, version, part, line, column, … (the core error's details)"}
        }), &["code", "message", "field", "details"]),
        "Message": s(json!({"role": {"type": "string"}, "content": {"type": "string"}, "name": {"type": "string"}}), &["role", "content"]),
        "NewVersion": s(version_fields, &["type"]),
        "CreatePrompt": s(create_prompt, &["name", "type"]),
        "CreateProject": s(json!({"name": {"type": "string"}, "protected_labels": {"type": "array", "items": {"type": "string"}}, "mas_feat": {"type": "boolean"}}), &["name"]),
        "UpdateProject": s(json!({"protected_labels": {"type": "array", "items": {"type": "string"}}, "mas_feat": {"type": "boolean"}}), &[]),
        "SetLabel": s(json!({"version": {"type": "integer"}, "expected_version": {"type": "integer", "description": "409 unless the label points at this version now (0 = unset)"}}), &["version"]),
        "Publish": s(json!({"version": {"type": "integer"}, "label": {"type": "string", "default": "production"}, "expected_version": {"type": "integer"}}), &["version"]),
        "Rollback": s(json!({"label": {"type": "string", "default": "production"}, "to": {"type": "integer", "description": "default: the version the label pointed at before"}, "expected_version": {"type": "integer"}}), &[]),
        "Review": s(json!({"decision": {"type": "string", "enum": ["approve", "comment", "request_changes"]}, "note": {"type": "string"}}), &["decision"]),
        "Secret": s(json!({"value": {"type": "string"}}), &["value"]),
        "CreateKey": s(json!({"role": {"type": "string", "enum": ["sdk", "viewer", "author", "reviewer", "approver", "publisher", "auditor", "admin"]}, "project": {"type": "string"}, "user": {"type": "string"}, "name": {"type": "string"}}), &["role"]),
        "Snapshot": s(json!({
            "format": {"type": "string", "const": "promptops.snapshot/1"},
            "project": {"type": "string"}, "revision": {"type": "integer"},
            "created_at": {"type": "string"}, "hash": {"type": "string"},
            "prompts": {"type": "array", "items": {"$ref": "#/components/schemas/PromptData"}}
        }), &["format", "project", "revision", "hash", "prompts"]),
        "PromptData": s(json!({
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "object"}},
            "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
            "policy": {"type": "object"}
        }), &["name", "versions", "labels"]),
        "Delta": s(json!({
            "project": {"type": "string"}, "base_revision": {"type": "integer"}, "revision": {"type": "integer"},
            "upserts": {"type": "array", "items": {"$ref": "#/components/schemas/PromptData"}},
            "removed": {"type": "array", "items": {"type": "string"}}
        }), &["project", "base_revision", "revision", "upserts", "removed"]),
        "EventStream": {"type": "string", "description": "text/event-stream: `event: snapshot` (data: Snapshot) then `event: delta` (data: Delta), `id` = revision, `: ping` every 15 s"},
        "Metrics": {"type": "string"},
        "Empty": {"type": "null"},
        "Health": any.clone(), "OpenApi": any.clone(), "Whoami": any.clone(), "ProjectList": any.clone(),
        "Project": any.clone(), "PromptList": any.clone(), "Prompt": any.clone(), "VersionList": any.clone(),
        "Version": any.clone(), "VersionCreated": any.clone(), "ReviewRecord": any.clone(), "Labels": any.clone(),
        "LabelChange": any.clone(), "Diff": any.clone(), "ArchiveResult": any.clone(), "SecretList": any.clone(),
        "SecretInfo": any.clone(), "SecretValue": any.clone(), "KeyList": any.clone(), "CreatedKey": any.clone(),
        "Key": any.clone(), "AuditEntries": any.clone(), "AuditVerify": any.clone(),
    });
    // The model catalogue (kept apart: one json! literal has a depth limit).
    doc["PutModel"] = put_model;
    doc["ModelEntry"] = model_entry;
    doc["Snapshot"]["properties"]["models"] = json!({"type": "array", "items": {"$ref": "#/components/schemas/ModelEntry"}, "description": "the model catalogue (absent = empty)"});
    doc["Delta"]["properties"]["models"] = json!({"type": "array", "items": {"$ref": "#/components/schemas/ModelEntry"}, "description": "the whole catalogue, when the change touched it (absent = unchanged)"});
    for name in [
        "ModelList",
        "ModelRecord",
        "ModelChange",
        "ModelHealthList",
        "ModelHealthCheck",
    ] {
        doc[name] = any.clone();
    }
    doc["TelemetryBatch"] = telemetry_batch;
    doc["TelemetryEvent"] = telemetry_event;
    doc["TelemetryAccepted"] = telemetry_accepted;
    doc["TelemetryReport"] = any;
    doc
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (d, _) in routes() {
        let mut params = Vec::new();
        let mut rest = d.path;
        while let Some(start) = rest.find('{') {
            let end = rest[start..]
                .find('}')
                .map(|e| start + e)
                .unwrap_or(rest.len());
            let name = &rest[start + 1..end];
            let schema = if matches!(name, "version" | "id") {
                json!({"type": "integer"})
            } else {
                json!({"type": "string"})
            };
            let description = match name {
                "prompt" => "module/name, with `/` percent-encoded as %2F",
                "project" => "project name",
                "version" => "version number",
                "label" => "label name",
                "id" => "key id",
                "model" => "model id, with `/` percent-encoded as %2F",
                _ => "",
            };
            params.push(json!({"name": name, "in": "path", "required": true, "schema": schema, "description": description}));
            rest = &rest[end.min(rest.len())..];
            if rest.len() <= 1 {
                break;
            }
            rest = &rest[1..];
        }
        for (q, desc) in d.query {
            params.push(json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}, "description": desc}));
        }
        if d.path.ends_with("/snapshot") {
            params.push(json!({"name": "If-None-Match", "in": "header", "required": false, "schema": {"type": "string"}}));
        }
        if d.path.ends_with("/stream") {
            params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer"}}));
        }
        let content_type = match d.ok.1 {
            "Metrics" => "text/plain",
            "EventStream" => "text/event-stream",
            _ => "application/json",
        };
        let mut responses = Map::new();
        responses.insert(
            d.ok.0.to_string(),
            json!({"description": d.summary, "content": {content_type: {"schema": {"$ref": format!("#/components/schemas/{}", d.ok.1)}}}}),
        );
        if d.path.ends_with("/snapshot") {
            responses.insert(
                "304".into(),
                json!({"description": "Not modified (If-None-Match matched the ETag)"}),
            );
        }
        let err = json!({"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
        let mut add_err = |code: &str, desc: &str| {
            let mut e = err.clone();
            e["description"] = json!(desc);
            responses.insert(code.into(), e);
        };
        if d.perm.is_some() {
            add_err("401", "Missing or unknown API key");
            add_err(
                "403",
                "The key lacks the permission or the project is outside its scope",
            );
        }
        if d.body.is_some() || !d.query.is_empty() || d.path.contains('{') {
            add_err("400", "Malformed request");
        }
        if d.body.is_some() {
            add_err("413", "Body too large");
            add_err(
                "422",
                "Invalid content (template, schema, includes, compliance)",
            );
        }
        if d.path.contains('{') {
            add_err("404", "Not found");
        }
        if d.method != "GET" && d.path.starts_with("/v1/projects/{project}/prompts") {
            add_err(
                "409",
                "Conflict (approval required, archived, expected_version mismatch)",
            );
        }
        let mut op = json!({
            "summary": d.summary,
            "operationId": format!("{} {}", d.method.to_lowercase(), d.path),
            "parameters": params,
            "responses": responses,
        });
        if let Some(perm) = d.perm {
            op["security"] = json!([{"bearer": []}]);
            op["x-permission"] = json!(perm);
        }
        if let Some(b) = d.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{b}")}}}});
        }
        let entry = paths
            .entry(d.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[d.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "promptops registry",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Prompt registry and sync server. See PROTOCOL.md for the snapshot/stream protocol and PERMISSIONS.md for roles."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "API key `po_…`"}},
            "schemas": schemas(),
        }
    })
}
