//! The local state database (SQLite, WAL): synced folders and each folder's synced tree.

use std::path::{Path, PathBuf};

use cairn_proto::{ContentId, Seq, Version};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use crate::delta::{Order, Row, Rows};
use crate::error::{Error, Result};
use crate::tree::{Content, Kind, Stat, SyncedEntry, SyncedTree, is_exec};

/// A row of `folders`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FolderId(pub i64);

/// One folder this device knows (`State::all_folders`).
#[derive(Debug, Clone)]
pub struct FolderRow {
    pub id: FolderId,
    pub root: PathBuf,
    pub namespace: String,
    pub server: String,
    /// Synced by the daemon (`cairn add`), not only by one-shot push/pull.
    pub live: bool,
}

/// A change to one folder's synced tree.
#[derive(Clone, Debug)]
pub enum SyncedChange {
    Put(String, SyncedEntry),
    Remove(String),
}

pub struct State {
    conn: Connection,
    path: PathBuf,
    /// When recording: every change `apply` committed, in order (see [`State::record_changes`]).
    journal: Option<Vec<(FolderId, SyncedChange)>>,
    /// Where a damaged database found at open was moved to (this one then started empty).
    pub set_aside: Option<PathBuf>,
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../migrations/daemon/0001_init.sql")),
        M::up(include_str!("../../migrations/daemon/0002_live.sql")),
        M::up(include_str!(
            "../../migrations/daemon/0003_delete_guard.sql"
        )),
        M::up(include_str!("../../migrations/daemon/0004_walk_order.sql")),
    ])
}

/// SQLite's word for a file that is not a database, or one whose pages are broken.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
    )
}

/// Renames a damaged database and its WAL and shared-memory files to
/// `NAME.damaged-SECONDS[-wal|-shm]`; returns the database's new name.
fn set_aside(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = PathBuf::from(format!("{}.damaged-{secs}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(from, e)),
            _ => {}
        }
    }
    Ok(aside)
}

impl State {
    /// Opens (creating if needed) the database and applies pending migrations. A damaged
    /// database (not SQLite, or failing its quick check) is moved aside under a name that says
    /// so and a new one is started: the synced trees it held are rebuilt by matching the folders
    /// against the server's history (`reconcile`), and the folders `cairn add` registered must
    /// be added again (the daemon says so).
    pub fn open(path: &Path) -> Result<Self> {
        let damage = match Self::open_unchecked(path) {
            Ok(st) => match st.quick_check() {
                None => {
                    // The check read every page once; the cache it filled is not read again.
                    let _ = st.conn.execute_batch("PRAGMA shrink_memory");
                    return Ok(st);
                }
                Some(detail) => detail,
            },
            Err(Error::State { source, .. }) if is_damage(&source) => source.to_string(),
            Err(Error::Migration { detail, .. }) if detail.contains("malformed") => detail,
            Err(e) => return Err(e),
        };
        let aside = set_aside(path)?;
        tracing::warn!(
            database = %path.display(),
            moved_to = %aside.display(),
            "the local state database is damaged ({damage}); it was moved aside and a new one started — folders are matched against the server's history again; run `cairn add DIR --namespace NS` again for each live folder"
        );
        let mut st = Self::open_unchecked(path)?;
        st.set_aside = Some(aside);
        Ok(st)
    }

