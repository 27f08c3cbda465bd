//! `pzem-logger export` and `synth` as an owner runs them, and its argument and config
//! errors.
#![cfg(all(feature = "dbus", feature = "cli", feature = "history"))]

#[path = "support/rig.rs"]
mod rig;

use rig::TempDir;
use std::process::Command;

const LOGGER: &str = env!("CARGO_BIN_EXE_pzem-logger");

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(LOGGER)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn synth_then_export_csv() {
    let dir = TempDir::new("cli");
    let db = dir.path().join("h.sqlite");
    let db_s = db.to_str().unwrap();
    let (code, _, err) = run(&["synth", "--db", db_s, "--days", "10", "--meters", "4", "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("10 days, 4 meters, 14 series"), "{err}");
    // A second synth never overwrites.
    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = run(&["synth", "--db", db_s, "--days", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("already exists"));
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // Series 4: the AC loads' energy; a day by hour, as CSV.
    let c = rusqlite::Connection::open(&db).unwrap();
    let (first,): (i64,) = c
        .query_row("SELECT min(t) FROM sample", [], |r| Ok((r.get(0)?,)))
        .unwrap();
    let path: String = c
        .query_row("SELECT path FROM series WHERE id = 4", [], |r| r.get(0))
        .unwrap();
    assert_eq!(path, "/Ac/Energy/Forward");
    let day = first + 86_400;
    let (from, to) = (day.to_string(), (day + 86_400).to_string());
    let (code, csv, err) = run(&[
        "export",
        "--db",
        db_s,
        "--series",
        "4",
        "--from",
        &from,
        "--to",
        &to,
        "--step",
        "hour",
        "--utc-offset",
        "Z",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "unix_seconds,time,kWh");
    assert_eq!(lines.len(), 25, "{csv}");
    let total: f64 = lines[1..]
        .iter()
        .map(|l| l.rsplit(',').next().unwrap().parse::<f64>().unwrap())
        .sum();
    // The same total as the counter's increase over the day.
    let at = |t: i64| -> f64 {
        c.query_row("SELECT v FROM sample WHERE series = 4 AND t = ?1", [t - 60], |r| {
            r.get(0)
        })
        .unwrap()
    };
    assert!((total - (at(day + 86_400) - at(day))).abs() < 1e-5, "{total}");
    // Minute steps by default, ISO dates accepted.
    let (code, csv, _) = run(&[
        "export",
        "--db",
        db_s,
        "--series",
        "3",
        "--from",
        &from,
        "--to",
        &(day + 3600).to_string(),
    ]);
    assert_eq!(code, 0);
    assert_eq!(csv.lines().count(), 61);

    // Errors: exit 2 with a message, or 3 for the file; nothing on stdout.
    for (args, code_want, says) in [
        (
            vec![
                "export",
                "--db",
                db_s,
                "--series",
                "4",
                "--from",
                "2026-02-30",
                "--to",
                "2026-03-01",
            ],
            2,
            "from:",
        ),
        (
            vec![
                "export",
                "--db",
                db_s,
                "--series",
                "4",
                "--from",
                "1",
                "--to",
                "253402300799",
            ],
            2,
            "range too large",
        ),
        (
            vec!["export", "--db", db_s, "--series", "99", "--from", "1", "--to", "2"],
            2,
            "no series 99",
        ),
        (
            vec![
                "export",
                "--db",
                "/nonexistent/h.sqlite",
                "--series",
                "1",
                "--from",
                "1",
                "--to",
                "2",
            ],
            3,
            "no such file",
        ),
        (vec!["export", "--series", "1"], 2, "--db"),
        (vec!["synth", "--db", "/tmp/x.sqlite"], 2, "--days"),
        (
            vec!["synth", "--db", "/tmp/x.sqlite", "--days", "0"],
            2,
            "from 1 to 3660",
        ),
        (vec!["--interval", "7", "--db", db_s], 2, "divide an hour"),
        (
            vec!["--services", "org.other.*", "--db", db_s],
            2,
            "not a service pattern",
        ),
        (
            vec!["--raw-days", "400", "--hour-days", "100", "--db", db_s],
            2,
            "at least as long",
        ),
        (vec!["--bogus"], 2, "Unrecognized option"),
    ] {
        let (code, out, err) = run(&args);
        assert_eq!(code, code_want, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
    }
    // The config file's [logger] section: an interval that the file's history contradicts
    // is refused before anything is written (exit 3, the file untouched).
    let conf = dir.path().join("pzem.conf");
    std::fs::write(
        &conf,
        format!("1 016 grid\n[energy]\nx = 1\n[logger]\ndb = {db_s}\ninterval = 5\n"),
    )
    .unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = run(&["-c", conf.to_str().unwrap(), "--dbus", "unix:path=/nonexistent"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("recorded every 60 s, not 5 s"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    std::fs::write(&conf, "[logger]\ninterval = often\n").unwrap();
    let (code, _, err) = run(&["-c", conf.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2: interval = often"), "{err}");
}
