//! The real `pzem-energy` binary on a private dbus-daemon, fed by the real `pzem-dbus` on two
//! simulated PZEM-016 meters (the Multi's AC input at address 1, its AC output at 2) and by
//! test doubles of what cannot be installed here: a battery monitor, a real Multi's vebus
//! service (`com.victronenergy.vebus.ttyS4`, instance 276) and the system service; with the
//! localsettings double. Seen through a client that does what Venus's monitor does.
//!
//! The simulated meters are frozen at 0 W, so their counters move only when a test sets
//! them: every flow below is computed by hand from those moves.
//!
//! Every child process is killed by PID when its guard drops, also when a test fails.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/require.rs"]
mod require;
#[path = "support/rig.rs"]
mod rig;
#[path = "support/tmpfs.rs"]
mod tmpfs;

use pzem::dbus::testkit::systemcalc::{auto_battery_service, the_multi, vebus_devices};
use pzem::dbus::testkit::{DeviceDouble, MULTI_INSTANCE, MULTI_MK2_CONNECTION};
use pzem::dbus::{Event, Value};
use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use pzem::{AcReading, Model};
use rig::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tmpfs::Tmpfs;

const PZEM_DBUS: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const PZEM_ENERGY: &str = env!("CARGO_BIN_EXE_pzem-energy");
const OURS: &str = "com.victronenergy.vebus.pzem_energy";
const OWN: &str = "com.victronenergy.pzem_energy.flows";
const BATTERY: &str = "com.victronenergy.battery.ttyO2";
const MULTI: &str = "com.victronenergy.vebus.ttyS4";
const FLOWS: [&str; 3] = [
    "/Energy/AcIn1ToAcOut",
    "/Energy/AcIn1ToInverter",
    "/Energy/InverterToAcOut",
];
const SECOND: Duration = Duration::from_secs(1);
/// The counters at the start: AC-in, AC-out (Wh), battery discharged (kWh).
const START_IN_WH: u32 = 10_000;
const START_OUT_WH: u32 = 20_000;
const START_BATTERY_KWH: f64 = 5.0;
/// Each move of a counter comes at least this long after the previous one, so that it is
/// plausible at the tests' power bound (`--max-power-w 1000000`: 556 Wh in 2 s).
const MIN_GAP: Duration = Duration::from_secs(2);

fn ac(energy_wh: u32) -> AcReading {
    AcReading {
        voltage_dv: 2300,
        current_ma: 0,
        power_dw: 0,
        energy_wh,
        frequency_dhz: 500,
        power_factor_centi: 100,
        power_alarm: false,
    }
}

/// The simulated stack: bus, localsettings, pzem-dbus on the two meters, the battery
/// monitor and the real Multi; pzem-energy is started by each test.
///
/// Fields drop in this order: pzem-dbus first (it saves its state when the bus goes, which
/// would recreate the temporary directory), the rig (bus, settings, directory) last.
struct Stack {
    _pzem_dbus: Proc,
    battery: Option<DeviceDouble>,
    _multi: DeviceDouble,
    sim: SimServer,
    grid: String,
    loads: String,
    /// The counters now: AC-in, AC-out (Wh), battery (Wh).
    counters: [u32; 3],
    last_move: Instant,
    runs: u32,
    rig: Rig,
}

/// How pzem-dbus gets its meters.
enum Meters {
    /// `-m` flags.
    Flags,
    /// A config file with meter lines and an `[energy]` section for pzem-energy.
    File,
    /// A config file with only an `[energy]` section: pzem-dbus scans the line.
    EnergyOnlyFile,
}

impl Stack {
    fn new(seed: u64) -> Stack {
        Stack::build(seed, Meters::Flags)
    }

    /// The config file of [`Meters::File`] and [`Meters::EnergyOnlyFile`].
    fn config_path(rig: &Rig) -> PathBuf {
        rig.dir.path().join("pzem.conf")
    }

    fn build(seed: u64, how: Meters) -> Stack {
        let meters = [1u8, 2]
            .iter()
            .map(|&a| {
                let mut m = SimMeter::new(Model::Pzem016, a);
                m.frozen = true;
                m.set_ac(ac(if a == 1 { START_IN_WH } else { START_OUT_WH }));
                m
            })
            .collect();
        let sim = SimServer::pty(SimBus::new(meters, seed), Pacing::NONE).unwrap();
        let tty = sim.path().unwrap().to_owned();
        let mut rig = Rig::new(true);
        let (grid, loads) = (service_name("grid", &tty, 1), service_name("acload", &tty, 2));
        let energy = format!(
            "[energy]\nac-in = {grid}\nac-out = {loads}   # the Multi's input and output\nbattery = {BATTERY}\n\
             state = {}\nsettle-ms = 1000\nsave-ms = 500\nmax-power-w = 1000000\n",
            rig.dir.path().join("flows.state").display()
        );
        let config = Stack::config_path(&rig);
        let config = config.to_str().unwrap();
        let args = match how {
            Meters::Flags => rig.args(&["-d", &tty], &["1:016:grid", "2:016:acload"], &[]),
            Meters::File => {
                std::fs::write(config, format!("# meters\n1 016 grid\n2:016:acload\n\n{energy}")).unwrap();
                rig.args(&["-d", &tty], &[], &["-c", config])
            }
            Meters::EnergyOnlyFile => {
                std::fs::write(config, &energy).unwrap();
                rig.args(&["-d", &tty], &[], &["-c", config, "--discover", "1-4"])
            }
        };
        let pzem_dbus = rig.start(PZEM_DBUS, "pzem-dbus", &args);
        rig.monitor.wait_connected(&grid, 10 * SECOND);
        rig.monitor.wait_connected(&loads, 10 * SECOND);
        let battery = DeviceDouble::battery(&rig.bus.bus(), BATTERY, 512, START_BATTERY_KWH).unwrap();
        let multi = DeviceDouble::multi(&rig.bus.bus(), MULTI, MULTI_INSTANCE, MULTI_MK2_CONNECTION).unwrap();
        Stack {
            rig,
            sim,
            grid,
            loads,
            battery: Some(battery),
            _multi: multi,
            _pzem_dbus: pzem_dbus,
            counters: [START_IN_WH, START_OUT_WH, (START_BATTERY_KWH * 1000.0) as u32],
            last_move: Instant::now(),
            runs: 0,
        }
    }

