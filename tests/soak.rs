//! The fault soak: pzem-dbus on three simulated meters (two PZEM-016, one PZEM-017) and
//! pzem-energy on the two AC ones, for a while, through phases that repeat: clean; the bus
//! daemon restarted; every fault at high rates on the whole line (both AC meters faulty at
//! once); clean; the pseudo-terminal closed and reopened; the DC meter silent; the DC meter
//! silent *and* faults; clean.
//!
//! The soak is the supervisor, as serial-starter and daemontools are on a GX:
//!
//! - **Reopen**: the simulator hangs up its pty; pzem-dbus must exit with 3. The soak
//!   serves the same simulated meters (same state: the counters go on) on a new pty,
//!   re-points the line's stable path (a symlink named `ttyUSB0` in the test's directory,
//!   so the service names stay the same) at it and starts pzem-dbus again. pzem-energy
//!   keeps running and must follow the meters' services as they leave and come back.
//! - **Bus restart**: the private dbus-daemon is killed and a new one started on the same
//!   socket path (the settings double comes back with its settings, as localsettings
//!   does); pzem-dbus and pzem-energy must both exit with 4; the soak starts both again and
//!   its recording client reconnects.
//!
//! Each event comes at the start of its phase and again every 10 s while at least 8 s of
//! the phase are left. A client on the private bus records every value published, and
//! the soak reports (and asserts):
//!
//! - polls attempted and faults injected by kind;
//! - wrong values published (must be 0): every measurement published equals one the
//!   simulator served to that address, while that pzem-dbus process ran (a value served
//!   only before a restart, published after it, counts as stale);
//! - stale values published while a meter was silent, and from before a restart (must be
//!   0);
//! - recovery after a fault phase ends (median, max; in ms and in polls);
//! - reopens and bus restarts done, with the exit codes seen, and the recovery after each
//!   kind: from the hang-up or the daemon's kill to each meter's first value published by
//!   the restarted pzem-dbus (median, max; ms and polls), and pzem-energy's flows back
//!   after a bus restart;
//! - pzem-energy booking flows again after every reopen and bus restart;
//! - the healthy meters' update rate while the DC meter is silent;
//! - RSS of both services at the start and end of each of their runs (a run ends at a
//!   restart), the longest run's figures printed;
//! - energy counters and flows never decreasing, across every restart.
//!
//! Length: `PZEM_SOAK_SECONDS` (default 180, or 60 with `PZEM_TEST_QUICK=1`);
//! `scripts/soak MINUTES` runs it longer and prints the figures.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/rig.rs"]
mod rig;

use pzem::dbus::{Event, Value};
use pzem::sim::{Faults, Pacing, SimServer};
use rig::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PZEM_DBUS: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const PZEM_ENERGY: &str = env!("CARGO_BIN_EXE_pzem-energy");
const SECOND: Duration = Duration::from_secs(1);
/// Poll interval and reply timeout of pzem-dbus (ms).
const INTERVAL_MS: u64 = 200;
const TIMEOUT_MS: u64 = 100;
/// Every fault at once, each at 12%; delays of 250 ms are past the 100 ms timeout.
const FAULTS: &str = "no-reply=0.12,bad-crc=0.12,truncated=0.12,garbage=0.12,exception=0.04,delay=0.12,delay-ms=250";
/// pzem-energy's flags besides the rig's.
const ENERGY_FLAGS: [&str; 4] = ["--settle-ms", "500", "--save-ms", "1000"];
/// A reopen or bus restart comes at the start of its phase, then again this long after
/// the previous one while at least [`EVENT_ROOM`] of the phase is left.
const EVENT_EVERY: Duration = Duration::from_secs(10);
const EVENT_ROOM: Duration = Duration::from_secs(8);
/// How long a supervised process may take to exit after its line or bus is gone.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// The flows pzem-energy publishes.
const FLOWS: [&str; 3] = [
    "/Energy/AcIn1ToAcOut",
    "/Energy/AcIn1ToInverter",
    "/Energy/InverterToAcOut",
];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Phase {
    Clean,
    Faults,
    Silent,
    SilentAndFaults,
    /// A clean line; the pty is hung up and reopened.
    Reopen,
    /// A clean line; the bus daemon is restarted.
    BusRestart,
}

