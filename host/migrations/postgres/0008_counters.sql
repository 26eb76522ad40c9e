-- Counts of pets by status (and by species and status) and of orders by
-- status, kept by triggers in the transaction of each write, so a list's
-- `total` and the inventory read a few rows instead of counting the table,
-- and no crash can part a write from its count. Each count is spread over
-- 16 shards, the connection's (pg_backend_pid() % 16): concurrent writers
-- add to different rows instead of queueing on one; a reader sums them.
-- A restore (`petstore import`, one transaction of many rows) sets
-- petstore.restoring, which the triggers skip, and counts once at its end:
-- a row trigger updating the same count 100,000 times in one transaction
-- makes 100,000 versions of one row.
CREATE TABLE pet_status_counts (
    status TEXT     NOT NULL,
    shard  SMALLINT NOT NULL,
    n      BIGINT   NOT NULL,
    PRIMARY KEY (status, shard)
);
CREATE TABLE pet_species_counts (
    species TEXT     NOT NULL,
    status  TEXT     NOT NULL,
    shard   SMALLINT NOT NULL,
    n       BIGINT   NOT NULL,
    PRIMARY KEY (species, status, shard)
);
CREATE TABLE order_status_counts (
    status TEXT     NOT NULL,
    shard  SMALLINT NOT NULL,
    n      BIGINT   NOT NULL,
    PRIMARY KEY (status, shard)
);

INSERT INTO pet_status_counts SELECT status, 0, count(*) FROM pets GROUP BY status;
INSERT INTO pet_species_counts SELECT species, status, 0, count(*) FROM pets GROUP BY species, status;
INSERT INTO order_status_counts SELECT status, 0, count(*) FROM orders GROUP BY status;

-- The trigger functions run as whoever writes (a component's role): they
-- call no other function, which that role may not execute.
CREATE FUNCTION pets_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard SMALLINT := pg_backend_pid() % 16;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO pet_status_counts VALUES (OLD.status, my_shard, -1)
            ON CONFLICT ON CONSTRAINT pet_status_counts_pkey DO UPDATE SET n = pet_status_counts.n - 1;
        INSERT INTO pet_species_counts VALUES (OLD.species, OLD.status, my_shard, -1)
            ON CONFLICT ON CONSTRAINT pet_species_counts_pkey DO UPDATE SET n = pet_species_counts.n - 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO pet_status_counts VALUES (NEW.status, my_shard, 1)
            ON CONFLICT ON CONSTRAINT pet_status_counts_pkey DO UPDATE SET n = pet_status_counts.n + 1;
        INSERT INTO pet_species_counts VALUES (NEW.species, NEW.status, my_shard, 1)
            ON CONFLICT ON CONSTRAINT pet_species_counts_pkey DO UPDATE SET n = pet_species_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER pets_counted_insert_delete AFTER INSERT OR DELETE ON pets
    FOR EACH ROW WHEN (current_setting('petstore.restoring', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION pets_counted();
CREATE TRIGGER pets_counted_update AFTER UPDATE OF status, species ON pets
    FOR EACH ROW WHEN ((OLD.status IS DISTINCT FROM NEW.status OR OLD.species IS DISTINCT FROM NEW.species)
        AND current_setting('petstore.restoring', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION pets_counted();

CREATE FUNCTION orders_counted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard SMALLINT := pg_backend_pid() % 16;
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO order_status_counts VALUES (OLD.status, my_shard, -1)
            ON CONFLICT ON CONSTRAINT order_status_counts_pkey DO UPDATE SET n = order_status_counts.n - 1;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO order_status_counts VALUES (NEW.status, my_shard, 1)
            ON CONFLICT ON CONSTRAINT order_status_counts_pkey DO UPDATE SET n = order_status_counts.n + 1;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_counted_insert_delete AFTER INSERT OR DELETE ON orders
    FOR EACH ROW WHEN (current_setting('petstore.restoring', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION orders_counted();
CREATE TRIGGER orders_counted_update AFTER UPDATE OF status ON orders
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
        AND current_setting('petstore.restoring', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION orders_counted();
