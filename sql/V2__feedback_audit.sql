-- Feedback with its status workflow, and the hash-chained audit log (scheme: db/audit.py).

CREATE TABLE feedback (
    id               bigserial PRIMARY KEY,
    guild_id         bigint,
    channel_id       bigint,
    author_id        bigint,
    body             text NOT NULL,                         -- encrypted at rest (db/crypto.py)
    status           text NOT NULL DEFAULT 'open'
                     CHECK (status IN ('open', 'acknowledged', 'resolved', 'rejected')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    acknowledged_by  bigint,
    acknowledged_at  timestamptz,
    closed_by        bigint,
    closed_at        timestamptz,
    resolution       text,                                  -- encrypted at rest
    CONSTRAINT feedback_closed_has_time CHECK ((status IN ('resolved', 'rejected')) = (closed_at IS NOT NULL))
);
CREATE INDEX feedback_guild_status_idx ON feedback (guild_id, status, id DESC);
CREATE INDEX feedback_open_idx ON feedback (id) WHERE status IN ('open', 'acknowledged');
CREATE INDEX feedback_author_idx ON feedback (author_id) WHERE author_id IS NOT NULL;
CREATE INDEX feedback_closed_at_idx ON feedback (closed_at) WHERE closed_at IS NOT NULL;

-- One chain per guild (chain_id = guild id, 0 for events outside a guild). The head row is locked
-- while appending, so rows of one chain are strictly ordered by id.
CREATE TABLE audit_heads (
    chain_id   bigint PRIMARY KEY,
    last_id    bigint NOT NULL,
    last_hash  bytea NOT NULL
);

CREATE TABLE audit_log (
    id            bigserial PRIMARY KEY,
    chain_id      bigint NOT NULL,
    guild_id      bigint,
    actor_id      bigint,                                   -- personal: redacted on erasure
    action        text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 64),
    target_id     bigint,                                   -- personal
    target        text CHECK (char_length(target) <= 200),  -- personal
    details       jsonb,                                    -- personal
    created_at    timestamptz NOT NULL DEFAULT now(),
    content_hash  bytea NOT NULL,                           -- sha256 over the personal fields
    prev_hash     bytea NOT NULL,
    hash          bytea NOT NULL,                           -- sha256(prev_hash || the row incl. content_hash)
    redacted_at   timestamptz                               -- the redaction marker
);
CREATE INDEX audit_log_chain_idx ON audit_log (chain_id, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_id) WHERE actor_id IS NOT NULL;
CREATE INDEX audit_log_target_idx ON audit_log (target_id) WHERE target_id IS NOT NULL;

CREATE FUNCTION audit_content_hash(p_actor_id bigint, p_target_id bigint, p_target text, p_details jsonb)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(jsonb_build_array(p_actor_id, p_target_id, p_target, p_details)::text, 'UTF8'))
$$;

CREATE FUNCTION audit_row_hash(p_prev bytea, p_id bigint, p_chain_id bigint, p_guild_id bigint, p_action text,
                               p_created_at timestamptz, p_content_hash bytea)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        p_id, p_chain_id, p_guild_id, p_action,
        (extract(epoch FROM p_created_at) * 1000000)::bigint,
        encode(p_content_hash, 'hex'))::text, 'UTF8'))
$$;

CREATE FUNCTION audit_append(p_guild_id bigint, p_actor_id bigint, p_action text, p_target_id bigint,
                             p_target text, p_details jsonb)
RETURNS audit_log LANGUAGE plpgsql AS $$
DECLARE
    v_chain   bigint := coalesce(p_guild_id, 0);
    v_prev    bytea;
    v_id      bigint;
    v_created timestamptz := clock_timestamp();
    v_content bytea := audit_content_hash(p_actor_id, p_target_id, p_target, p_details);
    v_hash    bytea;
    v_row     audit_log;
BEGIN
    INSERT INTO audit_heads (chain_id, last_id, last_hash)
    VALUES (v_chain, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (chain_id) DO NOTHING;
    SELECT last_hash INTO v_prev FROM audit_heads WHERE chain_id = v_chain FOR UPDATE;
    v_id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    v_hash := audit_row_hash(v_prev, v_id, v_chain, p_guild_id, p_action, v_created, v_content);
    INSERT INTO audit_log (id, chain_id, guild_id, actor_id, action, target_id, target, details, created_at,
                           content_hash, prev_hash, hash)
    VALUES (v_id, v_chain, p_guild_id, p_actor_id, p_action, p_target_id, p_target, p_details, v_created,
            v_content, v_prev, v_hash)
    RETURNING * INTO v_row;
    UPDATE audit_heads SET last_id = v_id, last_hash = v_hash WHERE chain_id = v_chain;
    RETURN v_row;
END
$$;
