-- pet_tags (the index the `tag` filter searches) follows pets.tags by
-- itself, so writing a pet is one statement.
CREATE FUNCTION pets_sync_tags() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM pet_tags WHERE pet_id = NEW.id;
    END IF;
    INSERT INTO pet_tags (pet_id, tag) SELECT NEW.id, t.value FROM json_array_elements_text(NEW.tags::json) AS t(value);
    RETURN NULL;
END
$$;

CREATE TRIGGER pets_tags AFTER INSERT OR UPDATE OF tags ON pets FOR EACH ROW EXECUTE FUNCTION pets_sync_tags();
