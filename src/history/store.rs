//! The history file: SQLite through `rusqlite` (the I/O edge of the history).
//!
//! The schema is documented in `docs/history.md`; [`MIGRATIONS`] is its one home. A file
//! is checked before anything is written to it: one that is not SQLite, belongs to another
//! program, comes from a newer version of pzem-venus or fails SQLite's `quick_check` is
//! reported and left untouched ([`StoreError`]).
//!
//! [`Writer`] (pzem-logger) writes each batch of samples in one transaction, in WAL mode
//! with `synchronous=FULL`: a power cut loses at most the batch being written, never the
//! file. In the same transaction it rolls finished hours up into the `hour` table and,
//! once an hour, applies the [`Retention`]. [`Reader`] (pzem-web, export) opens the file
//! read-only and answers queries with [`super::query`].

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::query::{self, HourRow, Piece, RawSample, Step};
use super::recorder::Batch;
use super::series::Quantity;
use super::time::{DAY, HOUR, Offset};

/// `PRAGMA application_id` of a pzem-venus history file ("PZMH").
pub const APPLICATION_ID: i32 = 0x505A_4D48;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 1;

/// The schema, as migration steps: entry `k` takes a file from version `k` to `k + 1`.
/// Each runs in one transaction with the version update.
pub const MIGRATIONS: [&str; 1] = [
    // 0 → 1: the first schema.
    "CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        path TEXT NOT NULL,
        unit TEXT NOT NULL CHECK (unit IN ('W', 'kWh')),
        UNIQUE (service, path)
    );
    CREATE TABLE sample (
        series INTEGER NOT NULL REFERENCES series (id),
        t INTEGER NOT NULL,
        v REAL NOT NULL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;
    CREATE TABLE hour (
        series INTEGER NOT NULL REFERENCES series (id),
        t INTEGER NOT NULL,
        n INTEGER NOT NULL,
        v REAL NOT NULL,
        first_t INTEGER,
        first_v REAL,
        last_t INTEGER,
        last_v REAL,
        PRIMARY KEY (series, t)
    ) WITHOUT ROWID;",
];

/// How long data is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Days of raw samples (default 366: a year of minute data).
    pub raw_days: u32,
    /// Days of hourly roll-ups (default 3660: ten years).
    pub hour_days: u32,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            raw_days: 366,
            hour_days: 3660,
        }
    }
}

