//! pzem-logger and pzem-web on a year of minute data for 4 meters, and the binaries' sizes.
//!
//! What it does, all with the release binaries (`cargo build --release`, the shipped
//! profile: opt-level z, LTO):
//!
//! 1. `pzem-logger synth --days 365 --meters 4` into a new file under
//!    `target/bench-history/`: time, file size, bytes per sample, size per series and per
//!    meter (a power and an energy series) per year.
//! 2. The logger's start-up on that file (it checks the file with `PRAGMA quick_check`
//!    before writing; timed up to its D-Bus connection, which fails on purpose).
//! 3. pzem-web on the file, over loopback: each request `--rounds` times (default 30) after
//!    one warm-up; the median and the slowest time from sending the request to the last
//!    byte, and the size. The page for a day and for a month; the API for a day of one
//!    meter's power by minute, a month of its energy by hour, a year by day, the series
//!    list. Then pzem-web's peak RSS (VmHWM).
//! 4. The stripped armv7 sizes of pzem-logger and pzem-web, when
//!    `target/armv7-unknown-linux-gnueabihf/release/` holds them (`scripts/test` builds
//!    them; else the bench says how).
//!
//! `cargo bench --bench history [-- --rounds N] [--keep]` (`--keep`: leave the year's file).

#[path = "../tests/support/rig.rs"]
mod rig;

use pzem::history::time::{DAY, Date, Offset};
use rig::{Proc, TempDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn build() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "pzem-logger",
            "--bin",
            "pzem-web",
            // Also pzem-dbus, for its size: `cargo bench` leaves its bench-profile
            // build (not stripped) in the same directory.
            "--bin",
            "pzem-dbus",
        ])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "release build failed");
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release")
}

