//! The history file: schema, migrations, retention and roll-ups, gaps, one commit per
//! interval, and files that must be left untouched (newer, damaged, foreign).
#![cfg(feature = "history")]

use pzem::history::query::Step;
use pzem::history::recorder::{Batch, Recorder};
use pzem::history::series::{Quantity, default_patterns};
use pzem::history::store::{APPLICATION_ID, Reader, Retention, SCHEMA_VERSION, StoreError, Writer, check_file};
use pzem::history::synth::Synth;
use pzem::history::time::{DAY, HOUR, Offset};
use std::path::{Path, PathBuf};

const GRID: &str = "com.victronenergy.grid.pzem_ttyUSB0_1";
const T0: i64 = 1_767_225_600; // 2026-01-01T00:00Z

struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("pzem-hist-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sqlite(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn snapshot(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
fn schema_version_wal_and_documented_tables() {
    let d = Dir::new("schema");
    let f = d.file("h.sqlite");
    drop(Writer::open(&f, 60, Retention::default()).unwrap());
    let c = sqlite(&f);
    let v: i32 = c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    let app: i32 = c.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!((v, app, mode.as_str()), (SCHEMA_VERSION, APPLICATION_ID, "wal"));
    let mut tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    tables.sort();
    assert_eq!(tables, ["hour", "meta", "sample", "series"]);
    // Every table is in the schema document.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/history.md")).unwrap();
    for t in &tables {
        assert!(
            doc.contains(&format!("CREATE TABLE {t} ")),
            "docs/history.md lacks table {t}"
        );
    }
    assert!(doc.contains(&format!("user_version = {SCHEMA_VERSION}")));
    // Reopening keeps it; another interval is refused and changes nothing.
    drop(Writer::open(&f, 60, Retention::default()).unwrap());
    let before = snapshot(&f);
    match Writer::open(&f, 5, Retention::default()) {
        Err(StoreError::IntervalMismatch {
            stored: 60, asked: 5, ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&f).0, before.0);
}

#[test]
fn an_empty_file_is_migrated_from_version_zero() {
    let d = Dir::new("migrate");
    let f = d.file("h.sqlite");
    std::fs::write(&f, b"").unwrap();
    drop(Writer::open(&f, 60, Retention::default()).unwrap());
    let v: i32 = sqlite(&f).query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, SCHEMA_VERSION);
}

#[test]
fn newer_damaged_and_foreign_files_are_reported_and_left_untouched() {
    let d = Dir::new("untouched");
    // Newer.
    let newer = d.file("newer.sqlite");
    drop(Writer::open(&newer, 60, Retention::default()).unwrap());
    sqlite(&newer)
        .execute_batch("PRAGMA user_version = 99; PRAGMA journal_mode = DELETE;")
        .unwrap();
    let before = snapshot(&newer);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let e = Writer::open(&newer, 60, Retention::default()).unwrap_err();
    assert!(matches!(e, StoreError::NewerVersion { found: 99, .. }), "{e}");
    assert!(e.to_string().contains("left untouched"));
    assert!(Reader::open(&newer).is_err());
    assert_eq!(snapshot(&newer), before);
    assert!(!d.file("newer.sqlite-wal").exists());

    // Not SQLite at all.
    let junk = d.file("junk.sqlite");
    std::fs::write(&junk, b"this is not a database, but an owner's notes\n".repeat(100)).unwrap();
    let before = snapshot(&junk);
    assert!(matches!(
        Writer::open(&junk, 60, Retention::default()),
        Err(StoreError::NotADatabase(_))
    ));
    assert_eq!(snapshot(&junk), before);

    // Damaged inside: a history with data, a page in the middle overwritten.
    let damaged = d.file("damaged.sqlite");
    let mut w = Writer::create_new(&damaged, 60, Retention::default()).unwrap();
    let batches: Vec<Batch> = Synth::new(20, 4, T0, Offset::UTC, 7).collect();
    w.write(&batches).unwrap();
    w.finish().unwrap();
    sqlite(&damaged).execute_batch("PRAGMA journal_mode = DELETE").unwrap();
    let mut bytes = std::fs::read(&damaged).unwrap();
    let len = bytes.len();
    assert!(len > 200_000);
    for b in &mut bytes[len / 2..len / 2 + 8192] {
        *b = 0x5A;
    }
    std::fs::write(&damaged, &bytes).unwrap();
    let before = snapshot(&damaged);
    let e = Writer::open(&damaged, 60, Retention::default()).unwrap_err();
    assert!(matches!(e, StoreError::Damaged(..)), "{e}");
    assert_eq!(snapshot(&damaged), before);

    // Another program's SQLite file.
    let foreign = d.file("foreign.sqlite");
    sqlite(&foreign)
        .execute_batch("CREATE TABLE notes (x); PRAGMA application_id = 42;")
        .unwrap();
    let before = snapshot(&foreign);
    assert!(matches!(
        Writer::open(&foreign, 60, Retention::default()),
        Err(StoreError::Foreign(_, 42))
    ));
    assert_eq!(snapshot(&foreign), before);
    // A new database is never made over an existing file.
    assert!(matches!(
        Writer::create_new(&foreign, 60, Retention::default()),
        Err(StoreError::Exists(_))
    ));
    assert!(check_file(&d.file("absent.sqlite"), true).is_ok());
    // A missing file says what to do; a file without its interval is not guessed at.
    let missing = Reader::open(&d.file("absent.sqlite")).unwrap_err().to_string();
    assert!(
        missing.contains("pzem-logger has not written it yet; check --db or db in [logger]"),
        "{missing}"
    );
    let no_interval = d.file("no-interval.sqlite");
    drop(Writer::open(&no_interval, 60, Retention::default()).unwrap());
    sqlite(&no_interval)
        .execute("DELETE FROM meta WHERE key = 'interval'", [])
        .unwrap();
    match Reader::open(&no_interval) {
        Err(StoreError::Damaged(_, why)) => assert!(why.contains("no interval"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn one_commit_per_interval_and_gaps_stay_gaps() {
    let d = Dir::new("gaps");
    let f = d.file("h.sqlite");
    let mut w = Writer::open(&f, 60, Retention::default()).unwrap();
    let mut r = Recorder::new(60, default_patterns(), T0 * 1000);
    let mut commits = 0;
    let mut write = |r: &mut Recorder, w: &mut Writer| {
        let batches: Vec<Batch> = std::iter::from_fn(|| r.poll_batch()).collect();
        if batches.iter().any(|b| !b.samples.is_empty()) {
            commits += 1;
        }
        w.write(&batches).unwrap();
    };
    // 10 minutes at 1 kW with 2 changes a second, a counter rising 1/60 kWh a minute.
    let mut kwh = 10.0;
    for ms in (0..600_000).step_by(500) {
        let now = T0 * 1000 + ms;
        if ms % 60_000 == 0 {
            kwh += 1.0 / 60.0;
        }
        // Minutes 4 and 5: the meter is silent (invalid) - a gap.
        let gap = (240_000..360_000).contains(&ms);
        let p = if gap {
            None
        } else {
            Some(1000.0 + if ms % 1000 == 0 { 10.0 } else { -10.0 })
        };
        let e = if gap { None } else { Some(kwh) };
        r.handle_changes(now, GRID, [("/Ac/Power", p), ("/Ac/Energy/Forward", e)]);
        write(&mut r, &mut w);
    }
    r.handle_timeout((T0 + 600) * 1000);
    write(&mut r, &mut w);
    // 10 intervals, 2 of them without any data: 8 commits, one per interval with data.
    assert_eq!(w.commits(), 8);
    assert_eq!(commits, 8);
    drop(w);
    let reader = Reader::open(&f).unwrap();
    let series = reader.series().unwrap();
    let power = series.iter().find(|s| s.quantity == Quantity::Power).unwrap();
    let energy = series.iter().find(|s| s.quantity == Quantity::Energy).unwrap();
    let p = reader.points(power, Step::Minute, Offset::UTC, T0, T0 + 600).unwrap();
    let minutes: Vec<i64> = p.iter().map(|(t, _)| (t - T0) / 60).collect();
    assert_eq!(minutes, [0, 1, 2, 3, 6, 7, 8, 9], "the gap has no samples");
    for (_, v) in &p {
        assert!((v - 1000.0).abs() < 1e-9, "average, not an instant: {v}");
    }
    // Energy per minute: the counter's increase; no point for the gap minutes, and the
    // increase over the gap is not spread or shifted onto the minutes around it.
    let e = reader.points(energy, Step::Minute, Offset::UTC, T0, T0 + 600).unwrap();
    let em: Vec<i64> = e.iter().map(|(t, _)| (t - T0) / 60).collect();
    assert_eq!(em, [1, 2, 3, 7, 8, 9], "{e:?}");
    for (_, v) in &e {
        assert!((v - 1.0 / 60.0).abs() < 1e-9, "{v}");
    }
    // Within the hour, the increase over the gap is known and counted.
    let h = reader.points(energy, Step::Hour, Offset::UTC, T0, T0 + HOUR).unwrap();
    assert!((h[0].1 - 9.0 / 60.0).abs() < 1e-9, "{h:?}");
    // Stored rows: exactly what was recorded, nothing invented.
    let n: i64 = sqlite(&f)
        .query_row("SELECT count(*) FROM sample", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 8 + 8);
}

#[test]
fn retention_rolls_up_to_hours_and_bounds_the_file() {
    let d = Dir::new("retention");
    let f = d.file("h.sqlite");
    let retention = Retention {
        raw_days: 20,
        hour_days: 40,
    };
    let mut w = Writer::create_new(&f, 60, retention).unwrap();
    let synth = Synth::new(70, 2, T0, Offset::UTC, 3);
    let end = synth.end();
    let batches: Vec<Batch> = synth.collect();
    // The raw answer for a day 10 days before the end, before retention removes anything.
    for chunk in batches.chunks(1440) {
        w.write(chunk).unwrap();
    }
    w.finish().unwrap();
    let c = sqlite(&f);
    let (raw_min, raw_max): (i64, i64) = c
        .query_row("SELECT min(t), max(t) FROM sample", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let hour_min: i64 = c.query_row("SELECT min(t) FROM hour", [], |r| r.get(0)).unwrap();
    assert_eq!(raw_max, end - 60);
    assert!(
        raw_min >= end - 20 * DAY && raw_min < end - 19 * DAY,
        "raw from {}",
        (end - raw_min) / DAY
    );
    assert!(hour_min >= end - 40 * DAY && hour_min < end - 39 * DAY);
    // Days older than the raw retention are still answered from the roll-ups, the same as
    // the raw answer would have been: the days' energy sums equal the counter's increase.
    let reader = Reader::open(&f).unwrap();
    let series = reader.series().unwrap();
    let grid_e = series
        .iter()
        .find(|s| s.service == GRID && s.quantity == Quantity::Energy)
        .unwrap();
    let from = end - 30 * DAY;
    let days = reader
        .points(grid_e, Step::Day, Offset::UTC, from, from + 5 * DAY)
        .unwrap();
    assert_eq!(days.len(), 5);
    let counter_at = |t: i64| {
        batches
            .iter()
            .find(|b| b.start + 60 == t)
            .and_then(|b| {
                b.samples
                    .iter()
                    .find(|s| s.service == GRID && s.quantity == Quantity::Energy)
            })
            .map(|s| s.value)
            .unwrap()
    };
    let want = counter_at(from + 5 * DAY) - counter_at(from);
    let got: f64 = days.iter().map(|p| p.1).sum();
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    // Nothing before the hourly retention.
    assert!(
        reader
            .points(grid_e, Step::Day, Offset::UTC, end - 70 * DAY, end - 45 * DAY)
            .unwrap()
            .is_empty()
    );
}

/// A write that fails inside its transaction (here at the roll-up's bookkeeping, as a full
/// disk fails at COMMIT) leaves the roll-up point where the file has it: when the failed
/// intervals are never written (dropped after waiting too long), the hour they began in is
/// still rolled up from what was committed before.
#[test]
fn a_failed_write_does_not_move_the_roll_up_point() {
    let d = Dir::new("rollback");
    let f = d.file("h.sqlite");
    let mut w = Writer::create_new(&f, 60, Retention::default()).unwrap();
    let batch = |minute: i64| Batch {
        start: T0 + minute * 60,
        samples: vec![pzem::history::recorder::Sample {
            service: GRID.into(),
            path: "/Ac/Power",
            quantity: Quantity::Power,
            t: T0 + minute * 60,
            value: 1000.0,
        }],
    };
    for minute in 0..30 {
        w.write(&[batch(minute)]).unwrap();
    }
    // Minutes 30-59 fail: after the roll-up ran in their transaction.
    let c = sqlite(&f);
    c.execute_batch("CREATE TRIGGER full BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'disk full'); END;")
        .unwrap();
    let failed: Vec<Batch> = (30..60).map(batch).collect();
    assert!(w.write(&failed).is_err());
    c.execute_batch("DROP TRIGGER full;").unwrap();
    // The next hour is written; minutes 30-59 never are.
    for minute in 60..120 {
        w.write(&[batch(minute)]).unwrap();
    }
    let n: Option<i64> = c
        .query_row("SELECT n FROM hour WHERE t = ?1", [T0], |r| r.get(0))
        .unwrap_or(None);
    assert_eq!(n, Some(30), "hour 0 is rolled up from its 30 committed minutes");
}
