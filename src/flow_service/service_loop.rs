//! pzem-energy's I/O: one thread around one `ppoll(2)`.
//!
//! The wait covers every D-Bus connection (the [`Follower`] reading the inputs, the
//! published service, localsettings) with the [`FlowService`]'s next deadline as its
//! timeout. Whatever happens is handed to the machine with the time it happened; what it
//! asks for ([`Command`]) is done here: follows and reads, localsettings calls, the service
//! published from [`layout`], state files written.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::dbus::{Bus, Followed, Follower, Service, Value, Watchable};
use crate::energy_flow::{Flow, FlowState};
use crate::poll_set::PollSet;
use crate::state_file;

use super::layout::{self, FlowPaths};
use super::machine::{Command, ExitReason, FlowService, ServiceConfig, SettingChange};
use super::settings::FlowSettings;

/// Everything the service needs to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The machine's settings.
    pub service: ServiceConfig,
    /// The state file.
    pub state_path: PathBuf,
    /// The bus.
    pub bus: Bus,
    /// How long to wait for localsettings when registering.
    pub settings_wait: Duration,
}

/// Seconds since the Unix epoch by the wall clock (`None` before 1970: a clock not set).
fn unix_now() -> Option<u64> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Load the state file (see the state-file module for the fallbacks) and log what was
/// found. Returns the state, how long ago it was saved (whole seconds, rounded down) when
/// the wall clock can tell, and whether it must be written back at once (it came from a
/// fallback copy).
pub fn load_state(path: &std::path::Path) -> (FlowState, Option<Duration>, bool) {
    let loaded = state_file::load(path, FlowState::parse);
    for note in &loaded.notes {
        log::warn!("state {}: {note}", path.display());
    }
    if loaded.starts_from_zero_after_damage() {
        log::error!(
            "NO USABLE STATE in {} or its copies: the flows start from ZERO and the sources' counters are new \
             baselines",
            path.display()
        );
    }
    let Some(state) = loaded.value else {
        if loaded.notes.is_empty() {
            log::info!("no state at {}: starting from zero", path.display());
        }
        return (FlowState::default(), None, false);
    };
    let downtime = match (state.saved_at_unix_s, unix_now()) {
        (Some(saved), Some(now)) if now >= saved => Some(Duration::from_secs(now - saved)),
        (Some(saved), now) => {
            log::warn!(
                "the state was saved at {saved} s, after the clock's now ({now:?}); how long the service was down \
                 is unknown"
            );
            None
        }
        (None, _) => None,
    };
    let f = state.flows;
    log::info!(
        "continuing from {}: AcIn1ToAcOut {:.3} kWh, AcIn1ToInverter {:.3} kWh, InverterToAcOut {:.3} kWh{}",
        path.display(),
        f.kwh(Flow::AcIn1ToAcOut),
        f.kwh(Flow::AcIn1ToInverter),
        f.kwh(Flow::InverterToAcOut),
        downtime.map_or_else(String::new, |d| format!(", saved {} s ago", d.as_secs()))
    );
    (state, downtime, !loaded.notes.is_empty())
}

/// Run until stopped (`stop` set by a handler of SIGTERM or SIGINT); returns why it
/// stopped. SIGTERM and SIGINT are blocked in this thread except while it waits, so a stop
/// request is never missed; the mask is restored on return.
pub fn run(config: &Config, stop: &AtomicBool) -> ExitReason {
    let wait_mask = crate::poll_set::block_stop_signals();
    let reason = run_loop(config, stop, wait_mask);
    crate::poll_set::restore_signals(wait_mask);
    reason
}

fn run_loop(config: &Config, stop: &AtomicBool, wait_mask: Option<libc::sigset_t>) -> ExitReason {
    let (state, saved_ago, save_at_once) = load_state(&config.state_path);
    // An upper bound of the time since the saved counters were last seen, as the tracker
    // needs it: they can be up to `save_within` older than the save, and the stamp has
    // whole seconds.
    let downtime = saved_ago.map(|d| d + config.service.flow.save_within + Duration::from_secs(1));
    let follower = match Follower::new(&config.bus) {
        Ok(f) => f,
        Err(e) => {
            log::error!("cannot connect to D-Bus: {e}");
            return ExitReason::BusLost;
        }
    };
    let mut machine = FlowService::new(config.service.clone(), state, Instant::now(), downtime, save_at_once);
    let mut poll = match PollSet::new() {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot wait on descriptors: {e}");
            return ExitReason::BusLost;
        }
    };
    poll.set_wait_mask(wait_mask);
    let mut edge = Edge {
        config,
        follower,
        settings: Settings::NotAsked,
        published: None,
        poll,
        followed: Vec::with_capacity(16),
        scratch: Vec::new(),
        changes: Vec::new(),
        next_key: FIRST_SERVICE_KEY,
        stopping: false,
    };
    edge.run(&mut machine, stop)
}

