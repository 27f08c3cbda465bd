//! pzem-dbus's I/O: one thread around one epoll wait.
//!
//! The wait covers the line, every D-Bus connection (one per published
//! meter, one to localsettings) and the [`MeterLine`]'s next deadline (a
//! reply timeout, the inter-frame silence, the next poll, an energy save),
//! so D-Bus calls are answered at once even while the line waits for a
//! silent meter, and nothing sleeps. Whatever happens is handed to the
//! machine with the time it happened; what the machine asks for
//! ([`Command`]) is done here: bytes written, services published from
//! [`layout`], localsettings called, state files saved.

use std::ops::ControlFlow;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::dbus::{Bus, Event, Service, Value, Watchable};
use crate::line::{Line, LineStream};
use crate::model::{ModelChoice, StopBits};
use crate::poll_set::PollSet;

use super::config::MeterSpec;
use super::discovery::{self, Memory, Remembered};
use super::energy_store;
use super::layout::{self, MeterPaths};
use super::meter_line::{ClassStored, Command, Discovery, ExitReason, LineConfig, MeterLine};
use super::naming::PortId;
use super::role::Role;
use super::settings::{ClassAndInstance, PREFERRED_INSTANCE, SettingChange, SettingsLink};

/// Everything the service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The line.
    pub line: Line,
    /// The meters on it.
    pub meters: Vec<MeterSpec>,
    /// Time from the start of one polling cycle to the next; zero polls back to back.
    pub poll_interval: Duration,
    /// Reply timeout per request.
    pub timeout: Duration,
    /// The bus to publish on.
    pub bus: Bus,
    /// Where energy state files live.
    pub state_dir: PathBuf,
    /// How long to wait for localsettings at start-up.
    pub settings_wait: Duration,
    /// Exit when every meter has been silent this long (`None`: never).
    pub silent_exit: Option<Duration>,
    /// Time allowed for the start-up probe.
    pub startup_budget: Duration,
    /// Failed polls in a row before a meter's values are invalidated.
    pub failures_to_vanish: u32,
    /// Scan these addresses instead of `meters` (discovery that remembers).
    pub discover: Option<RangeInclusive<u8>>,
}

/// Where the meters found on a line are remembered.
pub fn memory_path(state_dir: &Path, port: &PortId) -> PathBuf {
    state_dir.join(format!("pzem_{}.discovered", port.stable))
}

/// `--forget`: clear what discovery remembers for the line; returns the
/// meters that were remembered.
pub fn forget(config: &Config) -> std::io::Result<Vec<Remembered>> {
    let path = memory_path(&config.state_dir, &port_id(&config.line));
    let loaded = crate::state_file::load(&path, Memory::parse);
    let meters = loaded.value.map(|m| m.meters().to_vec()).unwrap_or_default();
    crate::state_file::remove(&path)?;
    Ok(meters)
}

