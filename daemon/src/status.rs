//! Folder status: what the daemon writes into the state DB, and `cairn status` reading it back.

use std::path::{Path, PathBuf};

use rusqlite::params;

use crate::error::Result;
use crate::state::{FolderId, State};

/// A folder's state, as `cairn status` names it (CLI.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    UpToDate,
    Syncing,
    Paused,
    Offline,
    Error,
}

impl SyncState {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncState::UpToDate => "up_to_date",
            SyncState::Syncing => "syncing",
            SyncState::Paused => "paused",
            SyncState::Offline => "offline",
            SyncState::Error => "error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PathError {
    pub path: String,
    pub reason: String,
    /// Not a failure: the path synced, but something about it needs the user's eye (a name some
    /// devices cannot hold, a case twin kept under another name).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

/// What the daemon reports about one folder.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FolderStatus {
    pub state: SyncState,
    pub files_left: u64,
    pub bytes_left: u64,
    pub errors: Vec<PathError>,
    pub warnings: Vec<PathError>,
    pub detail: String,
}

/// One row of `cairn status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatusRow {
    pub folder: PathBuf,
    pub namespace: String,
    /// `up_to_date`, `syncing`, `paused`, `offline`, `error`; `offline` too when no daemon runs.
    pub state: String,
    pub files_left: u64,
    pub bytes_left: u64,
    pub errors: Vec<PathError>,
    /// Paths that sync but need the user's eye (see [`PathError::warning`]).
    pub warnings: Vec<PathError>,
    pub detail: String,
    /// Deletions (files) the delete guard holds until `cairn resume DIR --allow-deletes`.
    pub held_deletes: u64,
    pub daemon_running: bool,
    pub updated_at_ms: i64,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn pid_alive(pid: i64) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists()
}

impl State {
    pub fn write_status(&self, folder: FolderId, s: &FolderStatus) -> Result<()> {
        // Warnings share the errors' column, flagged (no schema change).
        let all: Vec<&PathError> = s.errors.iter().chain(&s.warnings).collect();
        // A list of plain strings always serialises.
        let errors = serde_json::to_string(&all).expect("errors serialise");
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO folder_status (folder_id, state, files_left, bytes_left, errors, detail, pid, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![folder.0, s.state.as_str(), s.files_left as i64, s.bytes_left as i64, errors, s.detail, i64::from(std::process::id()), now_ms()],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Every live folder (or only the one at `root`) with its last reported status.
    pub fn statuses(&self, root: Option<&Path>) -> Result<Vec<StatusRow>> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT f.root, f.namespace, s.state, s.files_left, s.bytes_left, s.errors, s.detail, s.pid, s.updated_at_ms, g.held_files
                 FROM folders f LEFT JOIN folder_status s ON s.folder_id = f.id
                 LEFT JOIN delete_guard g ON g.folder_id = f.id WHERE f.live = 1 ORDER BY f.root",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                let pid: Option<i64> = r.get(7)?;
                let running = pid.is_some_and(pid_alive);
                let state: Option<String> = r.get(2)?;
                let errors: Option<String> = r.get(5)?;
                let (warnings, errors): (Vec<PathError>, Vec<PathError>) = errors
                    .and_then(|e| serde_json::from_str::<Vec<PathError>>(&e).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .partition(|e| e.warning);
                Ok(StatusRow {
                    folder: PathBuf::from(r.get::<_, String>(0)?),
                    namespace: r.get(1)?,
                    state: match (running, state) {
                        (true, Some(s)) => s,
                        _ => "offline".to_owned(),
                    },
                    files_left: r.get::<_, Option<i64>>(3)?.unwrap_or(0) as u64,
                    bytes_left: r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                    errors,
                    warnings,
                    detail: if running {
                        r.get::<_, Option<String>>(6)?.unwrap_or_default()
                    } else {
                        "no cairn daemon is running for this --home; start `cairn daemon`"
                            .to_owned()
                    },
                    held_deletes: if running {
                        r.get::<_, Option<i64>>(9)?.unwrap_or(0) as u64
                    } else {
                        0
                    },
                    daemon_running: running,
                    updated_at_ms: r.get::<_, Option<i64>>(8)?.unwrap_or(0),
                })
            })
            .map_err(self.err())?;
        let mut out = Vec::new();
        for row in rows {
            let row = row.map_err(self.err())?;
            if root.is_none_or(|r| r == row.folder) {
                out.push(row);
            }
        }
        Ok(out)
    }
}
