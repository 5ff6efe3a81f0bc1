-- The live daemon: which folders it syncs (`cairn add` / `cairn remove`) and what it last reported
-- about each, so `cairn status` (another process) can read it.

ALTER TABLE folders ADD COLUMN live INTEGER NOT NULL DEFAULT 0;

CREATE TABLE folder_status (
    folder_id     INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
    -- up_to_date, syncing, paused, offline, error
    state         TEXT NOT NULL,
    files_left    INTEGER NOT NULL DEFAULT 0,
    bytes_left    INTEGER NOT NULL DEFAULT 0,
    -- JSON array of {"path": ..., "reason": ...}
    errors        TEXT NOT NULL DEFAULT '[]',
    -- Why the folder is paused, offline or in error (empty otherwise).
    detail        TEXT NOT NULL DEFAULT '',
    -- The daemon's process id and when it wrote this row.
    pid           INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL DEFAULT 0
);
