-- Erasure keeps accountability: the people in an audit row are pseudonymised, not wiped (db/audit.py).
-- And a user's usage rows still buffered in some cluster are dropped when they arrive after the
-- user was erased (db/usage.py).

-- Scheme 2 rows hash the actor and the target each with a random salt of their own:
--   actor_hash   = sha256(actor_salt || [actor_id])
--   target_hash  = sha256(target_salt || [target_id, target])
--   content_hash = sha256([2, hex(actor_hash), hex(target_hash), details])
--   hash         = sha256(prev_hash || [id, chain_id, guild_id, action, created_at µs, hex(content_hash), 2])
-- Erasing one person deletes their id and their salt and keeps the field hash, so the rest of the row
-- (the action, the other person, the details) stays verifiable, and nothing is left to test a guessed
-- id against. Their place is taken by a keyed pseudonym (actor_pseudonym, target_pseudonym) that the
-- privacy.redact entry records, so the chain still says the same person did A and B.
-- Rows written before this migration keep scheme 1 (one hash over every personal field).
ALTER TABLE audit_log
    ADD COLUMN scheme            smallint NOT NULL DEFAULT 1 CHECK (scheme IN (1, 2)),
    ADD COLUMN actor_salt        bytea,       -- personal: deleted with the actor
    ADD COLUMN actor_hash        bytea,
    ADD COLUMN actor_pseudonym   text,        -- set when the actor was erased
    ADD COLUMN target_salt       bytea,       -- personal: deleted with the target
    ADD COLUMN target_hash       bytea,
    ADD COLUMN target_pseudonym  text;        -- set when the target was erased

CREATE FUNCTION audit_field_hash(p_salt bytea, p_value jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(p_salt || convert_to(p_value::text, 'UTF8'))
$$;

CREATE FUNCTION audit_content_hash_v2(p_actor_hash bytea, p_target_hash bytea, p_details jsonb)
RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(jsonb_build_array(
        2, encode(p_actor_hash, 'hex'), encode(p_target_hash, 'hex'), p_details)::text, 'UTF8'))
$$;

CREATE FUNCTION audit_row_hash_v2(p_prev bytea, p_id bigint, p_chain_id bigint, p_guild_id bigint, p_action text,
                                  p_created_at timestamptz, p_content_hash bytea)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT sha256(p_prev || convert_to(jsonb_build_array(
        p_id, p_chain_id, p_guild_id, p_action,
        (extract(epoch FROM p_created_at) * 1000000)::bigint,
        encode(p_content_hash, 'hex'), 2)::text, 'UTF8'))
$$;

-- What verification recomputes, for either scheme.
CREATE FUNCTION audit_computed_content(p_scheme smallint, p_actor_id bigint, p_target_id bigint, p_target text,
                                       p_details jsonb, p_actor_hash bytea, p_target_hash bytea)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_scheme = 2 THEN audit_content_hash_v2(p_actor_hash, p_target_hash, p_details)
                ELSE audit_content_hash(p_actor_id, p_target_id, p_target, p_details) END
$$;

CREATE FUNCTION audit_computed_row_hash(p_scheme smallint, p_prev bytea, p_id bigint, p_chain_id bigint,
                                        p_guild_id bigint, p_action text, p_created_at timestamptz,
                                        p_content_hash bytea)
RETURNS bytea LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_scheme = 2
                THEN audit_row_hash_v2(p_prev, p_id, p_chain_id, p_guild_id, p_action, p_created_at, p_content_hash)
                ELSE audit_row_hash(p_prev, p_id, p_chain_id, p_guild_id, p_action, p_created_at, p_content_hash) END
$$;

-- audit_append (V2) stays for code that still writes scheme 1 rows during an upgrade.
CREATE FUNCTION audit_append_v2(p_guild_id bigint, p_actor_id bigint, p_action text, p_target_id bigint,
                                p_target text, p_details jsonb, p_actor_salt bytea, p_target_salt bytea)
RETURNS audit_log LANGUAGE plpgsql AS $$
DECLARE
    v_chain   bigint := coalesce(p_guild_id, 0);
    v_prev    bytea;
    v_id      bigint;
    v_created timestamptz := clock_timestamp();
    v_actor   bytea;
    v_target  bytea;
    v_content bytea;
    v_hash    bytea;
    v_row     audit_log;
BEGIN
    IF octet_length(p_actor_salt) IS DISTINCT FROM 16 OR octet_length(p_target_salt) IS DISTINCT FROM 16 THEN
        RAISE EXCEPTION 'audit salts are 16 random bytes' USING ERRCODE = 'check_violation';
    END IF;
    v_actor := audit_field_hash(p_actor_salt, jsonb_build_array(p_actor_id));
    v_target := audit_field_hash(p_target_salt, jsonb_build_array(p_target_id, p_target));
    v_content := audit_content_hash_v2(v_actor, v_target, p_details);
    INSERT INTO audit_heads (chain_id, last_id, last_hash)
    VALUES (v_chain, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (chain_id) DO NOTHING;
    SELECT last_hash INTO v_prev FROM audit_heads WHERE chain_id = v_chain FOR UPDATE;
    v_id := nextval(pg_get_serial_sequence('audit_log', 'id'));
    v_hash := audit_row_hash_v2(v_prev, v_id, v_chain, p_guild_id, p_action, v_created, v_content);
    INSERT INTO audit_log (id, chain_id, guild_id, actor_id, action, target_id, target, details, created_at,
                           content_hash, prev_hash, hash, scheme, actor_salt, actor_hash, target_salt, target_hash)
    VALUES (v_id, v_chain, p_guild_id, p_actor_id, p_action, p_target_id, p_target, p_details, v_created,
            v_content, v_prev, v_hash, 2, p_actor_salt, v_actor, p_target_salt, v_target)
    RETURNING * INTO v_row;
    UPDATE audit_heads SET last_id = v_id, last_hash = v_hash WHERE chain_id = v_chain;
    RETURN v_row;
END
$$;

-- Users erased recently: usage rows buffered in a cluster before the erasure are dropped when they are
-- written after it. Kept for seven days (retention), long enough for any buffer to drain.
CREATE TABLE erased_users (
    user_id    bigint PRIMARY KEY,
    erased_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erased_users_erased_at_idx ON erased_users (erased_at);

-- When the clusters' maintenance last finished (db/maintenance.py), so that it runs once per interval
-- for the whole bot however many clusters tick.
CREATE TABLE maintenance_runs (
    job          text PRIMARY KEY,
    finished_at  timestamptz NOT NULL
);
