//! pzem-dbus under load: the release binary on 4 simulated meters (2 × PZEM-016, 2 × PZEM-017
//! on one pseudo-terminal, real 9600-baud wire time) polled at 1 Hz, publishing on a private
//! dbus-daemon with the localsettings double and a monitor client subscribed to everything.
//!
//! Prints peak RSS (VmHWM), CPU time per meter poll (whole process: utime+stime from
//! /proc/PID/stat, and the nanosecond sum of /proc/PID/task/*/schedstat) over a steady-state
//! window, and, when valgrind is installed, instructions per meter poll counted by callgrind
//! over a steady-state window (counters zeroed after start-up with `callgrind_control -z`,
//! dumped with `-d`). A meter poll = one read request answered by the simulator, and the
//! `ItemsChanged` it causes; the signal's cost in pzem-dbus is included, the daemon's is not.
//!
//! `cargo bench --bench pzem_dbus [-- --seconds N] [--no-callgrind] [--bin PATH] [--keep DIR]`
//! (`--bin`: measure that binary instead of building the release one; `--keep`: copy the
//! callgrind output there, for `callgrind_annotate`).

#[path = "../tests/support/rig.rs"]
mod rig;

use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use pzem::{Model, StopBits};
use rig::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const METERS: [(Model, u8, &str); 4] = [
    (Model::Pzem016, 1, "1:016:grid"),
    (Model::Pzem016, 2, "2:016:acload"),
    (Model::Pzem017, 3, "3:017:dcsource"),
    (Model::Pzem017, 4, "4:017:dcload"),
];

fn build_release() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release", "--bin", "pzem-dbus"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the release pzem-dbus failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release/pzem-dbus")
}

fn polls(sim: &SimServer) -> usize {
    sim.bus().served().count()
}

/// (utime + stime) in seconds, from /proc/PID/stat.
fn cpu_ticks_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// CPU time of every thread in ns (first field of /proc/PID/task/TID/schedstat).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn status_kb(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Setup {
    sim: SimServer,
    tty: String,
    rig: Rig,
}

fn setup() -> Setup {
    let meters = METERS.iter().map(|&(m, a, _)| SimMeter::new(m, a)).collect();
    let sim = SimServer::pty(SimBus::new(meters, 1), Pacing::real(StopBits::Two)).unwrap();
    let tty = sim.path().unwrap().to_owned();
    Setup {
        sim,
        tty,
        rig: Rig::new(true),
    }
}

fn args(s: &Setup) -> Vec<String> {
    let meters: Vec<&str> = METERS.iter().map(|m| m.2).collect();
    s.rig.args(
        &["-d", &s.tty],
        &meters,
        &["-i", "1000", "-t", "300", "--silent-exit", "0"],
    )
}

fn wait_all_connected(s: &mut Setup, within: Duration) {
    for (model, addr, spec) in METERS {
        let class = spec.rsplit(':').next().unwrap();
        let _ = model;
        s.rig.monitor.wait_connected(&service_name(class, &s.tty, addr), within);
    }
}

fn signals(s: &Setup) -> usize {
    s.rig
        .monitor
        .log
        .iter()
        .filter(|e| matches!(e.event, pzem::dbus::Event::ItemsChanged { .. }))
        .count()
}

