-- Accounts: users log in with a password and register devices; namespaces are shared with users
-- as owner / edit / view. The namespace tokens of 0001 (`tokens`) keep working as before: one
-- device with edit rights on one namespace.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT    NOT NULL UNIQUE,
    -- Argon2id, PHC string format.
    password_hash TEXT    NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL REFERENCES users(id),
    name          TEXT    NOT NULL,
    -- SHA-256 of the token; the token itself is shown once, at login.
    token_hash    BLOB    NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL DEFAULT 0,
    revoked_at_ms INTEGER,
    -- After this the token is refused (log in again); NULL: never.
    expires_at_ms INTEGER
);
CREATE INDEX devices_by_user ON devices (user_id);

CREATE TABLE members (
    namespace_id INTEGER NOT NULL REFERENCES namespaces(id),
    user_id      INTEGER NOT NULL REFERENCES users(id),
    role         TEXT    NOT NULL CHECK (role IN ('owner', 'edit', 'view')),
    PRIMARY KEY (namespace_id, user_id)
) WITHOUT ROWID;
CREATE INDEX members_by_user ON members (user_id);

ALTER TABLE tokens ADD COLUMN revoked_at_ms INTEGER;