    fn state(&self) -> PathBuf {
        self.rig.dir.path().join("flows.state")
    }

    /// pzem-energy's flags for this stack, plus `extra`.
    fn args(&self, battery: bool, extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "--dbus".into(),
            self.rig.bus.address().into(),
            "--ac-in".into(),
            self.grid.clone(),
            "--ac-out".into(),
            self.loads.clone(),
            "--state".into(),
            self.state().to_str().unwrap().into(),
            "--settle-ms".into(),
            "1000".into(),
            "--save-ms".into(),
            "500".into(),
            "--max-power-w".into(),
            "1000000".into(),
            "--settings-wait".into(),
            "2".into(),
            // No config file: the default /data/conf/pzem.conf must not leak in.
            "-c".into(),
            "/dev/null".into(),
        ];
        if battery {
            a.extend(["--battery".into(), BATTERY.into()]);
        }
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts pzem-energy and waits for its service to be connected.
    fn start(&mut self, args: &[String]) -> Proc {
        self.runs += 1;
        let p = self.rig.start(PZEM_ENERGY, &format!("pzem-energy-{}", self.runs), args);
        self.rig.monitor.wait_connected(OURS, 15 * SECOND);
        // It has just seen every counter: the next move is paced from here.
        self.last_move = Instant::now();
        p
    }

    /// Waits until the last move is at least [`MIN_GAP`] old.
    fn pace(&mut self) {
        let since = self.last_move.elapsed();
        if since < MIN_GAP {
            self.rig.monitor.pump_for(MIN_GAP - since);
        }
        self.last_move = Instant::now();
    }

    /// Moves the counters by these Wh (AC-in, AC-out, battery discharged) at once.
    fn step(&mut self, d_in: u32, d_out: u32, d_battery: u32) {
        self.pace();
        self.counters[0] += d_in;
        self.counters[1] += d_out;
        self.counters[2] += d_battery;
        {
            let mut bus = self.sim.bus();
            bus.meter_mut(1).unwrap().set_energy_wh(self.counters[0]);
            bus.meter_mut(2).unwrap().set_energy_wh(self.counters[1]);
        }
        if d_battery > 0 {
            let kwh = f64::from(self.counters[2]) / 1000.0;
            self.battery
                .as_ref()
                .unwrap()
                .set(&[("/History/DischargedEnergy", Value::Double(kwh))])
                .unwrap();
        }
    }

    /// Both AC counters moving fast: 15 kW in, 10 kW out (the grid charges the battery and
    /// feeds the loads).
    fn count_fast(&mut self) {
        let mut bus = self.sim.bus();
        for (address, dw) in [(1u8, 150_000u32), (2, 100_000)] {
            let m = bus.meter_mut(address).unwrap();
            let mut r = ac(m.energy_wh());
            r.power_dw = dw;
            r.current_ma = dw * 100 / 230;
            m.set_ac(r);
        }
    }

    /// pzem-energy's flags with the battery, the state in `state`, steps without a
    /// settling wait and a save every 100 ms (a kill can land in a save).
    fn fast_saving_args(&self, state: &std::path::Path) -> Vec<String> {
        let mut args = self.args(true, &[]);
        for (flag, value) in [
            ("--settle-ms", "0"),
            ("--save-ms", "100"),
            ("--state", state.to_str().unwrap()),
        ] {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1] = value.into();
        }
        args
    }

    /// Waits until pzem-dbus published the AC counters as they are now.
    fn wait_meters_published(&mut self) {
        let (grid, loads) = (self.grid.clone(), self.loads.clone());
        let want = [self.counters[0], self.counters[1]];
        self.rig
            .monitor
            .until(10 * SECOND, "pzem-dbus publishes the counters", |m| {
                energy_wh(m, &grid) == Some(want[0]) && energy_wh(m, &loads) == Some(want[1])
            });
    }

    /// Every log of the processes this stack started, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.rig.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        for path in names.iter().filter(|p| p.extension().is_some_and(|e| e == "log")) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("--- {}\n{text}", path.display()));
        }
        out
    }

    /// Waits until pzem-energy publishes exactly these flows (Wh).
    fn wait_flows(&mut self, want: [u64; 3], what: &str) {
        let deadline = Instant::now() + 15 * SECOND;
        while flows_wh(&self.rig.monitor, OURS) != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{what}: flows {:?}, want {want:?}\n{}",
                flows_wh(&self.rig.monitor, OURS),
                self.logs()
            );
            self.rig.monitor.pump(Duration::from_millis(50));
        }
    }
}

