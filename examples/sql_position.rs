//! What the SQLite read models of the examples share: opening the database file for several
//! processes, and the projection's position kept in the same database as the read model
//! (the `checkpoint` table, a row per [`Projected::projection`](aether_projection::Projected)),
//! written in the transaction of each update so that both are stored or neither.

use std::path::Path;

use aether_core::{BoxError, LogPosition};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// The table of positions, created with the read model's own tables.
pub(crate) const CHECKPOINT_TABLE: &str = "CREATE TABLE IF NOT EXISTS checkpoint (
    projection TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    idx INTEGER NOT NULL
);";

/// Opens (creating if needed) the database file at `path`.
pub(crate) fn open_file(path: &Path) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    // Several processes (the workers of a partitioned projection) may share the file.
    db.busy_timeout(std::time::Duration::from_secs(10))?;
    // Write-ahead log, synced at checkpoints rather than at every commit: a power cut may undo
    // the last commits, but each undoes an update together with its position, so the
    // projection applies those events again, still exactly once.
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(db)
}

/// The position of the last event applied under `projection`.
pub(crate) fn read_position(
    db: &Connection,
    projection: &str,
) -> Result<Option<LogPosition>, BoxError> {
    let row: Option<(i64, i64)> = db
        .query_row(
            "SELECT sequence, idx FROM checkpoint WHERE projection = ?1",
            params![projection],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match row {
        None => Ok(None),
        Some((sequence, idx)) => Ok(Some(LogPosition::new(
            u64::try_from(sequence)?,
            u32::try_from(idx)?,
        ))),
    }
}

/// Records `position` for `projection` in the update's transaction `tx`.
pub(crate) fn write_position(
    tx: &Transaction<'_>,
    projection: &str,
    position: LogPosition,
) -> Result<(), BoxError> {
    tx.execute(
        "INSERT INTO checkpoint (projection, sequence, idx) VALUES (?1, ?2, ?3)
         ON CONFLICT(projection) DO UPDATE SET sequence = excluded.sequence, idx = excluded.idx",
        params![
            projection,
            i64::try_from(position.sequence)?,
            i64::from(position.index)
        ],
    )?;
    Ok(())
}
