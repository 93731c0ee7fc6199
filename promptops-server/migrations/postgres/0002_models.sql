-- The model catalogue: the models a project may use, synced to SDKs with
-- the snapshot. Prices are USD per million tokens. `health_status` is
-- unknown | healthy | unavailable; `health_changed_at` is when the current
-- status was established (what SDKs see), `health_checked_at` the last
-- check (REST only: re-checking without a change is not a registry event).
CREATE TABLE models (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    context_window BIGINT,
    max_output_tokens BIGINT,
    input_per_mtok DOUBLE PRECISION NOT NULL,
    output_per_mtok DOUBLE PRECISION NOT NULL,
    cached_input_per_mtok DOUBLE PRECISION,
    enabled BIGINT NOT NULL DEFAULT 1,
    base_url TEXT,
    health_status TEXT NOT NULL DEFAULT 'unknown',
    health_changed_at TEXT,
    health_checked_at TEXT,
    health_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (project_id, model)
);
