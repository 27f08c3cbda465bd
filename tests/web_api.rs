//! The real `pzem-web` binary over loopback: the API and the page with real requests, bad
//! ones included, and clients that are slow or broken while others are served.
#![cfg(all(feature = "web", feature = "cli"))]

#[path = "support/rig.rs"]
mod rig;

use pzem::history::recorder::Batch;
use pzem::history::store::{Retention, Writer};
use pzem::history::synth::Synth;
use pzem::history::time::{DAY, Offset};
use rig::{Proc, TempDir};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const WEB: &str = env!("CARGO_BIN_EXE_pzem-web");
const NOW: i64 = 1_767_225_600 + 10 * 3600; // 2026-01-01T10:00Z

/// A synthetic history of `days` days for 4 meters, ending at midnight after NOW.
fn history(dir: &Path, days: u32) -> std::path::PathBuf {
    let f = dir.join("h.sqlite");
    let mut w = Writer::create_new(&f, 60, Retention::default()).unwrap();
    let batches: Vec<Batch> = Synth::new(days, 4, NOW, Offset::UTC, 5).collect();
    for chunk in batches.chunks(1440) {
        w.write(chunk).unwrap();
    }
    w.finish().unwrap();
    f
}

struct Web {
    proc: Proc,
    addr: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &TempDir, db: &Path) -> Web {
    let port = free_port();
    let args: Vec<String> = [
        "--db",
        db.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--utc-offset",
        "Z",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn(WEB, &args, &dir.path().join("web.log"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "pzem-web did not listen: {}",
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Web { proc, addr }
}

/// Sends raw bytes, reads the whole answer: (status, headers, body).
fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body_at = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    (status, head.to_owned(), out[body_at..].to_vec())
}

fn get(addr: SocketAddr, target: &str) -> (u16, String, String) {
    let (s, h, b) = raw(addr, format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    (s, h, String::from_utf8(b).unwrap())
}

#[test]
fn api_answers_and_refuses() {
    let dir = TempDir::new("web-api");
    let db = history(dir.path(), 3);
    let before = std::fs::read(&db).unwrap();
    let web = start(&dir, &db);
    let a = web.addr;

    // Series.
    let (s, h, body) = get(a, "/api/series");
    assert_eq!(s, 200, "{body}");
    assert!(h.contains("Content-Type: application/json"));
    let series: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = series.as_array().unwrap();
    assert_eq!(list.len(), 14);
    let find = |service: &str, path: &str| {
        list.iter()
            .find(|s| s["service"].as_str().unwrap().contains(service) && s["path"] == path)
            .unwrap_or_else(|| panic!("{service} {path}"))
    };
    let grid_e = find("grid", "/Ac/Energy/Forward");
    assert_eq!(grid_e["unit"], "kWh");
    assert!(grid_e["first"].as_i64().unwrap() < grid_e["last"].as_i64().unwrap());
    let id = grid_e["id"].as_i64().unwrap();
    let pid = find("acload", "/Ac/Power")["id"].as_i64().unwrap();

    // Energy per hour of the first day (no gaps): 24 points, each the counter's increase.
    let (s, _, body) = get(
        a,
        &format!("/api/samples?series={id}&from=2025-12-30&to=2025-12-31&step=hour"),
    );
    assert_eq!(s, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["series"].as_i64(), v["step"].as_str(), v["unit"].as_str()),
        (Some(id), Some("hour"), Some("kWh"))
    );
    let points = v["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    assert_eq!(points[0][0].as_i64().unwrap(), 1_767_225_600 - 2 * DAY);
    // The same day by minute sums to the same energy, and as one day step.
    let sum = |body: &str| -> f64 {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[1].as_f64().unwrap())
            .sum()
    };
    let hours = sum(&body);
    let (_, _, by_day) = get(
        a,
        &format!("/api/samples?series={id}&from=2025-12-30&to=2025-12-31&step=day"),
    );
    assert!((sum(&by_day) - hours).abs() < 1e-6);
    // Times in any accepted form.
    let (s, _, m) = get(
        a,
        &format!("/api/samples?series={id}&from=1767052800&to=2025-12-30T12:00%2B00:00"),
    );
    assert_eq!(s, 200, "{m}");
    let mv: serde_json::Value = serde_json::from_str(&m).unwrap();
    assert_eq!(mv["step"], "minute");
    // The history starts at 00:00: the first minute's increase has no observation before it.
    assert_eq!(mv["points"].as_array().unwrap().len(), 12 * 60 - 1);
    // Power per hour is an average in W.
    let (_, _, p) = get(
        a,
        &format!("/api/samples?series={pid}&from=2025-12-31&to=2026-01-01&step=hour"),
    );
    let pv: serde_json::Value = serde_json::from_str(&p).unwrap();
    assert_eq!(pv["unit"], "W");
    assert!(pv["points"][19][1].as_f64().unwrap() > 1000.0, "evening load");
    // Gaps: the outage (day 1 of 3, 10:00-16:00) has no grid points, never zeros.
    let gp = find("grid", "/Ac/Power")["id"].as_i64().unwrap();
    let (_, _, g) = get(
        a,
        &format!("/api/samples?series={gp}&from=2025-12-31T09:00&to=2025-12-31T17:00&step=hour"),
    );
    let gv: serde_json::Value = serde_json::from_str(&g).unwrap();
    let hours_seen: Vec<i64> = gv["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap() % DAY) / 3600)
        .collect();
    assert_eq!(hours_seen, [9, 16], "{g}");
    // CSV.
    let (s, h, csv) = get(
        a,
        &format!("/api/samples?series={id}&from=2025-12-31&to=2025-12-31T03:00&step=hour&format=csv"),
    );
    assert_eq!(s, 200);
    assert!(h.contains("text/csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "unix_seconds,time,kWh");
    assert_eq!(lines.len(), 4);
    assert!(lines[1].starts_with("1767139200,2025-12-31T00:00:00Z,"));

    // Bad requests: 4xx with a message, never a crash.
    for (target, want, says) in [
        ("/api/samples?series=1&from=2026-02-30&to=2026-03-01", 400, "not a date"),
        ("/api/samples?series=1&from=yesterday&to=today", 400, "not a time"),
        (
            "/api/samples?series=1&from=2026-01-01T25:00&to=2026-01-02",
            400,
            "no such time",
        ),
        (
            "/api/samples?series=1&from=0&to=253402300799&step=minute",
            400,
            "range too large",
        ),
        (
            "/api/samples?series=1&from=0&to=253402300799&step=day",
            400,
            "range too large",
        ),
        ("/api/samples?series=1&from=2026-01-02&to=2026-01-01", 400, "after"),
        ("/api/samples?series=1&from=1&to=2&step=week", 400, "step"),
        ("/api/samples?series=1&from=1&to=2&format=xml", 400, "format"),
        ("/api/samples?series=1&series=2&from=1&to=2", 400, "twice"),
        ("/api/samples?series=%FF%FE&from=1&to=2", 400, "series"),
        ("/api/samples?series=99999&from=1&to=2", 404, "no series"),
        (
            "/api/samples?series=1&from=99999999999999999999&to=2",
            400,
            "Unix seconds",
        ),
        ("/api/series?x=1", 400, "unknown parameter"),
        ("/api/nothing", 404, "not found"),
        ("/../../etc/passwd", 404, "not found"),
        ("/%2e%2e/%2e%2e/etc/passwd", 404, "not found"),
        ("/api/series/../series", 404, "not found"),
        ("/?date=2026-13-45", 400, "not a date"),
        ("/?view=year", 400, "view"),
    ] {
        let (s, _, body) = get(a, target);
        assert_eq!(s, want, "{target}: {body}");
        assert!(body.contains(says), "{target}: {body}");
    }
    let (s, h, _) = raw(a, b"POST /api/series HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(s, 405);
    assert!(h.contains("Allow: GET, HEAD"));
    let (s, _, _) = raw(a, b"GARBAGE\x00\x01\r\n\r\n");
    assert_eq!(s, 400);
    let (s, _, _) = raw(a, b"GET http://elsewhere/ HTTP/1.1\r\n\r\n");
    assert_eq!(s, 400);
    let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    let (s, _, _) = raw(a, big.as_bytes());
    assert_eq!(s, 431);
    let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(100));
    assert_eq!(raw(a, many.as_bytes()).0, 431);
    let (s, h, body) = raw(a, b"HEAD /api/series HTTP/1.1\r\n\r\n");
    assert_eq!(s, 200);
    assert!(h.contains("Content-Length: ") && body.is_empty());

    // Still alive and answering, and the file was only read.
    assert_eq!(get(a, "/api/series").0, 200);
    assert!(web.proc.log_text().find("panicked").is_none());
    assert_eq!(std::fs::read(&db).unwrap(), before, "pzem-web changed the file");
}

#[test]
fn the_page_for_a_day_and_a_month() {
    let dir = TempDir::new("web-page");
    let db = history(dir.path(), 40);
    let web = start(&dir, &db);
    for target in [
        "/?date=2025-12-31",
        "/?view=month&date=2025-12-01",
        "/?view=month&date=2025-12",
        "/",
    ] {
        let (s, h, body) = get(web.addr, target);
        assert_eq!(s, 200, "{target}");
        assert!(h.contains("Content-Security-Policy: default-src 'none'"));
        assert!(body.len() < 150_000, "{target}: {} bytes", body.len());
        assert!(body.matches("<svg").count() >= 2, "{target}");
        assert!(!body.contains("<script") && !body.contains("src=\"http"), "{target}");
    }
    let (_, _, day) = get(web.addr, "/?date=2025-12-31");
    assert!(day.contains("Totals for 2025-12-31") && day.contains("Grid to loads"));
    let (_, _, month) = get(web.addr, "/?view=month&date=2025-12-01");
    assert!(month.contains("Energy by flow per day") && month.contains("Totals for 2025-12"));
    // A day without data says so, and shows no invented bars.
    let (_, _, empty) = get(web.addr, "/?date=2020-01-01");
    assert!(empty.contains("No energy recorded") && !empty.contains("<rect"));
}

#[test]
fn slow_and_broken_clients_do_not_stop_others() {
    let dir = TempDir::new("web-slow");
    let db = history(dir.path(), 2);
    let web = start(&dir, &db);
    let a = web.addr;
    // Connections that send nothing, half a head, one byte every 100 ms, or 1 MB of headers.
    let mut idle: Vec<TcpStream> = (0..40).map(|_| TcpStream::connect(a).unwrap()).collect();
    for s in idle.iter_mut().take(10) {
        s.write_all(b"GET /api/series HTTP/1.1\r\nHost: sl").unwrap();
    }
    let drip = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        for b in b"GET /api/series HTTP/1.1\r\nX-Slow: ".iter().cycle().take(30) {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // A client that sends 1 MB of headers: refused (431) once past the head limit.
    let huge = std::thread::spawn(move || {
        let mut s = TcpStream::connect(a).unwrap();
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < 1 << 20 {
            head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // The server stops reading at its limit: the rest may be refused with a reset.
        let _ = s.write_all(&head);
        let mut answer = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.read_to_end(&mut answer);
        answer
    });
    // A client that asks for the page and never reads the answer.
    let mut unread = TcpStream::connect(a).unwrap();
    unread.write_all(b"GET /?date=2025-12-31 HTTP/1.1\r\n\r\n").unwrap();
    // Meanwhile others are served quickly.
    let mut worst = Duration::ZERO;
    for i in 0..30 {
        let t = Instant::now();
        let (s, _, _) = if i % 2 == 0 {
            get(a, "/api/series")
        } else {
            get(a, "/api/samples?series=1&from=2025-12-31&to=2026-01-01&step=hour")
        };
        worst = worst.max(t.elapsed());
        assert_eq!(s, 200);
    }
    println!("worst answer with 51 stalled connections open: {worst:?}");
    assert!(worst < Duration::from_millis(500), "{worst:?}");
    // The server closes the silent ones after its head timeout (5 s), with a 408 to those
    // that sent part of a head.
    let mut buf = Vec::new();
    idle[0].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = Instant::now();
    let _ = idle[0].read_to_end(&mut buf);
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"), "{buf:?}");
    assert!(t.elapsed() < Duration::from_secs(8));
    buf.clear();
    idle[20].set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = idle[20].read_to_end(&mut buf);
    assert!(buf.is_empty(), "a silent connection is closed without an answer");
    drip.join().unwrap();
    let answer = huge.join().unwrap();
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "1 MB of headers: {:?}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );
    // More connections than the server keeps: the oldest stalled ones are dropped and
    // new clients are still served.
    let flood: Vec<TcpStream> = (0..100).filter_map(|_| TcpStream::connect(a).ok()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    assert_eq!(get(a, "/api/series").0, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
    drop(flood);
    drop(unread);
}

/// Voluntary context switches of pzem-web's I/O thread (its main thread): each wait that
/// ends adds one.
fn io_thread_wakeups(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn an_idle_server_sleeps_and_stops_at_once_on_sigterm() {
    let dir = TempDir::new("web-idle");
    let db = history(dir.path(), 1);
    let mut web = start(&dir, &db);
    assert_eq!(get(web.addr, "/api/series").0, 200);
    // Let the answered connection drain and close (its drain deadline is 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let pid = web.proc.pid();
    let before = io_thread_wakeups(pid);
    std::thread::sleep(Duration::from_secs(3));
    let woke = io_thread_wakeups(pid) - before;
    println!("idle I/O thread woke {woke} time(s) in 3 s");
    assert!(woke <= 1, "an idle pzem-web woke {woke} times in 3 s");
    // Its wait has no timeout: only the signal ends it.
    let t = Instant::now();
    assert_eq!(web.proc.terminate(), Some(0), "{}", web.proc.log_text());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
}

/// CPU time of pzem-web's I/O thread so far, in clock ticks (user + system).
fn io_thread_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with ')'): utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn a_client_reset_while_its_answer_is_computed_costs_no_spinning() {
    let dir = TempDir::new("web-reset");
    let db = history(dir.path(), 40);
    let web = start(&dir, &db);
    let slow = "GET /api/samples?series=1&from=2025-11-25&to=2025-12-26&step=minute HTTP/1.1\r\n\r\n";
    let t = Instant::now();
    assert_eq!(raw(web.addr, slow.as_bytes()).0, 200);
    let one = t.elapsed();
    let pid = web.proc.pid();
    let before = io_thread_cpu_ticks(pid);
    // Requests that keep both workers busy, each reset by its client once sent.
    let n = 16;
    for _ in 0..n {
        let s = TcpStream::connect(web.addr).unwrap();
        (&s).write_all(slow.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on our own socket with a valid linger struct.
        unsafe {
            use std::os::fd::AsRawFd;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
        drop(s); // RST
    }
    // The workers need about n / 2 answers' time; the I/O thread should sleep meanwhile.
    std::thread::sleep(one * (n / 2 + 1) + Duration::from_millis(200));
    let spent = io_thread_cpu_ticks(pid) - before;
    println!("one answer {one:?}; I/O thread used {spent} tick(s) while {n} reset requests were computed");
    assert!(spent <= 3, "the I/O thread spun: {spent} ticks");
    assert_eq!(get(web.addr, "/api/series").0, 200, "still serving");
}
