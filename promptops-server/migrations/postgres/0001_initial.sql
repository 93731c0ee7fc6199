-- promptops registry schema (PostgreSQL). Times are RFC 3339 UTC text.
CREATE TABLE orgs (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE projects (
    id BIGSERIAL PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL UNIQUE,
    revision BIGINT NOT NULL DEFAULT 0,
    protected_labels TEXT NOT NULL DEFAULT '["production"]',
    mas_feat BIGINT NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE modules (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE prompts (
    id BIGSERIAL PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id),
    module_id BIGINT NOT NULL REFERENCES modules(id),
    name TEXT NOT NULL,
    archived BIGINT NOT NULL DEFAULT 0,
    latest_version BIGINT NOT NULL DEFAULT 0,
    policy TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (project_id, name)
);

-- Immutable versions. `body` is the version's JSON, AES-256-GCM sealed.
CREATE TABLE versions (
    id BIGSERIAL PRIMARY KEY,
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    version BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    body BYTEA NOT NULL,
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (prompt_id, version)
);

CREATE TABLE labels (
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    label TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (prompt_id, label),
    FOREIGN KEY (prompt_id, version) REFERENCES versions(prompt_id, version)
);

CREATE TABLE label_history (
    id BIGSERIAL PRIMARY KEY,
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    label TEXT NOT NULL,
    from_version BIGINT,
    to_version BIGINT,
    actor TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX label_history_prompt ON label_history (prompt_id, label, id);

CREATE TABLE reviews (
    id BIGSERIAL PRIMARY KEY,
    prompt_id BIGINT NOT NULL REFERENCES prompts(id),
    version BIGINT NOT NULL,
    reviewer TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX reviews_version ON reviews (prompt_id, version);

CREATE TABLE users (
    id BIGSERIAL PRIMARY KEY,
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    name TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (org_id, name)
);

-- API keys: only the SHA-256 of the token is stored.
CREATE TABLE api_keys (
    id BIGSERIAL PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    org_id BIGINT NOT NULL REFERENCES orgs(id),
    project_id BIGINT REFERENCES projects(id),
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- Per-project event log (one row per revision), payload = sealed delta JSON.
CREATE TABLE events (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    revision BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    payload BYTEA NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (project_id, revision)
);

CREATE TABLE secrets (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    value BYTEA NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (project_id, name)
);

-- Hash-chained, append-only audit log.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    org TEXT,
    project TEXT,
    prompt TEXT,
    label TEXT,
    before_version BIGINT,
    after_version BIGINT,
    request_id TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_at ON audit_log (at);

-- The newest audit entry, kept beside the chain so that removing entries
-- from the end of the log is detected too.
CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);

CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
