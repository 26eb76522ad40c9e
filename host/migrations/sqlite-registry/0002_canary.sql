-- Canary releases (host/src/fleet/canary.rs): each component's latest
-- canary, a stored version that serves a share of its requests until the
-- host promotes it or rolls it back, and what each replica counted for it.
-- The same tables as PostgreSQL's schema petstore_registry.
CREATE TABLE component_canary (
    name       TEXT    PRIMARY KEY,
    digest     TEXT    NOT NULL,
    percent    INTEGER NOT NULL CHECK (percent BETWEEN 1 AND 99),
    state      TEXT    NOT NULL CHECK (state IN ('running', 'promoted', 'rolled_back', 'aborted')),
    -- Why it was promoted, rolled back or aborted, with the figures.
    reason     TEXT,
    -- Unix time in milliseconds; started_ms also tells one canary of a
    -- component from the next in canary_counts.
    started_ms INTEGER NOT NULL,
    decided_ms INTEGER
);

CREATE TABLE canary_counts (
    name       TEXT    NOT NULL,
    started_ms INTEGER NOT NULL,
    replica    TEXT    NOT NULL,
    requests   INTEGER NOT NULL,
    errors     INTEGER NOT NULL,
    slow       INTEGER NOT NULL,
    PRIMARY KEY (name, started_ms, replica)
);