fn energy_wh(mon: &Monitor, service: &str) -> Option<u32> {
    match mon.get(service, "/Ac/Energy/Forward") {
        Some(Value::Double(kwh)) => Some((kwh * 1000.0).round() as u32),
        _ => None,
    }
}

/// The three flows `service` publishes, in Wh.
fn flows_wh(mon: &Monitor, service: &str) -> Option<[u64; 3]> {
    let wh = |p: &str| match mon.get(service, p) {
        Some(Value::Double(kwh)) => Some((kwh * 1000.0).round() as u64),
        _ => None,
    };
    Some([wh(FLOWS[0])?, wh(FLOWS[1])?, wh(FLOWS[2])?])
}

/// Every value of every `/Energy/*` path of `service` the monitor saw, across appearances,
/// never decreased; returns how many values were checked, and fails when none was.
fn check_never_decreased(mon: &Monitor, service: &str) -> usize {
    let mut last: BTreeMap<String, f64> = BTreeMap::new();
    let mut seen = 0;
    let mut check = |path: &str, value: &Value| {
        if !path.starts_with("/Energy/") {
            return;
        }
        let Value::Double(v) = value else {
            panic!("{path} = {value:?} is not a Double");
        };
        if let Some(before) = last.get(path) {
            assert!(v >= before, "{path} went back from {before} to {v}");
        }
        last.insert(path.to_owned(), *v);
        seen += 1;
    };
    // Appearances (GetItems) and signals, in time order.
    let mut appeared = mon.appeared.iter().filter(|a| a.service == service).peekable();
    for s in &mon.log {
        while let Some(a) = appeared.peek() {
            if a.at > s.at {
                break;
            }
            for (p, v) in a.items.as_ref().expect("GetItems answered") {
                check(p, v);
            }
            appeared.next();
        }
        if let Event::ItemsChanged { service: x, changes } = &s.event
            && x == service
        {
            for (p, v) in changes {
                check(p, v);
            }
        }
    }
    for a in appeared {
        for (p, v) in a.items.as_ref().expect("GetItems answered") {
            check(p, v);
        }
    }
    assert!(
        seen > 0,
        "the monitor saw no /Energy/* value of {service}: nothing was checked"
    );
    seen
}

/// The scripted day: grid charging, passthrough, inverting, a grid outage with the AC-input
/// meter silent, mains back. Returns the flows expected after it, from `before`.
fn scripted_day(s: &mut Stack, before: [u64; 3]) -> [u64; 3] {
    let mut want = before;
    let add = |w: &mut [u64; 3], f: [u64; 3]| {
        for i in 0..3 {
            w[i] += f[i];
        }
    };
    // 1. Grid charging: 500 Wh in, 100 Wh to the loads, nothing from the battery:
    //    p = min(100 - 0, 500, 100) = 100; 400 Wh into the battery.
    s.step(500, 100, 0);
    add(&mut want, [100, 400, 0]);
    s.wait_flows(want, "grid charging");
    // 2. Passthrough: 300 Wh in, 300 Wh out.
    s.step(300, 300, 0);
    add(&mut want, [300, 0, 0]);
    s.wait_flows(want, "passthrough");
    // 3. Inverting: no grid energy, 200 Wh out, 250 Wh from the battery (losses): p = 0.
    s.step(0, 200, 250);
    add(&mut want, [0, 0, 200]);
    s.wait_flows(want, "inverting");
    // 4. Grid outage: the AC-input meter (powered by mains) goes silent; pzem-dbus
    //    invalidates it. 150 Wh out, 170 Wh from the battery.
    s.sim.bus().meter_mut(1).unwrap().silent = true;
    let grid = s.grid.clone();
    s.rig.monitor.until(10 * SECOND, "AC-input meter invalid", |m| {
        m.get(&grid, "/Ac/Energy/Forward") == Some(&Value::Invalid)
    });
    s.step(0, 150, 170);
    add(&mut want, [0, 0, 150]);
    s.wait_flows(want, "grid outage");
    assert_eq!(
        s.rig.monitor.get(OURS, "/Connected"),
        Some(&Value::Int(1)),
        "an outage is normal: still connected"
    );
    // 5. Mains back: the AC-input meter answers again, 120 Wh in and 80 Wh out since:
    //    p = min(80 - 0, 120, 80) = 80; 40 Wh into the battery.
    s.sim.bus().meter_mut(1).unwrap().silent = false;
    s.step(120, 80, 0);
    add(&mut want, [80, 40, 0]);
    s.wait_flows(want, "mains back");
    want
}

