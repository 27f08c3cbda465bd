//! pzem-dbus against the floor, per meter poll: the release `pzem-dbus` on 4 simulated
//! meters (2 × PZEM-016 at addresses 1, 2 and 2 × PZEM-017 at 3, 4, on one pseudo-terminal
//! served by the project's simulator), publishing on a private dbus-daemon with the
//! localsettings double and a monitor client subscribed to everything; and, measured the same
//! way in the same run, `examples/floor_loop.rs`, the least a program can do to poll the same
//! meters (libc calls only: write, ppoll, read, ppoll); and the same floor with `--publish`,
//! which also sends one message of about the size of pzem-dbus's `ItemsChanged` per poll to a
//! process that reads it (the least a program can do to publish each reading: the bus
//! daemon's part, like the reader's, is counted nowhere).
//!
//! A meter poll is one read request answered by the simulator (its request count; with no
//! faults configured every request is answered). Figures, per meter poll:
//!
//! - CPU time of all threads: the first field of /proc/PID/task/*/schedstat (ns), summed,
//!   over a steady-state window at 1 Hz on a simulator with real 9600-baud wire time and a
//!   10 ms turnaround (`Pacing::real(StopBits::Two)`). The window starts and ends while the
//!   line is idle between cycles, so it holds whole cycles.
//! - Context switches (`voluntary_ctxt_switches`, `nonvoluntary_ctxt_switches` of
//!   /proc/PID/task/*/status) over the same window.
//! - System calls, total and by name: `strace -f -c -p PID` attached for a separate 1 Hz
//!   window (strace slows the traced process, so not during the CPU window), stopped with
//!   SIGINT; its summary divided by the polls in that window.
//! - User and kernel CPU (utime and stime, fields 14 and 15 of /proc/PID/stat): these are
//!   tick-sampled, so they come from a separate high-rate window with the shortest interval
//!   (`-i 0`, back to back; or the smallest interval pzem-dbus accepts, which the output
//!   says) on a simulator without pacing (`Pacing::NONE`), where many polls accumulate
//!   enough ticks. The tick count is printed with the result.
//! - Peak RSS (VmHWM of /proc/PID/status) after the 1 Hz windows, and the private part of
//!   the resident memory then (smaps_rollup: the pages no other process maps; not for the
//!   publishing floor, whose forked reader shares its pages).
//! - Instructions under callgrind (counters zeroed after start-up with `callgrind_control
//!   -z`, dumped with `-d`), at 1 Hz on the paced simulator. For pzem-dbus this includes
//!   building and sending the `ItemsChanged` each poll causes; the daemon's work is not
//!   included anywhere.
//! - Bus efficiency at the shortest interval on the paced simulator: the wire time a cycle
//!   of the 4 meters needs (per meter: request and reply at 9600 baud 8N2, the 10 ms
//!   turnaround, the 3.5-character silence) over the measured wall time of a cycle.
//!
//! `cargo bench --bench pzem_dbus [-- --seconds N] [--no-callgrind] [--no-strace]
//! [--bin PATH] [--keep DIR]`
//! (`--seconds`: length of the CPU and high-rate windows, default 20; strace and bus
//! efficiency windows are at most 10 s, callgrind's at most 15 s. `--bin`: measure that
//! pzem-dbus instead of building the release one. `--keep`: copy the callgrind output
//! there (made if missing), for `callgrind_annotate`; pzem-dbus's files are
//! `callgrind.out*`, the floors' `floor_loop.callgrind.out*` and
//! `floor_publish.callgrind.out*`.)

#[path = "../tests/support/rig.rs"]
mod rig;

use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use pzem::{Model, StopBits};
use pzem::{frame_gap_us, wire_time_us};
use rig::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The bench's line: model, address and pzem-dbus `-m` spec of each meter.
const METERS: [(Model, u8, &str); 4] = [
    (Model::Pzem016, 1, "1:016:grid"),
    (Model::Pzem016, 2, "2:016:acload"),
    (Model::Pzem017, 3, "3:017:dcsource"),
    (Model::Pzem017, 4, "4:017:dcload"),
];

/// The message the publishing floor sends per poll, in bytes: about the size of
/// pzem-dbus's `ItemsChanged` on this line (264–656 bytes under strace, 430 on average).
const PUBLISH_BYTES: usize = 512;

/// How long the line must be quiet, after a request, for a 1 Hz window to start or end
/// between cycles (a cycle takes ≈ 0.2 s, a poll ≈ 50 ms).
const IDLE_LINE: Duration = Duration::from_millis(300);