/// GET `target`: (status, bytes, time to the last byte).
fn get(port: u16, target: &str) -> (u16, usize, Duration) {
    let t = Instant::now();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = Vec::with_capacity(256 * 1024);
    s.read_to_end(&mut out).unwrap();
    let elapsed = t.elapsed();
    let status = String::from_utf8_lossy(&out[..12.min(out.len())])
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| out.len() - p - 4);
    (status, body, elapsed)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let keep = args.iter().any(|a| a == "--keep");
    let bin = build();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-history");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("year.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }

    // 1. A year for 4 meters.
    let t = Instant::now();
    let out = Command::new(bin.join("pzem-logger"))
        .args(["synth", "--db", db.to_str().unwrap(), "--days", "365", "--meters", "4"])
        .output()
        .unwrap();
    let synth_time = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = std::fs::metadata(&db).unwrap().len();
    let conn = rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let samples = count("SELECT count(*) FROM sample");
    let hours = count("SELECT count(*) FROM hour");
    let series = count("SELECT count(*) FROM series");
    let (first, last): (i64, i64) = conn
        .query_row("SELECT min(t), max(t) FROM sample", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
    drop(conn);
    println!(
        "== pzem-logger synth --days 365 --meters 4 ({}) ==",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    println!("time                     {:.1} s", synth_time.as_secs_f64());
    println!(
        "file                     {:.1} MB ({size} bytes, page size {page_size})",
        size as f64 / 1e6
    );
    println!("series                   {series}");
    println!(
        "raw samples              {samples} ({} days)",
        (last - first + 60) / DAY
    );
    println!("hourly rows              {hours}");
    let per_sample = size as f64 / samples as f64;
    println!("bytes per raw sample     {per_sample:.1} (file / raw samples, roll-ups included)");
    let per_series_year = per_sample * 525_600.0;
    println!("per series per year      {:.1} MB", per_series_year / 1e6);
    println!(
        "per meter per year       {:.1} MB (power + energy series)",
        2.0 * per_series_year / 1e6
    );

    // 2. The logger's start-up checks.
    let t = Instant::now();
    let out = Command::new(bin.join("pzem-logger"))
        .args([
            "--db",
            db.to_str().unwrap(),
            "--dbus",
            "unix:path=/nonexistent/bus",
            "-c",
            "/dev/null",
        ])
        .output()
        .unwrap();
    println!(
        "\n== pzem-logger start-up on the year's file (file checks incl. quick_check, then D-Bus fails) ==\n\
         time to exit             {} (exit {:?})",
        ms(t.elapsed()),
        out.status.code()
    );

    // 3. pzem-web.
    let tmp = TempDir::new("bench-web");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web_args: Vec<String> = [
        "--db",
        db.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--utc-offset",
        "Z",
        "-c",
        "/dev/null",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let web = Proc::spawn(
        bin.join("pzem-web").to_str().unwrap(),
        &web_args,
        &tmp.path().join("web.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "pzem-web did not start: {}", web.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let mid = Date::of(first + 200 * DAY, Offset::UTC);
    let month = mid.first_of_month();
    let (s_day, s_month) = (mid.midnight(Offset::UTC), month.midnight(Offset::UTC));
    // Series 3 and 4: the AC load meter's power and energy.
    let requests = [
        ("page, one day", format!("/?date={mid}")),
        ("page, one month", format!("/?view=month&date={month}")),
        (
            "API day of power by minute",
            format!("/api/samples?series=3&from={s_day}&to={}&step=minute", s_day + DAY),
        ),
        (
            "API day, CSV",
            format!(
                "/api/samples?series=3&from={s_day}&to={}&step=minute&format=csv",
                s_day + DAY
            ),
        ),
        (
            "API month of energy by hour",
            format!(
                "/api/samples?series=4&from={s_month}&to={}&step=hour",
                month.next_month().midnight(Offset::UTC)
            ),
        ),
        (
            "API month of energy by day",
            format!(
                "/api/samples?series=4&from={s_month}&to={}&step=day",
                month.next_month().midnight(Offset::UTC)
            ),
        ),
        (
            "API year of energy by day",
            format!("/api/samples?series=4&from={first}&to={}&step=day", first + 365 * DAY),
        ),
        ("API series list", "/api/series".to_owned()),
    ];
    println!("\n== pzem-web on that file, loopback, {rounds} rounds after a warm-up (release build) ==");
    println!(
        "{:<30} {:>7} {:>10} {:>10} {:>10}",
        "request", "status", "bytes", "median", "slowest"
    );
    for (name, target) in &requests {
        let (status, _, _) = get(port, target);
        assert_eq!(status, 200, "{target}");
        let mut times = Vec::with_capacity(rounds);
        let mut bytes = 0;
        for _ in 0..rounds {
            let (_, b, d) = get(port, target);
            bytes = b;
            times.push(d);
        }
        times.sort();
        println!(
            "{name:<30} {status:>7} {bytes:>10} {:>10} {:>10}",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", web.pid())).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?")
        .to_owned();
    println!("pzem-web peak RSS        {}", hwm.trim_start_matches("VmHWM:").trim());
    drop(web);

    // 4. Sizes.
    println!("\n== stripped binary sizes ==");
    let sizes = |dir: &Path, label: &str| {
        for name in ["pzem-logger", "pzem-web", "pzem-dbus"] {
            match std::fs::metadata(dir.join(name)) {
                Ok(m) => println!(
                    "{label:<8} {name:<12} {:>9} bytes ({:.2} MB)",
                    m.len(),
                    m.len() as f64 / 1e6
                ),
                Err(_) => println!("{label:<8} {name:<12} not built"),
            }
        }
    };
    sizes(&bin, "x86-64");
    let armv7 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/armv7-unknown-linux-gnueabihf/release");
    sizes(&armv7, "armv7");
    if !armv7.join("pzem-web").exists() {
        println!(
            "(armv7: cargo-zigbuild zigbuild --release --bins --target armv7-unknown-linux-gnueabihf.2.26, as scripts/test does)"
        );
    }
    if !keep {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
}
