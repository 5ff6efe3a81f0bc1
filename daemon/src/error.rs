//! The library's one error type: actionable messages, a process exit code, and whether retrying helps.

use std::path::PathBuf;

/// Exit codes of the `cairn` binary (see CLI.md).
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const REFUSED: i32 = 12;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or invalid; the message names it and what to do.
    #[error("{0}")]
    Config(String),
    #[error(
        "cannot reach server {url}: {detail} — is cairn-server running? check --server / CAIRN_SERVER"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "the server refused the request ({0}) — check the token (--token, CAIRN_TOKEN, config.toml or the token file) and --namespace"
    )]
    Refused(String),
    /// A gRPC call failed for another reason.
    #[error("server call {call} failed: {status}")]
    Rpc {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    /// The server answered something the client cannot use.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An HTTP transfer to or from the blob store failed.
    #[error("transfer failed: {detail}")]
    Transfer { detail: String, transient: bool },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("local state database {}: {source} — is another cairn using this --home?", path.display())]
    State {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("local state database {}: cannot apply the schema: {detail}", path.display())]
    Migration { path: PathBuf, detail: String },
    /// One path failed; the rest of the run goes on.
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn path(path: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Path {
            path: path.into(),
            reason: reason.to_string(),
        }
    }

    /// Maps a gRPC status to the error a user can act on.
    pub fn rpc(call: &'static str, status: tonic::Status, server: &str) -> Self {
        use tonic::Code;
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => {
                Error::Refused(format!("{call}: {}", status.message()))
            }
            // A refused connection is Unavailable; an established one that breaks (reset, broken
            // pipe, closed) surfaces from tonic as Unknown or Cancelled with a transport error as
            // its source. All mean: offline, retry.
            Code::Unavailable | Code::Unknown | Code::Cancelled
                if status.message().contains("connect")
                    || status.message().contains("transport")
                    || std::error::Error::source(&status)
                        .is_some_and(|e| e.is::<tonic::transport::Error>()) =>
            {
                Error::Unreachable {
                    url: server.to_owned(),
                    detail: status.message().to_owned(),
                }
            }
            _ => Error::Rpc {
                call,
                status: Box::new(status),
            },
        }
    }

    /// True when the same request may succeed later (network trouble, server overload).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::Rpc { status, .. } => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Aborted
                    | tonic::Code::ResourceExhausted
            ),
            Error::Transfer { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The process exit code for a run that ends with this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Refused(_) => exit::REFUSED,
            _ => exit::ERROR,
        }
    }
}