/// Targets of the issue, per meter poll.
const TARGET_CPU_RATIO: f64 = 1.2;
const TARGET_UTIME_US: f64 = 15.0;
const TARGET_INSTRUCTIONS: f64 = 40_000.0;
const TARGET_SYSCALLS: f64 = 6.0;
const TARGET_VOLUNTARY_SWITCHES: f64 = 3.0;
const TARGET_PEAK_RSS_KB: f64 = 2048.0;
const TARGET_BUS_EFFICIENCY: f64 = 0.95;

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

/// Clock ticks per second of /proc's utime and stime.
fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// The wire time one cycle over the 4 meters needs at 9600 baud 8N2, in µs: per meter the
/// request, the simulator's turnaround, the reply and the 3.5-character silence.
fn cycle_wire_time_us() -> u64 {
    let pacing = Pacing::real(StopBits::Two);
    METERS
        .iter()
        .map(|&(model, _, _)| {
            let reply_len = 3 + 2 * usize::from(model.family().input_register_count()) + 2;
            wire_time_us(8, StopBits::Two)
                + pacing.turnaround.as_micros() as u64
                + wire_time_us(reply_len, StopBits::Two)
                + frame_gap_us(StopBits::Two)
        })
        .sum()
}

/// The simulator serving the bench's meters on a fresh pseudo-terminal.
struct SimLine {
    sim: SimServer,
    tty: String,
}

impl SimLine {
    fn new(pacing: Pacing) -> SimLine {
        let meters = METERS.iter().map(|&(m, a, _)| SimMeter::new(m, a)).collect();
        let sim = SimServer::pty(SimBus::new(meters, 1), pacing).unwrap();
        let tty = sim.path().unwrap().to_owned();
        SimLine { sim, tty }
    }

    /// Requests answered so far. (`SimBus::requests` counts every request with a good CRC;
    /// with no faults and every address present each is served. `served()` would stop
    /// growing at its history length in the high-rate windows.)
    fn polls(&self) -> u64 {
        self.sim.bus().requests()
    }
}

/// Which program a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Program {
    PzemDbus,
    FloorLoop,
    /// The floor plus one `send(2)` per poll to a reading process (`--publish`).
    FloorPublish,
}

impl Program {
    fn name(self) -> &'static str {
        match self {
            Program::PzemDbus => "pzem-dbus",
            Program::FloorLoop => "floor_loop",
            Program::FloorPublish => "floor_publish",
        }
    }

    /// Whether it forks a process of its own (the publishing floor's reader), which then
    /// shares its pages: its private memory says nothing.
    fn forks(self) -> bool {
        self == Program::FloorPublish
    }
}

/// A program to measure and its binary.
struct Subject {
    program: Program,
    bin: PathBuf,
}

/// One measured program running on its own simulated line; for pzem-dbus also a private
/// bus with the settings double and a monitor. Fields drop in order: the process is killed
/// and reaped first, then the bus, the directory and the simulator go.
struct Run {
    proc: Proc,
    rig: Option<Rig>,
    dir: TempDir,
    line: SimLine,
    /// `ItemsChanged` signals the monitor received so far (its log is emptied as it goes,
    /// so high-rate runs do not pile it up).
    signals: u64,
}

impl Run {
    /// Starts `subject` polling every `interval_ms` on a new line paced by `pacing`, under
    /// callgrind writing to `callgrind_out` (a file name in the run's directory) if given,
    /// and waits until it polls every meter, plus 2 s.
    fn start(subject: &Subject, pacing: Pacing, interval_ms: u64, callgrind_out: Option<&str>) -> Run {
        let line = SimLine::new(pacing);
        let dir = TempDir::new(subject.program.name());
        let interval = interval_ms.to_string();
        let (rig, program_args) = match subject.program {
            Program::PzemDbus => {
                let rig = Rig::new(true);
                let meters: Vec<&str> = METERS.iter().map(|m| m.2).collect();
                let args = rig.args(
                    &["-d", &line.tty],
                    &meters,
                    &["-i", &interval, "-t", "300", "--silent-exit", "0"],
                );
                (Some(rig), args)
            }
            Program::FloorLoop | Program::FloorPublish => {
                let mut args = vec![line.tty.clone(), interval];
                if subject.program == Program::FloorPublish {
                    args.extend(["--publish".into(), PUBLISH_BYTES.to_string()]);
                }
                (None, args)
            }
        };
        let log = dir.path().join(format!("{}.log", subject.program.name()));
        let proc = match callgrind_out {
            None => Proc::spawn(subject.bin.to_str().unwrap(), &program_args, &log),
            Some(out) => {
                let mut args = vec![
                    "--tool=callgrind".to_string(),
                    format!("--callgrind-out-file={}", dir.path().join(out).display()),
                    subject.bin.display().to_string(),
                ];
                args.extend(program_args);
                Proc::spawn("valgrind", &args, &log)
            }
        };
        let mut run = Run {
            proc,
            rig,
            dir,
            line,
            signals: 0,
        };
        let within = Duration::from_secs(if callgrind_out.is_some() { 60 } else { 15 });
        run.wait_polling(within);
        run.pass(Duration::from_secs(2));
        run
    }

    fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until every meter is polled: for pzem-dbus until all four services show
    /// `/Connected` = 1 on the bus, for the floor until 8 polls were served.
    fn wait_polling(&mut self, within: Duration) {
        let tty = self.line.tty.clone();
        match &mut self.rig {
            Some(rig) => {
                for (_, addr, spec) in METERS {
                    let class = spec.rsplit(':').next().unwrap();
                    rig.monitor.wait_connected(&service_name(class, &tty, addr), within);
                }
            }
            None => {
                let deadline = Instant::now() + within;
                while self.line.polls() < 8 {
                    self.check_alive();
                    assert!(Instant::now() < deadline, "floor_loop: no polls within {within:?}");
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Panics with the program's log if it has exited.
    fn check_alive(&mut self) {
        if let Some(code) = self.proc.try_exit() {
            panic!("the measured program exited ({code}):\n{}", self.proc.log_text());
        }
    }

    /// Lets `d` pass: the monitor receives (and counts) the signals meanwhile.
    fn pass(&mut self, d: Duration) {
        self.check_alive();
        let Some(rig) = &mut self.rig else {
            std::thread::sleep(d);
            return;
        };
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            rig.monitor.pump(left);
            let log = std::mem::take(&mut rig.monitor.log);
            self.signals += log
                .iter()
                .filter(|e| matches!(e.event, pzem::dbus::Event::ItemsChanged { .. }))
                .count() as u64;
        }
    }

    /// Waits until the simulator receives a request; the moment it noticed.
    fn wait_poll_edge(&mut self) -> Instant {
        let before = self.line.polls();
        loop {
            self.pass(Duration::from_millis(1));
            if self.line.polls() != before {
                return Instant::now();
            }
        }
    }

    /// Waits until a request came and then the line stayed quiet for [`IDLE_LINE`]: at
    /// 1 Hz, a moment between cycles when the program has handled every reply.
    fn wait_idle_line(&mut self) {
        let mut last = self.line.polls();
        let mut since = Instant::now();
        let mut seen_request = false;
        loop {
            self.pass(Duration::from_millis(5));
            let now = self.line.polls();
            if now != last {
                (last, since, seen_request) = (now, Instant::now(), true);
            } else if seen_request && since.elapsed() >= IDLE_LINE {
                return;
            }
        }
    }

    /// The program's counters now.
    fn sample(&mut self) -> Sample {
        self.check_alive();
        let pid = self.pid();
        let tasks: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| Some(t.ok()?.path()))
            .collect();
        let cpu_ns = tasks
            .iter()
            .filter_map(|t| std::fs::read_to_string(t.join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        let (mut voluntary, mut nonvoluntary) = (0, 0);
        for status in tasks
            .iter()
            .filter_map(|t| std::fs::read_to_string(t.join("status")).ok())
        {
            voluntary += status_field(&status, "voluntary_ctxt_switches:");
            nonvoluntary += status_field(&status, "nonvoluntary_ctxt_switches:");
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the ")" of the command name: state is field 3, utime 14, stime 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Sample {
            at: Instant::now(),
            polls: self.line.polls(),
            signals: self.signals,
            cpu_ns,
            utime_ticks: f[11].parse().unwrap(),
            stime_ticks: f[12].parse().unwrap(),
            voluntary,
            nonvoluntary,
        }
    }

    /// A `kB` figure of /proc/PID/status (VmHWM:, VmRSS:).
    fn status_kb(&self, key: &str) -> u64 {
        status_field(
            &std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap(),
            key,
        )
    }

    /// The resident pages this process alone maps (`Private_Clean` + `Private_Dirty` of
    /// /proc/PID/smaps_rollup), in kB: its own code and data, without the libc and loader
    /// pages other processes map too (see [`Program::forks`]).
    fn private_kb(&self) -> u64 {
        let rollup = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", self.pid())).unwrap();
        status_field(&rollup, "Private_Clean:") + status_field(&rollup, "Private_Dirty:")
    }
}

/// The number after `key` in a /proc status text (a trailing `kB` is dropped); 0 if absent.
fn status_field(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A measured program's counters at one moment.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    polls: u64,
    signals: u64,
    cpu_ns: u64,
    utime_ticks: u64,
    stime_ticks: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

/// What happened between two samples.
#[derive(Clone, Copy)]
struct Window {
    wall: Duration,
    polls: u64,
    signals: u64,
    cpu_ns: u64,
    utime_ticks: u64,
    stime_ticks: u64,
    voluntary: u64,
    nonvoluntary: u64,
}

impl Window {
    fn between(a: Sample, b: Sample) -> Window {
        assert!(b.polls > a.polls, "no polls in the window");
        Window {
            wall: b.at - a.at,
            polls: b.polls - a.polls,
            signals: b.signals - a.signals,
            cpu_ns: b.cpu_ns - a.cpu_ns,
            utime_ticks: b.utime_ticks - a.utime_ticks,
            stime_ticks: b.stime_ticks - a.stime_ticks,
            voluntary: b.voluntary - a.voluntary,
            nonvoluntary: b.nonvoluntary - a.nonvoluntary,
        }
    }

    fn per_poll(&self, total: u64) -> f64 {
        total as f64 / self.polls as f64
    }

    fn cpu_us_per_poll(&self) -> f64 {
        self.per_poll(self.cpu_ns) / 1000.0
    }

    fn ticks_us_per_poll(&self, ticks: u64) -> f64 {
        self.per_poll(ticks) / clock_ticks_per_s() * 1e6
    }
}

/// `strace -c` totals over a window.
struct SyscallCount {
    polls: u64,
    by_name: BTreeMap<String, u64>,
}

impl SyscallCount {
    fn total(&self) -> u64 {
        self.by_name.values().sum()
    }

    fn per_poll(&self, calls: u64) -> f64 {
        calls as f64 / self.polls as f64
    }
}

/// Calls by syscall name from the summary table `strace -c` writes
/// (`% time  seconds  usecs/call  calls  [errors]  syscall`; the `total` line is left out).
fn parse_strace_summary(text: &str) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1];
        if name == "total" {
            continue;
        }
        if let Ok(calls) = f[3].parse::<u64>() {
            *by_name.entry(name.to_string()).or_insert(0) += calls;
        }
    }
    by_name
}

/// Figures of the 1 Hz run on the paced simulator.
struct OneHertz {
    cpu: Window,
    syscalls: Option<SyscallCount>,
    peak_rss_kb: u64,
    rss_kb: u64,
    /// `None` for a program that [forks](Program::forks).
    private_kb: Option<u64>,
}

/// The 1 Hz run: CPU and context switches over `seconds`, then system calls over
/// `strace_seconds` (if given), then the peak RSS.
fn one_hertz(subject: &Subject, seconds: u64, strace_seconds: Option<u64>) -> OneHertz {
    let mut run = Run::start(subject, Pacing::real(StopBits::Two), 1000, None);
    run.wait_idle_line();
    let a = run.sample();
    run.pass(Duration::from_secs(seconds).saturating_sub(IDLE_LINE * 2));
    run.wait_idle_line();
    let cpu = Window::between(a, run.sample());
    let syscalls = strace_seconds.map(|s| strace_window(&mut run, s));
    OneHertz {
        cpu,
        syscalls,
        peak_rss_kb: run.status_kb("VmHWM:"),
        rss_kb: run.status_kb("VmRSS:"),
        private_kb: (!subject.program.forks()).then(|| run.private_kb()),
    }
}

/// Attaches `strace -f -c` to the run's program between two idle moments of the line about
/// `seconds` apart, stops it with SIGINT, and reads its summary.
fn strace_window(run: &mut Run, seconds: u64) -> SyscallCount {
    let out = run.dir.path().join("strace-summary.txt");
    let log = run.dir.path().join("strace.log");
    run.wait_idle_line();
    let p0 = run.line.polls();
    let args: Vec<String> = ["-f", "-c", "-o", out.to_str().unwrap(), "-p", &run.pid().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut strace = Proc::spawn("strace", &args, &log);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !strace.log_text().contains("attached") {
        assert!(strace.try_exit().is_none(), "strace failed:\n{}", strace.log_text());
        assert!(
            Instant::now() < deadline,
            "strace did not attach:\n{}",
            strace.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(run.line.polls(), p0, "a poll went by while strace attached");
    run.pass(Duration::from_secs(seconds).saturating_sub(IDLE_LINE * 2));
    run.wait_idle_line();
    let p1 = run.line.polls();
    strace.signal(libc::SIGINT);
    let exit = strace.wait_exit(Duration::from_secs(10));
    assert!(exit.is_some(), "strace did not stop on SIGINT");
    assert_eq!(run.line.polls(), p1, "a poll went by while strace detached");
    let summary = std::fs::read_to_string(&out).unwrap_or_default();
    let by_name = parse_strace_summary(&summary);
    assert!(
        !by_name.is_empty(),
        "no strace summary in {}:\n{summary}",
        out.display()
    );
    SyscallCount {
        polls: p1 - p0,
        by_name,
    }
}

/// The unpaced run back to back at `interval_ms`: utime and stime per poll over `seconds`.
fn high_rate(subject: &Subject, interval_ms: u64, seconds: u64) -> Window {
    let mut run = Run::start(subject, Pacing::NONE, interval_ms, None);
    run.wait_poll_edge();
    let a = run.sample();
    run.pass(Duration::from_secs(seconds));
    run.wait_poll_edge();
    Window::between(a, run.sample())
}

/// The paced run at `interval_ms`: the measured cycle over `seconds` (from one request's
/// arrival to another's), and the bus efficiency.
fn bus_efficiency(subject: &Subject, interval_ms: u64, seconds: u64) -> (Window, f64) {
    let mut run = Run::start(subject, Pacing::real(StopBits::Two), interval_ms, None);
    run.wait_poll_edge();
    let a = run.sample();
    run.pass(Duration::from_secs(seconds));
    run.wait_poll_edge();
    let w = Window::between(a, run.sample());
    let cycle_us = w.wall.as_secs_f64() * 1e6 / (w.polls as f64 / METERS.len() as f64);
    (w, cycle_wire_time_us() as f64 / cycle_us)
}

/// Instructions per poll under callgrind at 1 Hz over `seconds`, after start-up; the output
/// copied to `keep` if given.
fn callgrind(subject: &Subject, seconds: u64, keep: Option<&Path>) -> (u64, u64) {
    let out_name = match subject.program {
        Program::PzemDbus => "callgrind.out".to_string(),
        floor => format!("{}.callgrind.out", floor.name()),
    };
    let out_name = out_name.as_str();
    let mut run = Run::start(subject, Pacing::real(StopBits::Two), 1000, Some(out_name));
    let pid = run.pid().to_string();
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
    run.wait_idle_line();
    control("-z");
    let p0 = run.line.polls();
    run.pass(Duration::from_secs(seconds).saturating_sub(IDLE_LINE * 2));
    run.wait_idle_line();
    control("-d");
    let p1 = run.line.polls();
    let dumps = |run: &Run| -> Vec<PathBuf> {
        std::fs::read_dir(run.dir.path())
            .unwrap()
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(out_name)))
            .collect()
    };
    // The dump of `-d` (not the one at program termination); give it a moment to be written.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ir = loop {
        let ir = dumps(&run).iter().find_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            (text.contains("Trigger:") && !text.contains("Program termination")).then_some(())?;
            text.lines()
                .find_map(|l| l.strip_prefix("summary: ")?.trim().parse::<u64>().ok())
        });
        if let Some(ir) = ir {
            break ir;
        }
        assert!(
            Instant::now() < deadline,
            "no callgrind dump in {}",
            run.dir.path().display()
        );
        run.pass(Duration::from_millis(100));
    };
    let files = dumps(&run);
    drop(run.proc);
    if let Some(keep) = keep {
        std::fs::create_dir_all(keep).unwrap();
        for f in files {
            std::fs::copy(&f, keep.join(f.file_name().unwrap())).unwrap();
        }
    }
    (ir, p1 - p0)
}

/// The shortest `-i` this pzem-dbus accepts: 0 (back to back) if it takes it, else 100,
/// the minimum before the poll-loop rewrite. Asked by starting it with `-i 0` on a device
/// that does not exist: a refused interval is a usage error at once.
fn shortest_pzem_dbus_interval(bin: &Path) -> u64 {
    let dir = TempDir::new("interval-probe");
    let log = dir.path().join("probe.log");
    let args: Vec<String> = [
        "-d",
        "/nonexistent/pzem-bench-tty",
        "-m",
        "1:016:grid",
        "-i",
        "0",
        "--dbus",
        "unix:path=/nonexistent/bus",
        "--settings-wait",
        "0",
        "--state-dir",
        dir.path().to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut probe = Proc::spawn(bin.to_str().unwrap(), &args, &log);
    let refused = probe.wait_exit(Duration::from_secs(1)).is_some() && probe.log_text().contains("--interval");
    drop(probe);
    if refused { 100 } else { 0 }
}

/// One program's figures, `None` where not measured.
struct Figures {
    one_hertz: OneHertz,
    high_rate: Window,
    efficiency: (Window, f64),
    instructions: Option<(u64, u64)>,
}

impl Figures {
    fn measure(subject: &Subject, shortest_interval: u64, o: &Options) -> Figures {
        let name = subject.program.name();
        eprintln!("[{name}] 1 Hz: CPU window {} s, then strace", o.seconds);
        let one_hertz = one_hertz(subject, o.seconds, o.strace.then_some(o.seconds.min(10)));
        eprintln!(
            "[{name}] high rate, unpaced, interval {shortest_interval} ms: {} s",
            o.seconds
        );
        let high_rate = high_rate(subject, shortest_interval, o.seconds);
        eprintln!("[{name}] bus efficiency, paced, interval {shortest_interval} ms");
        let efficiency = bus_efficiency(subject, shortest_interval, o.seconds.min(10));
        let instructions = o.callgrind.then(|| {
            eprintln!("[{name}] callgrind, 1 Hz");
            callgrind(subject, o.seconds.min(15), o.keep.as_deref())
        });
        Figures {
            one_hertz,
            high_rate,
            efficiency,
            instructions,
        }
    }

    fn instructions_per_poll(&self) -> Option<f64> {
        self.instructions.map(|(ir, polls)| ir as f64 / polls as f64)
    }

    fn syscalls_per_poll(&self) -> Option<f64> {
        let s = self.one_hertz.syscalls.as_ref()?;
        Some(s.per_poll(s.total()))
    }
}

/// The bench's command-line options.
struct Options {
    seconds: u64,
    callgrind: bool,
    strace: bool,
    bin: Option<PathBuf>,
    keep: Option<PathBuf>,
}

/// What a row's target asks of its values (pzem-dbus, floor, floor + send); `None` when a
/// value it needs was not measured.
type Check = fn([Option<f64>; 3]) -> Option<bool>;

/// A row of the result table: figure; pzem-dbus, the floor and the publishing floor with
/// pzem-dbus's ratio to each; target; and whether pzem-dbus meets it (`—` with no target,
/// or when a value the check needs is missing).
fn row(figure: &str, values: [Option<f64>; 3], unit: &str, target: &str, met: Option<Check>) {
    let show = |v: Option<f64>| match v {
        None => "—".to_string(),
        Some(v) if v >= 1000.0 => format!("{} {unit}", thousands(v.round() as u64)),
        Some(v) if v >= 100.0 => format!("{v:.0} {unit}"),
        Some(v) if v >= 10.0 => format!("{v:.1} {unit}"),
        Some(v) => format!("{v:.2} {unit}"),
    };
    let ratio = |other: Option<f64>| match (values[0], other) {
        (Some(p), Some(f)) if f > 0.0 => format!("{:.2}", p / f),
        _ => "—".into(),
    };
    let met = match met.and_then(|check| check(values)) {
        None => "—",
        Some(true) => "yes",
        Some(false) => "**no**",
    };
    println!(
        "| {figure:<44} | {:>12} | {:>12} | {:>6} | {:>12} | {:>6} | {target:<14} | {met:<6} |",
        show(values[0]).trim(),
        show(values[1]).trim(),
        ratio(values[1]),
        show(values[2]).trim(),
        ratio(values[2]),
    );
}

/// `1234567` → `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn report(pzem: &Figures, floor: &Figures, send: &Figures, shortest_interval: u64) {
    let hz = clock_ticks_per_s();
    println!();
    println!(
        "Per meter poll; 4 meters (2 × PZEM-016, 2 × PZEM-017) on one simulated line. \
         floor + send: the floor with one {PUBLISH_BYTES}-byte send(2) per poll to a reading process."
    );
    println!();
    println!(
        "| {:<44} | {:>12} | {:>12} | {:>6} | {:>12} | {:>6} | {:<14} | {:<6} |",
        "figure", "pzem-dbus", "floor", "÷ floor", "floor + send", "÷ f + s", "target", "met"
    );
    println!(
        "|{:-<46}|{:->14}|{:->14}|{:->8}|{:->14}|{:->8}|{:-<16}|{:-<8}|",
        "", "", "", "", "", "", "", ""
    );
    let named = [("pzem-dbus", pzem), ("floor", floor), ("floor + send", send)];
    let all = named.map(|(_, f)| f);
    let of = |value: fn(&Figures) -> Option<f64>| all.map(value);
    row(
        "CPU, all threads (1 Hz, schedstat)",
        of(|f| Some(f.one_hertz.cpu.cpu_us_per_poll())),
        "µs",
        "≤ 1.2× floor",
        Some(|v| Some(v[0]? <= TARGET_CPU_RATIO * v[1]?)),
    );
    row(
        "user CPU, utime (high rate †)",
        of(|f| Some(f.high_rate.ticks_us_per_poll(f.high_rate.utime_ticks))),
        "µs",
        "≤ 15 µs",
        Some(|v| Some(v[0]? <= TARGET_UTIME_US)),
    );
    row(
        "kernel CPU, stime (high rate †)",
        of(|f| Some(f.high_rate.ticks_us_per_poll(f.high_rate.stime_ticks))),
        "µs",
        "",
        None,
    );
    row(
        "CPU, all threads (high rate †, schedstat)",
        of(|f| Some(f.high_rate.cpu_us_per_poll())),
        "µs",
        "",
        None,
    );
    row(
        "system calls (1 Hz, strace -f -c)",
        of(Figures::syscalls_per_poll),
        "",
        "≤ 6",
        Some(|v| Some(v[0]? <= TARGET_SYSCALLS)),
    );
    row(
        "voluntary context switches (1 Hz)",
        of(|f| Some(f.one_hertz.cpu.per_poll(f.one_hertz.cpu.voluntary))),
        "",
        "≤ 3",
        Some(|v| Some(v[0]? <= TARGET_VOLUNTARY_SWITCHES)),
    );
    row(
        "nonvoluntary context switches (1 Hz)",
        of(|f| Some(f.one_hertz.cpu.per_poll(f.one_hertz.cpu.nonvoluntary))),
        "",
        "",
        None,
    );
    row(
        "peak RSS, VmHWM (whole process)",
        of(|f| Some(f.one_hertz.peak_rss_kb as f64)),
        "kB",
        "≤ 2,048 kB",
        Some(|v| Some(v[0]? <= TARGET_PEAK_RSS_KB)),
    );
    row(
        "private memory (smaps_rollup)",
        of(|f| f.one_hertz.private_kb.map(|kb| kb as f64)),
        "kB",
        "",
        None,
    );
    row(
        "instructions (1 Hz, callgrind)",
        of(Figures::instructions_per_poll),
        "",
        "≤ 40,000",
        Some(|v| Some(v[0]? <= TARGET_INSTRUCTIONS)),
    );
    row(
        "bus efficiency (paced, shortest interval ‡)",
        of(|f| Some(f.efficiency.1)),
        "",
        "≥ 0.95",
        Some(|v| Some(v[0]? >= TARGET_BUS_EFFICIENCY)),
    );
    println!();
    let fallback = if shortest_interval > 0 {
        format!(
            " (pzem-dbus refuses -i 0, so it ran at -i {shortest_interval}, its smallest interval: \
             its polls are not back to back)"
        )
    } else {
        String::new()
    };
    println!("† unpaced simulator, pzem-dbus -i {shortest_interval}, floor interval 0{fallback}:");
    for (name, w) in named.map(|(n, f)| (n, &f.high_rate)) {
        println!(
            "  {name}: {} polls in {:.1} s ({:.0} /s); utime {} ticks, stime {} ticks at {hz} Hz \
             (±1 tick = ±{:.1} µs per poll)",
            w.polls,
            w.wall.as_secs_f64(),
            w.polls as f64 / w.wall.as_secs_f64(),
            w.utime_ticks,
            w.stime_ticks,
            1e6 / hz / w.polls as f64
        );
    }
    println!(
        "‡ paced simulator, pzem-dbus -i {shortest_interval}, floor interval 0: wire time of a cycle \
         {:.1} ms (request + 10 ms turnaround + reply + 3.5-character gap, 9600 8N2, per meter)",
        cycle_wire_time_us() as f64 / 1000.0
    );
    for (name, (w, e)) in named.map(|(n, f)| (n, &f.efficiency)) {
        println!(
            "  {name}: {} polls in {:.2} s → measured cycle {:.1} ms, efficiency {e:.3}",
            w.polls,
            w.wall.as_secs_f64(),
            w.wall.as_secs_f64() * 1000.0 / (w.polls as f64 / METERS.len() as f64)
        );
    }
    println!("1 Hz windows (paced simulator, -i 1000):");
    for (name, f) in named.map(|(n, f)| (n, &f.one_hertz)) {
        println!(
            "  {name}: CPU window {} polls in {:.1} s ({} ItemsChanged received), CPU share {:.3} % \
             of one core; RSS now {} kB",
            f.cpu.polls,
            f.cpu.wall.as_secs_f64(),
            f.cpu.signals,
            f.cpu.cpu_ns as f64 / f.cpu.wall.as_nanos() as f64 * 100.0,
            f.rss_kb
        );
        if let Some(s) = &f.syscalls {
            println!("  {name}: strace window {} polls, {} system calls", s.polls, s.total());
        }
    }
    for (name, f) in named {
        if let Some((ir, polls)) = f.instructions {
            println!("  {name}: callgrind {} Ir over {polls} polls", thousands(ir));
        }
    }
    let counts = all.map(|f| f.one_hertz.syscalls.as_ref());
    if let [Some(ps), Some(fs), Some(ss)] = counts {
        println!();
        println!("System calls per meter poll by name (1 Hz, strace -f -c):");
        println!();
        println!(
            "| {:<20} | {:>9} | {:>9} | {:>12} |",
            "syscall", "pzem-dbus", "floor", "floor + send"
        );
        println!("|{:-<22}|{:->11}|{:->11}|{:->14}|", "", "", "", "");
        let all_counts = [ps, fs, ss];
        let calls = |n: &String| -> u64 { all_counts.iter().map(|s| s.by_name.get(n).copied().unwrap_or(0)).sum() };
        let mut names: Vec<&String> = all_counts.iter().flat_map(|s| s.by_name.keys()).collect();
        names.sort_by(|a, b| calls(b).cmp(&calls(a)).then(a.cmp(b)));
        names.dedup();
        for n in names {
            let per = |s: &SyscallCount| {
                s.by_name
                    .get(n)
                    .map_or("—".to_string(), |&c| format!("{:.2}", s.per_poll(c)))
            };
            println!("| {n:<20} | {:>9} | {:>9} | {:>12} |", per(ps), per(fs), per(ss));
        }
        let total = |s: &SyscallCount| s.per_poll(s.total());
        println!(
            "| {:<20} | {:>9.2} | {:>9.2} | {:>12.2} |",
            "total",
            total(ps),
            total(fs),
            total(ss)
        );
    }
}

/// Whether `program --version`-like `args` runs and succeeds.
fn tool_works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let opt = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| PathBuf::from(&w[1]));
    let flag = |name: &str| args.iter().any(|a| a == name);
    let mut options = Options {
        seconds: opt("--seconds").and_then(|s| s.to_str()?.parse().ok()).unwrap_or(20),
        callgrind: !flag("--no-callgrind"),
        strace: !flag("--no-strace"),
        // --bin PATH: measure that binary (e.g. one built with symbols for callgrind_annotate).
        bin: opt("--bin"),
        keep: opt("--keep"),
    };
    if options.callgrind && !tool_works("valgrind", &["--version"]) {
        println!("valgrind not found: no instruction counts");
        options.callgrind = false;
    }
    if options.strace && !tool_works("strace", &["-V"]) {
        println!("strace not found (apt-get install -y strace): no system call counts");
        options.strace = false;
    }
    let pzem_dbus = Subject {
        program: Program::PzemDbus,
        bin: options
            .bin
            .clone()
            .unwrap_or_else(|| cargo_build_release(&["--bin", "pzem-dbus"], "pzem-dbus")),
    };
    let floor = Subject {
        program: Program::FloorLoop,
        bin: cargo_build_release(&["--example", "floor_loop"], "examples/floor_loop"),
    };
    let shortest_interval = shortest_pzem_dbus_interval(&pzem_dbus.bin);
    println!(
        "pzem-dbus: {}   floor: {}",
        pzem_dbus.bin.display(),
        floor.bin.display()
    );
    let pzem = Figures::measure(&pzem_dbus, shortest_interval, &options);
    let floor_figures = Figures::measure(&floor, 0, &options);
    let send = Subject {
        program: Program::FloorPublish,
        bin: floor.bin.clone(),
    };
    let send_figures = Figures::measure(&send, 0, &options);
    report(&pzem, &floor_figures, &send_figures, shortest_interval);
    if let Some(keep) = &options.keep
        && options.callgrind
    {
        println!("callgrind output kept in {}", keep.display());
    }
}
