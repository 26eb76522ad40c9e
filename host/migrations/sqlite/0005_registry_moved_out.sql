-- The component registry moved into a database file of its own
-- (`<data>.registry.db`), which no connection that runs a component's SQL
-- opens. The host copied these tables' rows there before this migration
-- (storage/sqlite: move_registry_out).
DROP TABLE IF EXISTS component_active;
DROP TABLE IF EXISTS replica_components;
DROP TABLE IF EXISTS component_versions;
