//! A rig for running the real `pzem-dbus` binary: a private bus, the settings double, a
//! simulated line, the child process (killed by PID when dropped) and a monitor client that
//! does what Venus's dbusmonitor does (GetItems when a name appears, then the signals).
//!
//! Included with `#[path]` by tests/pzem_dbus.rs and benches/pzem_dbus.rs.
#![allow(dead_code)] // the bench uses a subset

use pzem::dbus::testkit::{PrivateBus, SettingsDouble};
use pzem::dbus::{BusClient, Event, Value, Waiter, Waker, Watchable};
use pzem::sim::{Pacing, SimBus, SimMeter, SimServer};
use pzem::{AcReading, DcReading, Model, Reading};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pzem-rig-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running child process; dropping it kills exactly this PID (SIGKILL) and reaps it.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
    pub started: Instant,
    exit: Option<i32>,
}

impl Proc {
    /// Starts `program args…` with stderr and stdout appended to `log`.
    pub fn spawn(program: &str, args: &[String], log: &Path) -> Proc {
        let out = File::options().create(true).append(true).open(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        Proc {
            child,
            log: log.to_owned(),
            started: Instant::now(),
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit code once it has exited (a signal death counts as 128 + signal).
    pub fn try_exit(&mut self) -> Option<i32> {
        if self.exit.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            use std::os::unix::process::ExitStatusExt;
            self.exit = Some(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)));
        }
        self.exit
    }

