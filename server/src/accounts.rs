//! Users, devices and shared namespaces.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use cairn_proto::pb::{Device, Member, NamespaceGrant};
use rusqlite::{Connection, OptionalExtension};

use crate::admin::{namespace_id, token_hash};
use crate::auth::{Principal, Role};
use crate::db::{self, Db};
use crate::error::{Error, Result};

/// Argon2id with the crate's defaults (19 MiB, 2 passes): slow to guess, quick enough to log in.
pub fn hash_password(password: &str) -> Result<String> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Internal(format!("salt: {e}")))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| Error::Internal(format!("password hash: {e}")))?
        .to_string())
}

fn password_ok(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A fresh device or namespace token (shown once; only its hash is stored).
pub fn new_token() -> String {
    format!("cairn_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// Checks the password and registers a device; returns (token, device id).
pub async fn login(
    db: &Db,
    user: String,
    password: String,
    device: String,
    ttl: Option<std::time::Duration>,
) -> Result<(String, i64)> {
    crate::admin::validate_name("device", &device)?;
    let refused = || Error::Unauthenticated("wrong user name or password".into());
    let found = db
        .read({
            let user = user.clone();
            move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, password_hash FROM users WHERE name = ?1",
                        [&user],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                    )
                    .optional()?)
            }
        })
        .await?;
    // Hash even for an unknown user, so timing does not tell which names exist.
    let (user_id, stored) = found.unwrap_or((0, DUMMY_HASH.to_owned()));
    let ok = tokio::task::spawn_blocking(move || password_ok(&password, &stored)).await?;
    if !ok || user_id == 0 {
        return Err(refused());
    }
    let token = new_token();
    let hash = token_hash(&token);
    let id = db
        .write(move |conn| {
            let now = db::now_ms();
            let expires = ttl.map(|t| now.saturating_add(t.as_millis() as i64));
            conn.execute(
                "INSERT INTO devices (user_id, name, token_hash, created_at_ms, last_seen_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
                (user_id, &device, &hash[..], now, expires),
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await?;
    Ok((token, id))
}

/// A valid Argon2 hash of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4Jm7Ihx7kSO6vZKsxSgN2pRMHXuoRlLVxb9oj5Vh2MM";

pub async fn devices(db: &Db, p: &Principal) -> Result<Vec<Device>> {
    let (user_id, _) = p.user()?;
    let me = p.key().1;
    db.read(move |conn| {
        let mut stmt = conn.prepare(
            "SELECT id, name, created_at_ms, last_seen_ms, revoked_at_ms FROM devices WHERE user_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([user_id], |r| {
            let id: i64 = r.get(0)?;
            Ok(Device {
                id: id as u64,
                name: r.get(1)?,
                created_at_ms: r.get(2)?,
                last_seen_ms: r.get(3)?,
                revoked_at_ms: r.get::<_, Option<i64>>(4)?.unwrap_or(0),
                current: id == me,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    })
    .await
}

/// Revokes one of the caller's user's devices (itself included).
pub async fn revoke(db: &Db, p: &Principal, device_id: u64) -> Result<()> {
    let (user_id, _) = p.user()?;
    db.write(move |conn| {
        let n = conn.execute(
            "UPDATE devices SET revoked_at_ms = COALESCE(revoked_at_ms, ?3) WHERE id = ?1 AND user_id = ?2",
            (device_id as i64, user_id, db::now_ms()),
        )?;
        if n == 0 {
            return Err(Error::NotFound(format!(
                "you have no device {device_id} (see `cairn devices`)"
            )));
        }
        Ok(())
    })
    .await
}

pub async fn namespaces(db: &Db, p: &Principal) -> Result<Vec<NamespaceGrant>> {
    let p = p.clone();
    db.read(move |conn| {
        let grants = match &p {
            Principal::NamespaceToken { namespace_id, .. } => conn
                .query_row(
                    "SELECT name FROM namespaces WHERE id = ?1",
                    [namespace_id],
                    |r| r.get::<_, String>(0),
                )
                .map(|n| vec![(n, Role::Edit)])?,
            Principal::Device { user_id, .. } => {
                let mut stmt = conn.prepare(
                    "SELECT n.name, m.role FROM members m JOIN namespaces n ON n.id = m.namespace_id
                     WHERE m.user_id = ?1 ORDER BY n.name",
                )?;
                let rows = stmt.query_map([user_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.filter_map(|r| r.ok())
                    .filter_map(|(n, r)| Role::parse(&r).map(|r| (n, r)))
                    .collect()
            }
        };
        Ok(grants
            .into_iter()
            .map(|(namespace, role)| NamespaceGrant {
                namespace,
                role: role.to_pb() as i32,
            })
            .collect())
    })
    .await
}

/// Sets (or with `None` removes) `user`'s role on namespace `ns_id`. The last owner cannot be
/// removed or demoted: a namespace always has someone who can share it.
pub fn set_member(conn: &mut Connection, ns_id: i64, user: &str, role: Option<Role>) -> Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let user_id: i64 = tx
        .query_row("SELECT id FROM users WHERE name = ?1", [user], |r| r.get(0))
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("there is no user {user:?}")))?;
    match role {
        Some(r) => {
            tx.execute(
                "INSERT INTO members (namespace_id, user_id, role) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace_id, user_id) DO UPDATE SET role = excluded.role",
                (ns_id, user_id, r.as_str()),
            )?;
        }
        None => {
            tx.execute(
                "DELETE FROM members WHERE namespace_id = ?1 AND user_id = ?2",
                (ns_id, user_id),
            )?;
        }
    }
    let owners: i64 = tx.query_row(
        "SELECT COUNT(*) FROM members WHERE namespace_id = ?1 AND role = 'owner'",
        [ns_id],
        |r| r.get(0),
    )?;
    if owners == 0 {
        return Err(Error::FailedPrecondition(format!(
            "{user:?} is the namespace's last owner; make someone else owner first"
        )));
    }
    tx.commit()?;
    Ok(())
}

pub async fn members(db: &Db, ns_id: i64) -> Result<Vec<Member>> {
    db.read(move |conn| {
        let mut stmt = conn.prepare(
            "SELECT u.name, m.role FROM members m JOIN users u ON u.id = m.user_id
             WHERE m.namespace_id = ?1 ORDER BY u.name",
        )?;
        let rows = stmt.query_map([ns_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?;
        Ok(rows
            .filter_map(|r| r.ok())
            .filter_map(|(user, role)| {
                Role::parse(&role).map(|r| Member {
                    user,
                    role: r.to_pb() as i32,
                })
            })
            .collect())
    })
    .await
}

/// The namespace's id, for admin commands.
pub fn ns_id(conn: &Connection, name: &str) -> Result<i64> {
    namespace_id(conn, name)?
        .ok_or_else(|| Error::NotFound(format!("namespace {name:?} does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_against_its_own_hash_and_the_dummy_hash_parses() {
        let h = hash_password("correct horse").unwrap();
        assert!(password_ok("correct horse", &h));
        assert!(!password_ok("wrong horse", &h));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!password_ok("", DUMMY_HASH));
    }
}