#[test]
fn a_scripted_day_matches_the_hand_computed_flows() {
    let mut s = Stack::new(21);
    let args = s.args(true, &[]);
    let mut p = s.start(&args);
    let items = s.rig.monitor.client.get_items(OURS).unwrap();
    for path in FLOWS {
        assert_eq!(items[path], Value::Double(0.0), "{path} starts at 0");
    }
    let want = scripted_day(&mut s, [0, 0, 0]);
    // Hand-computed totals: AcIn1ToAcOut 100+300+80, AcIn1ToInverter 400+40, InverterToAcOut
    // 200+150; they add up to the meters' 920 Wh in and 830 Wh out.
    assert_eq!(want, [480, 440, 350]);
    assert_eq!(want[0] + want[1], 920);
    assert_eq!(want[0] + want[2], 830);
    let n = check_never_decreased(&s.rig.monitor, OURS);
    assert!(n > 10, "{n} values checked");
    // The saved state holds them too, and SIGTERM exits 0.
    assert_eq!(p.terminate(), Some(0), "{}", p.log_text());
    let saved = std::fs::read_to_string(s.state()).unwrap();
    assert!(
        saved.contains("ac_in_to_ac_out_wh=480 ac_in_to_inverter_wh=440 inverter_to_ac_out_wh=350"),
        "{saved}"
    );
    let log = p.log_text();
    assert!(log.contains("AC-input meter: absent"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn kill_9_and_restart_with_counters_moving_loses_and_reverses_nothing() {
    let mut s = Stack::new(22);
    let args = s.args(true, &[]);
    let mut p = s.start(&args);
    s.step(500, 100, 0);
    s.wait_flows([100, 400, 0], "grid charging");
    s.step(300, 300, 0);
    s.wait_flows([400, 400, 0], "passthrough");
    // kill -9: no flush, no goodbye.
    // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
    unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(p.wait_exit(5 * SECOND), Some(128 + 9));
    s.rig
        .monitor
        .until(5 * SECOND, "our service gone", |m| !m.view.contains_key(OURS));
    // While it is down: 200 Wh in, 150 Wh out, 40 Wh from the battery.
    s.step(200, 150, 40);
    s.wait_meters_published();
    let mut p2 = s.start(&args);
    // At once the saved flows, never less than what was published before the kill.
    let first = flows_wh(&s.rig.monitor, OURS).unwrap();
    assert!(first == [400, 400, 0] || first == [510, 490, 40], "{first:?}");
    // The downtime as one step: p = min(150 - 40, 200, 150) = 110; 90 Wh into the battery,
    // 40 Wh from it.
    s.wait_flows([510, 490, 40], "the downtime booked");
    // And the day goes on.
    s.step(0, 200, 250);
    s.wait_flows([510, 490, 240], "inverting after the restart");
    check_never_decreased(&s.rig.monitor, OURS);
    let log = p2.log_text();
    assert!(log.contains("continuing from"), "{log}");
    assert!(!log.contains("COUNTER REPLACED") && !log.contains("held back"), "{log}");
    assert_eq!(p2.terminate(), Some(0));
}

#[test]
fn a_corrupted_state_file_is_set_aside_and_the_previous_copy_used() {
    let mut s = Stack::new(23);
    let args = s.args(true, &[]);
    let mut p = s.start(&args);
    s.step(500, 100, 0);
    s.wait_flows([100, 400, 0], "grid charging");
    assert_eq!(p.terminate(), Some(0));
    let state = s.state();
    let bak = PathBuf::from(format!("{}.bak", state.display()));
    assert!(bak.exists(), "the previous good copy is kept beside the state");
    // Damage the state: one digit changed (the checksum no longer matches).
    let text = std::fs::read_to_string(&state).unwrap();
    let damaged = text.replacen("ac_in_to_ac_out_wh=100", "ac_in_to_ac_out_wh=900", 1);
    assert_ne!(damaged, text);
    std::fs::write(&state, &damaged).unwrap();
    s.rig
        .monitor
        .until(5 * SECOND, "our service gone", |m| !m.view.contains_key(OURS));
    let mut p2 = s.start(&args);
    s.wait_flows([100, 400, 0], "the previous good copy");
    let log = p2.log_text();
    assert!(
        log.contains("checksum does not match") && log.contains("kept as"),
        "{log}"
    );
    assert!(log.contains(".bak"), "{log}");
    let corrupt = PathBuf::from(format!("{}.corrupt", state.display()));
    assert_eq!(
        std::fs::read_to_string(&corrupt).unwrap(),
        damaged,
        "set aside, not overwritten"
    );
    // Written back at once from the copy.
    let deadline = Instant::now() + 5 * SECOND;
    while !state.exists() {
        assert!(Instant::now() < deadline, "state not written back");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.step(300, 300, 0);
    s.wait_flows([400, 400, 0], "counting on");
    check_never_decreased(&s.rig.monitor, OURS);
    assert_eq!(p2.terminate(), Some(0));

    // Every copy damaged: a loud start from zero, and counting from new baselines.
    for suffix in ["", ".bak"] {
        std::fs::write(format!("{}{suffix}", state.display()), "garbage\n").unwrap();
    }
    s.rig
        .monitor
        .until(5 * SECOND, "our service gone", |m| !m.view.contains_key(OURS));
    let mut p3 = s.start(&args);
    s.wait_flows([0, 0, 0], "from zero");
    assert!(p3.log_text().contains("NO USABLE STATE"), "{}", p3.log_text());
    s.step(0, 100, 0);
    s.wait_flows([0, 0, 100], "counting from zero");
    assert_eq!(p3.terminate(), Some(0));
}

#[test]
fn a_meter_reset_books_nothing_and_a_replaced_battery_monitor_neither() {
    let mut s = Stack::new(24);
    let args = s.args(true, &[]);
    let mut p = s.start(&args);
    s.step(200, 200, 0);
    s.wait_flows([200, 0, 0], "passthrough");
    // The AC-input meter is reset to 0 (function 0x42): pzem-dbus keeps its published total
    // monotonic, so nothing is booked...
    s.pace();
    s.counters[0] = 0;
    s.sim.bus().meter_mut(1).unwrap().set_energy_wh(0);
    s.rig.monitor.pump_for(2 * SECOND);
    assert!(
        s.sim
            .bus()
            .served()
            .filter(|r| r.address == 1)
            .last()
            .unwrap()
            .reading
            .energy_wh()
            < 10,
        "pzem-dbus read the reset counter"
    );
    assert_eq!(energy_wh(&s.rig.monitor, &s.grid), Some(START_IN_WH + 200));
    assert_eq!(flows_wh(&s.rig.monitor, OURS), Some([200, 0, 0]), "nothing booked");
    // ... and counting resumes from the new counter: 100 Wh in, 100 Wh out.
    s.step(100, 100, 0);
    s.wait_flows([300, 0, 0], "counting after the reset");

    // The battery history is cleared: a restart from zero, its new value counts.
    s.pace();
    s.counters[2] = 30;
    s.battery
        .as_ref()
        .unwrap()
        .set(&[("/History/DischargedEnergy", Value::Double(0.03))])
        .unwrap();
    s.step(0, 100, 0);
    // p = clamp(100 - 30, 0, 0) = 0 (no grid): 100 Wh from the battery to the loads.
    s.wait_flows([300, 0, 100], "after the history was cleared");
    // The battery monitor is replaced by one with 500 kWh of history: nothing is booked.
    s.pace();
    drop(s.battery.take());
    let battery = DeviceDouble::battery(&s.rig.bus.bus(), BATTERY, 512, 500.0).unwrap();
    s.battery = Some(battery);
    s.counters[2] = 500_000;
    s.rig.monitor.pump_for(2 * SECOND);
    s.step(0, 50, 60);
    s.wait_flows([300, 0, 150], "a replaced battery monitor");
    let log = p.log_text();
    assert!(log.contains("COUNTER REPLACED"), "{log}");
    assert!(log.contains("restart from zero"), "{log}");
    check_never_decreased(&s.rig.monitor, OURS);
    assert_eq!(p.terminate(), Some(0), "{}", s.logs());
}

#[test]
fn systemcalc_still_picks_the_real_multi_and_the_battery_comes_from_the_system() {
    let mut s = Stack::new(25);
    let system = DeviceDouble::system(&s.rig.bus.bus(), Some(BATTERY)).unwrap();
    let args = s.args(false, &[]);
    let mut p = s.start(&args);
    let items = s.rig.monitor.client.get_items(OURS).unwrap();
    assert_eq!(items["/DeviceInstance"], Value::Int(i64::from(MULTI_INSTANCE) + 1));
    assert_eq!(
        items["/Interfaces/Mk2/Connection"],
        Value::from("/dev/ttyUSB-pzem-energy")
    );
    let settings = s.rig.settings.as_ref().unwrap();
    assert_eq!(
        settings.value("/Settings/Devices/pzem_energy/ClassAndVrmInstance"),
        Some(Value::from("vebus:277"))
    );
    let devices = vebus_devices(&mut s.rig.monitor.client).unwrap();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert_eq!(the_multi(&devices).unwrap().service, MULTI);
    assert_eq!(auto_battery_service(&devices).unwrap().service, MULTI);
    // The battery named by the system counts.
    s.step(0, 100, 120);
    s.wait_flows([0, 0, 100], "battery from the system");

    // A second real Multi appears above us (an MK3-USB at 300): we move above it.
    let usb = DeviceDouble::multi(&s.rig.bus.bus(), "com.victronenergy.vebus.ttyUSB1", 300, "/dev/ttyUSB1").unwrap();
    s.rig.monitor.until(10 * SECOND, "re-registered at 301", |m| {
        m.get(OURS, "/DeviceInstance") == Some(&Value::Int(301))
    });
    let devices = vebus_devices(&mut s.rig.monitor.client).unwrap();
    assert_eq!(devices.len(), 3);
    assert_eq!(the_multi(&devices).unwrap().service, MULTI);
    assert_eq!(auto_battery_service(&devices).unwrap().service, MULTI);
    // The owner puts us at 5 on the VRM-instances page: moved back above the real ones.
    let c = &mut s.rig.monitor.client;
    assert_eq!(
        c.set_value(
            "com.victronenergy.settings",
            "/Settings/Devices/pzem_energy/ClassAndVrmInstance",
            &Value::from("vebus:5")
        )
        .unwrap(),
        0
    );
    let settings = s.rig.settings.as_ref().unwrap();
    let deadline = Instant::now() + 10 * SECOND;
    while settings.value("/Settings/Devices/pzem_energy/ClassAndVrmInstance") != Some(Value::from("vebus:301")) {
        assert!(Instant::now() < deadline, "not moved back above the real ones");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.rig.monitor.pump_for(SECOND);
    assert_eq!(s.rig.monitor.get(OURS, "/DeviceInstance"), Some(&Value::Int(301)));
    let devices = vebus_devices(&mut s.rig.monitor.client).unwrap();
    assert_eq!(auto_battery_service(&devices).unwrap().service, MULTI);
    // Re-registering kept the flows.
    assert_eq!(flows_wh(&s.rig.monitor, OURS), Some([0, 0, 100]));
    drop(usb);

    // The system switches to another battery monitor: a new baseline, nothing booked for the
    // difference between the two.
    let other = "com.victronenergy.battery.ttyO4";
    let _other = DeviceDouble::battery(&s.rig.bus.bus(), other, 513, 42.0).unwrap();
    system
        .set(&[("/Dc/Battery/BatteryService", Value::from(other))])
        .unwrap();
    s.rig.monitor.pump_for(2 * SECOND);
    s.step(0, 100, 0);
    s.wait_flows([0, 0, 200], "after the switch");
    let log = p.log_text();
    assert!(log.contains(&format!("battery monitor: {other}")), "{log}");
    check_never_decreased(&s.rig.monitor, OURS);
    assert_eq!(p.terminate(), Some(0));
}

#[test]
fn own_mode_is_no_vebus_device() {
    let mut s = Stack::new(26);
    let args = s.args(true, &["--publish", "own"]);
    let mut p = s.rig.start(PZEM_ENERGY, "pzem-energy-own", &args);
    s.rig.monitor.wait_connected(OWN, 15 * SECOND);
    assert!(!s.rig.monitor.view.contains_key(OURS));
    let devices = vebus_devices(&mut s.rig.monitor.client).unwrap();
    assert_eq!(devices.len(), 1);
    let items = s.rig.monitor.client.get_items(OWN).unwrap();
    assert!(!items.contains_key("/Interfaces/Mk2/Connection"));
    assert_eq!(items["/DeviceInstance"], Value::Int(0));
    s.step(100, 100, 0);
    let deadline = Instant::now() + 15 * SECOND;
    while flows_wh(&s.rig.monitor, OWN) != Some([100, 0, 0]) {
        assert!(Instant::now() < deadline, "{:?}", flows_wh(&s.rig.monitor, OWN));
        s.rig.monitor.pump(Duration::from_millis(50));
    }
    assert_eq!(p.terminate(), Some(0));
}

#[test]
fn conformance_and_malformed_calls_are_refused() {
    let mut s = Stack::new(27);
    let args = s.args(true, &[]);
    let mut p = s.start(&args);
    let items = s.rig.monitor.client.get_items(OURS).unwrap();
    for path in [
        "/Mgmt/ProcessName",
        "/Mgmt/ProcessVersion",
        "/Mgmt/Connection",
        "/DeviceInstance",
        "/ProductId",
        "/ProductName",
        "/FirmwareVersion",
        "/HardwareVersion",
        "/Connected",
        "/CustomName",
        "/Serial",
    ] {
        assert!(items.contains_key(path), "{path} missing");
    }
    let energy: Vec<&String> = items.keys().filter(|k| k.starts_with("/Energy/")).collect();
    assert_eq!(energy.len(), 10, "{energy:?}");
    for path in energy {
        assert_eq!(items[path], Value::Double(0.0), "{path}: a Double in kWh");
    }
    assert_eq!(items["/Mgmt/ProcessName"], Value::from("pzem-energy"));
    assert_eq!(items["/ProductId"], Value::Int(0xFFFF));
    assert_eq!(items["/FirmwareVersion"], Value::Invalid);
    assert_eq!(
        s.rig.monitor.client.get_text(OURS, "/Energy/AcIn1ToAcOut").unwrap(),
        "0.000 kWh"
    );
    let c = &mut s.rig.monitor.client;
    for (path, value) in [
        ("/Energy/AcIn1ToAcOut", Value::Double(1.0)),
        ("/Energy/AcIn2ToAcOut", Value::Double(1.0)),
        ("/DeviceInstance", Value::Int(1)),
        ("/Connected", Value::Int(0)),
        ("/Interfaces/Mk2/Connection", Value::from("/dev/ttyS4")),
        ("/CustomName", Value::Int(3)),
        ("/CustomName", Value::from("x".repeat(300).as_str())),
        ("/CustomName", Value::from("line\nbreak")),
    ] {
        assert_ne!(c.set_value(OURS, path, &value).unwrap(), 0, "{path} = {value:?}");
    }
    assert_eq!(
        c.set_value(OURS, "/CustomName", &Value::from("Multi flows")).unwrap(),
        0
    );
    let settings = s.rig.settings.as_ref().unwrap();
    let deadline = Instant::now() + 5 * SECOND;
    while settings.value("/Settings/Devices/pzem_energy/CustomName") != Some(Value::from("Multi flows")) {
        assert!(Instant::now() < deadline, "custom name not stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    for (path, member) in [
        ("/Nope", "GetValue"),
        ("/Energy/Nope", "SetValue"),
        ("/Energy", "GetItems"),
    ] {
        let conn = dbus::blocking::Connection::new_address(s.rig.bus.address()).unwrap();
        let proxy = conn.with_proxy(OURS, path, Duration::from_secs(5));
        let r: Result<(), dbus::Error> = if member == "SetValue" {
            proxy.method_call("com.victronenergy.BusItem", member, (dbus::arg::Variant(1i32),))
        } else {
            proxy.method_call("com.victronenergy.BusItem", member, ())
        };
        let e = r.expect_err("refused");
        let want = if path == "/Energy" {
            "UnknownMethod"
        } else {
            "UnknownObject"
        };
        assert!(e.name().unwrap_or("").ends_with(want), "{path} {member}: {e:?}");
    }
    let conn = dbus::blocking::Connection::new_address(s.rig.bus.address()).unwrap();
    let proxy = conn.with_proxy(OURS, "/CustomName", Duration::from_secs(5));
    let r: Result<(i32,), _> = proxy.method_call("com.victronenergy.BusItem", "SetValue", ("bare",));
    assert!(r.is_err(), "SetValue without a variant");
    // Still running, values unchanged.
    s.rig.monitor.pump_for(Duration::from_millis(300));
    assert_eq!(p.try_exit(), None, "{}", p.log_text());
    let items = s.rig.monitor.client.get_items(OURS).unwrap();
    assert_eq!(items["/Energy/AcIn1ToAcOut"], Value::Double(0.0));
    assert_eq!(items["/CustomName"], Value::from("Multi flows"));
    assert_eq!(p.terminate(), Some(0));
}

#[test]
fn one_config_file_configures_both_programs() {
    for how in [Meters::File, Meters::EnergyOnlyFile] {
        let mut s = Stack::build(29, how);
        let config = Stack::config_path(&s.rig);
        let args: Vec<String> = [
            "--dbus",
            s.rig.bus.address(),
            "-c",
            config.to_str().unwrap(),
            "--settings-wait",
            "2",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let mut p = s.start(&args);
        s.step(300, 100, 0);
        s.wait_flows([100, 200, 0], "configured from the file");
        assert_eq!(p.terminate(), Some(0));
        assert!(s.state().exists(), "the state file named in the file");
    }
}

#[test]
fn bad_options_exit_2_and_a_taken_name_exits_4() {
    let s = Stack::new(28);
    let bad = [
        vec!["--ac-in", "grid"],
        vec!["--ac-in", s.grid.as_str(), "--ac-out", s.grid.as_str()],
        vec!["--settle-ms", "soon"],
        vec!["--publish", "both"],
        vec!["-c", "/nonexistent/pzem.conf"],
        vec!["stray"],
    ];
    for extra in bad {
        let mut args = s.args(true, &[]);
        // Later flags replace earlier ones? getopts refuses repeats: drop the defaults given.
        for pair in extra.chunks(2) {
            if let Some(i) = args.iter().position(|a| a == pair[0]) {
                args.drain(i..i + 2);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut p = Proc::spawn(PZEM_ENERGY, &args, &s.rig.dir.path().join("bad.log"));
        assert_eq!(p.wait_exit(5 * SECOND), Some(2), "{extra:?}: {}", p.log_text());
    }
    // The name taken by another process: exit 4.
    let _squatter = DeviceDouble::ac_meter(&s.rig.bus.bus(), OURS, 1, 0.0).unwrap();
    let args = s.args(true, &[]);
    let mut p = Proc::spawn(PZEM_ENERGY, &args, &s.rig.dir.path().join("taken.log"));
    assert_eq!(p.wait_exit(15 * SECOND), Some(4), "{}", p.log_text());
    assert!(p.log_text().contains("already owned"), "{}", p.log_text());
}

/// The flows persisted in `path` and its `.bak` (panics when either exists and does not
/// parse; a `.tmp` is a save a kill interrupted, which load skips when torn).
fn persisted_flows(path: &std::path::Path) -> Option<[u64; 3]> {
    let bak = PathBuf::from(format!("{}.bak", path.display()));
    if let Ok(text) = std::fs::read_to_string(&bak) {
        pzem::energy_flow::FlowState::parse(&text)
            .unwrap_or_else(|e| panic!("{} unreadable ({e}): {text:?}", bak.display()));
    }
    let text = std::fs::read_to_string(path).ok()?;
    let state = pzem::energy_flow::FlowState::parse(&text)
        .unwrap_or_else(|e| panic!("{} unreadable ({e}): {text:?}", path.display()));
    Some(pzem::energy_flow::Flow::ALL.map(|f| state.flows.wh(f)))
}

/// Part of the crash tests (tests/crash.rs has pzem-dbus's 140 kills): 80 kills -9 of
/// pzem-energy at random moments while both AC counters move (15 kW in, 10 kW out: the
/// grid charges the battery and feeds the loads). After every kill the state file and its
/// backup parse and no persisted flow went down; the last restart publishes at least what
/// was persisted.
#[test]
fn kill_9_pzem_energy_80_times_while_counters_move() {
    const KILLS: u32 = 80;
    let mut s = Stack::new(31);
    s.count_fast();
    // Steps without a settling wait, saved every 100 ms: a kill can land in a save.
    let args = s.fast_saving_args(&s.state());
    let mut rng = pzem::sim::Rng::new(9);
    let mut persisted: Option<[u64; 3]> = None;
    let (mut saves, t0) = (0, Instant::now());
    for kill in 1..=KILLS {
        let mut p = s.rig.start(PZEM_ENERGY, &format!("pzem-energy-k{kill}"), &args);
        s.rig
            .monitor
            .pump_for(Duration::from_millis(300 + rng.below(1200) as u64));
        // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
        unsafe { libc::kill(p.pid() as libc::pid_t, libc::SIGKILL) };
        assert_eq!(p.wait_exit(5 * SECOND), Some(128 + 9), "kill {kill}\n{}", p.log_text());
        let log = p.log_text();
        assert!(
            !log.contains("panicked") && !log.contains("unreadable"),
            "kill {kill}: {log}"
        );
        let now = persisted_flows(&s.state());
        if let (Some(was), Some(is)) = (persisted, now) {
            assert!(
                (0..3).all(|i| is[i] >= was[i]),
                "kill {kill}: persisted flows went back from {was:?} to {is:?}"
            );
        }
        saves += usize::from(now.is_some() && now != persisted);
        persisted = now;
    }
    let persisted = persisted.expect("a state file after 80 runs");
    let total: u64 = persisted.iter().sum();
    assert!(
        saves >= 20 && total > 0,
        "only {saves} saves seen in {KILLS} runs ({persisted:?})"
    );
    // A last run publishes at least what was persisted (once the killed one is gone).
    s.rig
        .monitor
        .until(5 * SECOND, "our service gone", |m| !m.view.contains_key(OURS));
    let mut p = s.start(&args);
    s.rig
        .monitor
        .until(10 * SECOND, "flows published", |m| flows_wh(m, OURS).is_some());
    let shown = flows_wh(&s.rig.monitor, OURS).unwrap();
    assert!(
        (0..3).all(|i| shown[i] >= persisted[i]),
        "published {shown:?} < persisted {persisted:?}"
    );
    check_never_decreased(&s.rig.monitor, OURS);
    assert_eq!(p.terminate(), Some(0), "{}", p.log_text());
    println!(
        "pzem-energy: {KILLS} kills -9 in {:.0} s, {saves} persisted states changed between kills, \
         final flows {persisted:?} Wh, 0 unreadable files, 0 decreases",
        t0.elapsed().as_secs_f64()
    );
}

/// The bytes of the state file and of its backup (`None` for one that is absent).
fn state_bytes(path: &std::path::Path) -> [Option<Vec<u8>>; 2] {
    let bak = PathBuf::from(format!("{}.bak", path.display()));
    [std::fs::read(path).ok(), std::fs::read(bak).ok()]
}

/// The full-file-system share of the crash tests (tests/crash.rs has pzem-dbus's): the
/// state on a 64 KiB tmpfs that fills up while both counters move. Every save then fails
/// with a clear error in the log and the published flows stay at the last save; 10 kills
/// -9 while it is full leave the state file and its backup byte for byte as they were,
/// and every restart publishes them; once there is room the saves resume and the flows
/// catch up with what flowed meanwhile. No persisted or published flow ever decreased.
#[test]
fn kill_9_pzem_energy_on_a_full_file_system() {
    const KILLS: u32 = 10;
    let mut s = Stack::new(32);
    let Some(fs) = Tmpfs::mount(s.rig.dir.path(), 64) else {
        require::require_or_skip(
            "cannot mount a tmpfs here: pzem-energy's full-disk crash test did not run",
            "run as root; scripts/test in CI does",
        );
        return;
    };
    let t0 = Instant::now();
    s.count_fast();
    let state = fs.path().join("flows.state");
    let args = s.fast_saving_args(&state);
    // With room: saves.
    let mut p = s.start(&args);
    let deadline = Instant::now() + 10 * SECOND;
    while persisted_flows(&state).is_none_or(|f| f.iter().sum::<u64>() < 20) {
        assert!(Instant::now() < deadline, "no save with room\n{}", p.log_text());
        s.rig.monitor.pump_for(SECOND / 10);
    }
    fs.fill();
    s.rig.monitor.until(5 * SECOND, "a failed save logged", |_| {
        p.log_text().contains("cannot save the state in")
    });
    // A save that was in flight is done by now.
    s.rig.monitor.pump_for(SECOND / 2);
    let files = state_bytes(&state);
    let before = persisted_flows(&state).unwrap();
    // Publishing waits for a save that succeeds: the flows published are the last saved.
    s.rig.monitor.until(5 * SECOND, "the last save published", |m| {
        flows_wh(m, OURS) == Some(before)
    });
    assert_eq!(p.kill9(), Some(128 + 9));
    let mut logs = p.log_text();
    let mut rng = pzem::sim::Rng::new(10);
    for kill in 1..=KILLS {
        s.rig
            .monitor
            .until(5 * SECOND, "the killed service gone", |m| !m.view.contains_key(OURS));
        let mut p = s.start(&args);
        s.rig
            .monitor
            .pump_for(Duration::from_millis(300 + rng.below(1200) as u64));
        assert_eq!(
            flows_wh(&s.rig.monitor, OURS),
            Some(before),
            "kill {kill}: published flows that were not saved\n{}",
            p.log_text()
        );
        assert_eq!(p.kill9(), Some(128 + 9), "kill {kill}\n{}", p.log_text());
        assert_eq!(state_bytes(&state), files, "kill {kill}: the state files changed");
        persisted_flows(&state);
        let log = p.log_text();
        assert!(
            !log.contains("panicked") && !log.contains("unreadable") && !log.contains("NO USABLE STATE"),
            "kill {kill}: {log}"
        );
        logs.push_str(&log);
    }
    let failed = logs.matches("cannot save the state in").count();
    assert!(
        failed > KILLS as usize,
        "the failed saves are not logged ({failed}):\n{logs}"
    );
    assert!(
        logs.contains("No space left on device"),
        "the log does not say why:\n{logs}"
    );
    // Room again: the saves resume, and the flows catch up.
    fs.unfill();
    s.rig
        .monitor
        .until(5 * SECOND, "the killed service gone", |m| !m.view.contains_key(OURS));
    let mut p = s.start(&args);
    let grew = |f: [u64; 3]| (0..3).all(|i| f[i] >= before[i]) && f.iter().sum::<u64>() > before.iter().sum::<u64>();
    let deadline = Instant::now() + 10 * SECOND;
    while !persisted_flows(&state).is_some_and(grew) {
        assert!(
            Instant::now() < deadline,
            "no save once there is room\n{}",
            p.log_text()
        );
        s.rig.monitor.pump_for(SECOND / 10);
    }
    s.rig.monitor.until(5 * SECOND, "more flows published", |m| {
        flows_wh(m, OURS).is_some_and(grew)
    });
    let after = persisted_flows(&state).unwrap();
    check_never_decreased(&s.rig.monitor, OURS);
    assert_eq!(p.terminate(), Some(0), "{}", p.log_text());
    let example = logs
        .lines()
        .find(|l| l.contains("cannot save the state in"))
        .unwrap_or_default();
    println!(
        "pzem-energy on a full tmpfs: {KILLS} kills -9 in {:.0} s, {failed} failed saves logged, state files \
         unchanged while full ({before:?} Wh), saves resume with room ({after:?} Wh), 0 decreases\nlogged: {example}",
        t0.elapsed().as_secs_f64()
    );
}
