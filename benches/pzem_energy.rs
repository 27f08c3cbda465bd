//! pzem-energy per step: the release `pzem-energy` on a private dbus-daemon with the
//! localsettings double, a real Multi's vebus double and three input doubles driven by this
//! bench at 1 Hz, as pzem-dbus and a battery monitor publish: each second the AC-input and
//! AC-output meters send one `ItemsChanged` each (`/Ac/Power`, `/Ac/L1/Power`,
//! `/Ac/Energy/Forward` up 1 Wh) and the battery monitor one (`/Dc/0/Power`,
//! `/Dc/0/Current`, `/History/DischargedEnergy` up 1 Wh). With a 500 ms settle time every
//! second is one step.
//!
//! Figures, per step, in two runs:
//! - **steady** (`--save-ms 60000`, the default: a save and a publish at most once a
//!   minute, so none in the windows below): CPU time of all threads (first field of
//!   /proc/PID/task/*/schedstat), voluntary and nonvoluntary context switches, over
//!   `--seconds` steps; system calls, total and by name (`strace -f -c -p PID`, a separate
//!   window of 10 steps, stopped with SIGINT); peak RSS (VmHWM) after both.
//! - **save every step** (`--save-ms 500`): the same CPU and system-call figures when each
//!   step is also written to the state file (tmp, fsync, rename, directory fsync) and then
//!   published (one `ItemsChanged`).
//!
//! A window starts just before a cycle of the inputs and ends 800 ms after the last one,
//! when its step (and save) is done. After each run the state file is checked: it must hold
//! every counter move the bench made.
//!
//! `cargo bench --bench pzem_energy [-- --seconds N] [--no-strace] [--bin PATH]`

#[path = "../tests/support/rig.rs"]
mod rig;

use pzem::dbus::Value;
use pzem::dbus::testkit::{DeviceDouble, MULTI_INSTANCE, MULTI_MK2_CONNECTION, PrivateBus, SettingsDouble};
use rig::{Proc, TempDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GRID: &str = "com.victronenergy.grid.bench_1";
const LOADS: &str = "com.victronenergy.acload.bench_2";
const BATTERY: &str = "com.victronenergy.battery.bench";
const OURS: &str = "com.victronenergy.vebus.pzem_energy";
const TARGET_PEAK_RSS_KB: u64 = 2048;

/// `cargo build --release ARGS…` in this package; the path of `release/NAME`.
fn cargo_build_release(args: &[&str], name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["build", "--release"])
        .args(args)
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build --release {args:?} failed");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("release").join(name)
}

fn tool_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The bus, the doubles, and pzem-energy.
/// Fields drop in this order: the process first, the directory and bus last.
struct Run {
    proc: Proc,
    grid: DeviceDouble,
    loads: DeviceDouble,
    battery: DeviceDouble,
    /// AC-in, AC-out, battery counters, Wh.
    counters: [u64; 3],
    start: [u64; 3],
    next_cycle: Instant,
    _multi: DeviceDouble,
    _settings: SettingsDouble,
    _bus: PrivateBus,
    dir: TempDir,
}

