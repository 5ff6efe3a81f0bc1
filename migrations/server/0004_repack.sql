-- Repacking (issue 6): an object replaced by a repack stays readable for a while, because clients
-- may hold presigned GET URLs of it (15 minutes) or a chunk location read just before the move.
-- GC deletes a doomed object only once not_before_ms has passed. A repack also parks the key of
-- the object it is about to write here first (far in the future), so a crash before the move
-- leaves no untracked object behind.
ALTER TABLE doomed_objects ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
