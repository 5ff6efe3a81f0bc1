-- The one-shot commands' scan reads a folder's synced rows in the walk's order (a folder, then
-- its subtree, then its next sibling: byte order with '/' below every other byte) beside the
-- walk. This index holds that order, so SQLite reads it instead of sorting every row first.
-- The expression must stay exactly the one in SyncedReader::rows (daemon/src/state.rs).

CREATE INDEX entries_walk_order ON entries (folder_id, replace(path, '/', char(1)));