    /// `None` when SQLite's quick check passes; otherwise what it found.
    fn quick_check(&self) -> Option<String> {
        match self
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get::<_, String>(0))
        {
            Ok(s) if s == "ok" => None,
            Ok(s) => Some(s),
            Err(e) => Some(e.to_string()),
        }
    }

    fn open_unchecked(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let err = |source| Error::State {
            path: path.to_owned(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
        // Most reads here go front to back once (the quick check, the synced tree), and SQLite's
        // default 2 MiB page cache would only hold pages that are not read again; the OS keeps
        // the file cached anyway.
        conn.pragma_update(None, "cache_size", -512).map_err(err)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| Error::Migration {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(State {
            conn,
            path: path.to_owned(),
            journal: None,
            set_aside: None,
        })
    }

    /// From now on, remember every synced-tree change this connection commits, so a caller that
    /// keeps the synced tree in memory can apply exactly what the executors wrote.
    pub fn record_changes(&mut self) {
        self.journal.get_or_insert_with(Vec::new);
    }

    /// The changes committed since the last call (empty unless recording).
    pub fn take_changes(&mut self) -> Vec<(FolderId, SyncedChange)> {
        self.journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// SQLite's `data_version`: it moves when another connection commits to the database (never
    /// for this connection's own commits).
    pub fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(self.err())
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Marks the folder as one the daemon syncs (`cairn add`); returns its id.
    pub fn add_live(&self, root: &Path, namespace: &str, server: &str) -> Result<FolderId> {
        let id = self.folder(root, namespace, server)?;
        self.conn
            .execute("UPDATE folders SET live = 1 WHERE id = ?1", [id.0])
            .map_err(self.err())?;
        Ok(id)
    }

    /// Stops syncing every folder at `root` (`cairn remove`); returns how many there were.
    pub fn remove_live(&self, root: &Path) -> Result<usize> {
        self.conn
            .execute(
                "UPDATE folders SET live = 0 WHERE root = ?1 AND live = 1",
                [root.to_string_lossy()],
            )
            .map_err(self.err())
    }

    /// The folders the daemon syncs: (id, root, namespace, server).
    pub fn live_folders(&self) -> Result<Vec<(FolderId, PathBuf, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, root, namespace, server FROM folders WHERE live = 1 ORDER BY root")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    FolderId(r.get(0)?),
                    PathBuf::from(r.get::<_, String>(1)?),
                    r.get(2)?,
                    r.get(3)?,
                ))
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    /// Every folder this device ever pushed, pulled or synced.
    pub fn all_folders(&self) -> Result<Vec<FolderRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, root, namespace, server, live FROM folders ORDER BY root")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(FolderRow {
                    id: FolderId(r.get(0)?),
                    root: PathBuf::from(r.get::<_, String>(1)?),
                    namespace: r.get(2)?,
                    server: r.get(3)?,
                    live: r.get(4)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .map_err(self.err())
    }

    pub(crate) fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        err_at(&self.path)
    }

    /// The folder for (root, namespace, server), created on first use.
    pub fn folder(&self, root: &Path, namespace: &str, server: &str) -> Result<FolderId> {
        let root = root.to_string_lossy();
        self.conn
            .execute(
                "INSERT INTO folders (root, namespace, server) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![root, namespace, server],
            )
            .map_err(self.err())?;
        let id = self
            .conn
            .query_row(
                "SELECT id FROM folders WHERE root = ?1 AND namespace = ?2 AND server = ?3",
                params![root, namespace, server],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(FolderId(id))
    }

    pub fn set_device_and_cursor(&self, folder: FolderId, device: &str, cursor: Seq) -> Result<()> {
        self.conn
            .execute(
                "UPDATE folders SET device = ?2, cursor = ?3 WHERE id = ?1",
                params![folder.0, device, cursor.0 as i64],
            )
            .map_err(self.err())?;
        Ok(())
    }

    pub fn cursor(&self, folder: FolderId) -> Result<Seq> {
        let c: Option<i64> = self
            .conn
            .query_row(
                "SELECT cursor FROM folders WHERE id = ?1",
                [folder.0],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(Seq(c.unwrap_or(0) as u64))
    }

    /// The folder's synced tree. A row that cannot be read is skipped (and so re-synced).
    pub fn synced(&self, folder: FolderId) -> Result<SyncedTree> {
        let mut entries = Vec::with_capacity(self.synced_count(folder)?);
        self.read_synced(folder, |p, e| entries.push((p.to_owned(), e)))?;
        // In path order: the map is built in one go, with full nodes (one filled by inserting
        // leaves them about half empty), so it takes less memory and less time.
        Ok(entries.into_iter().collect())
    }

    /// A reader of the folder's synced rows on a connection of its own (see [`SyncedReader`]).
    pub fn synced_reader(&self, folder: FolderId) -> Result<SyncedReader> {
        let err = self.err();
        let conn = Connection::open(&self.path).map_err(&err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(&err)?;
        conn.pragma_update(None, "query_only", true).map_err(&err)?;
        conn.pragma_update(None, "cache_size", -64).map_err(&err)?;
        Ok(SyncedReader {
            conn,
            path: self.path.clone(),
            folder,
        })
    }

    /// How many synced entries the folder has (to make room for them).
    fn synced_count(&self, folder: FolderId) -> Result<usize> {
        let count: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM entries WHERE folder_id = ?1",
                [folder.0],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(usize::try_from(count).unwrap_or(0))
    }

    /// Reads the folder's synced entries in path order, each readable one to `entry`.
    fn read_synced(
        &self,
        folder: FolderId,
        mut entry: impl FnMut(&str, SyncedEntry),
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SYNCED_COLUMNS} FROM entries WHERE folder_id = ?1 ORDER BY path"
            ))
            .map_err(self.err())?;
        let mut rows = stmt.query([folder.0]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            if let Some(e) = read_row(r).map_err(self.err())? {
                let path = r.get_ref(0).map_err(self.err())?;
                entry(path.as_str().map_err(|e| self.err()(e.into()))?, e);
            }
        }
        Ok(())
    }

    /// Applies changes in one transaction: all or nothing.
    pub fn apply(&mut self, folder: FolderId, changes: &[SyncedChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let err = |source| Error::State {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO entries
                     (folder_id, path, kind, version, content_id, size, mtime_ns, inode, mode, symlink_target)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM entries WHERE folder_id = ?1 AND path = ?2")
                .map_err(err)?;
            for c in changes {
                match c {
                    SyncedChange::Put(p, e) => {
                        let (cid, target) = match &e.content {
                            Content::File { id, .. } => (Some(id.to_vec()), None),
                            Content::Dir => (None, None),
                            Content::Symlink(t) => (None, Some(t.as_str())),
                        };
                        put.execute(params![
                            folder.0,
                            p,
                            e.content.kind().to_db(),
                            e.version.0 as i64,
                            cid,
                            e.stat.size as i64,
                            e.stat.mtime_ns,
                            e.stat.inode as i64,
                            i64::from(e.stat.mode),
                            target
                        ])
                        .map_err(err)?;
                    }
                    SyncedChange::Remove(p) => {
                        del.execute(params![folder.0, p]).map_err(err)?;
                    }
                }
            }
        }
        tx.commit().map_err(err)?;
        if let Some(j) = &mut self.journal {
            j.extend(changes.iter().map(|c| (folder, c.clone())));
        }
        Ok(())
    }
}

/// A database error, naming the database.
fn err_at(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::State {
        path: path.to_owned(),
        source,
    }
}

/// The columns [`read_row`] reads, in its order.
const SYNCED_COLUMNS: &str =
    "path, kind, version, content_id, size, mtime_ns, inode, mode, symlink_target";

/// One synced row ([`SYNCED_COLUMNS`]) as an entry; `None` for a kind this version cannot read
/// (left out, and so synced again).
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<SyncedEntry>> {
    let kind: i64 = r.get(1)?;
    let cid = r.get_ref(3)?.as_blob_or_null()?;
    let mode: i64 = r.get(7)?;
    let target: Option<String> = r.get(8)?;
    let stat = Stat {
        size: r.get::<_, i64>(4)? as u64,
        mtime_ns: r.get(5)?,
        inode: r.get::<_, i64>(6)? as u64,
        mode: mode as u32,
    };
    let content = match Kind::from_db(kind) {
        Some(Kind::File) => {
            cid.and_then(|c| ContentId::from_slice(c).ok())
                .map(|id| Content::File {
                    id,
                    exec: is_exec(stat.mode),
                })
        }
        Some(Kind::Dir) => Some(Content::Dir),
        Some(Kind::Symlink) => target.map(Content::Symlink),
        None => None,
    };
    let version = Version(r.get::<_, i64>(2)? as u64);
    Ok(content.map(|content| SyncedEntry {
        version,
        content,
        stat,
    }))
}

/// One folder's synced rows, read as they are needed on a read-only connection of its own: the
/// one-shot commands' scan and listing each merge their side with them on their own thread or
/// task ([`crate::delta::Merge`]) instead of sharing one copy of the whole synced tree.
pub struct SyncedReader {
    conn: Connection,
    path: PathBuf,
    folder: FolderId,
}

impl SyncedReader {
    fn err(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        err_at(&self.path)
    }

    /// Calls `f` with a cursor over the folder's rows in `order` (one statement: one snapshot).
    pub fn rows<R>(&self, order: Order, f: impl FnOnce(&mut Cursor<'_>) -> R) -> Result<R> {
        let key = match order {
            Order::Bytes => "path",
            // The walk's order (see `Order::Walk`), as the index `entries_walk_order` holds it.
            Order::Walk => "replace(path, '/', char(1))",
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {SYNCED_COLUMNS} FROM entries WHERE folder_id = ?1 ORDER BY {key}"
            ))
            .map_err(self.err())?;
        let rows = stmt.query([self.folder.0]).map_err(self.err())?;
        Ok(f(&mut Cursor { rows, reader: self }))
    }

    /// The synced entry at `path`.
    pub fn get(&self, path: &str) -> Result<Option<SyncedEntry>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SYNCED_COLUMNS} FROM entries WHERE folder_id = ?1 AND path = ?2"
            ))
            .map_err(self.err())?;
        let mut rows = stmt
            .query(params![self.folder.0, path])
            .map_err(self.err())?;
        match rows.next().map_err(self.err())? {
            Some(r) => read_row(r).map_err(self.err()),
            None => Ok(None),
        }
    }

    /// In byte order, the readable ones of the `limit` rows after `after`, and the path of the
    /// last of those `limit` rows (`None` when there were fewer: the end).
    fn page(&self, after: Option<&str>, limit: usize) -> Result<(Vec<Row>, Option<String>)> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SYNCED_COLUMNS} FROM entries WHERE folder_id = ?1 AND path > ?2
                 ORDER BY path LIMIT ?3"
            ))
            .map_err(self.err())?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt
            .query(params![self.folder.0, after.unwrap_or(""), limit])
            .map_err(self.err())?;
        // The last row read, when it was unreadable (else it is the last one kept).
        let (mut out, mut read, mut unreadable) = (Vec::new(), 0, None);
        while let Some(r) = rows.next().map_err(self.err())? {
            let path: String = r.get(0).map_err(self.err())?;
            read += 1;
            unreadable = match read_row(r).map_err(self.err())? {
                Some(e) => {
                    out.push((path, e));
                    None
                }
                None => Some(path),
            };
        }
        let last = unreadable.or_else(|| out.last().map(|(p, _)| p.clone()));
        Ok((out, last.filter(|_| read == limit)))
    }

    /// The rows in byte order, read a page at a time, with no statement open between pages: for
    /// a merge in async code, which must not hold one across an await. The pages are read in one
    /// read transaction, so they are one snapshot too.
    pub fn pages(self) -> Result<Pages> {
        self.conn.execute_batch("BEGIN").map_err(self.err())?;
        Ok(Pages {
            reader: self,
            after: None,
            buf: std::collections::VecDeque::new(),
            ended: false,
        })
    }
}

