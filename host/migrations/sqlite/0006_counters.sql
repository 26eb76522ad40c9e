-- Counts of pets by status (and by species and status) and of orders by
-- status, kept by triggers in the transaction of each write, so a list's
-- `total` and the inventory read a few rows instead of counting the table,
-- and no crash can part a write from its count. The same tables as on
-- PostgreSQL, where a count is spread over shards for concurrent writers;
-- SQLite has one writer at a time, so every count here is shard 0.
CREATE TABLE pet_status_counts (
    status TEXT    NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (status, shard)
);
CREATE TABLE pet_species_counts (
    species TEXT    NOT NULL,
    status  TEXT    NOT NULL,
    shard   INTEGER NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (species, status, shard)
);
CREATE TABLE order_status_counts (
    status TEXT    NOT NULL,
    shard  INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (status, shard)
);

INSERT INTO pet_status_counts SELECT status, 0, count(*) FROM pets GROUP BY status;
INSERT INTO pet_species_counts SELECT species, status, 0, count(*) FROM pets GROUP BY species, status;
INSERT INTO order_status_counts SELECT status, 0, count(*) FROM orders GROUP BY status;

CREATE TRIGGER pets_counted_insert AFTER INSERT ON pets BEGIN
    INSERT INTO pet_status_counts VALUES (NEW.status, 0, 1)
        ON CONFLICT (status, shard) DO UPDATE SET n = n + 1;
    INSERT INTO pet_species_counts VALUES (NEW.species, NEW.status, 0, 1)
        ON CONFLICT (species, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER pets_counted_delete AFTER DELETE ON pets BEGIN
    UPDATE pet_status_counts SET n = n - 1 WHERE status = OLD.status AND shard = 0;
    UPDATE pet_species_counts SET n = n - 1 WHERE species = OLD.species AND status = OLD.status AND shard = 0;
END;

CREATE TRIGGER pets_counted_update AFTER UPDATE OF status, species ON pets
    WHEN OLD.status IS NOT NEW.status OR OLD.species IS NOT NEW.species
BEGIN
    UPDATE pet_status_counts SET n = n - 1 WHERE status = OLD.status AND shard = 0;
    UPDATE pet_species_counts SET n = n - 1 WHERE species = OLD.species AND status = OLD.status AND shard = 0;
    INSERT INTO pet_status_counts VALUES (NEW.status, 0, 1)
        ON CONFLICT (status, shard) DO UPDATE SET n = n + 1;
    INSERT INTO pet_species_counts VALUES (NEW.species, NEW.status, 0, 1)
        ON CONFLICT (species, status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER orders_counted_insert AFTER INSERT ON orders BEGIN
    INSERT INTO order_status_counts VALUES (NEW.status, 0, 1)
        ON CONFLICT (status, shard) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER orders_counted_delete AFTER DELETE ON orders BEGIN
    UPDATE order_status_counts SET n = n - 1 WHERE status = OLD.status AND shard = 0;
END;

CREATE TRIGGER orders_counted_update AFTER UPDATE OF status ON orders
    WHEN OLD.status IS NOT NEW.status
BEGIN
    UPDATE order_status_counts SET n = n - 1 WHERE status = OLD.status AND shard = 0;
    INSERT INTO order_status_counts VALUES (NEW.status, 0, 1)
        ON CONFLICT (status, shard) DO UPDATE SET n = n + 1;
END;