    /// Waits up to `within` for the exit; `None` if it is still running.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(code) = self.try_exit() {
                return Some(code);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` to this child, unless it has already exited (then its PID may be reused
    /// and nothing is sent).
    pub fn signal(&mut self, sig: libc::c_int) {
        if self.try_exit().is_none() {
            // SAFETY: kill(2) on the PID of our own, not yet reaped, child.
            unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        }
    }

    /// SIGTERM, then the exit code (within 5 s).
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait_exit(Duration::from_secs(5))
    }

    /// SIGKILL, then the exit code (within 5 s): 128 + 9 when the signal killed it.
    pub fn kill9(&mut self) -> Option<i32> {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(5))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One event as the monitor saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub at: Instant,
    pub event: Event,
}

/// What the monitor did when a name appeared: the `GetItems` answer right after the
/// `NameOwnerChanged`, as dbusmonitor does.
#[derive(Clone, Debug)]
pub struct Appeared {
    pub at: Instant,
    pub service: String,
    pub items: Result<BTreeMap<String, Value>, String>,
}

/// A Venus-monitor-like client: follows every `com.victronenergy.*` service.
pub struct Monitor {
    pub client: BusClient,
    waiter: Waiter,
    _waker: Waker,
    /// Current values per service.
    pub view: BTreeMap<String, BTreeMap<String, Value>>,
    /// Every event, in order.
    pub log: Vec<Seen>,
    /// Every appearance, in order.
    pub appeared: Vec<Appeared>,
}

impl Monitor {
    pub fn new(bus: &PrivateBus) -> Monitor {
        let mut client = BusClient::new(&bus.bus()).unwrap();
        client.subscribe(&[]).unwrap();
        let (waiter, waker) = Waiter::new().unwrap();
        let mut m = Monitor {
            client,
            waiter,
            _waker: waker,
            view: BTreeMap::new(),
            log: Vec::new(),
            appeared: Vec::new(),
        };
        for name in m.client.list_services().unwrap() {
            m.on_appear(name);
        }
        m
    }

    fn on_appear(&mut self, service: String) {
        let items = self.client.get_items(&service).map_err(|e| e.to_string());
        if let Ok(items) = &items {
            self.view.insert(service.clone(), items.clone());
        }
        self.appeared.push(Appeared {
            at: Instant::now(),
            service,
            items,
        });
    }

    /// Waits up to `max` for events and applies them.
    pub fn pump(&mut self, max: Duration) {
        self.waiter.wait([&self.client as &dyn Watchable], Some(max)).unwrap();
        let mut events = Vec::new();
        self.client.poll_events(&mut events).unwrap();
        self.apply(events);
    }

    /// Connects again, to `bus` whose daemon was restarted ([`Rig::restart_bus`]): what
    /// the old connection still holds is applied first; every service the old daemon had
    /// is then gone (logged as a `NameOwnerChanged` to no owner, at this moment); the
    /// services on the new daemon are read as when they appear.
    pub fn reconnect(&mut self, bus: &PrivateBus) {
        let mut events = Vec::new();
        // The old connection fails once its buffer is read: what it had is kept.
        let _ = self.client.poll_events(&mut events);
        self.apply(events);
        let mut client = BusClient::new(&bus.bus()).unwrap();
        client.subscribe(&[]).unwrap();
        self.client = client;
        let gone: Vec<String> = std::mem::take(&mut self.view).into_keys().collect();
        for name in gone {
            self.log.push(Seen {
                at: Instant::now(),
                event: Event::NameOwnerChanged {
                    name,
                    old_owner: None,
                    new_owner: None,
                },
            });
        }
        for name in self.client.list_services().unwrap() {
            self.on_appear(name);
        }
    }

    fn apply(&mut self, events: Vec<Event>) {
        for event in events {
            let at = Instant::now();
            match &event {
                Event::NameOwnerChanged { name, new_owner, .. } => {
                    self.view.remove(name);
                    if new_owner.is_some() {
                        self.on_appear(name.clone());
                    }
                }
                Event::ItemsChanged { service, changes } => {
                    if let Some(v) = self.view.get_mut(service) {
                        for (p, value) in changes {
                            v.insert(p.clone(), value.clone());
                        }
                    }
                }
                Event::PropertiesChanged { service, path, value } => {
                    if let Some(v) = self.view.get_mut(service) {
                        v.insert(path.clone(), value.clone());
                    }
                }
            }
            self.log.push(Seen { at, event });
        }
    }

    /// Pumps until `f` holds, or panics after `within` with `what`.
    #[track_caller]
    pub fn until(&mut self, within: Duration, what: &str, f: impl FnMut(&Monitor) -> bool) {
        assert!(
            self.try_until(within, f),
            "timed out after {within:?} waiting for: {what}"
        );
    }

    /// Pumps until `f` holds (true), or for at most `within` (false).
    pub fn try_until(&mut self, within: Duration, mut f: impl FnMut(&Monitor) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !f(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.pump(left.min(Duration::from_millis(50)));
        }
        true
    }

    /// Pumps for `d` (collecting signals).
    pub fn pump_for(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.pump(left);
        }
    }

    /// The value of `path` of `service`, as the monitor knows it.
    pub fn get(&self, service: &str, path: &str) -> Option<&Value> {
        self.view.get(service).and_then(|v| v.get(path))
    }

    /// Waits for `service` to be on the bus with `/Connected` = 1.
    pub fn wait_connected(&mut self, service: &str, within: Duration) {
        self.until(within, &format!("{service} connected"), |m| {
            m.get(service, "/Connected") == Some(&Value::Int(1))
        });
    }

    /// Every `ItemsChanged` of `service`, in order.
    pub fn items_changed<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a Seen> + 'a {
        self.log
            .iter()
            .filter(move |s| matches!(&s.event, Event::ItemsChanged { service: x, .. } if x == service))
    }
}

/// The name pzem-energy claims with `--publish own`.
pub const ENERGY_OWN: &str = "com.victronenergy.pzem_energy.flows";

/// The `-m` flags of the three-meter line of [`three_meter_pty`].
pub const THREE_METERS: [&str; 3] = ["1:016:grid", "2:016:acload", "3:017:dcsource"];

/// A simulated line on a pseudo-terminal, unpaced, with two PZEM-016 (addresses 1 and 2)
/// and a PZEM-017 (address 3); `seed` drives the simulated values.
pub fn three_meter_pty(seed: u64) -> SimServer {
    let meters = vec![
        SimMeter::new(Model::Pzem016, 1),
        SimMeter::new(Model::Pzem016, 2),
        SimMeter::new(Model::Pzem017, 3),
    ];
    SimServer::pty(SimBus::new(meters, seed), Pacing::NONE).unwrap()
}

/// The services of [`THREE_METERS`] on `tty`: grid, acload, dcsource.
pub fn three_meter_services(tty: &str) -> [String; 3] {
    [
        service_name("grid", tty, 1),
        service_name("acload", tty, 2),
        service_name("dcsource", tty, 3),
    ]
}

/// Service name of meter `addr` in `class` on the pty `path`: the base name of the
/// path (`/dev/pts/7` → `7`), as the issue specifies, computed here independently.
pub fn service_name(class: &str, tty: &str, addr: u8) -> String {
    // rsplit always yields at least one piece (the whole string when there is no '/').
    let port: String = tty
        .rsplit('/')
        .next()
        .unwrap()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("com.victronenergy.{class}.pzem_{port}_{addr}")
}

/// Settings id of meter `addr` on `tty` (no USB serial number on a pty).
pub fn settings_id(tty: &str, addr: u8) -> String {
    service_name("x", tty, addr)
        .strip_prefix("com.victronenergy.x.")
        .unwrap()
        .to_owned()
}

/// The measurement paths a reading gives, in Venus units, computed from the raw registers
/// (not with the library's accessors); `energy_offset_wh` is the monotonic offset.
pub fn derived(reading: &Reading, energy_path_dc: &str, energy_offset_wh: u64) -> Vec<(&'static str, Value)> {
    let d = Value::Double;
    match reading {
        Reading::Ac(AcReading {
            voltage_dv,
            current_ma,
            power_dw,
            energy_wh,
            frequency_dhz,
            power_factor_centi,
            ..
        }) => {
            let kwh = (energy_offset_wh + u64::from(*energy_wh)) as f64 / 1000.0;
            vec![
                ("/Ac/Power", d(f64::from(*power_dw) / 10.0)),
                ("/Ac/L1/Power", d(f64::from(*power_dw) / 10.0)),
                ("/Ac/L1/Voltage", d(f64::from(*voltage_dv) / 10.0)),
                ("/Ac/L1/Current", d(f64::from(*current_ma) / 1000.0)),
                ("/Ac/Frequency", d(f64::from(*frequency_dhz) / 10.0)),
                ("/Ac/PowerFactor", d(f64::from(*power_factor_centi) / 100.0)),
                ("/Ac/L1/PowerFactor", d(f64::from(*power_factor_centi) / 100.0)),
                ("/Ac/Energy/Forward", d(kwh)),
                ("/Ac/L1/Energy/Forward", d(kwh)),
            ]
        }
        Reading::Dc(DcReading {
            voltage_cv,
            current_ca,
            power_dw,
            energy_wh,
            high_voltage_alarm,
            low_voltage_alarm,
        }) => {
            let kwh = (energy_offset_wh + u64::from(*energy_wh)) as f64 / 1000.0;
            let alarm = |on: bool| Value::Int(if on { 2 } else { 0 });
            let energy: &'static str = if energy_path_dc == "/History/EnergyIn" {
                "/History/EnergyIn"
            } else {
                "/History/EnergyOut"
            };
            vec![
                ("/Dc/0/Voltage", d(f64::from(*voltage_cv) / 100.0)),
                ("/Dc/0/Current", d(f64::from(*current_ca) / 100.0)),
                ("/Dc/0/Power", d(f64::from(*power_dw) / 10.0)),
                (energy, d(kwh)),
                ("/Alarms/HighVoltage", alarm(*high_voltage_alarm)),
                ("/Alarms/LowVoltage", alarm(*low_voltage_alarm)),
            ]
        }
    }
}

/// Equal within the published rounding noise of a double.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => (x - y).abs() <= 1e-9 * y.abs().max(1.0),
        _ => a == b,
    }
}

/// Whether `items` (a service's values) show exactly the reading `r` on every measurement path.
pub fn shows(items: &BTreeMap<String, Value>, r: &Reading, dc_energy: &str, offset_wh: u64) -> bool {
    derived(r, dc_energy, offset_wh)
        .iter()
        .all(|(p, want)| items.get(*p).is_some_and(|got| same(got, want)))
}

/// A rig without the pzem-dbus process: bus, settings double (optional), state dir, monitor.
pub struct Rig {
    pub monitor: Monitor,
    pub settings: Option<SettingsDouble>,
    pub dir: TempDir,
    pub bus: PrivateBus,
}

impl Rig {
    pub fn new(with_settings: bool) -> Rig {
        let bus = PrivateBus::start().unwrap();
        let settings = with_settings.then(|| SettingsDouble::start(&bus.bus()).unwrap());
        let monitor = Monitor::new(&bus);
        Rig {
            monitor,
            settings,
            dir: TempDir::new("state"),
            bus,
        }
    }

    /// Common flags: `--dbus`, `--state-dir`, short interval and timeout, quick settings wait,
    /// never exit on silence. `extra` holds `FLAG VALUE` pairs that replace a default of the
    /// same flag or are added (getopts refuses a flag given twice).
    pub fn args(&self, line: &[&str], meters: &[&str], extra: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = line.iter().map(|s| s.to_string()).collect();
        for m in meters {
            a.push("-m".into());
            a.push(m.to_string());
        }
        let state = self.dir.path().join("energy");
        let mut options: Vec<(String, String)> = [
            ("--dbus", self.bus.address()),
            ("--state-dir", state.to_str().unwrap()),
            ("-i", "200"),
            ("-t", "100"),
            ("--settings-wait", "1"),
            ("--silent-exit", "0"),
        ]
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
        for pair in extra.chunks(2) {
            let value = pair.get(1).map_or(String::new(), |v| v.to_string());
            match options.iter_mut().find(|(f, _)| f == pair[0]) {
                Some(o) => o.1 = value,
                None => options.push((pair[0].to_string(), value)),
            }
        }
        for (f, v) in options {
            a.push(f);
            a.push(v);
        }
        a
    }

    /// Restarts the bus daemon on the same socket path ([`PrivateBus::restart`]), then the
    /// settings double on it with the settings it held, and reconnects the monitor. The
    /// services' connections to the old daemon are closed: they must be restarted with
    /// the new address ([`Rig::args`] gives it).
    pub fn restart_bus(&mut self) {
        self.bus.restart().unwrap();
        if let Some(settings) = &mut self.settings {
            settings.restart(&self.bus.bus()).unwrap();
        }
        self.monitor.reconnect(&self.bus);
    }

    /// Starts pzem-dbus with `args`; its output goes to `<dir>/<tag>.log`.
    pub fn start(&self, program: &str, tag: &str, args: &[String]) -> Proc {
        Proc::spawn(program, args, &self.dir.path().join(format!("{tag}.log")))
    }

    /// Starts pzem-energy (`program`) on this rig's bus with `--ac-in ac_in --ac-out
    /// ac_out --publish own`, its state in `<dir>/flows.state`, a 2 s settings wait, no
    /// config file, and `extra` flags; returns once [`ENERGY_OWN`] is on the bus, or
    /// panics after 15 s with the process's log. Its output goes to `<dir>/pzem-energy.log`.
    #[track_caller]
    pub fn start_energy(&mut self, program: &str, ac_in: &str, ac_out: &str, extra: &[&str]) -> Proc {
        let state = self.dir.path().join("flows.state");
        let mut args: Vec<String> = [
            "--dbus",
            self.bus.address(),
            "--ac-in",
            ac_in,
            "--ac-out",
            ac_out,
            "--publish",
            "own",
            "--state",
            state.to_str().unwrap(),
            "--settings-wait",
            "2",
            "-c",
            "/dev/null",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = self.start(program, "pzem-energy", &args);
        let within = Duration::from_secs(15);
        if !self.monitor.try_until(within, |m| m.view.contains_key(ENERGY_OWN)) {
            panic!(
                "pzem-energy did not publish {ENERGY_OWN} within {within:?} (exit {:?})\n{}",
                p.try_exit(),
                p.log_text()
            );
        }
        p
    }
}
