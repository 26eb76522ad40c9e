-- The component registry moves into a schema of its own, which only the
-- host's role can reach: components' statements run as another role
-- (DB_COMPONENT_USER), with no USAGE on it. The host finds these tables
-- through its connections' search_path (public, petstore_registry).
CREATE SCHEMA petstore_registry;
REVOKE ALL ON SCHEMA petstore_registry FROM PUBLIC;
ALTER TABLE component_versions SET SCHEMA petstore_registry;
ALTER TABLE component_active SET SCHEMA petstore_registry;
ALTER TABLE replica_components SET SCHEMA petstore_registry;

-- The version a signature's trusted comment names (NULL: unsigned, or an
-- image's own component), and the highest one ever activated per component:
-- an upload below it is a downgrade or a replay.
ALTER TABLE petstore_registry.component_versions ADD COLUMN version BIGINT;
ALTER TABLE petstore_registry.component_active ADD COLUMN highest_version BIGINT;

-- Shared artifacts were authenticated with the admin token, which no longer
-- vouches for native code (a dedicated artifact key does): drop them, and
-- replicas compile those versions instead.
UPDATE petstore_registry.component_versions SET artifact = NULL, artifact_mac = NULL;
