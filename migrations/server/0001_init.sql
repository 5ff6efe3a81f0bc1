-- Cairn server schema, version 1. Append-only: later changes go in 0002_*.sql, never here.

CREATE TABLE namespaces (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    chunk_min     INTEGER NOT NULL,
    chunk_avg     INTEGER NOT NULL,
    chunk_max     INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL
);

-- Device tokens: only a SHA-256 of the token is kept.
CREATE TABLE tokens (
    id            INTEGER PRIMARY KEY,
    namespace_id  INTEGER NOT NULL REFERENCES namespaces(id),
    device        TEXT    NOT NULL,
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

-- Stored objects (one large chunk or a pack of small ones), under server-owned content keys.
CREATE TABLE objects (
    id   INTEGER PRIMARY KEY,
    key  TEXT    NOT NULL UNIQUE,
    size INTEGER NOT NULL
);

-- Every verified chunk, stored once whoever uploaded it: where its bytes live.
CREATE TABLE chunks (
    id        BLOB    PRIMARY KEY,
    object_id INTEGER NOT NULL REFERENCES objects(id),
    offset    INTEGER NOT NULL,
    length    INTEGER NOT NULL,
    refcount  INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Which chunks a namespace may reference (it uploaded them, verified). FindMissing answers from here.
CREATE TABLE namespace_chunks (
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
    chunk_id     BLOB    NOT NULL,
    PRIMARY KEY (namespace_id, chunk_id)
) WITHOUT ROWID;

CREATE TABLE uploads (
    upload_id     TEXT    PRIMARY KEY,
    namespace_id  INTEGER NOT NULL REFERENCES namespaces(id),
    staging_key   TEXT    NOT NULL,
    length        INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'failed'))
);

CREATE TABLE upload_chunks (
    upload_id TEXT    NOT NULL REFERENCES uploads(upload_id),
    idx       INTEGER NOT NULL,
    chunk_id  BLOB    NOT NULL,
    length    INTEGER NOT NULL,
    PRIMARY KEY (upload_id, idx)
) WITHOUT ROWID;

-- One row per path ever seen in a namespace; head_version is its newest version.
CREATE TABLE files (
    id           INTEGER PRIMARY KEY,
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
    path         TEXT    NOT NULL,
    head_version INTEGER NOT NULL,
    UNIQUE (namespace_id, path)
);

-- manifest: per chunk, its 32-byte id then its length as a little-endian u32.
CREATE TABLE versions (
    file_id         INTEGER NOT NULL REFERENCES files(id),
    version         INTEGER NOT NULL,
    kind            INTEGER NOT NULL,
    size            INTEGER NOT NULL,
    mode            INTEGER NOT NULL,
    mtime_ns        INTEGER NOT NULL,
    manifest        BLOB    NOT NULL,
    content_id      BLOB    NOT NULL,
    symlink_target  TEXT    NOT NULL,
    device          TEXT    NOT NULL,
    committed_at_ms INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (file_id, version)
) WITHOUT ROWID;

-- The sync log: one row per new version. seq is global and increasing; each namespace reads its own.
CREATE TABLE sync_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
    file_id      INTEGER NOT NULL REFERENCES files(id),
    version      INTEGER NOT NULL
);
CREATE INDEX sync_log_by_namespace ON sync_log (namespace_id, seq);

-- Server-wide secrets generated once (the local store's URL signing key).
CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