/// Why a history file cannot be used.
#[derive(Debug)]
pub enum StoreError {
    /// The file is not an SQLite database (or is damaged at its start).
    NotADatabase(PathBuf),
    /// An SQLite file of another program.
    Foreign(PathBuf, i32),
    /// A file written by a newer pzem-venus.
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
    },
    /// SQLite's integrity check failed.
    Damaged(PathBuf, String),
    /// The file was recorded with another interval.
    IntervalMismatch {
        /// The file.
        path: PathBuf,
        /// Its interval, seconds.
        stored: u32,
        /// The interval asked for.
        asked: u32,
    },
    /// The file does not exist (read-only opening).
    Missing(PathBuf),
    /// The file exists but should not (a new database was asked for).
    Exists(PathBuf),
    /// An SQLite or file error.
    Sql(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotADatabase(p) => {
                write!(
                    f,
                    "{}: not an SQLite database (or damaged); left untouched",
                    p.display()
                )
            }
            StoreError::Foreign(p, id) => write!(
                f,
                "{}: an SQLite database of another program (application_id {id:#x}); left untouched",
                p.display()
            ),
            StoreError::NewerVersion { path, found } => write!(
                f,
                "{}: written by a newer pzem-venus (schema version {found}, this one knows up to {SCHEMA_VERSION}); left untouched",
                path.display()
            ),
            StoreError::Damaged(p, why) => {
                write!(f, "{}: damaged ({why}); left untouched", p.display())
            }
            StoreError::IntervalMismatch { path, stored, asked } => write!(
                f,
                "{}: recorded every {stored} s, not {asked} s; use --interval {stored} or another file",
                path.display()
            ),
            StoreError::Missing(p) => write!(
                f,
                "{}: no such file: pzem-logger has not written it yet; check --db or db in [logger]",
                p.display()
            ),
            StoreError::Exists(p) => write!(f, "{}: already exists; give a new file", p.display()),
            StoreError::Sql(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> StoreError {
        StoreError::Sql(e.to_string())
    }
}

/// One series as listed by [`Reader::series`].
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesInfo {
    /// Its id.
    pub id: i64,
    /// The D-Bus service name.
    pub service: String,
    /// The D-Bus path.
    pub path: String,
    /// Power or energy.
    pub quantity: Quantity,
    /// Start of the first stored sample (raw or hourly), Unix seconds.
    pub first: Option<i64>,
    /// Start of the last stored sample, Unix seconds.
    pub last: Option<i64>,
}

/// Checks an existing file without writing to it: SQLite header, application id, schema
/// version and `quick_check`. `Ok(false)` when the file is new (absent or empty).
pub fn check_file(path: &Path, integrity: bool) -> Result<bool, StoreError> {
    let mut header = [0u8; 16];
    match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::Sql(format!("{}: {e}", path.display()))),
        Ok(mut f) => {
            let len = f
                .metadata()
                .map_err(|e| StoreError::Sql(format!("{}: {e}", path.display())))?
                .len();
            if len == 0 {
                return Ok(false);
            }
            if f.read_exact(&mut header).is_err() || &header != b"SQLite format 3\0" {
                return Err(StoreError::NotADatabase(path.to_owned()));
            }
        }
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|_| StoreError::NotADatabase(path.to_owned()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let sql_err = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => StoreError::NotADatabase(path.to_owned()),
        Some(rusqlite::ErrorCode::DatabaseCorrupt) => StoreError::Damaged(path.to_owned(), e.to_string()),
        _ => StoreError::Sql(format!("{}: {e}", path.display())),
    };
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(sql_err)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(sql_err)?;
    if app == 0 && version == 0 && tables == 0 {
        return Ok(false);
    }
    if app != APPLICATION_ID {
        return Err(StoreError::Foreign(path.to_owned(), app));
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerVersion {
            path: path.to_owned(),
            found: version,
        });
    }
    if integrity {
        let mut stmt = conn.prepare("PRAGMA quick_check").map_err(sql_err)?;
        let lines: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql_err)?
            .collect::<Result<_, _>>()
            .map_err(sql_err)?;
        if lines != ["ok"] {
            let first = lines.into_iter().next().unwrap_or_default();
            return Err(StoreError::Damaged(path.to_owned(), first));
        }
    }
    Ok(true)
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Brings a file at an older schema version up to [`SCHEMA_VERSION`], one migration per
/// transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let version: i32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version >= SCHEMA_VERSION {
            return Ok(());
        }
        let Some(step) = usize::try_from(version).ok().and_then(|v| MIGRATIONS.get(v)) else {
            return Err(StoreError::Sql(format!("no migration from schema version {version}")));
        };
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {};",
            version + 1
        ))?;
        tx.commit()?;
    }
}

/// The writing side: pzem-logger, and `synth`.
#[derive(Debug)]
pub struct Writer {
    conn: Connection,
    path: PathBuf,
    interval: u32,
    retention: Retention,
    ids: HashMap<(String, &'static str), i64>,
    /// Hours before this are rolled up.
    rolled_to: Option<i64>,
    commits: u64,
}

impl Writer {
    /// Opens (or creates) the history at `path` for samples every `interval` seconds.
    /// An existing file is checked first ([`check_file`], with `quick_check`) and left
    /// untouched when it cannot be used.
    pub fn open(path: &Path, interval: u32, retention: Retention) -> Result<Writer, StoreError> {
        check_file(path, true)?;
        Writer::open_checked(path, interval, retention, true)
    }

    /// Creates a new history at `path`; refuses an existing non-empty file. Writes
    /// without syncing to disk (for `synth`): call [`Writer::finish`] at the end.
    pub fn create_new(path: &Path, interval: u32, retention: Retention) -> Result<Writer, StoreError> {
        if check_file(path, false).is_err() || std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return Err(StoreError::Exists(path.to_owned()));
        }
        Writer::open_checked(path, interval, retention, false)
    }

