-- Canary releases (host/src/fleet/canary.rs): each component's latest
-- canary, a stored version that serves a share of its requests on every
-- replica until the fleet promotes it or rolls it back, and what each
-- replica counted for it. In the registry's schema: no component reaches it.
CREATE TABLE petstore_registry.component_canary (
    name       TEXT     PRIMARY KEY,
    digest     TEXT     NOT NULL,
    percent    INTEGER  NOT NULL CHECK (percent BETWEEN 1 AND 99),
    state      TEXT     NOT NULL CHECK (state IN ('running', 'promoted', 'rolled_back', 'aborted')),
    -- Why it was promoted, rolled back or aborted, with the figures.
    reason     TEXT,
    -- Unix time in milliseconds; started_ms also tells one canary of a
    -- component from the next in canary_counts.
    started_ms BIGINT   NOT NULL,
    decided_ms BIGINT
);

CREATE TABLE petstore_registry.canary_counts (
    name       TEXT    NOT NULL,
    started_ms BIGINT  NOT NULL,
    replica    TEXT    NOT NULL,
    requests   BIGINT  NOT NULL,
    errors     BIGINT  NOT NULL,
    slow       BIGINT  NOT NULL,
    PRIMARY KEY (name, started_ms, replica)
);