/// localsettings, connected when the service first registers.
enum Settings {
    NotAsked,
    Absent,
    Linked(FlowSettings),
}

struct Published {
    service: Service,
    paths: FlowPaths,
    /// Names its connection for the wait (a re-registration opens a new one).
    key: u64,
}

/// Wait keys of the follower's and localsettings' connections; services count up from
/// [`FIRST_SERVICE_KEY`].
const FOLLOWER_KEY: u64 = 1;
const SETTINGS_KEY: u64 = 2;
const FIRST_SERVICE_KEY: u64 = 3;

/// The I/O side.
struct Edge<'c> {
    config: &'c Config,
    follower: Follower,
    settings: Settings,
    published: Option<Published>,
    poll: PollSet,
    followed: Vec<Followed>,
    scratch: Vec<crate::dbus::Event>,
    changes: Vec<SettingChange>,
    /// The wait key of the next service published.
    next_key: u64,
    /// Shutting down: only saves and the exit are still carried out.
    stopping: bool,
}

impl Edge<'_> {
    fn run(&mut self, machine: &mut FlowService, stop: &AtomicBool) -> ExitReason {
        loop {
            while let Some(command) = machine.poll_command() {
                if let ControlFlow::Break(reason) = self.execute(command, machine) {
                    return reason;
                }
            }
            if stop.load(Ordering::Relaxed) && !self.stopping {
                // Asked before the signals were blocked, or while a command ran.
                log::info!("stopping");
                self.shut(machine, ExitReason::Stopped);
                continue;
            }
            self.poll.clear();
            let w = self.follower.watch();
            let follower = self.poll.push(w.fd, FOLLOWER_KEY, w.read, w.write);
            let mut backlog = self.follower.has_backlog();
            let service = self.published.as_ref().map(|p| {
                let w = p.service.watch();
                backlog |= p.service.has_backlog();
                self.poll.push(w.fd, p.key, w.read, w.write)
            });
            let settings = match &self.settings {
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
            if let Err(e) = self.poll.wait(timeout) {
                log::error!("waiting failed: {e}");
                self.shut(machine, ExitReason::BusLost);
                continue;
            }
            let now = Instant::now();
            if self.poll.is_ready(follower) || self.follower.has_backlog() {
                self.followed.clear();
                if let Err(e) = self.follower.poll_events(&mut self.followed) {
                    log::error!("D-Bus connection lost: {e}");
                    self.shut(machine, ExitReason::BusLost);
                    continue;
                }
                for event in self.followed.drain(..) {
                    machine.handle_followed(now, event);
                }
            }
            if let (Some(index), Some(p)) = (service, self.published.as_mut())
                && (self.poll.is_ready(index) || p.service.has_backlog())
            {
                let mut on_write = |path: &str, value: &Value| machine.handle_write(now, path, value);
                if let Err(e) = p.service.process(&mut on_write) {
                    log::error!("D-Bus connection of {} lost: {e}", p.service.name());
                    self.shut(machine, ExitReason::BusLost);
                    continue;
                }
            }
            if let (Some(index), Settings::Linked(link)) = (settings, &mut self.settings)
                && (self.poll.is_ready(index) || link.client().has_backlog())
            {
                self.changes.clear();
                if let Err(e) = link.changes(&mut self.scratch, &mut self.changes) {
                    log::error!("D-Bus connection to localsettings lost: {e}");
                    self.shut(machine, ExitReason::BusLost);
                    continue;
                }
                for change in self.changes.drain(..) {
                    machine.handle_setting(now, change);
                }
            }
            machine.handle_timeout(now);
        }
    }

    fn shut(&mut self, machine: &mut FlowService, reason: ExitReason) {
        self.stopping = true;
        machine.shutdown(Instant::now(), reason);
    }

    /// A bus call failed: the connection is gone.
    fn bus_lost(&mut self, machine: &mut FlowService, what: &str, e: impl std::fmt::Display) {
        log::error!("{what}: {e}");
        self.shut(machine, ExitReason::BusLost);
    }

    /// Carry out one command; `Break` when the service must exit now.
    fn execute(&mut self, command: Command, machine: &mut FlowService) -> ControlFlow<ExitReason> {
        let now = Instant::now();
        match command {
            Command::Exit(reason) => return ControlFlow::Break(reason),
            Command::Save(state) => {
                let stamped = FlowState {
                    saved_at_unix_s: unix_now(),
                    ..state
                };
                let ok = match state_file::save(&self.config.state_path, &stamped.to_line()) {
                    Ok(()) => true,
                    Err(e) => {
                        log::error!(
                            "cannot save the state in {}: {e}; the published flows wait until a save succeeds",
                            self.config.state_path.display()
                        );
                        false
                    }
                };
                machine.handle_saved(now, state, ok);
            }
            _ if self.stopping => {}
            Command::WatchNamespace(ns) => {
                if let Err(e) = self.follower.watch_namespace(ns) {
                    self.bus_lost(machine, &format!("watching {ns}"), e);
                }
            }
            Command::Follow(service) => match self.follower.follow(&service) {
                Ok(()) => {}
                // Not a name the bus accepts (the machine checks names; this is a backstop).
                Err(e @ crate::dbus::BusError::BadName(_)) => log::warn!("not following {service}: {e}"),
                Err(e) => self.bus_lost(machine, &format!("following {service}"), e),
            },
            Command::Unfollow(service) => {
                if let Err(e) = self.follower.unfollow(&service) {
                    self.bus_lost(machine, &format!("unfollowing {service}"), e);
                }
            }
            Command::ReadItems(service) => {
                if let Err(e) = self.follower.read_items(&service) {
                    self.bus_lost(machine, &format!("reading {service}"), e);
                }
            }
            Command::Register { class, instance } => {
                let record = match self.settings_link(machine) {
                    Some(link) => match link.register(class, instance) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            // The machine logs the instance it then runs with.
                            log::warn!("localsettings: {e}; the device instance will not persist");
                            None
                        }
                    },
                    None => None,
                };
                if !self.stopping {
                    machine.handle_record(now, record);
                }
            }
            Command::StoreInstance { class, instance } => {
                let stored = match &mut self.settings {
                    Settings::Linked(link) => match link.set_class(class, instance) {
                        Ok(kept) => Some(kept),
                        Err(e) => {
                            log::warn!("localsettings: {e}");
                            None
                        }
                    },
                    _ => None,
                };
                machine.handle_instance_stored(now, stored);
            }
            Command::StoreCustomName(name) => {
                if let Settings::Linked(link) = &mut self.settings
                    && let Err(e) = link.store_custom_name(&name)
                {
                    log::warn!("custom name not saved: {e}");
                }
            }
            Command::StartService(identity) => {
                if let Some(old) = self.published.take() {
                    let name = old.service.name().to_owned();
                    log::info!("releasing {name}");
                    // Released synchronously: the same name is claimed again just below.
                    if let Err(e) = old.service.release() {
                        log::warn!("releasing {name}: {e}");
                    }
                }
                let name = identity.mode.service_name();
                let (mut tree, paths) = match layout::build_tree(&identity) {
                    Ok(t) => t,
                    Err(e) => {
                        log::error!("{name}: {e}");
                        self.shut(machine, ExitReason::BusLost);
                        return ControlFlow::Continue(());
                    }
                };
                tree.clear_changes();
                match Service::new(&self.config.bus, name, tree) {
                    Ok(service) => {
                        log::info!("published {name} (device instance {})", identity.instance);
                        let key = self.next_key;
                        self.next_key += 1;
                        self.published = Some(Published { service, paths, key });
                    }
                    Err(e) => {
                        log::error!("cannot publish {name}: {e}");
                        self.shut(machine, ExitReason::BusLost);
                    }
                }
            }
            Command::Publish(flows) => {
                if let Some(p) = self.published.as_mut() {
                    layout::publish(p.service.tree_mut(), &p.paths, &flows);
                }
                self.flush(machine);
            }
            Command::SetConnected(connected) => {
                if let Some(p) = self.published.as_mut() {
                    p.service.set(p.paths.connected, i64::from(connected));
                }
                self.flush(machine);
            }
            Command::SetCustomName(name) => {
                if let Some(p) = self.published.as_mut() {
                    p.service.set(p.paths.custom_name, name);
                }
                self.flush(machine);
            }
        }
        ControlFlow::Continue(())
    }

    /// Send what changed in the service's tree as one `ItemsChanged`.
    fn flush(&mut self, machine: &mut FlowService) {
        let Some(p) = self.published.as_mut() else { return };
        if let Err(e) = p.service.flush() {
            let name = p.service.name().to_owned();
            self.bus_lost(machine, &format!("D-Bus connection of {name}"), e);
        }
    }

    /// The localsettings link, connecting (and waiting a bounded time for localsettings)
    /// the first time.
    fn settings_link(&mut self, machine: &mut FlowService) -> Option<&mut FlowSettings> {
        if let Settings::NotAsked = self.settings {
            self.settings = match FlowSettings::connect(&self.config.bus, self.config.settings_wait) {
                Ok(Some(link)) => Settings::Linked(link),
                Ok(None) => {
                    log::warn!(
                        "com.victronenergy.settings did not appear within {:?}: the device instance will not \
                         persist",
                        self.config.settings_wait
                    );
                    Settings::Absent
                }
                Err(e) => {
                    self.bus_lost(machine, "cannot connect to D-Bus", e);
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