/// The remembered meters of the line, without those silent for too long.
fn recall(path: &std::path::Path) -> Memory {
    let loaded = crate::state_file::load(path, Memory::parse);
    for note in &loaded.notes {
        log::warn!("discovery memory: {note}");
    }
    let mut memory = loaded.value.unwrap_or_default();
    for gone in memory.forget_stale(unix_now()) {
        log::warn!(
            "forgetting the {} meter at address {}: it has not answered for {} days",
            gone.family,
            gone.address,
            discovery::FORGET_AFTER.as_secs() / 86_400
        );
    }
    memory
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The identity of the line, for names and ids.
pub fn port_id(line: &Line) -> PortId {
    match line {
        Line::Serial(path) => PortId::serial(path, super::naming::usb_serial_of(path).as_deref()),
        Line::RtuOverTcp(addr) => PortId::tcp(addr, false),
        Line::ModbusTcp(addr) => PortId::tcp(addr, true),
    }
}

/// Run until stopped (`stop` set by a handler of SIGTERM or SIGINT); returns why it
/// stopped. SIGTERM and SIGINT are blocked in this thread except while it waits, so a stop
/// request is never missed between the check of the flag and the wait; the mask is
/// restored on return.
pub fn run(config: &Config, stop: &AtomicBool) -> ExitReason {
    let wait_mask = crate::poll_set::block_stop_signals();
    let reason = run_loop(config, stop, wait_mask);
    crate::poll_set::restore_signals(wait_mask);
    reason
}

fn run_loop(config: &Config, stop: &AtomicBool, wait_mask: Option<libc::sigset_t>) -> ExitReason {
    let place = config.line.place();
    let port = port_id(&config.line);
    // Discovery: scan the range and whatever is remembered, for AC and DC meters.
    let memory_file = memory_path(&config.state_dir, &port);
    let memory = config.discover.as_ref().map(|_| recall(&memory_file));
    let (meters, discovery) = match (&config.discover, &memory) {
        (Some(range), Some(memory)) => {
            let meters = range
                .clone()
                .filter_map(|a| Address::unit(u32::from(a)).ok())
                .map(|a| MeterSpec::single(a, ModelChoice::Auto, None))
                .collect();
            let remembered = memory.meters().iter().map(|m| (m.address, m.family)).collect();
            let discovery = Discovery {
                remembered,
                scan_timeout: discovery::SCAN_TIMEOUT,
            };
            (meters, Some(discovery))
        }
        _ => (config.meters.clone(), None),
    };
    let stop_bits = StopBits::for_choices(meters.iter().map(|m| m.model));
    let (stream, framing) = match config.line.open_stream(stop_bits) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot open {place}: {e}");
            return ExitReason::LineGone;
        }
    };
    if let Err(e) = stream.set_nonblocking() {
        log::error!("{place}: {e}");
        return ExitReason::LineGone;
    }
    let now = Instant::now();
    let mut machine = MeterLine::new(
        LineConfig {
            place: place.to_owned(),
            meters,
            port,
            framing,
            timeout: config.timeout,
            poll_interval: config.poll_interval,
            startup_budget: config.startup_budget,
            failures_to_vanish: config.failures_to_vanish,
            silent_exit: config.silent_exit,
            discovery,
        },
        now,
    );
    let addresses: Vec<Address> = machine.addresses().collect();
    for address in addresses {
        let Some(id) = machine.meter_id(address) else { continue };
        let loaded = energy_store::load(&config.state_dir, id);
        for note in &loaded.notes {
            log::warn!("{id}: energy state: {note}");
        }
        if loaded.from_zero_after_damage {
            log::error!("{id}: no usable energy state: its published total starts again from the meter's counter");
        }
        machine.restore_energy(address, loaded.state);
    }
    let poll = match PollSet::new() {
        Ok(mut p) => {
            p.set_wait_mask(wait_mask);
            p
        }
        Err(e) => {
            log::error!("cannot set up waiting: {e}");
            return ExitReason::BusLost;
        }
    };
    let mut edge = Edge {
        config,
        stream,
        settings: Settings::NotAsked,
        services: Vec::new(),
        poll,
        next_key: FIRST_SERVICE_KEY,
        events: Vec::new(),
        changes: Vec::new(),
        stopping: false,
        memory: memory.map(|m| (memory_file, m)),
    };
    edge.run(&mut machine, stop)
}

/// localsettings, connected when the first meter registers.
enum Settings {
    NotAsked,
    Absent,
    Linked(SettingsLink),
}

/// Keys that name what is behind each waited-on descriptor (see
/// [`PollSet::push`]): the line, localsettings, then one per service created.
const LINE_KEY: u64 = 0;
const SETTINGS_KEY: u64 = 1;
const FIRST_SERVICE_KEY: u64 = 2;

struct Published {
    address: Address,
    /// A new one for each service created, for the wait.
    key: u64,
    service: Service,
    paths: MeterPaths,
}

/// The I/O side: the line, the services, localsettings, files.
struct Edge<'c> {
    config: &'c Config,
    stream: LineStream,
    settings: Settings,
    services: Vec<Published>,
    poll: PollSet,
    events: Vec<Event>,
    changes: Vec<SettingChange>,
    /// Shutting down: only saves and the exit are still carried out.
    stopping: bool,
    /// Discovery's memory of the line and its file.
    memory: Option<(PathBuf, Memory)>,
    next_key: u64,
}

