-- Writing a pet cost three trigger calls (tags, then two counts) and a
-- foreign-key check per tag: more database time than the insert itself.
-- One function now keeps both pet_tags and the counts, called once per
-- written row, and only when a column it follows changed.
--
-- pet_tags loses its foreign key: its rows are written only here, in the
-- transaction of the pet's own write, so the check could never fail, and
-- the delete it cascaded is done here. (A component may still write
-- pet_tags itself; a row naming no pet is never read: the `tag` filter
-- joins it to pets.)
--
-- A count row is updated in place (it exists after its first write); only
-- a new shard or value is inserted.
ALTER TABLE pet_tags DROP CONSTRAINT pet_tags_pet_id_fkey;

DROP TRIGGER pets_tags ON pets;
DROP TRIGGER pets_counted_insert_delete ON pets;
DROP TRIGGER pets_counted_update ON pets;
DROP FUNCTION pets_sync_tags();
DROP FUNCTION pets_counted();

-- Runs as whoever writes (a component's role), and calls no function that
-- role may not execute.
CREATE FUNCTION pets_written() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    my_shard SMALLINT := pg_backend_pid() % 16;
    counting BOOLEAN := current_setting('petstore.restoring', true) IS DISTINCT FROM 'on';
    delta BIGINT;
    pet pets;
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.tags IS DISTINCT FROM NEW.tags) THEN
        DELETE FROM pet_tags WHERE pet_id = OLD.id;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.tags IS DISTINCT FROM NEW.tags) THEN
        INSERT INTO pet_tags (pet_id, tag) SELECT NEW.id, t.value FROM json_array_elements_text(NEW.tags::json) AS t(value);
    END IF;
    IF NOT counting OR (TG_OP = 'UPDATE' AND OLD.status = NEW.status AND OLD.species = NEW.species) THEN
        RETURN NULL;
    END IF;
    -- The row before the write leaves its counts, the row after joins them.
    FOREACH delta IN ARRAY ARRAY[-1, 1] LOOP
        CONTINUE WHEN (delta = -1 AND TG_OP = 'INSERT') OR (delta = 1 AND TG_OP = 'DELETE');
        pet := CASE WHEN delta = -1 THEN OLD ELSE NEW END;
        UPDATE pet_status_counts SET n = n + delta WHERE status = pet.status AND shard = my_shard;
        IF NOT FOUND THEN
            INSERT INTO pet_status_counts VALUES (pet.status, my_shard, delta)
                ON CONFLICT ON CONSTRAINT pet_status_counts_pkey DO UPDATE SET n = pet_status_counts.n + delta;
        END IF;
        UPDATE pet_species_counts SET n = n + delta
            WHERE species = pet.species AND status = pet.status AND shard = my_shard;
        IF NOT FOUND THEN
            INSERT INTO pet_species_counts VALUES (pet.species, pet.status, my_shard, delta)
                ON CONFLICT ON CONSTRAINT pet_species_counts_pkey DO UPDATE SET n = pet_species_counts.n + delta;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER pets_written_insert_delete AFTER INSERT OR DELETE ON pets
    FOR EACH ROW EXECUTE FUNCTION pets_written();
CREATE TRIGGER pets_written_update AFTER UPDATE OF tags, status, species ON pets
    FOR EACH ROW WHEN (OLD.tags IS DISTINCT FROM NEW.tags OR OLD.status IS DISTINCT FROM NEW.status
        OR OLD.species IS DISTINCT FROM NEW.species)
    EXECUTE FUNCTION pets_written();
