//! Who is calling, and what may they do on the namespace they name?
//!
//! Two kinds of token: a user's device token (from `Login`; rights come from the user's
//! memberships) and a namespace token (`cairn-server token create`; one device with edit rights
//! on one namespace). Both are stored as SHA-256 hashes, looked up by hash and compared again in
//! constant time. A revoked token, or a user who lost their membership, is refused on the next
//! call; open streams re-check when access changes (see `service::feed`).

use cairn_proto::pb::Role as PbRole;
use rusqlite::{Connection, OptionalExtension};
use subtle::ConstantTimeEq;

use crate::admin::token_hash;
use crate::error::{Error, Result};

/// Rights on a namespace, in increasing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    View,
    Edit,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "view" => Some(Role::View),
            "edit" => Some(Role::Edit),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Edit => "edit",
            Role::Owner => "owner",
        }
    }

    pub fn to_pb(self) -> PbRole {
        match self {
            Role::View => PbRole::View,
            Role::Edit => PbRole::Edit,
            Role::Owner => PbRole::Owner,
        }
    }

    pub fn from_pb(r: PbRole) -> Option<Self> {
        match r {
            PbRole::None => None,
            PbRole::View => Some(Role::View),
            PbRole::Edit => Some(Role::Edit),
            PbRole::Owner => Some(Role::Owner),
        }
    }
}

/// The authenticated token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A user's device.
    Device {
        device_id: i64,
        user_id: i64,
        user: String,
        device: String,
    },
    /// A namespace token: edit rights on that namespace only.
    NamespaceToken {
        token_id: i64,
        namespace_id: i64,
        device: String,
    },
}

impl Principal {
    pub fn device(&self) -> &str {
        match self {
            Principal::Device { device, .. } | Principal::NamespaceToken { device, .. } => device,
        }
    }

    /// A stable key for per-device rate limits.
    pub fn key(&self) -> (bool, i64) {
        match self {
            Principal::Device { device_id, .. } => (true, *device_id),
            Principal::NamespaceToken { token_id, .. } => (false, *token_id),
        }
    }

    pub fn user(&self) -> Result<(i64, &str)> {
        match self {
            Principal::Device { user_id, user, .. } => Ok((*user_id, user)),
            Principal::NamespaceToken { .. } => Err(Error::PermissionDenied(
                "this is a namespace token, not a user's device: log in with `cairn login` to manage devices and sharing".into(),
            )),
        }
    }
}

/// An authenticated caller acting on one namespace.
#[derive(Debug, Clone)]
pub struct Caller {
    pub namespace_id: i64,
    pub namespace: String,
    pub device: String,
    pub role: Role,
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

fn unknown() -> Error {
    Error::Unauthenticated("unknown or revoked device token — log in again (`cairn login`)".into())
}

/// Looks the token up by its SHA-256; the stored hash is compared again in constant time.
pub fn lookup(conn: &Connection, token: &str) -> Result<Principal> {
    let hash = token_hash(token);
    let device = conn
        .query_row(
            "SELECT d.token_hash, d.id, d.user_id, u.name, d.name, d.revoked_at_ms, d.expires_at_ms
             FROM devices d JOIN users u ON u.id = d.user_id WHERE d.token_hash = ?1",
            [&hash[..]],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            },
        )
        .optional()?;
    if let Some((stored, device_id, user_id, user, device, revoked, expires)) = device {
        if !bool::from(stored.ct_eq(&hash[..])) || revoked.is_some() {
            return Err(unknown());
        }
        if expires.is_some_and(|e| e <= crate::db::now_ms()) {
            return Err(Error::Unauthenticated(
                "this device's token expired — log in again (`cairn login`)".into(),
            ));
        }
        return Ok(Principal::Device {
            device_id,
            user_id,
            user,
            device,
        });
    }
    let row = conn
        .query_row(
            "SELECT token_hash, id, namespace_id, device, revoked_at_ms FROM tokens WHERE token_hash = ?1",
            [&hash[..]],
            |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()?;
    match row {
        Some((stored, token_id, namespace_id, device, None))
            if bool::from(stored.ct_eq(&hash[..])) =>
        {
            Ok(Principal::NamespaceToken {
                token_id,
                namespace_id,
                device,
            })
        }
        _ => Err(unknown()),
    }
}

/// The principal's role on `namespace`, if any.
pub fn role(conn: &Connection, p: &Principal, namespace: &str) -> Result<Option<(i64, Role)>> {
    let Some(ns) = crate::admin::namespace_id(conn, namespace)? else {
        return Ok(None);
    };
    Ok(match p {
        Principal::NamespaceToken { namespace_id, .. } => {
            (*namespace_id == ns).then_some((ns, Role::Edit))
        }
        Principal::Device { user_id, .. } => conn
            .query_row(
                "SELECT role FROM members WHERE namespace_id = ?1 AND user_id = ?2",
                (ns, user_id),
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|r| Role::parse(&r))
            .map(|r| (ns, r)),
    })
}

/// Authorises `p` for `need` on `namespace`. A namespace the caller may not see is reported the
/// same way whether or not it exists (no probing for names).
pub fn access(conn: &Connection, p: Principal, namespace: &str, need: Role) -> Result<Caller> {
    let Some((namespace_id, role)) = role(conn, &p, namespace)? else {
        return Err(Error::PermissionDenied(format!(
            "namespace {namespace:?} does not exist or is not shared with this device's user"
        )));
    };
    if role < need {
        return Err(Error::PermissionDenied(format!(
            "your role on namespace {namespace:?} is {}; this needs {}",
            role.as_str(),
            need.as_str()
        )));
    }
    Ok(Caller {
        namespace_id,
        namespace: namespace.to_owned(),
        device: p.device().to_owned(),
        role,
    })
}