/// [`SyncedReader::rows`]' cursor.
pub struct Cursor<'s> {
    rows: rusqlite::Rows<'s>,
    reader: &'s SyncedReader,
}

impl Cursor<'_> {
    /// The reader, for look-ups while the cursor is open.
    pub fn reader(&self) -> &SyncedReader {
        self.reader
    }
}

impl Rows for Cursor<'_> {
    fn next_row(&mut self) -> Result<Option<Row>> {
        while let Some(r) = self.rows.next().map_err(self.reader.err())? {
            if let Some(e) = read_row(r).map_err(self.reader.err())? {
                return Ok(Some((r.get(0).map_err(self.reader.err())?, e)));
            }
        }
        Ok(None)
    }

    fn look_up(&mut self, path: &str) -> Result<Option<SyncedEntry>> {
        self.reader.get(path)
    }
}

/// [`SyncedReader::pages`]' rows.
pub struct Pages {
    reader: SyncedReader,
    after: Option<String>,
    buf: std::collections::VecDeque<Row>,
    ended: bool,
}

impl Pages {
    /// Rows per page: about 100 KB of entries.
    const PAGE: usize = 1000;
}

impl Rows for Pages {
    fn next_row(&mut self) -> Result<Option<Row>> {
        // A page of unreadable rows only is empty but not the end.
        while self.buf.is_empty() && !self.ended {
            let (page, last) = self.reader.page(self.after.as_deref(), Self::PAGE)?;
            self.ended = last.is_none();
            self.after = last;
            self.buf.extend(page);
        }
        Ok(self.buf.pop_front())
    }

