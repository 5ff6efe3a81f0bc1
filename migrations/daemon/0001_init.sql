-- The daemon's local state: synced folders and, per folder, the "synced" tree (the last state
-- both this device and the server agreed on). Append-only: change the schema in a new file.

CREATE TABLE folders (
    id        INTEGER PRIMARY KEY,
    -- Canonical absolute path of the folder's root.
    root      TEXT NOT NULL,
    namespace TEXT NOT NULL,
    server    TEXT NOT NULL,
    -- The device name the server knows this device by (from GetNamespace).
    device    TEXT NOT NULL DEFAULT '',
    -- The last sync log sequence number applied.
    cursor    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (root, namespace, server)
);

CREATE TABLE entries (
    folder_id      INTEGER NOT NULL REFERENCES folders(id) ON DELETE CASCADE,
    -- Namespace-relative, NFC, `/`-separated.
    path           TEXT NOT NULL,
    -- 1 file, 2 directory, 3 symlink (as EntryKind on the wire).
    kind           INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    -- BLAKE3 of the manifest, files only.
    content_id     BLOB,
    size           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    inode          INTEGER NOT NULL,
    mode           INTEGER NOT NULL,
    symlink_target TEXT,
    PRIMARY KEY (folder_id, path)
) WITHOUT ROWID;
