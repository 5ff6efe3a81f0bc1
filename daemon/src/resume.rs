//! Held deletions in the state DB — what a daemon holds for a folder and the one-time allowance a
//! user gives it — and `cairn resume DIR [--allow-deletes]`, which gives it.
//!
//! The daemon and `cairn resume` are different processes; the state DB is what they share. The
//! daemon writes a row when its held set changes (with a new generation) and, only while it holds
//! something, reads the row on a short timer. `cairn resume --allow-deletes` copies the generation
//! it was shown into `allowed`; the daemon lets exactly that held set through once, then deletes
//! the row, and the guard is armed again.

use std::path::{Path, PathBuf};

use rusqlite::{OptionalExtension, params};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::guard::Held;
use crate::state::{FolderId, State};
use crate::status::{now_ms, pid_alive};

/// One folder's row of `delete_guard`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldRow {
    pub held: Held,
    pub generation: i64,
    /// The generation `cairn resume --allow-deletes` allowed (0: none).
    pub allowed: i64,
}

impl State {
    /// Records what the daemon holds now (a new generation: no allowance carries over).
    pub fn set_held(&self, folder: FolderId, held: &Held, generation: i64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO delete_guard
                 (folder_id, held_files, held_ops, folder_files, generation, allowed, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
                params![
                    folder.0,
                    held.files as i64,
                    held.ops as i64,
                    held.folder_files as i64,
                    generation,
                    now_ms()
                ],
            )
            .map_err(self.err())?;
        Ok(())
    }

    /// Nothing is held for the folder (any allowance is gone with it).
    pub fn clear_held(&self, folder: FolderId) -> Result<()> {
        self.conn()
            .execute("DELETE FROM delete_guard WHERE folder_id = ?1", [folder.0])
            .map_err(self.err())?;
        Ok(())
    }

