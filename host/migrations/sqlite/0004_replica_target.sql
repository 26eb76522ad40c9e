-- A replica's report names the version it last tried to reach (`target`)
-- beside the one it serves (`digest`), so its `state` and `reason` can be
-- read as being about that version: a failure to load an earlier version
-- says nothing about the one being rolled out now.
--
-- Rows written before this migration have no target ('') until the replica
-- reports again, within one COMPONENT_SYNC_MS.
ALTER TABLE replica_components ADD COLUMN target TEXT NOT NULL DEFAULT '';