    fn look_up(&mut self, path: &str) -> Result<Option<SyncedEntry>> {
        self.reader.get(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_rows_read_by_page_and_in_walk_order_skip_unreadable_rows_without_ending_early() {
        let d = tempfile::tempdir().unwrap();
        let mut st = State::open(&d.path().join("state.db")).unwrap();
        let folder = st
            .folder(Path::new("/r"), "ns", "http://127.0.0.1:1")
            .unwrap();
        let dir = SyncedEntry {
            version: Version(1),
            content: Content::Dir,
            stat: Stat::default(),
        };
        // Readable rows before and after more than a page of rows this version cannot read (an
        // unknown kind): a page of unreadable rows only must not read as the end.
        let mut readable: Vec<String> = (0..500).map(|i| format!("a/{i:04}")).collect();
        readable.extend((0..1000).map(|i| format!("c/{i:04}")));
        readable.extend(["a.b".to_owned(), "a/x/y".to_owned(), "a/x".to_owned()]);
        let puts: Vec<_> = readable
            .iter()
            .map(|p| SyncedChange::Put(p.clone(), dir.clone()))
            .collect();
        st.apply(folder, &puts).unwrap();
        for i in 0..1200 {
            st.conn()
                .execute(
                    "INSERT INTO entries (folder_id, path, kind, version, size, mtime_ns, inode, mode)
                     VALUES (?1, ?2, 9, 1, 0, 0, 0, 0)",
                    params![folder.0, format!("b/{i:04}")],
                )
                .unwrap();
        }
        let drain = |rows: &mut dyn FnMut() -> Result<Option<Row>>| {
            let mut out = Vec::new();
            while let Some((p, _)) = rows().unwrap() {
                out.push(p);
            }
            out
        };
        let mut pages = st.synced_reader(folder).unwrap().pages().unwrap();
        let mut bytes = readable.clone();
        bytes.sort();
        assert_eq!(drain(&mut || pages.next_row()), bytes);
        let reader = st.synced_reader(folder).unwrap();
        let walked = reader
            .rows(Order::Walk, |rows| drain(&mut || rows.next_row()))
            .unwrap();
        let mut walk = readable.clone();
        walk.sort_by(|a, b| Order::Walk.cmp(a, b));
        assert_eq!(walked, walk);
        // A folder's subtree before its next sibling: `a/x/y` before `a.b`.
        let at = |p: &str| walked.iter().position(|w| w == p).unwrap();
        assert!(at("a/x/y") < at("a.b") && at("a.b") < at("c/0000"));
        assert!(reader.get("a/x").unwrap().is_some());
        assert!(reader.get("b/0001").unwrap().is_none());
    }

    #[test]
    fn synced_entries_round_trip_and_removals_apply() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = State::open(&dir.path().join("state.db")).unwrap();
        let f = st.folder(Path::new("/r"), "ns", "http://s").unwrap();
        assert_eq!(st.folder(Path::new("/r"), "ns", "http://s").unwrap(), f);
        let e = SyncedEntry {
            version: Version(7),
            content: Content::File {
                id: ContentId([3; 32]),
                exec: true,
            },
            stat: Stat {
                size: 5,
                mtime_ns: 9,
                inode: 11,
                mode: 0o755,
            },
        };
        let l = SyncedEntry {
            version: Version(2),
            content: Content::Symlink("x/y".into()),
            stat: Stat::default(),
        };
        st.apply(
            f,
            &[
                SyncedChange::Put("a/b".into(), e.clone()),
                SyncedChange::Put("l".into(), l.clone()),
            ],
        )
        .unwrap();
        let t = st.synced(f).unwrap();
        assert_eq!(t.get("a/b"), Some(&e));
        assert_eq!(t.get("l"), Some(&l));
        st.apply(f, &[SyncedChange::Remove("a/b".into())]).unwrap();
        assert_eq!(st.synced(f).unwrap().len(), 1);
        drop(st);
        // Reopening applies no migration twice.
        let st = State::open(&dir.path().join("state.db")).unwrap();
        assert_eq!(st.synced(f).unwrap().len(), 1);
    }
}