    pub fn held(&self, folder: FolderId) -> Result<Option<HeldRow>> {
        self.conn()
            .query_row(
                "SELECT held_files, held_ops, folder_files, generation, allowed
                 FROM delete_guard WHERE folder_id = ?1",
                [folder.0],
                |r| {
                    Ok(HeldRow {
                        held: Held {
                            files: r.get::<_, i64>(0)? as u64,
                            ops: r.get::<_, i64>(1)? as u64,
                            folder_files: r.get::<_, i64>(2)? as u64,
                        },
                        generation: r.get(3)?,
                        allowed: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(self.err())
    }

    /// Allows the held deletions of `generation` once. False when the daemon's held set changed
    /// (or was released) since the caller read it: the user has not seen what is held now.
    pub fn allow_held(&self, folder: FolderId, generation: i64) -> Result<bool> {
        let n = self
            .conn()
            .execute(
                "UPDATE delete_guard SET allowed = generation WHERE folder_id = ?1 AND generation = ?2",
                params![folder.0, generation],
            )
            .map_err(self.err())?;
        Ok(n == 1)
    }
}

/// What `cairn resume` did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Resumed {
    pub folder: PathBuf,
    /// The folder's state as the daemon last reported it.
    pub state: String,
    /// Files among the deletions now let through (0: nothing was held).
    pub allowed_files: u64,
    /// Every operation let through (folders included).
    pub allowed_ops: u64,
    /// A sentence for people.
    pub message: String,
}

/// One live folder at a root, as `cairn resume` sees it.
struct Folder {
    id: FolderId,
    state: Option<String>,
    detail: String,
    running: bool,
}

/// `cairn resume DIR [--allow-deletes]`.
pub fn resume(cfg: &Config, dir: &Path, allow_deletes: bool) -> Result<Resumed> {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let state = State::open(&cfg.dirs.state_db())?;
    let f = live_folder(&state, &root)?;
    let reported = f.state.clone().unwrap_or_else(|| "offline".into());
    if !f.running {
        return Err(Error::Config(format!(
            "no cairn daemon is running for this --home, so nothing is held for {} — start `cairn daemon` (it checks the folder's deletions again)",
            root.display()
        )));
    }
    let Some(row) = state.held(f.id)? else {
        if reported == "paused" {
            return Err(Error::Config(format!(
                "{} is paused, and not by the delete guard: {} — `cairn resume` cannot lift that; the folder resumes by itself once its root is back",
                root.display(),
                f.detail
            )));
        }
        return Ok(Resumed {
            message: format!(
                "{} is {reported}: no deletions are held, nothing to resume",
                root.display()
            ),
            folder: root,
            state: reported,
            allowed_files: 0,
            allowed_ops: 0,
        });
    };
    let held = row.held;
    if !allow_deletes {
        return Err(Error::Config(format!(
            "the delete guard holds {} deletions for {} ({} of its {} files) — to apply them once, run `cairn resume {} --allow-deletes`; to keep the files, restore them and the folder resumes by itself",
            held.ops,
            root.display(),
            held.files,
            held.folder_files,
            root.display()
        )));
    }
    if !state.allow_held(f.id, row.generation)? {
        return Err(Error::Config(format!(
            "the deletions held for {} changed while resuming — check `cairn status {}` and run `cairn resume {} --allow-deletes` again",
            root.display(),
            root.display(),
            root.display()
        )));
    }
    Ok(Resumed {
        message: format!(
            "letting {} held deletions ({} files) of {} through once; the daemon applies them within a second, then the guard is armed again",
            held.ops,
            held.files,
            root.display()
        ),
        folder: root,
        state: reported,
        allowed_files: held.files,
        allowed_ops: held.ops,
    })
}

fn live_folder(state: &State, root: &Path) -> Result<Folder> {
    let row = state
        .conn()
        .query_row(
            "SELECT f.id, s.state, s.detail, s.pid FROM folders f
             LEFT JOIN folder_status s ON s.folder_id = f.id
             WHERE f.live = 1 AND f.root = ?1 ORDER BY f.id LIMIT 1",
            [root.to_string_lossy()],
            |r| {
                let pid: Option<i64> = r.get(3)?;
                Ok(Folder {
                    id: FolderId(r.get(0)?),
                    state: r.get(1)?,
                    detail: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    running: pid.is_some_and(pid_alive),
                })
            },
        )
        .optional()
        .map_err(state.err())?;
    row.ok_or_else(|| {
        Error::Config(format!(
            "{} is not a synced folder — `cairn status` lists them, `cairn add DIR --namespace NS` adds one",
            root.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowance_covers_only_the_generation_the_user_was_shown() {
        let dir = tempfile::tempdir().unwrap();
        let st = State::open(&dir.path().join("state.db")).unwrap();
        let f = st.folder(Path::new("/r"), "ns", "http://s").unwrap();
        let held = Held {
            files: 40,
            ops: 41,
            folder_files: 40,
        };
        assert_eq!(st.held(f).unwrap(), None);
        st.set_held(f, &held, 7).unwrap();
        // The daemon's held set grew after the user looked: the old generation allows nothing.
        st.set_held(
            f,
            &Held {
                files: 50,
                ..held.clone()
            },
            8,
        )
        .unwrap();
        assert!(!st.allow_held(f, 7).unwrap());
        assert_eq!(st.held(f).unwrap().unwrap().allowed, 0);
        assert!(st.allow_held(f, 8).unwrap());
        let row = st.held(f).unwrap().unwrap();
        assert_eq!((row.generation, row.allowed, row.held.files), (8, 8, 50));
        // A new held set starts without an allowance.
        st.set_held(f, &held, 9).unwrap();
        assert_eq!(st.held(f).unwrap().unwrap().allowed, 0);
        st.clear_held(f).unwrap();
        assert_eq!(st.held(f).unwrap(), None);
        assert!(!st.allow_held(f, 9).unwrap());
    }
}
