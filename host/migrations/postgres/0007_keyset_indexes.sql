-- Lists are ordered by id and page with a cursor (`id > after`): an index
-- on (filter, id) seeks to the page and reads it in order, whatever the
-- depth. They replace the single-column ones, which serve equality lookups
-- the same way. (SQLite's indexes end with the rowid, which is the id: its
-- existing ones already are these.)
CREATE INDEX pets_status_id ON pets (status, id);
CREATE INDEX pets_species_id ON pets (species, id);
CREATE INDEX orders_status_id ON orders (status, id);
DROP INDEX pets_status;
DROP INDEX pets_species;
DROP INDEX orders_status;