/// CPU and context switches of a process at one moment.
#[derive(Clone, Copy)]
struct Sample {
    cpu_ns: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Run {
    fn start(bin: &Path, save_ms: u64) -> Run {
        let dir = TempDir::new("bench-energy");
        let bus = PrivateBus::start().unwrap();
        let settings = SettingsDouble::start(&bus.bus()).unwrap();
        let b = bus.bus();
        let multi = DeviceDouble::multi(
            &b,
            "com.victronenergy.vebus.ttyS4",
            MULTI_INSTANCE,
            MULTI_MK2_CONNECTION,
        )
        .unwrap();
        let counters = [10_000, 20_000, 5_000];
        let grid = DeviceDouble::ac_meter(&b, GRID, 40, counters[0] as f64 / 1000.0).unwrap();
        let loads = DeviceDouble::ac_meter(&b, LOADS, 41, counters[1] as f64 / 1000.0).unwrap();
        let battery = DeviceDouble::battery(&b, BATTERY, 512, counters[2] as f64 / 1000.0).unwrap();
        let state = dir.path().join("flows.state");
        let args: Vec<String> = [
            "--dbus",
            bus.address(),
            "-c",
            "/dev/null",
            "--ac-in",
            GRID,
            "--ac-out",
            LOADS,
            "--battery",
            BATTERY,
            "--state",
            state.to_str().unwrap(),
            "--settle-ms",
            "500",
            "--save-ms",
            &save_ms.to_string(),
            "--settings-wait",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let proc = Proc::spawn(bin.to_str().unwrap(), &args, &dir.path().join("pzem-energy.log"));
        let mut run = Run {
            dir,
            proc,
            grid,
            loads,
            battery,
            counters,
            start: counters,
            next_cycle: Instant::now(),
            _multi: multi,
            _settings: settings,
            _bus: bus,
        };
        // Published and connected.
        let mut client = pzem::dbus::BusClient::new(&run._bus.bus()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while client.get_value(OURS, "/Connected").ok() != Some(Value::Int(1)) {
            assert!(
                Instant::now() < deadline,
                "pzem-energy did not start:\n{}",
                run.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        run.next_cycle = Instant::now() + Duration::from_secs(1);
        run
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Sleeps until the next cycle is due, then moves every input (one `ItemsChanged` each).
    fn cycle(&mut self) {
        let wait = self.next_cycle.saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        self.next_cycle += Duration::from_secs(1);
        for c in &mut self.counters {
            *c += 1;
        }
        let kwh = |wh: u64| Value::Double(wh as f64 / 1000.0);
        let n = self.counters[0] as f64;
        for (meter, wh) in [(&self.grid, self.counters[0]), (&self.loads, self.counters[1])] {
            let watts = Value::Double(3600.0 + (n % 7.0));
            meter
                .set(&[
                    ("/Ac/Power", watts.clone()),
                    ("/Ac/L1/Power", watts),
                    ("/Ac/Energy/Forward", kwh(wh)),
                ])
                .unwrap();
        }
        self.battery
            .set(&[
                ("/Dc/0/Power", Value::Double(-3600.0 - (n % 5.0))),
                ("/Dc/0/Current", Value::Double(-68.7 - (n % 5.0) / 10.0)),
                ("/History/DischargedEnergy", kwh(self.counters[2])),
            ])
            .unwrap();
    }

    /// Time for the last cycle's step (and save) to be done.
    fn settle(&self) {
        std::thread::sleep(Duration::from_millis(800));
    }

    fn sample(&self) -> Sample {
        let task_dir = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let mut s = Sample {
            cpu_ns: 0,
            voluntary: 0,
            nonvoluntary: 0,
        };
        for task in std::fs::read_dir(&task_dir).unwrap().filter_map(|e| e.ok()) {
            let p = task.path();
            if let Ok(t) = std::fs::read_to_string(p.join("schedstat")) {
                s.cpu_ns += t
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            if let Ok(t) = std::fs::read_to_string(p.join("status")) {
                s.voluntary += status_field(&t, "voluntary_ctxt_switches:");
                s.nonvoluntary += status_field(&t, "nonvoluntary_ctxt_switches:");
            }
        }
        s
    }

    fn status_kb(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status_field(&status, key)
    }

    /// `steps` cycles; CPU ns, voluntary and nonvoluntary switches per step.
    fn cpu_window(&mut self, steps: u64) -> (f64, f64, f64) {
        let a = self.sample();
        for _ in 0..steps {
            self.cycle();
        }
        self.settle();
        let b = self.sample();
        let per = |x: u64, y: u64| (y - x) as f64 / steps as f64;
        (
            per(a.cpu_ns, b.cpu_ns),
            per(a.voluntary, b.voluntary),
            per(a.nonvoluntary, b.nonvoluntary),
        )
    }

    /// `strace -f -c` over `steps` cycles: calls per step by name.
    fn strace_window(&mut self, steps: u64) -> BTreeMap<String, f64> {
        let out = self.dir.path().join("strace-summary.txt");
        let log = self.dir.path().join("strace.log");
        let args: Vec<String> = ["-f", "-c", "-o", out.to_str().unwrap(), "-p", &self.pid().to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut strace = Proc::spawn("strace", &args, &log);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !strace.log_text().contains("attached") {
            assert!(strace.try_exit().is_none(), "strace failed:\n{}", strace.log_text());
            assert!(Instant::now() < deadline, "strace did not attach");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..steps {
            self.cycle();
        }
        self.settle();
        strace.signal(libc::SIGINT);
        assert!(
            strace.wait_exit(Duration::from_secs(10)).is_some(),
            "strace did not stop"
        );
        let summary = std::fs::read_to_string(&out).unwrap_or_default();
        let mut by_name = BTreeMap::new();
        for line in summary.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 5 || f[0].parse::<f64>().is_err() || f[f.len() - 1] == "total" {
                continue;
            }
            if let Ok(calls) = f[3].parse::<u64>() {
                *by_name.entry(f[f.len() - 1].to_string()).or_insert(0.0) += calls as f64 / steps as f64;
            }
        }
        assert!(!by_name.is_empty(), "no strace summary:\n{summary}");
        by_name
    }

    /// SIGTERM; the saved state must hold every move of the counters.
    fn finish(mut self) {
        assert_eq!(self.proc.terminate(), Some(0), "{}", self.proc.log_text());
        let state = std::fs::read_to_string(self.dir.path().join("flows.state")).unwrap();
        for (field, wh) in ["ac_in_wh", "ac_out_wh", "battery_wh"].iter().zip(self.counters) {
            assert!(state.contains(&format!(" {field}={wh} ")), "{field} != {wh} in {state}");
        }
        let moved = self.counters[0] - self.start[0];
        // Each step: 1 Wh in, 1 Wh out, 1 Wh from the battery: p = 0, 1 Wh into the battery.
        assert!(
            state.contains(&format!("ac_in_to_inverter_wh={moved} ")),
            "{moved} steps not all booked: {state}"
        );
    }
}

fn print_syscalls(title: &str, by_name: &BTreeMap<String, f64>) {
    let total: f64 = by_name.values().sum();
    println!("  system calls per step ({title}): {total:.2}");
    let mut v: Vec<_> = by_name.iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(a.1));
    for (name, n) in v {
        println!("    {name:<16} {n:.2}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let seconds: u64 = opt("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut strace = !args.iter().any(|a| a == "--no-strace");
    if strace && !tool_works("strace", &["-V"]) {
        println!("strace not found (apt-get install -y strace): no system call counts");
        strace = false;
    }
    let bin = opt("--bin")
        .map(PathBuf::from)
        .unwrap_or_else(|| cargo_build_release(&["--bin", "pzem-energy"], "pzem-energy"));
    println!(
        "pzem-energy: {}   {seconds} steps per CPU window, 1 step/s",
        bin.display()
    );

    // Steady: saved and published at most once a minute.
    let mut run = Run::start(&bin, 60_000);
    for _ in 0..3 {
        run.cycle(); // warm-up
    }
    run.settle();
    let (cpu, vol, nonvol) = run.cpu_window(seconds);
    println!("steady (save and publish at most once a minute):");
    println!("  CPU per step: {:.1} µs (all threads, schedstat)", cpu / 1000.0);
    println!("  context switches per step: {vol:.2} voluntary, {nonvol:.2} nonvoluntary");
    if strace {
        let s = run.strace_window(10);
        print_syscalls("10 steps", &s);
    }
    let (hwm, rss) = (run.status_kb("VmHWM:"), run.status_kb("VmRSS:"));
    println!(
        "  peak RSS (VmHWM): {hwm} kB (target ≤ {TARGET_PEAK_RSS_KB} kB: {}); RSS now {rss} kB",
        if hwm <= TARGET_PEAK_RSS_KB { "met" } else { "NOT met" }
    );
    run.finish();

    // Every step saved (tmp, fsync, rename, dir fsync) and published.
    let mut run = Run::start(&bin, 500);
    for _ in 0..3 {
        run.cycle();
    }
    run.settle();
    let (cpu, vol, nonvol) = run.cpu_window(seconds.min(20));
    println!("save every step (--save-ms 500: one save and one ItemsChanged per step):");
    println!("  CPU per step: {:.1} µs (all threads, schedstat)", cpu / 1000.0);
    println!("  context switches per step: {vol:.2} voluntary, {nonvol:.2} nonvoluntary");
    if strace {
        let s = run.strace_window(10);
        print_syscalls("10 steps", &s);
    }
    println!("  peak RSS (VmHWM): {} kB", run.status_kb("VmHWM:"));
    run.finish();
}
