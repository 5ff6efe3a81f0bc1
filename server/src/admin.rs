//! Administration on the database file itself: namespaces and device tokens. Safe while `serve` runs.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::db;
use crate::error::{Error, Result};

/// Creates the database if needed and brings its schema up to date.
pub fn init_db(db: &Path) -> Result<(), Error> {
    db::open(db).map(drop)
}

/// Creates a namespace with the default chunking parameters; `owner` (a user) may share it.
pub fn create_namespace_owned(db: &Path, name: &str, owner: Option<&str>) -> Result<(), Error> {
    if let Some(o) = owner {
        let conn = db::open(db)?;
        let exists: bool = conn
            .prepare("SELECT 1 FROM users WHERE name = ?1")?
            .exists([o])?;
        if !exists {
            return Err(Error::NotFound(format!(
                "there is no user {o:?}; create it first (`cairn-server user add`)"
            )));
        }
    }
    create_namespace(db, name)?;
    if let Some(o) = owner {
        share(db, name, o, Some("owner"))?;
    }
    Ok(())
}

/// Creates a namespace with the default chunking parameters.
pub fn create_namespace(db: &Path, name: &str) -> Result<(), Error> {
    validate_name("namespace", name)?;
    let conn = db::open(db)?;
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO namespaces (name, chunk_min, chunk_avg, chunk_max, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        (
            name,
            cairn_proto::DEFAULT_CHUNK_MIN,
            cairn_proto::DEFAULT_CHUNK_AVG,
            cairn_proto::DEFAULT_CHUNK_MAX,
            db::now_ms(),
        ),
    )?;
    if inserted == 0 {
        return Err(Error::AlreadyExists(format!(
            "namespace {name:?} already exists"
        )));
    }
    Ok(())
}

/// Creates a user who logs in with `password` (`cairn login`).
pub fn create_user(db: &Path, name: &str, password: &str) -> Result<(), Error> {
    validate_name("user", name)?;
    if password.chars().count() < 8 {
        return Err(Error::InvalidArgument(
            "the password must have at least 8 characters".into(),
        ));
    }
    let hash = crate::accounts::hash_password(password)?;
    let conn = db::open(db)?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, created_at_ms) VALUES (?1, ?2, ?3)",
        (name, &hash, db::now_ms()),
    )?;
    if n == 0 {
        return Err(Error::AlreadyExists(format!(
            "user {name:?} already exists"
        )));
    }
    Ok(())
}

/// Gives `user` a role on `namespace` (`None`: removes them), as an owner would with `cairn share`.
pub fn share(db: &Path, namespace: &str, user: &str, role: Option<&str>) -> Result<(), Error> {
    let role = match role {
        None => None,
        Some(r) => Some(crate::auth::Role::parse(r).ok_or_else(|| {
            Error::InvalidArgument(format!("role {r:?} is not one of owner, edit, view"))
        })?),
    };
    let mut conn = db::open(db)?;
    let ns = crate::accounts::ns_id(&conn, namespace)?;
    crate::accounts::set_member(&mut conn, ns, user, role)
}

/// Revokes every device of `user` (or only the one named `device`) and every namespace token of
/// that device name; returns how many were revoked.
pub fn revoke(db: &Path, user: &str, device: Option<&str>) -> Result<usize, Error> {
    let conn = db::open(db)?;
    let n = conn.execute(
        "UPDATE devices SET revoked_at_ms = ?3 WHERE revoked_at_ms IS NULL
           AND user_id = (SELECT id FROM users WHERE name = ?1) AND (?2 IS NULL OR name = ?2)",
        (user, device, db::now_ms()),
    )?;
    Ok(n)
}

/// Creates a device token for `namespace` and returns it. Only its hash is stored: show it once.
pub fn create_token(db: &Path, namespace: &str, device: &str) -> Result<String, Error> {
    validate_name("device", device)?;
    let conn = db::open(db)?;
    let ns_id = namespace_id(&conn, namespace)?.ok_or_else(|| {
        Error::NotFound(format!(
            "namespace {namespace:?} does not exist; create it first"
        ))
    })?;
    let raw: [u8; 32] = rand::random();
    let token = format!("cairn_{}", hex::encode(raw));
    conn.execute(
        "INSERT INTO tokens (namespace_id, device, token_hash, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        (ns_id, device, &token_hash(&token)[..], db::now_ms()),
    )?;
    Ok(token)
}

/// A namespace's history and space settings, as `namespace set` changes and shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NamespaceSettings {
    pub name: String,
    pub retention_ms: i64,
    /// None: no quota.
    pub quota_bytes: Option<u64>,
    /// Current files' total size (what the quota counts).
    pub logical_bytes: u64,
}

/// Changes a namespace's retention and/or quota (`Some(None)` removes the quota) and returns the
/// settings in force afterwards. A lower quota than what is in use refuses only growing commits.
pub fn set_namespace(
    db: &Path,
    name: &str,
    retention: Option<std::time::Duration>,
    quota: Option<Option<u64>>,
) -> Result<NamespaceSettings, Error> {
    let conn = db::open(db)?;
    let id = namespace_id(&conn, name)?
        .ok_or_else(|| Error::NotFound(format!("namespace {name:?} does not exist")))?;
    if let Some(r) = retention {
        conn.execute(
            "UPDATE namespaces SET retention_ms = ?1 WHERE id = ?2",
            (r.as_millis() as i64, id),
        )?;
    }
    if let Some(q) = quota {
        conn.execute(
            "UPDATE namespaces SET quota_bytes = ?1 WHERE id = ?2",
            (q.map(|b| b as i64), id),
        )?;
    }
    Ok(conn.query_row(
        "SELECT name, retention_ms, quota_bytes, logical_bytes FROM namespaces WHERE id = ?1",
        [id],
        |r| {
            Ok(NamespaceSettings {
                name: r.get(0)?,
                retention_ms: r.get(1)?,
                quota_bytes: r.get::<_, Option<i64>>(2)?.map(|q| q as u64),
                logical_bytes: r.get::<_, i64>(3)? as u64,
            })
        },
    )?)
}

pub(crate) fn namespace_id(conn: &Connection, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_row("SELECT id FROM namespaces WHERE name = ?1", [name], |r| {
            r.get(0)
        })
        .optional()?)
}

/// What the database keeps of a token.
pub(crate) fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn validate_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} name {name:?} must be 1-128 letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_cannot_be_created_twice_and_tokens_need_an_existing_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        create_namespace(&db, "team").unwrap();
        assert!(matches!(
            create_namespace(&db, "team"),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            create_token(&db, "nope", "laptop"),
            Err(Error::NotFound(_))
        ));
        let t1 = create_token(&db, "team", "laptop").unwrap();
        let t2 = create_token(&db, "team", "laptop").unwrap();
        assert_ne!(t1, t2);
        assert!(matches!(
            create_namespace(&db, "a/b"),
            Err(Error::InvalidArgument(_))
        ));
    }
}