    fn open_checked(path: &Path, interval: u32, retention: Retention, durable: bool) -> Result<Writer, StoreError> {
        let mut conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", if durable { "FULL" } else { "OFF" })?;
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)?;
        migrate(&mut conn)?;
        match meta_get(&conn, "interval")? {
            Some(stored) => {
                let stored: u32 = stored.parse().unwrap_or(0);
                if stored != interval {
                    return Err(StoreError::IntervalMismatch {
                        path: path.to_owned(),
                        stored,
                        asked: interval,
                    });
                }
            }
            None => meta_set(&conn, "interval", &interval.to_string())?,
        }
        let rolled_to = meta_get(&conn, "rolled_up_to")?.and_then(|v| v.parse().ok());
        // From now on a write waits for another program's lock at most a quarter of an
        // interval (and 5 s): pzem-logger retries once an interval, and a write that
        // blocked its one thread for an interval or more would cost it intervals.
        conn.busy_timeout(Duration::from_millis((u64::from(interval) * 250).clamp(100, 5000)))?;
        Ok(Writer {
            conn,
            path: path.to_owned(),
            interval,
            retention,
            ids: HashMap::new(),
            rolled_to,
            commits: 0,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions were committed.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    fn series_id(&mut self, service: &str, path: &'static str, quantity: Quantity) -> Result<i64, StoreError> {
        if let Some(id) = self.ids.get(&(service.to_owned(), path)) {
            return Ok(*id);
        }
        self.conn.execute(
            "INSERT OR IGNORE INTO series (service, path, unit) VALUES (?1, ?2, ?3)",
            params![service, path, quantity.unit()],
        )?;
        let id: i64 = self.conn.query_row(
            "SELECT id FROM series WHERE service = ?1 AND path = ?2",
            params![service, path],
            |r| r.get(0),
        )?;
        self.ids.insert((service.to_owned(), path), id);
        Ok(id)
    }

    /// Writes batches of samples in one transaction, rolling finished hours up and
    /// applying the retention. Nothing is written for no samples. Rows that exist already
    /// (the clock went back) are kept as they were.
    pub fn write(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let Some(latest) = batches.iter().filter(|b| !b.samples.is_empty()).map(|b| b.start).max() else {
            return Ok(());
        };
        let earliest = batches
            .iter()
            .filter(|b| !b.samples.is_empty())
            .map(|b| b.start)
            .min()
            .unwrap_or(latest);
        // What is rolled up, as of the last commit: a failed write must not move it on, or
        // the hour it failed in would never be rolled up (and its raw samples would
        // later be deleted as if it had been).
        let rolled_before = self.rolled_to;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let result = self
            .write_in_transaction(batches, earliest, latest)
            .and_then(|()| Ok(self.conn.execute_batch("COMMIT")?));
        match result {
            Ok(()) => {
                self.commits += 1;
                Ok(())
            }
            Err(e) => {
                // Also after a failed COMMIT, which SQLite may leave open (busy): the
                // next write must be able to begin.
                let _ = self.conn.execute_batch("ROLLBACK");
                // Series created in the failed transaction are gone again, and the
                // roll-up point is where the file has it.
                self.ids.clear();
                self.rolled_to = rolled_before;
                Err(e)
            }
        }
    }

    fn write_in_transaction(&mut self, batches: &[Batch], earliest: i64, latest: i64) -> Result<(), StoreError> {
        for batch in batches {
            for s in &batch.samples {
                let id = self.series_id(&s.service, s.path, s.quantity)?;
                self.conn
                    .prepare_cached("INSERT OR IGNORE INTO sample (series, t, v) VALUES (?1, ?2, ?3)")?
                    .execute(params![id, s.t, s.value])?;
            }
        }
        self.roll_up(earliest, latest + i64::from(self.interval))
    }

    /// Rolls up every hour that ended by `data_end` and was not rolled up yet (or got new
    /// samples at or after `touched`), then applies the retention when a new hour was
    /// rolled up.
    fn roll_up(&mut self, touched: i64, data_end: i64) -> Result<(), StoreError> {
        let complete = data_end.div_euclid(HOUR) * HOUR;
        let from = match self.rolled_to {
            Some(r) => r.min(touched.div_euclid(HOUR) * HOUR),
            None => touched.div_euclid(HOUR) * HOUR,
        };
        if from >= complete {
            if self.rolled_to.is_none() {
                self.rolled_to = Some(from);
                meta_set(&self.conn, "rolled_up_to", &from.to_string())?;
            }
            return Ok(());
        }
        let series: Vec<(i64, String)> = {
            let mut stmt = self.conn.prepare_cached("SELECT id, unit FROM series")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let interval = i64::from(self.interval);
        for (id, unit) in &series {
            let quantity = Quantity::from_unit(unit).unwrap_or(Quantity::Power);
            let samples: Vec<RawSample> = {
                let mut stmt = self
                    .conn
                    .prepare_cached("SELECT t, v FROM sample WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t")?;
                stmt.query_map(params![id, from, complete], |r| {
                    Ok(RawSample {
                        t: r.get(0)?,
                        v: r.get(1)?,
                    })
                })?
                .collect::<Result<_, _>>()?
            };
            for hour in samples.chunk_by(|a, b| a.t.div_euclid(HOUR) == b.t.div_euclid(HOUR)) {
                let start = hour[0].t.div_euclid(HOUR) * HOUR;
                if let Some(row) = query::roll_up(quantity, start, interval, hour) {
                    self.conn
                        .prepare_cached(
                            "INSERT OR REPLACE INTO hour (series, t, n, v, first_t, first_v, last_t, last_v)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        )?
                        .execute(params![
                            id,
                            row.t,
                            row.n,
                            row.v,
                            row.first.map(|f| f.0),
                            row.first.map(|f| f.1),
                            row.last.map(|l| l.0),
                            row.last.map(|l| l.1)
                        ])?;
                }
            }
        }
        let new_to = complete.max(self.rolled_to.unwrap_or(complete));
        self.rolled_to = Some(new_to);
        meta_set(&self.conn, "rolled_up_to", &new_to.to_string())?;
        // Retention, relative to the newest data (not the wall clock), and never beyond
        // what is rolled up.
        let raw_cut = (data_end - i64::from(self.retention.raw_days) * DAY).min(new_to);
        let hour_cut = data_end - i64::from(self.retention.hour_days) * DAY;
        for (id, _) in &series {
            self.conn
                .prepare_cached("DELETE FROM sample WHERE series = ?1 AND t < ?2")?
                .execute(params![id, raw_cut])?;
            self.conn
                .prepare_cached("DELETE FROM hour WHERE series = ?1 AND t < ?2")?
                .execute(params![id, hour_cut])?;
        }
        Ok(())
    }

    /// Syncs everything to disk and folds the WAL into the file (for `synth`).
    pub fn finish(self) -> Result<(), StoreError> {
        self.conn.pragma_update(None, "synchronous", "FULL")?;
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        self.conn.close().map_err(|(_, e)| StoreError::from(e))
    }
}

/// The reading side: pzem-web and `export`. Opens the file read-only.
#[derive(Debug)]
pub struct Reader {
    conn: Connection,
    interval: u32,
}

impl Reader {
    /// Opens an existing history read-only, after [`check_file`] (without the integrity
    /// check, which reads the whole file).
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        if !check_file(path, false)? {
            return Err(StoreError::Missing(path.to_owned()));
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(Duration::from_secs(2))?;
        // Every step is computed from it: a file without it is not guessed at.
        let interval = match meta_get(&conn, "interval")?.map(|v| v.parse::<u32>()) {
            Some(Ok(i)) if i > 0 => i,
            Some(_) => {
                return Err(StoreError::Damaged(
                    path.to_owned(),
                    "its interval is not a number".into(),
                ));
            }
            None => {
                return Err(StoreError::Damaged(
                    path.to_owned(),
                    "no interval recorded in meta".into(),
                ));
            }
        };
        Ok(Reader { conn, interval })
    }

    /// The logging interval, seconds.
    pub fn interval(&self) -> u32 {
        self.interval
    }

    /// Every series, by id.
    pub fn series(&self) -> Result<Vec<SeriesInfo>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT s.id, s.service, s.path, s.unit,
                (SELECT min(t) FROM hour WHERE series = s.id),
                (SELECT min(t) FROM sample WHERE series = s.id),
                (SELECT max(t) FROM hour WHERE series = s.id),
                (SELECT max(t) FROM sample WHERE series = s.id)
             FROM series s ORDER BY s.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let unit: String = r.get(3)?;
            let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let max = |a: Option<i64>, b: Option<i64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            // An hour row's last sample starts at most an hour after it.
            let hour_last: Option<i64> = r.get(6)?;
            Ok(SeriesInfo {
                id: r.get(0)?,
                service: r.get(1)?,
                path: r.get(2)?,
                quantity: Quantity::from_unit(&unit).unwrap_or(Quantity::Power),
                first: min(r.get(4)?, r.get(5)?),
                last: max(hour_last, r.get(7)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One series.
    pub fn series_by_id(&self, id: i64) -> Result<Option<SeriesInfo>, StoreError> {
        Ok(self.series()?.into_iter().find(|s| s.id == id))
    }

    fn rolled_to(&self) -> Result<i64, StoreError> {
        Ok(meta_get(&self.conn, "rolled_up_to")?
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN))
    }

    /// One point per step with data in `[from, to)` of series `id` (see [`query`]).
    /// Minute (and sub-hour) steps read the raw samples; hour and day steps read the hourly
    /// roll-ups and, for the hours not rolled up yet, the raw samples. The roll-ups are cut
    /// on UTC hours, so they serve only offsets of whole hours: at +05:30 a local hour or
    /// day starts half-way through a UTC hour, and an hour row would straddle it, so such
    /// offsets read the raw samples too.
    pub fn points(
        &self,
        series: &SeriesInfo,
        step: Step,
        offset: Offset,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, f64)>, StoreError> {
        let interval = i64::from(self.interval);
        let mut pieces = Vec::new();
        if step.seconds() < HOUR || step.seconds() % HOUR != 0 || i64::from(offset.seconds()) % HOUR != 0 {
            self.raw_pieces(series.id, from - interval, to, &mut pieces)?;
        } else {
            let rolled = self.rolled_to()?;
            let hours_end = rolled.min(to);
            if from - HOUR < hours_end {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT t, n, v, first_t, first_v, last_t, last_v FROM hour
                     WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t",
                )?;
                let rows = stmt.query_map(params![series.id, from - HOUR, hours_end], |r| {
                    let pair = |a: Option<i64>, b: Option<f64>| a.zip(b);
                    Ok(Piece::Hour(HourRow {
                        t: r.get(0)?,
                        n: r.get(1)?,
                        v: r.get(2)?,
                        first: pair(r.get(3)?, r.get(4)?),
                        last: pair(r.get(5)?, r.get(6)?),
                    }))
                })?;
                for row in rows {
                    pieces.push(row?);
                }
            }
            if rolled < to {
                self.raw_pieces(series.id, rolled.max(from - interval), to, &mut pieces)?;
            }
        }
        Ok(query::points(
            series.quantity,
            interval,
            &pieces,
            step,
            offset,
            from,
            to,
        ))
    }

    fn raw_pieces(&self, id: i64, from: i64, to: i64, out: &mut Vec<Piece>) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT t, v FROM sample WHERE series = ?1 AND t >= ?2 AND t < ?3 ORDER BY t")?;
        let rows = stmt.query_map(params![id, from, to], |r| {
            Ok(Piece::Raw(RawSample {
                t: r.get(0)?,
                v: r.get(1)?,
            }))
        })?;
        for row in rows {
            out.push(row?);
        }
        Ok(())
    }
}
