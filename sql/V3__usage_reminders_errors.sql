-- Command usage (written in batches), reminders (claimed for exactly-once delivery), error events.

CREATE TABLE command_usage (
    id          bigserial PRIMARY KEY,
    used_at     timestamptz NOT NULL,
    guild_id    bigint,
    channel_id  bigint,
    user_id     bigint NOT NULL,
    command     text NOT NULL CHECK (char_length(command) BETWEEN 1 AND 100),
    cluster_id  integer,
    shard_id    integer,
    success     boolean NOT NULL,
    latency_ms  real
);
CREATE INDEX command_usage_guild_idx ON command_usage (guild_id, used_at);
CREATE INDEX command_usage_user_idx ON command_usage (user_id, used_at);
CREATE INDEX command_usage_command_idx ON command_usage (command, used_at);
CREATE INDEX command_usage_used_at_brin ON command_usage USING brin (used_at);

CREATE TABLE reminders (
    id             bigserial PRIMARY KEY,
    user_id        bigint NOT NULL,
    guild_id       bigint,
    channel_id     bigint,
    body           text NOT NULL,                           -- encrypted at rest (db/crypto.py)
    created_at     timestamptz NOT NULL DEFAULT now(),
    due_at         timestamptz NOT NULL,
    claimed_by     text CHECK (char_length(claimed_by) <= 64),
    claimed_until  timestamptz,
    attempts       integer NOT NULL DEFAULT 0,
    delivered_at   timestamptz
);
CREATE INDEX reminders_due_idx ON reminders (due_at) WHERE delivered_at IS NULL;
CREATE INDEX reminders_user_idx ON reminders (user_id, due_at);
CREATE INDEX reminders_delivered_idx ON reminders (delivered_at) WHERE delivered_at IS NOT NULL;

CREATE TABLE error_events (
    id           bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    code         text NOT NULL CHECK (char_length(code) BETWEEN 1 AND 16),
    message      text NOT NULL CHECK (char_length(message) <= 4000),
    command      text CHECK (char_length(command) <= 100),
    guild_id     bigint,
    channel_id   bigint,
    user_id      bigint,
    cluster_id   integer,
    shard_id     integer,
    context      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX error_events_occurred_idx ON error_events (occurred_at);
CREATE INDEX error_events_code_idx ON error_events (code, occurred_at);
CREATE INDEX error_events_user_idx ON error_events (user_id) WHERE user_id IS NOT NULL;