impl Edge<'_> {
    fn run(&mut self, machine: &mut MeterLine, stop: &AtomicBool) -> ExitReason {
        let mut buf = [0u8; 256];
        let mut now = Instant::now();
        loop {
            while let Some(command) = machine.poll_command() {
                if let ControlFlow::Break(reason) = self.execute(command, machine, now) {
                    return reason;
                }
            }
            // Wait for the line, every connection, or the machine's next deadline.
            self.poll.clear();
            let line = self.poll.push(self.stream.fd(), LINE_KEY, true, false);
            let mut backlog = false;
            for p in &self.services {
                let w = p.service.watch();
                self.poll.push(w.fd, p.key, w.read, w.write);
                backlog |= p.service.has_backlog();
            }
            let settings_index = match &self.settings {
                Settings::Linked(link) => {
                    let w = link.client().watch();
                    backlog |= link.client().has_backlog();
                    Some(self.poll.push(w.fd, SETTINGS_KEY, w.read, w.write))
                }
                _ => None,
            };
            let timeout = if backlog {
                Some(Duration::ZERO)
            } else {
                machine.deadline().map(|d| d.saturating_duration_since(Instant::now()))
            };
            let waited = self.poll.wait(timeout);
            now = Instant::now();
            if let Err(e) = waited {
                log::error!("waiting failed: {e}");
                self.shut(machine, now, ExitReason::BusLost);
                continue;
            }
            if stop.load(Ordering::Relaxed) {
                log::info!("stopping");
                self.shut(machine, now, ExitReason::Stopped);
                continue;
            }
            let mut got_input = false;
            if self.poll.is_ready(line) {
                // One read takes what is there: a reply that arrived whole costs one call.
                match self.stream.read_available(&mut buf) {
                    Ok(0) => {}
                    Ok(n) => {
                        machine.handle_input(now, &buf[..n]);
                        got_input = true;
                    }
                    Err(e) => {
                        log::error!("{}: {e}; exiting", self.config.line.place());
                        self.shut(machine, now, ExitReason::LineGone);
                        continue;
                    }
                }
            }
            // D-Bus calls: only the connections the wait found ready (or with a backlog).
            let mut bus_lost = false;
            for (k, p) in self.services.iter_mut().enumerate() {
                if !self.poll.is_ready(line + 1 + k) && !p.service.has_backlog() {
                    continue;
                }
                let address = p.address;
                let mut on_write = |path: &str, value: &Value| machine.handle_write(now, address, path, value);
                if let Err(e) = p.service.process(&mut on_write) {
                    log::error!("D-Bus connection of {} lost: {e}", p.service.name());
                    bus_lost = true;
                    break;
                }
            }
            if let (Some(index), Settings::Linked(link)) = (settings_index, &mut self.settings)
                && !bus_lost
                && (self.poll.is_ready(index) || link.client().has_backlog())
            {
                self.changes.clear();
                if let Err(e) = link.changes(&mut self.events, &mut self.changes) {
                    log::error!("D-Bus connection to localsettings lost: {e}");
                    bus_lost = true;
                }
                for change in self.changes.drain(..) {
                    machine.handle_setting(now, change);
                }
            }
            if bus_lost {
                self.shut(machine, now, ExitReason::BusLost);
                continue;
            }
            // Input already brought the machine up to `now`.
            if !got_input {
                machine.handle_timeout(now);
            }
        }
    }

    /// Carry out one command; `Break` when the service must exit now.
    fn execute(&mut self, command: Command, machine: &mut MeterLine, now: Instant) -> ControlFlow<ExitReason> {
        match command {
            Command::Exit(reason) => return ControlFlow::Break(reason),
            Command::SaveEnergy { address, state } => {
                let Some(id) = machine.meter_id(address) else {
                    return ControlFlow::Continue(());
                };
                match energy_store::save(&self.config.state_dir, id, &state) {
                    Ok(()) => machine.handle_energy_saved(now, address, state),
                    Err(e) => {
                        log::warn!(
                            "{id}: cannot save energy state in {}: {e}",
                            self.config.state_dir.display()
                        );
                        machine.handle_energy_save_failed(now, address);
                    }
                }
            }
            Command::Seen { address, family } => {
                if let Some((path, memory)) = &mut self.memory
                    && memory.seen(address, family, unix_now())
                    && let Err(e) = crate::state_file::save(path, &memory.to_text())
                {
                    log::warn!("cannot save the discovery memory in {}: {e}", path.display());
                }
            }
            _ if self.stopping => {}
            Command::Transmit(frame) => {
                if let Err(e) = self.stream.write_frame(frame.as_bytes()) {
                    log::error!("{}: {e}; exiting", self.config.line.place());
                    self.shut(machine, now, ExitReason::LineGone);
                }
            }
            Command::Publish { address, update } => {
                if let Some(p) = self.published(address) {
                    layout::publish(p.service.tree_mut(), &p.paths, &update);
                }
                self.flush(address, machine, now);
            }
            Command::Invalidate { address } => {
                if let Some(p) = self.published(address) {
                    layout::invalidate(p.service.tree_mut(), &p.paths);
                }
                self.flush(address, machine, now);
            }
            Command::SetPath { address, path, value } => {
                if let Some(p) = self.published(address)
                    && let Err(e) = p.service.tree_mut().set_path(path, value)
                {
                    log::warn!("{}: {e:?} is not one of its paths; not set", p.service.name());
                }
                self.flush(address, machine, now);
            }
            Command::Register { address, default_role } => {
                let Some(id) = machine.meter_id(address) else {
                    return ControlFlow::Continue(());
                };
                let id = id.to_owned();
                let record = match self.settings_link(machine, now) {
                    Some(link) => match link.register(&id, default_role, Role::allowed(default_role.family())) {
                        Ok(record) => Some(record),
                        Err(e) => {
                            log::warn!("{id}: {e}; using the configured role");
                            None
                        }
                    },
                    None => None,
                };
                if !self.stopping {
                    machine.handle_record(now, address, record);
                }
            }
            Command::StoreSetting { address, field, value } => {
                let Some(id) = machine.meter_id(address) else {
                    return ControlFlow::Continue(());
                };
                let id = id.to_owned();
                if let Settings::Linked(link) = &mut self.settings
                    && let Err(e) = link.store(&id, field, &value)
                {
                    log::warn!("{id}: {field:?} not saved: {e}");
                }
            }
            Command::StoreClass {
                address,
                role,
                instance,
            } => {
                let Some(id) = machine.meter_id(address) else {
                    return ControlFlow::Continue(());
                };
                let id = id.to_owned();
                let stored = match &mut self.settings {
                    Settings::Linked(link) => match link.set_class(&id, ClassAndInstance { role, instance }) {
                        Ok(c) => ClassStored::Stored(c),
                        Err(e) => {
                            log::warn!("{id}: role change to {role} not stored ({e}); applying it anyway");
                            ClassStored::NotStored
                        }
                    },
                    _ => ClassStored::NotStored,
                };
                machine.handle_class_stored(now, address, role, stored);
            }
            Command::StartService {
                address,
                name,
                identity,
            } => {
                if let Some(i) = self.services.iter().position(|p| p.address == address) {
                    let old = self.services.swap_remove(i);
                    log::info!("releasing {}", old.service.name());
                    // Released synchronously: the same name may be claimed again just below
                    // (an instance change keeps the class), and a dropped connection frees
                    // its name only when the daemon notices.
                    let old_name = old.service.name().to_owned();
                    if let Err(e) = old.service.release() {
                        log::warn!("releasing {old_name}: {e}");
                    }
                }
                let (mut tree, paths) = match layout::build_tree(&identity) {
                    Ok(t) => t,
                    Err(e) => {
                        log::error!("{name}: {e}");
                        self.shut(machine, now, ExitReason::BusLost);
                        return ControlFlow::Continue(());
                    }
                };
                // Everything is invalid until the meter's next reading.
                tree.clear_changes();
                match Service::new(&self.config.bus, &name, tree) {
                    Ok(service) => {
                        log::info!("published {name} (device instance {})", identity.instance);
                        self.next_key += 1;
                        self.services.push(Published {
                            address,
                            key: self.next_key - 1,
                            service,
                            paths,
                        });
                        self.services.sort_by_key(|p| p.address);
                    }
                    Err(e) => {
                        log::error!("cannot publish {name}: {e}");
                        self.shut(machine, now, ExitReason::BusLost);
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// The one way to stop: from here on only saves and the exit are carried out.
    fn shut(&mut self, machine: &mut MeterLine, now: Instant, reason: ExitReason) {
        self.stopping = true;
        machine.shutdown(now, reason);
    }

    fn published(&mut self, address: Address) -> Option<&mut Published> {
        self.services.iter_mut().find(|p| p.address == address)
    }

    /// Send what changed in the meter's tree as one `ItemsChanged`.
    fn flush(&mut self, address: Address, machine: &mut MeterLine, now: Instant) {
        let Some(p) = self.published(address) else { return };
        if let Err(e) = p.service.flush() {
            log::error!("D-Bus connection of {} lost: {e}", p.service.name());
            self.shut(machine, now, ExitReason::BusLost);
        }
    }

    /// The localsettings link, connecting (and waiting a bounded time for
    /// localsettings) the first time.
    fn settings_link(&mut self, machine: &mut MeterLine, now: Instant) -> Option<&mut SettingsLink> {
        if let Settings::NotAsked = self.settings {
            self.settings = match SettingsLink::connect(&self.config.bus, self.config.settings_wait) {
                Ok(Some(link)) => Settings::Linked(link),
                Ok(None) => {
                    log::warn!(
                        "com.victronenergy.settings did not appear within {:?}: running with the configured \
                         roles and device instances from {PREFERRED_INSTANCE} up; GUI changes will not persist",
                        self.config.settings_wait
                    );
                    Settings::Absent
                }
                Err(e) => {
                    log::error!("cannot connect to D-Bus: {e}");
                    self.shut(machine, now, ExitReason::BusLost);
                    Settings::Absent
                }
            };
        }
        match &mut self.settings {
            Settings::Linked(link) => Some(link),
            _ => None,
        }
    }
}
