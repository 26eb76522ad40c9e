-- The Pet Store schema. Times are RFC 3339 text in UTC (fixed width, so text
-- order is time order); booleans are not used; ids are never reused.
CREATE TABLE pets (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    species    TEXT    NOT NULL CHECK (length(species) BETWEEN 1 AND 50),
    -- JSON array of the tags, in the client's order; pet_tags is the index.
    tags       TEXT    NOT NULL DEFAULT '[]',
    status     TEXT    NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'pending', 'sold')),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);
CREATE INDEX pets_status ON pets (status);
CREATE INDEX pets_species ON pets (species);

CREATE TABLE pet_tags (
    pet_id INTEGER NOT NULL REFERENCES pets (id) ON DELETE CASCADE,
    tag    TEXT    NOT NULL,
    PRIMARY KEY (pet_id, tag)
);
CREATE INDEX pet_tags_tag ON pet_tags (tag, pet_id);

CREATE TABLE orders (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    -- NULL once a pet whose orders were all delivered is deleted: the order stays.
    pet_id     INTEGER REFERENCES pets (id) ON DELETE SET NULL,
    quantity   INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    status     TEXT    NOT NULL CHECK (status IN ('placed', 'approved', 'delivered')),
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
);
CREATE INDEX orders_pet_status ON orders (pet_id, status);
CREATE INDEX orders_status ON orders (status);