/// One cycle. An event phase is never last, so pzem-energy has time to book after it;
/// each fault phase and silence ends into a clean phase, where recovery is measured.
const CYCLE: [Phase; 8] = [
    Phase::Clean,
    Phase::BusRestart,
    Phase::Faults,
    Phase::Clean,
    Phase::Reopen,
    Phase::Silent,
    Phase::SilentAndFaults,
    Phase::Clean,
];

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn soak_seconds() -> u64 {
    if let Some(s) = std::env::var("PZEM_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()) {
        return s;
    }
    if std::env::var("PZEM_TEST_QUICK").is_ok_and(|q| q == "1") {
        60
    } else {
        180
    }
}

/// Points the symlink `link` at `target`, atomically (a new link renamed over the old).
fn point(link: &Path, target: &str) {
    let new = link.with_extension("new");
    let _ = std::fs::remove_file(&new);
    std::os::unix::fs::symlink(target, &new).unwrap();
    std::fs::rename(&new, link).unwrap();
}

/// A process the soak supervises, with its RSS a few seconds after its start and just
/// before its end.
struct Run {
    what: &'static str,
    proc: Proc,
    rss_start: Option<u64>,
    rss_end: Option<u64>,
    ended: Option<Instant>,
}

impl Run {
    fn new(what: &'static str, proc: Proc) -> Run {
        Run {
            what,
            proc,
            rss_start: None,
            rss_end: None,
            ended: None,
        }
    }

    /// Samples the RSS at start once the run is 2 s old.
    fn sample(&mut self) {
        if self.rss_start.is_none() && self.proc.started.elapsed() >= 2 * SECOND {
            self.rss_start = Some(rss_kib(self.proc.pid()));
        }
    }

    /// The RSS just before the run ends.
    fn finish(&mut self) {
        self.rss_end = Some(rss_kib(self.proc.pid()));
        self.ended = Some(Instant::now());
    }

    fn seconds(&self) -> f64 {
        (self.ended.unwrap_or_else(Instant::now) - self.proc.started).as_secs_f64()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Reopen,
    BusRestart,
}

/// A reopen or bus restart done.
#[derive(Debug)]
struct Done {
    kind: Kind,
    /// When the pty was hung up or the daemon killed.
    at: Instant,
    /// When the new pzem-dbus was started.
    restarted: Instant,
    /// pzem-energy's flows (sum, kWh) just before.
    flows_before: Option<f64>,
}

/// The supervisor: the line, the bus and the two services, restarted as a GX would.
struct Soak {
    rig: Rig,
    sim: SimServer,
    /// The line's stable path: a symlink to the current pty.
    link: PathBuf,
    services: [String; 3],
    dbus: Run,
    energy: Run,
    /// Every run that ended.
    finished: Vec<Run>,
    /// Start time of every pzem-dbus run, in order.
    dbus_starts: Vec<Instant>,
    done: Vec<Done>,
}

impl Soak {
    fn tty(&self) -> String {
        self.link.to_str().unwrap().to_owned()
    }

    /// Starts pzem-dbus on the stable path and waits for its three services.
    fn start_dbus(rig: &mut Rig, tty: &str, services: &[String; 3], n: usize) -> Run {
        let interval = INTERVAL_MS.to_string();
        let timeout = TIMEOUT_MS.to_string();
        let args = rig.args(&["-d", tty], &THREE_METERS, &["-i", &interval, "-t", &timeout]);
        let mut p = rig.start(PZEM_DBUS, &format!("pzem-dbus-{n}"), &args);
        for s in services {
            if !rig
                .monitor
                .try_until(10 * SECOND, |m| m.get(s, "/Connected") == Some(&Value::Int(1)))
            {
                panic!(
                    "run {n}: {s} not back within 10 s (exit {:?})\n{}",
                    p.try_exit(),
                    p.log_text()
                );
            }
        }
        Run::new("pzem-dbus", p)
    }

