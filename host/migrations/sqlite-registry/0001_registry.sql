-- The component registry, in a database file of its own beside the data
-- (see host/src/fleet): every accepted upload of a handler component, which
-- version of each component is active, and what each replica runs. The
-- same tables as PostgreSQL's schema petstore_registry.
CREATE TABLE component_versions (
    name         TEXT    NOT NULL,
    -- sha256 of the bytes, hex.
    digest       TEXT    NOT NULL,
    bytes        BLOB    NOT NULL,
    -- The minisign signature (the .minisig file's text); NULL when unsigned.
    signature    TEXT,
    -- The version its signature's trusted comment names; NULL when unsigned
    -- (development) or one of an image's own components.
    version      INTEGER,
    size         INTEGER NOT NULL,
    uploaded_at  TEXT    NOT NULL,
    -- The uploader's label: the admin token's identity, `image`, or `file watch`.
    uploaded_by  TEXT    NOT NULL,
    -- The uploading replica's compiled artifact, and its HMAC under the
    -- fleet's artifact key: replicas of the same image load it instead of
    -- compiling. NULL when there is none.
    artifact     BLOB,
    artifact_mac TEXT,
    PRIMARY KEY (name, digest)
);

CREATE TABLE component_active (
    name            TEXT    PRIMARY KEY,
    digest          TEXT    NOT NULL,
    activated_at    TEXT    NOT NULL,
    -- The highest signed version ever activated: an upload below it is a
    -- downgrade or a replay, refused unless it is an explicit rollback.
    highest_version INTEGER,
    FOREIGN KEY (name, digest) REFERENCES component_versions (name, digest)
);

-- One row per replica and component, refreshed with every heartbeat.
CREATE TABLE replica_components (
    replica      TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    -- What it serves now.
    digest       TEXT    NOT NULL,
    -- The active digest its state is about.
    target       TEXT    NOT NULL DEFAULT '',
    state        TEXT    NOT NULL CHECK (state IN ('converged', 'loading', 'failed')),
    -- Why it failed to load the active version, when it did.
    reason       TEXT,
    -- Unix time in milliseconds of the replica's last heartbeat.
    heartbeat_ms INTEGER NOT NULL,
    PRIMARY KEY (replica, name)
);
