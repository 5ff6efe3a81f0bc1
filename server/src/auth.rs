//! Device tokens: who is calling, and may they act on the namespace they name?

use rusqlite::{Connection, OptionalExtension};
use subtle::ConstantTimeEq;

use crate::admin::token_hash;
use crate::error::{Error, Result};

/// An authenticated caller: one device of one namespace.
#[derive(Debug, Clone)]
pub struct Caller {
    pub namespace_id: i64,
    pub namespace: String,
    pub device: String,
}

impl Caller {
    /// Refuses a request that names a namespace the token was not granted.
    pub fn check_namespace(&self, requested: &str) -> Result<()> {
        if requested == self.namespace {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "this device's token is not granted namespace {requested:?}"
            )))
        }
    }
}

/// `Bearer <token>` → the token.
pub fn bearer(header: Option<&str>) -> Result<&str> {
    let h = header.ok_or_else(|| {
        Error::Unauthenticated("missing authorization metadata (Bearer <token>)".into())
    })?;
    h.strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Unauthenticated("authorization must be `Bearer <token>`".into()))
}

/// Looks the token up by its SHA-256; the stored hash is compared again in constant time.
pub fn lookup(conn: &Connection, token: &str) -> Result<Caller> {
    let hash = token_hash(token);
    let row = conn
        .query_row(
            "SELECT t.token_hash, t.namespace_id, n.name, t.device
             FROM tokens t JOIN namespaces n ON n.id = t.namespace_id WHERE t.token_hash = ?1",
            [&hash[..]],
            |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    match row {
        Some((stored, namespace_id, namespace, device)) if bool::from(stored.ct_eq(&hash[..])) => {
            Ok(Caller {
                namespace_id,
                namespace,
                device,
            })
        }
        _ => Err(Error::Unauthenticated(
            "unknown or revoked device token".into(),
        )),
    }
}