    fn start_energy(rig: &mut Rig, services: &[String; 3]) -> Run {
        Run::new(
            "pzem-energy",
            rig.start_energy(PZEM_ENERGY, &services[0], &services[1], &ENERGY_FLAGS),
        )
    }

    fn new() -> Soak {
        let sim = three_meter_pty(2026);
        let mut rig = Rig::new(true);
        let link = rig.dir.path().join("ttyUSB0");
        point(&link, sim.path().unwrap());
        let tty = link.to_str().unwrap().to_owned();
        let services = three_meter_services(&tty);
        let dbus = Soak::start_dbus(&mut rig, &tty, &services, 1);
        let energy = Soak::start_energy(&mut rig, &services);
        Soak {
            dbus_starts: vec![dbus.proc.started],
            rig,
            sim,
            link,
            services,
            dbus,
            energy,
            finished: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Pumps the monitor until `deadline`, sampling RSS; fails at once when a service
    /// exited on its own.
    fn pump_until(&mut self, deadline: Instant) {
        loop {
            for run in [&mut self.dbus, &mut self.energy] {
                run.sample();
                if let Some(code) = run.proc.try_exit() {
                    panic!("{} exited ({code}) on its own\n{}", run.what, run.proc.log_text());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.rig.monitor.pump_for(left.min(SECOND / 4));
        }
    }

    /// Waits for `run` to exit, pumping the monitor; its exit code, or `None` (a hang).
    fn wait_exit(monitor: &mut Monitor, run: &mut Run) -> Option<i32> {
        let deadline = Instant::now() + EXIT_WITHIN;
        while Instant::now() < deadline {
            if let Some(code) = run.proc.try_exit() {
                return Some(code);
            }
            monitor.pump(Duration::from_millis(20));
        }
        run.proc.try_exit()
    }

    fn flows_now(&self) -> Option<f64> {
        FLOWS
            .iter()
            .map(|p| self.rig.monitor.get(ENERGY_OWN, p).and_then(Value::as_f64))
            .sum()
    }

    /// The pty hung up and reopened: pzem-dbus exits 3 and is restarted on the new pty.
    fn reopen(&mut self) {
        let flows_before = self.flows_now();
        self.dbus.finish();
        let at = Instant::now();
        self.sim.hang_up();
        let code = Soak::wait_exit(&mut self.rig.monitor, &mut self.dbus);
        assert_eq!(
            code,
            Some(3),
            "pzem-dbus after the hang-up (None: still running)\n{}",
            self.dbus.proc.log_text()
        );
        // Its services gone before the new run, so that their last values do not pass
        // for the new run's.
        let services = self.services.clone();
        self.rig.monitor.until(EXIT_WITHIN, "the meters' services gone", |m| {
            services.iter().all(|s| !m.view.contains_key(s))
        });
        // The same meters on a new pty, at the same stable path.
        self.sim = SimServer::pty_shared(self.sim.handle(), Pacing::NONE).unwrap();
        point(&self.link, self.sim.path().unwrap());
        let restarted = Instant::now();
        self.dbus_starts.push(restarted);
        let tty = self.tty();
        let run = Soak::start_dbus(&mut self.rig, &tty, &self.services, self.dbus_starts.len());
        self.finished.push(std::mem::replace(&mut self.dbus, run));
        assert_eq!(
            self.energy.proc.try_exit(),
            None,
            "pzem-energy exited while the meters were away\n{}",
            self.energy.proc.log_text()
        );
        self.done.push(Done {
            kind: Kind::Reopen,
            at,
            restarted,
            flows_before,
        });
    }

    /// The bus daemon killed and started again: both services exit 4 and are restarted.
    fn bus_restart(&mut self) {
        let flows_before = self.flows_now();
        self.dbus.finish();
        self.energy.finish();
        let at = Instant::now();
        self.rig.restart_bus();
        for run in [&mut self.dbus, &mut self.energy] {
            let code = Soak::wait_exit(&mut self.rig.monitor, run);
            assert_eq!(
                code,
                Some(4),
                "{} after the bus restart (None: still running)\n{}",
                run.what,
                run.proc.log_text()
            );
        }
        let restarted = Instant::now();
        self.dbus_starts.push(restarted);
        let tty = self.tty();
        let run = Soak::start_dbus(&mut self.rig, &tty, &self.services, self.dbus_starts.len());
        self.finished.push(std::mem::replace(&mut self.dbus, run));
        let run = Soak::start_energy(&mut self.rig, &self.services);
        self.finished.push(std::mem::replace(&mut self.energy, run));
        self.done.push(Done {
            kind: Kind::BusRestart,
            at,
            restarted,
            flows_before,
        });
    }
}

/// What the monitor saw, in time order: a service's values, from a signal (`snapshot`
/// false) or from its `GetItems` when it appeared (true).
struct Published<'a> {
    at: Instant,
    service: &'a str,
    values: Vec<(&'a str, &'a Value)>,
    snapshot: bool,
}

fn timeline(monitor: &Monitor) -> Vec<Published<'_>> {
    let mut out: Vec<Published> = Vec::new();
    for seen in &monitor.log {
        if let Event::ItemsChanged { service, changes } = &seen.event {
            out.push(Published {
                at: seen.at,
                service,
                values: changes.iter().map(|(p, v)| (p.as_str(), v)).collect(),
                snapshot: false,
            });
        }
    }
    for a in &monitor.appeared {
        if let Ok(items) = &a.items {
            out.push(Published {
                at: a.at,
                service: &a.service,
                values: items.iter().map(|(p, v)| (p.as_str(), v)).collect(),
                snapshot: true,
            });
        }
    }
    out.sort_by_key(|p| p.at);
    out
}

#[test]
fn fault_soak() {
    let total = Duration::from_secs(soak_seconds());
    let phase_len = (total / CYCLE.len() as u32).clamp(5 * SECOND, 120 * SECOND);
    let mut soak = Soak::new();
    soak.pump_until(Instant::now() + 2 * SECOND);
    let requests_start = soak.sim.bus().requests();

    // Run the phases; remember when each began.
    let t0 = Instant::now();
    let mut phases: Vec<(Instant, Phase)> = Vec::new();
    let mut i = 0;
    while t0.elapsed() < total {
        let phase = CYCLE[i % CYCLE.len()];
        {
            let mut bus = soak.sim.bus();
            bus.faults = match phase {
                Phase::Faults | Phase::SilentAndFaults => Faults::parse(FAULTS).unwrap(),
                _ => Faults::default(),
            };
            bus.meter_mut(3).unwrap().silent = matches!(phase, Phase::Silent | Phase::SilentAndFaults);
        }
        let start = Instant::now();
        phases.push((start, phase));
        let end = start + phase_len.min(total.saturating_sub(t0.elapsed())).max(SECOND);
        let event: Option<fn(&mut Soak)> = match phase {
            Phase::Reopen => Some(Soak::reopen),
            Phase::BusRestart => Some(Soak::bus_restart),
            _ => None,
        };
        let mut next_event = start;
        let mut events = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let room = end.saturating_duration_since(next_event.max(now)) >= EVENT_ROOM;
            if let Some(event) = event
                && now >= next_event
                && (events == 0 || room)
            {
                let at = Instant::now();
                event(&mut soak);
                events += 1;
                next_event = at + EVENT_EVERY;
                continue;
            }
            let until = match event {
                Some(_) if room => next_event.min(end),
                _ => end,
            };
            soak.pump_until(until.max(now + Duration::from_millis(1)));
        }
        i += 1;
    }
    {
        let mut bus = soak.sim.bus();
        bus.faults = Faults::default();
        bus.meter_mut(3).unwrap().silent = false;
    }
    phases.push((Instant::now(), Phase::Clean));
    soak.pump_until(Instant::now() + 3 * SECOND);
    let end = Instant::now();
    soak.dbus.finish();
    soak.energy.finish();
    let bus = soak.sim.bus();
    let polls = bus.requests() - requests_start;
    let injected = bus.injected();

    // Every value the simulator served, per (address, path), sorted by value: (value, when).
    let mut served: BTreeMap<(u8, &'static str), Vec<(f64, Instant)>> = BTreeMap::new();
    for s in bus.served() {
        for (path, v) in derived(&s.reading, "/History/EnergyOut", 0) {
            served
                .entry((s.address, path))
                .or_default()
                .push((v.as_f64().unwrap(), s.at));
        }
    }
    drop(bus);
    for v in served.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    // When `x` was served to `address` for `path`: Some(true) within [from, to], Some(false)
    // only outside it, None never.
    let served_when = |address: u8, path: &str, x: f64, from: Instant, to: Instant| -> Option<bool> {
        let vals = served
            .iter()
            .find(|((a, p), _)| *a == address && *p == path)
            .map(|(_, v)| v)?;
        let i = vals.partition_point(|(v, _)| *v < x - 1e-9 * x.abs().max(1.0));
        let mut found = None;
        for (v, at) in &vals[i..] {
            if !same(&Value::Double(*v), &Value::Double(x)) {
                break;
            }
            if (from..=to).contains(at) {
                return Some(true);
            }
            found = Some(false);
        }
        found
    };
    // Each phase with its end; the last (the clean tail) ends at `end`.
    let spans: Vec<(Instant, Instant, Phase)> = phases
        .iter()
        .enumerate()
        .map(|(k, (s, p))| (*s, phases.get(k + 1).map_or(end, |n| n.0), *p))
        .collect();
    let phase_at = |t: Instant| spans.iter().find(|(s, e, _)| *s <= t && t < *e).map(|p| p.2);
    let silent_window = |t: Instant| {
        // Silent from its phase start plus one poll in flight, to the end of the phase.
        phases.iter().enumerate().any(|(k, (s, p))| {
            matches!(p, Phase::Silent | Phase::SilentAndFaults)
                && t >= *s + Duration::from_millis(INTERVAL_MS + TIMEOUT_MS + 100)
                && phases.get(k + 1).is_none_or(|(next, _)| t < *next)
        })
    };
    // The pzem-dbus run that published at `t`: the last one started before.
    let run_start = |t: Instant| soak.dbus_starts.iter().rev().find(|s| **s <= t).copied().unwrap_or(t0);

    let services = [(&soak.services[0], 1u8), (&soak.services[1], 2), (&soak.services[2], 3)];
    let (mut checked, mut wrong, mut stale, mut from_before) = (0u64, Vec::new(), Vec::new(), Vec::new());
    let mut last_energy: BTreeMap<String, f64> = BTreeMap::new();
    let mut decreases = Vec::new();
    // Per address: times of the signals carrying a measurement; and of any value (also
    // from GetItems when the service appeared).
    let mut updates: BTreeMap<u8, Vec<Instant>> = BTreeMap::new();
    let mut any_value: BTreeMap<u8, Vec<Instant>> = BTreeMap::new();
    // pzem-energy's flows (sum, kWh) as they changed.
    let mut flows: BTreeMap<&str, f64> = BTreeMap::new();
    let mut flow_sums: Vec<(Instant, f64, bool)> = Vec::new();
    let published = timeline(&soak.rig.monitor);
    for seen in &published {
        let service = seen.service;
        for (path, v) in &seen.values {
            if (path.contains("/Energy") || path.starts_with("/History/Energy"))
                && let Some(x) = v.as_f64()
            {
                let key = format!("{service}{path}");
                if let Some(was) = last_energy.get(&key)
                    && x < *was
                {
                    decreases.push(format!(
                        "{key}: {was} -> {x} at +{:.1}s{}",
                        (seen.at - t0).as_secs_f64(),
                        if seen.snapshot { " (appearing)" } else { "" }
                    ));
                }
                last_energy.insert(key, x);
            }
        }
        if service == ENERGY_OWN {
            for (path, v) in &seen.values {
                if let (true, Some(x)) = (FLOWS.contains(path), v.as_f64()) {
                    flows.insert(path, x);
                }
            }
            if flows.len() == FLOWS.len() {
                flow_sums.push((seen.at, flows.values().sum(), seen.snapshot));
            }
        }
        let Some(&(_, address)) = services.iter().find(|(s, _)| *s == service) else {
            continue;
        };
        let from = run_start(seen.at);
        let mut measured = false;
        for (path, v) in &seen.values {
            let measurement = path.starts_with("/Ac/") || path.starts_with("/Dc/") || path.starts_with("/History/");
            let Some(x) = v.as_f64().filter(|_| measurement && !v.is_invalid()) else {
                continue;
            };
            measured = true;
            checked += 1;
            match served_when(address, path, x, from, seen.at) {
                Some(true) => {}
                Some(false) => from_before.push(format!(
                    "{service} {path} = {x} at +{:.1}s, served only outside this run",
                    (seen.at - t0).as_secs_f64()
                )),
                None => wrong.push(format!("{service} {path} = {x}")),
            }
            if address == 3 && silent_window(seen.at) {
                stale.push(format!(
                    "{service} {path} = {x} at +{:.1}s",
                    (seen.at - t0).as_secs_f64()
                ));
            }
        }
        if measured {
            any_value.entry(address).or_default().push(seen.at);
            if !seen.snapshot {
                updates.entry(address).or_default().push(seen.at);
            }
        }
    }

    // Recovery: from the end of each fault phase (and each silence) to each affected
    // meter's next update.
    let mut recovery_ms = Vec::new();
    let mut silence_recovery_ms = Vec::new();
    for w in phases.windows(2) {
        let ((_, before), (at, after)) = (w[0], w[1]);
        let faults_end = matches!(before, Phase::Faults | Phase::SilentAndFaults) && after != Phase::Faults;
        let silence_end = matches!(before, Phase::Silent | Phase::SilentAndFaults)
            && !matches!(after, Phase::Silent | Phase::SilentAndFaults);
        for (address, times) in &updates {
            let next = times
                .iter()
                .find(|t| **t >= at)
                .map(|t| (*t - at).as_secs_f64() * 1000.0);
            if silence_end && *address == 3 {
                silence_recovery_ms.push(next.unwrap_or(f64::INFINITY));
            } else if faults_end && *address != 3 {
                recovery_ms.push(next.unwrap_or(f64::INFINITY));
            }
        }
    }
    // Recovery after reopens and bus restarts: from the fault to each meter's first value
    // from the restarted pzem-dbus; pzem-energy's flows back after a bus restart; and
    // whether pzem-energy booked more flows after each event, before the next one.
    let mut event_ms: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut energy_back_ms = Vec::new();
    let mut not_booked = Vec::new();
    for (k, done) in soak.done.iter().enumerate() {
        let kind = match done.kind {
            Kind::Reopen => "reopen",
            Kind::BusRestart => "bus",
        };
        for address in 1..=3u8 {
            let back = any_value
                .get(&address)
                .and_then(|ts| ts.iter().find(|t| **t >= done.restarted))
                .map_or(f64::INFINITY, |t| (*t - done.at).as_secs_f64() * 1000.0);
            event_ms.entry(kind).or_default().push(back);
        }
        if done.kind == Kind::BusRestart {
            let back = flow_sums
                .iter()
                .find(|(t, _, _)| *t >= done.restarted)
                .map_or(f64::INFINITY, |(t, _, _)| (*t - done.at).as_secs_f64() * 1000.0);
            energy_back_ms.push(back);
        }
        let until = soak.done.get(k + 1).map_or(end, |d| d.at);
        let booked = done.flows_before.is_some_and(|before| {
            flow_sums
                .iter()
                .any(|(t, sum, _)| *t > done.at && *t <= until && *sum > before + 1e-9)
        });
        if !booked {
            not_booked.push(format!(
                "{kind} at +{:.1}s (flows {:?})",
                (done.at - t0).as_secs_f64(),
                done.flows_before
            ));
        }
    }
    let reopens = soak.done.iter().filter(|d| d.kind == Kind::Reopen).count();
    let restarts = soak.done.len() - reopens;
    let mut reopen_ms = event_ms.remove("reopen").unwrap_or_default();
    let mut bus_ms = event_ms.remove("bus").unwrap_or_default();

    // Healthy meters' update rate while the DC meter is silent (no faults), against the
    // clean phases.
    // (Signals before the first phase and after the end are in no phase.)
    let rate = |address: u8, phase: Phase| {
        let n = updates[&address]
            .iter()
            .filter(|t| phase_at(**t) == Some(phase))
            .count() as f64;
        let secs: f64 = spans
            .iter()
            .filter(|s| s.2 == phase)
            .map(|s| (s.1 - s.0).as_secs_f64())
            .sum();
        n / secs
    };
    let healthy_silent = (rate(1, Phase::Silent) + rate(2, Phase::Silent)) / 2.0;
    let healthy_clean = (rate(1, Phase::Clean) + rate(2, Phase::Clean)) / 2.0;
    let faults_rate = (rate(1, Phase::Faults) + rate(2, Phase::Faults)) / 2.0;
    let flows_now: Vec<String> = FLOWS
        .iter()
        .map(|p| format!("{:?}", soak.rig.monitor.get(ENERGY_OWN, p).and_then(Value::as_f64)))
        .collect();
    let (rec_med, rec_max) = (median(&mut recovery_ms.clone()), max(&recovery_ms));
    let (sil_med, sil_max) = (median(&mut silence_recovery_ms.clone()), max(&silence_recovery_ms));
    let (reo_med, reo_max) = (median(&mut reopen_ms), max(&reopen_ms));
    let (bus_med, bus_max) = (median(&mut bus_ms), max(&bus_ms));
    let (en_med, en_max) = (median(&mut energy_back_ms.clone()), max(&energy_back_ms));
    let polls_of = |ms: f64| ms / INTERVAL_MS as f64;

    // RSS per run (a restart ends a run); the longest run of each service is reported.
    let runs: Vec<&Run> = soak.finished.iter().chain([&soak.dbus, &soak.energy]).collect();
    let rss_line = |what: &str| {
        let mine: Vec<&&Run> = runs.iter().filter(|r| r.what == what).collect();
        let longest = mine
            .iter()
            .filter(|r| r.rss_start.is_some())
            .max_by(|a, b| a.seconds().total_cmp(&b.seconds()));
        let growth = mine
            .iter()
            .filter_map(|r| Some(r.rss_end? as i64 - r.rss_start? as i64))
            .max()
            .unwrap_or(0);
        match longest {
            Some(r) => format!(
                "{what}: {} KiB at start, {} KiB at end of its longest run ({:.0} s; {} runs, largest growth in a run {growth} KiB)",
                r.rss_start.unwrap_or(0),
                r.rss_end.unwrap_or(0),
                r.seconds(),
                mine.len()
            ),
            None => format!("{what}: no run lasted 2 s"),
        }
    };
    let rss_report = format!("RSS {}; {}", rss_line("pzem-dbus"), rss_line("pzem-energy"));
    let report = format!(
        "SOAK {:.0} s ({} phases of {:.0} s; poll interval {INTERVAL_MS} ms, timeout {TIMEOUT_MS} ms)\n\
         polls attempted: {polls}\n\
         faults injected: no-reply {}, bad-crc {}, truncated {}, garbage {}, exception {}, delayed past timeout {}\n\
         values checked: {checked}; wrong values published: {}; stale values while silent: {}, from before a restart: {}\n\
         recovery after faults (AC meters, {} ends): median {rec_med:.0} ms ({:.1} polls), max {rec_max:.0} ms ({:.1} polls)\n\
         recovery after silence (DC meter, {} ends): median {sil_med:.0} ms, max {sil_max:.0} ms\n\
         pty reopens: {reopens} (pzem-dbus exited 3 each time, restarted on the new pty); meters back ({} returns): median {reo_med:.0} ms ({:.1} polls), max {reo_max:.0} ms ({:.1} polls)\n\
         bus restarts: {restarts} (pzem-dbus and pzem-energy exited 4 each time, both restarted); meters back ({} returns): median {bus_med:.0} ms ({:.1} polls), max {bus_max:.0} ms ({:.1} polls); pzem-energy's flows back: median {en_med:.0} ms, max {en_max:.0} ms\n\
         pzem-energy booked flows again after every reopen and bus restart: {}\n\
         healthy meters' update rate: {healthy_clean:.2}/s clean, {healthy_silent:.2}/s while the DC meter is silent, {faults_rate:.2}/s under faults\n\
         {rss_report}\n\
         energy counters and flows never decreased, across every restart: {} ({} series); flows now {flows_now:?} kWh",
        (end - t0).as_secs_f64(),
        phases.len() - 1,
        phase_len.as_secs_f64(),
        injected.no_reply,
        injected.bad_crc,
        injected.truncated,
        injected.garbage,
        injected.exception,
        injected.delayed,
        wrong.len(),
        stale.len(),
        from_before.len(),
        recovery_ms.len(),
        polls_of(rec_med),
        polls_of(rec_max),
        silence_recovery_ms.len(),
        reopen_ms.len(),
        polls_of(reo_med),
        polls_of(reo_max),
        bus_ms.len(),
        polls_of(bus_med),
        polls_of(bus_max),
        not_booked.is_empty(),
        decreases.is_empty(),
        last_energy.len(),
    );
    println!("{report}");
    if let Ok(path) = std::env::var("PZEM_SOAK_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    assert!(wrong.is_empty(), "wrong values: {:?}", &wrong[..wrong.len().min(10)]);
    assert!(
        stale.is_empty(),
        "stale values while silent: {:?}",
        &stale[..stale.len().min(10)]
    );
    assert!(
        from_before.is_empty(),
        "values from before a restart: {:?}",
        &from_before[..from_before.len().min(10)]
    );
    assert!(decreases.is_empty(), "energy went back: {decreases:?}");
    assert!(
        checked > 100 && polls > 100,
        "too little traffic to judge: {checked} values, {polls} polls"
    );
    assert!(injected.altered() > 0 && injected.no_reply > 0, "no faults injected");
    assert!(
        !recovery_ms.is_empty() && rec_max.is_finite(),
        "a meter did not recover after faults"
    );
    assert!(
        !silence_recovery_ms.is_empty() && sil_max.is_finite(),
        "the DC meter did not come back"
    );
    assert!(
        reopens > 0 && restarts > 0,
        "{reopens} reopens and {restarts} bus restarts"
    );
    assert!(
        reo_max.is_finite() && bus_max.is_finite() && en_max.is_finite(),
        "a meter or pzem-energy did not publish after a restart"
    );
    assert!(
        not_booked.is_empty(),
        "pzem-energy booked nothing after: {not_booked:?}\n{}",
        soak.energy.proc.log_text()
    );
    assert!(
        healthy_silent > 0.5 * healthy_clean,
        "healthy meters slowed down while one is silent"
    );
    // No growth beyond allocator noise, in any run.
    for r in &runs {
        if let (Some(start), Some(end)) = (r.rss_start, r.rss_end) {
            assert!(
                end <= start + 1024,
                "{} RSS grew in a run of {:.0} s: {start} -> {end} KiB",
                r.what,
                r.seconds()
            );
        }
    }
    for r in &runs {
        let log = r.proc.log_text();
        assert!(!log.contains("panicked"), "{} panicked:\n{log}", r.what);
    }
    let energy_log = soak.energy.proc.log_text();
    assert!(
        !energy_log.contains("COUNTER REPLACED") && !energy_log.contains("held back"),
        "pzem-energy took a restart for a replaced meter:\n{energy_log}"
    );
    assert_eq!(soak.dbus.proc.terminate(), Some(0));
    assert_eq!(soak.energy.proc.terminate(), Some(0));
}
