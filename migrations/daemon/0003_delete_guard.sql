-- The delete guard: deletions a daemon holds for a folder, and the one-time allowance
-- `cairn resume DIR --allow-deletes` (another process) gives it. No row: nothing is held.

CREATE TABLE delete_guard (
    folder_id     INTEGER PRIMARY KEY REFERENCES folders(id) ON DELETE CASCADE,
    -- Files (folders not counted) among the held deletions, and every held operation.
    held_files    INTEGER NOT NULL,
    held_ops      INTEGER NOT NULL,
    -- The folder's synced files when the guard tripped (for the message).
    folder_files  INTEGER NOT NULL,
    -- Changes whenever the daemon's held set changes, so an allowance covers exactly the
    -- deletions the user was shown.
    generation    INTEGER NOT NULL,
    -- The generation `cairn resume --allow-deletes` allowed (0: none yet).
    allowed       INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL DEFAULT 0
);
