-- pet_tags (the index the `tag` filter searches) follows pets.tags by
-- itself, so writing a pet is one statement.
CREATE TRIGGER pets_tags_insert AFTER INSERT ON pets BEGIN
    INSERT INTO pet_tags (pet_id, tag) SELECT NEW.id, value FROM json_each(NEW.tags);
END;

CREATE TRIGGER pets_tags_update AFTER UPDATE OF tags ON pets BEGIN
    DELETE FROM pet_tags WHERE pet_id = NEW.id;
    INSERT INTO pet_tags (pet_id, tag) SELECT NEW.id, value FROM json_each(NEW.tags);
END;
