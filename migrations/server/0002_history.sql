-- History and safety: retention, quotas, garbage collection, scrub quarantine.

-- Per namespace: how long a version is kept after it stopped being current (default 30 days),
-- an optional quota on the current files' total size, and that total (kept up to date by commits).
ALTER TABLE namespaces ADD COLUMN retention_ms INTEGER NOT NULL DEFAULT 2592000000;
ALTER TABLE namespaces ADD COLUMN quota_bytes INTEGER;
ALTER TABLE namespaces ADD COLUMN logical_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE namespaces SET logical_bytes = (
    SELECT COALESCE(SUM(v.size), 0) FROM files f
    JOIN versions v ON v.file_id = f.id AND v.version = f.head_version
    WHERE f.namespace_id = namespaces.id AND v.deleted = 0
);

-- How a version came to be ('' for versions written before this migration: derived on read),
-- and when the next version replaced it (NULL while it is current). Retention drops versions by
-- superseded_at_ms.
ALTER TABLE versions ADD COLUMN action TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN action_detail TEXT NOT NULL DEFAULT '';
ALTER TABLE versions ADD COLUMN superseded_at_ms INTEGER;
UPDATE versions SET superseded_at_ms = (
    SELECT n.committed_at_ms FROM versions n
    WHERE n.file_id = versions.file_id AND n.version = versions.version + 1
);
CREATE INDEX versions_superseded ON versions (superseded_at_ms) WHERE superseded_at_ms IS NOT NULL;
CREATE INDEX sync_log_by_file ON sync_log (file_id, version);

-- Garbage collection: when a chunk was last protected (uploaded, reported present by
-- FindMissing, or left without references). A chunk is collected only when no version
-- references it and this is older than the grace period.
ALTER TABLE chunks ADD COLUMN touched_at_ms INTEGER NOT NULL DEFAULT 0;
CREATE INDEX chunks_by_object ON chunks (object_id);
CREATE INDEX namespace_chunks_by_chunk ON namespace_chunks (chunk_id);
CREATE INDEX chunks_unreferenced ON chunks (touched_at_ms) WHERE refcount = 0;

-- Objects whose rows are gone but whose bytes may still be in the store (deleted after the
-- transaction that dropped them; retried by the next GC when the store was unreachable).
CREATE TABLE doomed_objects (
    key TEXT PRIMARY KEY
) WITHOUT ROWID;

-- Chunks scrub found damaged or missing: their rows are gone (FindMissing reports them missing,
-- so the next device that has the data uploads it again); refcount is kept for the healed row.
CREATE TABLE quarantine (
    chunk_id    BLOB    PRIMARY KEY,
    length      INTEGER NOT NULL,
    refcount    INTEGER NOT NULL,
    object_key  TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    found_at_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- Current file versions that hold a quarantined chunk (what ListWanted answers).
CREATE TABLE quarantine_refs (
    chunk_id     BLOB    NOT NULL,
    namespace_id INTEGER NOT NULL,
    path         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    PRIMARY KEY (chunk_id, namespace_id, path)
) WITHOUT ROWID;
