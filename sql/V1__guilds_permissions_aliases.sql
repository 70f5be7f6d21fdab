-- Guilds, their settings, permission levels and command aliases.
-- Discord ids are bigint. Permission levels: everyone=0, mod=1, admin=2, owner=3.

CREATE TABLE guilds (
    id         bigint PRIMARY KEY,
    joined_at  timestamptz NOT NULL DEFAULT now(),
    left_at    timestamptz
);

CREATE TABLE guild_settings (
    guild_id        bigint PRIMARY KEY REFERENCES guilds (id) ON DELETE CASCADE,
    prefix          text CHECK (char_length(prefix) BETWEEN 1 AND 16),          -- NULL: the bot's default
    features        jsonb NOT NULL DEFAULT '{}'::jsonb,                          -- {"feature": true|false}
    log_channel_id  bigint,
    automod_level   smallint NOT NULL DEFAULT 0 CHECK (automod_level BETWEEN 0 AND 3),
    locale          text NOT NULL DEFAULT 'en-US' CHECK (char_length(locale) BETWEEN 2 AND 16),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT guild_settings_features_object CHECK (jsonb_typeof(features) = 'object')
);

-- The permission level a role grants in a guild (a member gets the highest of their roles).
CREATE TABLE role_permissions (
    guild_id   bigint NOT NULL REFERENCES guilds (id) ON DELETE CASCADE,
    role_id    bigint NOT NULL,
    level      smallint NOT NULL CHECK (level BETWEEN 0 AND 3),
    PRIMARY KEY (guild_id, role_id)
);

-- Per-command overrides in a guild: the level required to run it, or the command disabled.
CREATE TABLE command_overrides (
    guild_id   bigint NOT NULL REFERENCES guilds (id) ON DELETE CASCADE,
    command    text NOT NULL CHECK (char_length(command) BETWEEN 1 AND 100),
    min_level  smallint CHECK (min_level BETWEEN 0 AND 3),                         -- NULL: the command's default
    enabled    boolean NOT NULL DEFAULT true,
    PRIMARY KEY (guild_id, command)
);

-- Aliases: a short name that expands to a command line, for a whole guild or for one user.
CREATE TABLE aliases (
    id          bigserial PRIMARY KEY,
    scope       text NOT NULL CHECK (scope IN ('guild', 'user')),
    scope_id    bigint NOT NULL,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 32),
    command     text NOT NULL CHECK (char_length(command) BETWEEN 1 AND 2000),
    created_by  bigint,                                                           -- NULL once erased
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT aliases_scope_name_key UNIQUE (scope, scope_id, name)
);
CREATE INDEX aliases_created_by_idx ON aliases (created_by) WHERE created_by IS NOT NULL;
