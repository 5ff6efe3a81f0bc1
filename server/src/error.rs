//! The crate's one error type, and its one mapping to `tonic::Status`.

/// Everything that can go wrong in cairn-server. Messages name the path, id or setting involved
/// and, for storage and database trouble, whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// Storage could not be reached or answered with an error; a retry may succeed.
    #[error("storage unavailable, retry later: {0}")]
    Storage(String),
    /// A setting is wrong (`--store`, `--db`, environment): fix it and start again.
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// True when the database was only busy (locked by another writer): a retry helps.
    fn is_busy(&self) -> bool {
        matches!(
            self,
            Error::Db(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        if e.is_busy() {
            return Status::unavailable("database busy, retry shortly");
        }
        match e {
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            e @ Error::Storage(_) => Status::unavailable(e.to_string()),
            e @ (Error::Config(_)
            | Error::Db(_)
            | Error::Migration(_)
            | Error::Io(_)
            | Error::Internal(_)) => {
                tracing::error!(error = %e, "internal error");
                Status::internal(format!(
                    "{e} (a server-side fault; retrying will not help until it is fixed)"
                ))
            }
        }
    }
}
