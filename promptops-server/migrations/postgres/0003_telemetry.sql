-- Telemetry rollups (PostgreSQL): what SDKs upload with POST /v1/telemetry, summed
-- per project, minute (`bucket_start`, unix seconds) and prompt + version +
-- model + provider + label + variant ('' / 0 when unknown). Writes are
-- additive upserts, so several replicas can write the same row.
-- Latency and TTFT keep one count per fixed bucket (upper bounds 0.01, 0.02,
-- 0.04, ... 81.92 s; `_b14` counts everything above), which is what the
-- query endpoint derives percentiles from.
CREATE TABLE telemetry_rollups (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    bucket_start BIGINT NOT NULL,
    prompt TEXT NOT NULL,
    version BIGINT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    label TEXT NOT NULL,
    variant TEXT NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    errors BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_count BIGINT NOT NULL DEFAULT 0,
    latency_sum_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    lat_b00 BIGINT NOT NULL DEFAULT 0,
    lat_b01 BIGINT NOT NULL DEFAULT 0,
    lat_b02 BIGINT NOT NULL DEFAULT 0,
    lat_b03 BIGINT NOT NULL DEFAULT 0,
    lat_b04 BIGINT NOT NULL DEFAULT 0,
    lat_b05 BIGINT NOT NULL DEFAULT 0,
    lat_b06 BIGINT NOT NULL DEFAULT 0,
    lat_b07 BIGINT NOT NULL DEFAULT 0,
    lat_b08 BIGINT NOT NULL DEFAULT 0,
    lat_b09 BIGINT NOT NULL DEFAULT 0,
    lat_b10 BIGINT NOT NULL DEFAULT 0,
    lat_b11 BIGINT NOT NULL DEFAULT 0,
    lat_b12 BIGINT NOT NULL DEFAULT 0,
    lat_b13 BIGINT NOT NULL DEFAULT 0,
    lat_b14 BIGINT NOT NULL DEFAULT 0,
    ttft_count BIGINT NOT NULL DEFAULT 0,
    ttft_sum_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    ttft_b00 BIGINT NOT NULL DEFAULT 0,
    ttft_b01 BIGINT NOT NULL DEFAULT 0,
    ttft_b02 BIGINT NOT NULL DEFAULT 0,
    ttft_b03 BIGINT NOT NULL DEFAULT 0,
    ttft_b04 BIGINT NOT NULL DEFAULT 0,
    ttft_b05 BIGINT NOT NULL DEFAULT 0,
    ttft_b06 BIGINT NOT NULL DEFAULT 0,
    ttft_b07 BIGINT NOT NULL DEFAULT 0,
    ttft_b08 BIGINT NOT NULL DEFAULT 0,
    ttft_b09 BIGINT NOT NULL DEFAULT 0,
    ttft_b10 BIGINT NOT NULL DEFAULT 0,
    ttft_b11 BIGINT NOT NULL DEFAULT 0,
    ttft_b12 BIGINT NOT NULL DEFAULT 0,
    ttft_b13 BIGINT NOT NULL DEFAULT 0,
    ttft_b14 BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, bucket_start, prompt, version, model, provider, label, variant)
);

-- Failed calls per error type, same key.
CREATE TABLE telemetry_errors (
    project_id BIGINT NOT NULL REFERENCES projects(id),
    bucket_start BIGINT NOT NULL,
    prompt TEXT NOT NULL,
    version BIGINT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    label TEXT NOT NULL,
    variant TEXT NOT NULL,
    error_type TEXT NOT NULL,
    count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, bucket_start, prompt, version, model, provider, label, variant, error_type)
);