fn native(bin: &Path, seconds: u64) {
    let mut s = setup();
    let p = s.rig.start(bin.to_str().unwrap(), "native", &args(&s));
    let pid = p.pid();
    wait_all_connected(&mut s, Duration::from_secs(15));
    s.rig.monitor.pump_for(Duration::from_secs(2));
    let (p0, sig0, t0, ns0, w0) = (
        polls(&s.sim),
        signals(&s),
        cpu_ticks_s(pid),
        cpu_ns(pid),
        Instant::now(),
    );
    s.rig.monitor.pump_for(Duration::from_secs(seconds));
    let (p1, sig1, t1, ns1, wall) = (polls(&s.sim), signals(&s), cpu_ticks_s(pid), cpu_ns(pid), w0.elapsed());
    let hwm = status_kb(pid, "VmHWM:");
    let rss = status_kb(pid, "VmRSS:");
    let total_ns = cpu_ns(pid);
    let n = (p1 - p0) as f64;
    println!(
        "pzem-dbus (release, {}), 4 meters at 1 Hz, {:.1} s steady state:",
        bin.display(),
        wall.as_secs_f64()
    );
    println!(
        "  meter polls served: {}  ItemsChanged received: {}",
        p1 - p0,
        sig1 - sig0
    );
    println!("  peak RSS (VmHWM): {hwm} kB   RSS now: {rss} kB");
    println!(
        "  CPU per meter poll: {:.1} µs (schedstat, all threads)   {:.1} µs (utime+stime, {:.2} s in 10 ms ticks)",
        (ns1 - ns0) as f64 / n / 1000.0,
        (t1 - t0) / n * 1e6,
        t1 - t0
    );
    println!(
        "  CPU since start (incl. start-up): {:.1} ms; CPU share: {:.3} %",
        total_ns as f64 / 1e6,
        (ns1 - ns0) as f64 / wall.as_nanos() as f64 * 100.0
    );
    drop(p);
}

fn callgrind(bin: &Path, seconds: u64, keep: Option<&Path>) {
    let mut s = setup();
    let out = s.rig.dir.path().join("callgrind.out");
    let mut a = vec![
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out.display()),
        bin.display().to_string(),
    ];
    a.extend(args(&s));
    let p = s.rig.start("valgrind", "callgrind", &a);
    let pid = p.pid().to_string();
    wait_all_connected(&mut s, Duration::from_secs(60));
    s.rig.monitor.pump_for(Duration::from_secs(2));
    let control = |flag: &str| {
        let o = Command::new("callgrind_control")
            .args([flag, &pid])
            .output()
            .expect("callgrind_control");
        assert!(
            o.status.success(),
            "callgrind_control {flag}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    control("-z");
    let (p0, sig0) = (polls(&s.sim), signals(&s));
    s.rig.monitor.pump_for(Duration::from_secs(seconds));
    control("-d");
    let (p1, sig1) = (polls(&s.sim), signals(&s));
    // Give the dump a moment to be written, then read the summary of the newest part.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ir = loop {
        let parts: Vec<PathBuf> = std::fs::read_dir(s.rig.dir.path())
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("callgrind.out"))
            })
            .collect();
        let ir = parts.iter().find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            text.contains("Trigger: Client Request").then_some(())?;
            text.lines()
                .find_map(|l| l.strip_prefix("summary: ")?.trim().parse::<u64>().ok())
        });
        if let Some(ir) = ir.or_else(|| {
            parts.iter().find_map(|p| {
                let text = std::fs::read_to_string(p).ok()?;
                (text.contains("Trigger:") && !text.contains("Program termination")).then_some(())?;
                text.lines()
                    .find_map(|l| l.strip_prefix("summary: ")?.trim().parse::<u64>().ok())
            })
        }) {
            break ir;
        }
        assert!(
            Instant::now() < deadline,
            "no callgrind dump in {}",
            s.rig.dir.path().display()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let n = (p1 - p0) as f64;
    println!("callgrind, steady state over {seconds} s (counters zeroed after start-up):");
    println!("  meter polls: {}  ItemsChanged: {}  Ir: {ir}", p1 - p0, sig1 - sig0);
    println!(
        "  instructions per meter poll (all threads of pzem-dbus): {:.0}",
        ir as f64 / n
    );
    drop(p);
    if let Some(keep) = keep {
        for e in std::fs::read_dir(s.rig.dir.path()).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("callgrind.out") {
                std::fs::copy(e.path(), keep.join(e.file_name())).unwrap();
            }
        }
        println!("  callgrind output kept in {}", keep.display());
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .windows(2)
        .find(|w| w[0] == "--seconds")
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(20);
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| PathBuf::from(&w[1]));
    // --bin PATH: measure that binary (e.g. one built with symbols for callgrind_annotate).
    let bin = opt("--bin").unwrap_or_else(build_release);
    native(&bin, seconds);
    let valgrind = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if args.iter().any(|a| a == "--no-callgrind") {
        return;
    }
    if valgrind {
        callgrind(&bin, seconds.min(15), opt("--keep").as_deref());
    } else {
        println!("valgrind not found: no instruction counts");
    }
}
