//! The pzem-dbus service: meters on one line published as Venus devices.
//!
//! Start-up: open the line, probe the configured meters (exit 1 within a
//! few seconds when none answers, so serial-starter can give the port to
//! another driver), wait a bounded time for localsettings, register each
//! meter there (class and device instance), build each meter's tree and
//! only then claim its name. Then a polling thread reads the meters while
//! this thread serves D-Bus, publishes readings (one `ItemsChanged` per
//! meter poll), follows settings edits and role changes, and keeps the
//! energy totals monotonic.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::client::Client;
use crate::dbus::wait::{Waiter, Watchable};
use crate::dbus::{Bus, Event, Service, Value, WriteOutcome};
use crate::energy::{EnergyEvent, EnergyState, MonotonicEnergy};
pub use crate::line::Line;
use crate::model::{Family, Model, ModelChoice, StopBits};

use super::config::MeterSpec;
use super::energy_store;
use super::layout::{self, MeterIdentity, MeterPaths};
use super::naming::PortId;
use super::poller::{Outcome, PollFailure, PollMessage, PollTarget, Poller, poll_once};
use super::presence::{Presence, PresenceChange};
use super::role::Role;
use super::settings::{DeviceRecord, Field, PREFERRED_INSTANCE, SettingChange, SettingsLink, parse_class_and_instance};

/// Process name published in `/Mgmt/ProcessName`.
pub const PROCESS_NAME: &str = "pzem-dbus";

/// Everything the service needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// The line.
    pub line: Line,
    /// The meters on it.
    pub meters: Vec<MeterSpec>,
    /// Time between polls of the same meter.
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
}

/// Why the service stopped; the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to stop (SIGTERM/SIGINT): 0.
    Stopped = 0,
    /// No meter answered at start-up, or all went silent: 1.
    NoMeter = 1,
    /// The line went away or cannot be opened: 3.
    LineGone = 3,
    /// The D-Bus connection is lost or a name cannot be claimed: 4.
    BusLost = 4,
}

/// How often unchanged-but-moving energy state is written to flash.
const ENERGY_SAVE_EVERY: Duration = Duration::from_secs(600);

/// The model to show: the configured one, or for `auto` the generic model
/// of the family found (a generic AC one until then).
fn model_of(spec: &MeterSpec, family: Option<Family>) -> Model {
    match spec.model {
        ModelChoice::Known(m) => m,
        ModelChoice::Auto => Model::generic(family.unwrap_or(Family::Ac)),
    }
}

impl Meter {
    fn model(&self) -> Model {
        model_of(&self.spec, self.family)
    }
}

struct Published {
    service: Service,
    paths: MeterPaths,
}

struct Meter {
    spec: MeterSpec,
    device: String,
    family: Option<Family>,
    record: Option<DeviceRecord>,
    published: Option<Published>,
    presence: Presence,
    energy: MonotonicEnergy,
    energy_saved: EnergyState,
    energy_saved_at: Instant,
    last_ok: Option<Instant>,
}

enum Action {
    Role(usize, Role),
    CustomName(usize, String),
    Position(usize, i32),
}

/// The identity of the line, for names and ids.
pub fn port_id(line: &Line) -> PortId {
    match line {
        Line::Serial(path) => PortId::serial(path, super::naming::usb_serial_of(path).as_deref()),
        Line::RtuOverTcp(addr) => PortId::tcp(addr, false),
        Line::ModbusTcp(addr) => PortId::tcp(addr, true),
    }
}

/// Run until stopped; returns why it stopped.
pub fn run(config: &Config, stop: &AtomicBool) -> ExitReason {
    let where_ = config.line.place();
    let stop_bits = StopBits::for_choices(config.meters.iter().map(|m| m.model));
    let transport = match config.line.open(stop_bits) {
        Ok(t) => t,
        Err(e) => {
            log::error!("cannot open {where_}: {e}");
            return ExitReason::LineGone;
        }
    };
    let mut client = Client::new(transport);
    client.transport_mut().set_timeout(config.timeout);
    client.set_retries(0);

    // Start-up probe: who answers, and what is each `auto` meter?
    let port = port_id(&config.line);
    let deadline = Instant::now() + config.startup_budget;
    let mut meters: Vec<Meter> = Vec::new();
    let mut answered = 0;
    for spec in &config.meters {
        let mut target = PollTarget {
            address: spec.address,
            family: spec.model.family(),
        };
        let mut ok = false;
        for _ in 0..2 {
            if ok || Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                break;
            }
            match poll_once(&mut client, &mut target) {
                Ok(Outcome::Reading(_) | Outcome::Identified(_)) => ok = true,
                Ok(Outcome::Failed(why)) => log::debug!("probe at {}: {}", spec.address, describe_failure(why)),
                Err(e) => {
                    log::error!("{where_}: {e}");
                    return ExitReason::LineGone;
                }
            }
        }
        let family = target.family;
        if ok {
            answered += 1;
            log::info!(
                "{} at address {} answers on {where_}",
                model_of(spec, family),
                spec.address
            );
        } else {
            log::warn!("no answer from address {} on {where_} at start-up", spec.address);
        }
        let device = port.device_id(spec.address.get());
        let loaded = energy_store::load(&config.state_dir, &device);
        for note in &loaded.notes {
            log::warn!("{device}: energy state: {note}");
        }
        meters.push(Meter {
            spec: *spec,
            device,
            family,
            record: None,
            published: None,
            presence: Presence::new(config.failures_to_vanish),
            energy: MonotonicEnergy::new(loaded.state),
            energy_saved: loaded.state,
            energy_saved_at: Instant::now(),
            last_ok: None,
        });
    }
    if answered == 0 {
        let addrs: Vec<String> = config.meters.iter().map(|m| m.address.to_string()).collect();
        log::error!(
            "no PZEM meter answered on {where_} (addresses {}); exiting so serial-starter can try other drivers. \
             Check wiring (A/B), termination, addresses and that AC meters have mains.",
            addrs.join(", ")
        );
        return ExitReason::NoMeter;
    }

    // localsettings.
    let settings = match SettingsLink::connect(&config.bus, config.settings_wait) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            log::warn!(
                "com.victronenergy.settings did not appear within {:?}: running with the configured roles and \
                 device instances from {PREFERRED_INSTANCE} up; GUI changes will not persist",
                config.settings_wait
            );
            None
        }
        Err(e) => {
            log::error!("cannot connect to D-Bus: {e}");
            return ExitReason::BusLost;
        }
    };

    let mut ctx = Context {
        config,
        port,
        settings,
        meters,
        actions: Vec::new(),
    };
    for i in 0..ctx.meters.len() {
        if ctx.meters[i].family.is_some()
            && let Err(reason) = ctx.publish(i)
        {
            return reason;
        }
    }

    let (mut waiter, waker) = match Waiter::new() {
        Ok(w) => w,
        Err(e) => {
            log::error!("cannot set up waiting: {e}");
            return ExitReason::BusLost;
        }
    };
    let (tx, rx) = mpsc::channel();
    let targets = ctx
        .meters
        .iter()
        .map(|m| PollTarget {
            address: m.spec.address,
            family: m.family,
        })
        .collect();
    let mut poller = match Poller::spawn(client, targets, config.poll_interval, tx, waker) {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot start the polling thread: {e}");
            return ExitReason::BusLost;
        }
    };
    let reason = ctx.serve(&mut waiter, &rx, stop);
    poller.stop();
    ctx.save_energy(true);
    reason
}

struct Context<'c> {
    config: &'c Config,
    port: PortId,
    settings: Option<SettingsLink>,
    meters: Vec<Meter>,
    actions: Vec<Action>,
}

impl Context<'_> {
    fn serve(&mut self, waiter: &mut Waiter, rx: &mpsc::Receiver<PollMessage>, stop: &AtomicBool) -> ExitReason {
        let mut last_any_ok = Instant::now();
        let mut events: Vec<Event> = Vec::new();
        let mut changes: Vec<SettingChange> = Vec::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                log::info!("stopping");
                return ExitReason::Stopped;
            }
            let sources = self
                .meters
                .iter()
                .filter_map(|m| m.published.as_ref().map(|p| &p.service as &dyn Watchable))
                .chain(self.settings.as_ref().map(|s| s.client() as &dyn Watchable));
            if let Err(e) = waiter.wait(sources, Some(Duration::from_secs(1))) {
                log::error!("waiting on D-Bus failed: {e}");
                return ExitReason::BusLost;
            }
            // D-Bus calls first: they must not wait behind anything. Sources were given
            // to the wait in meter order, so the k-th published meter is source k.
            let mut source = 0;
            for i in 0..self.meters.len() {
                if self.meters[i].published.is_none() {
                    continue;
                }
                source += 1;
                if !waiter.is_ready(source - 1) {
                    continue;
                }
                let (family, role) = match (&self.meters[i].family, &self.meters[i].record) {
                    (Some(f), Some(r)) => (*f, r.role),
                    _ => continue,
                };
                let Some(published) = self.meters[i].published.as_mut() else {
                    continue;
                };
                let actions = &mut self.actions;
                let mut handler = |path: &str, value: &Value| on_write(i, family, role, path, value, actions);
                if let Err(e) = published.service.process(&mut handler) {
                    log::error!("D-Bus connection of {} lost: {e}", published.service.name());
                    return ExitReason::BusLost;
                }
            }
            if let Some(link) = self.settings.as_mut()
                && waiter.is_ready(source)
            {
                changes.clear();
                if let Err(e) = link.changes(&mut events, &mut changes) {
                    log::error!("D-Bus connection to localsettings lost: {e}");
                    return ExitReason::BusLost;
                }
            }
            for change in changes.drain(..) {
                if let Err(r) = self.apply_setting_change(change) {
                    return r;
                }
            }
            for action in std::mem::take(&mut self.actions) {
                if let Err(r) = self.apply_action(action) {
                    return r;
                }
            }
            // Then the readings.
            for message in rx.try_iter() {
                match message {
                    PollMessage::LineGone(why) => {
                        log::error!("{}: {why}; exiting", self.config.line.place());
                        return ExitReason::LineGone;
                    }
                    PollMessage::Polled { meter, outcome } => {
                        if matches!(outcome, Outcome::Reading(_) | Outcome::Identified(_)) {
                            last_any_ok = Instant::now();
                        }
                        if let Err(r) = self.on_polled(meter, outcome) {
                            return r;
                        }
                    }
                }
            }
            for m in &mut self.meters {
                if let Some(p) = m.published.as_mut()
                    && let Err(e) = p.service.flush()
                {
                    log::error!("D-Bus connection of {} lost: {e}", p.service.name());
                    return ExitReason::BusLost;
                }
            }
            self.save_energy(false);
            if let Some(limit) = self.config.silent_exit
                && last_any_ok.elapsed() >= limit
            {
                log::error!(
                    "no meter on {} has answered for {:?}; exiting so serial-starter can re-probe the port",
                    self.config.line.place(),
                    limit
                );
                return ExitReason::NoMeter;
            }
        }
    }

    fn on_polled(&mut self, i: usize, outcome: Outcome) -> Result<(), ExitReason> {
        let Some(m) = self.meters.get_mut(i) else { return Ok(()) };
        match outcome {
            Outcome::Identified(family) => {
                log::info!("{} at address {} identified", Model::generic(family), m.spec.address);
                m.family = Some(family);
                self.publish(i)?;
            }
            Outcome::Reading(reading) => {
                if m.presence.ok() == PresenceChange::Appeared {
                    log::info!("{} at address {} answers", m.model(), m.spec.address);
                }
                let now = Instant::now();
                let max_step = m.last_ok.zip(m.family).map(|(t, f)| {
                    (f64::from(f.max_power_w()) * now.duration_since(t).as_secs_f64() / 3600.0).ceil() as u64 + 2
                });
                m.last_ok = Some(now);
                let (total_wh, event) = m.energy.update(reading.energy_wh(), max_step);
                if let Some(event) = event {
                    log_energy_event(&m.device, event);
                    if matches!(event, EnergyEvent::CounterDropped { .. }) {
                        save_state(self.config, m);
                    }
                }
                if let Some(p) = m.published.as_mut() {
                    layout::publish(p.service.tree_mut(), &p.paths, &reading, total_wh as f64 / 1000.0);
                }
            }
            Outcome::Failed(why) => {
                if m.presence.failed() == PresenceChange::Vanished {
                    log::warn!(
                        "{} at address {} stopped answering ({}); its values are invalid until it is back",
                        m.model(),
                        m.spec.address,
                        describe_failure(why)
                    );
                    if let Some(p) = m.published.as_mut() {
                        layout::invalidate(p.service.tree_mut(), &p.paths);
                    }
                }
            }
        }
        Ok(())
    }

    /// Register meter `i` in localsettings (once) and publish its service.
    fn publish(&mut self, i: usize) -> Result<(), ExitReason> {
        let Some(family) = self.meters[i].family else {
            return Ok(());
        };
        if self.meters[i].record.is_none() {
            let default_role = self.meters[i].spec.role_for(family);
            let allowed = Role::allowed(family);
            let device = self.meters[i].device.clone();
            let record = match self
                .settings
                .as_mut()
                .map(|s| s.register(&device, default_role, allowed))
            {
                Some(Ok(r)) => {
                    if self.meters[i].spec.role.is_some_and(|r0| r0 != r.role) {
                        log::info!(
                            "{device}: role {} from localsettings (changed in the GUI) overrides the configured {default_role}",
                            r.role
                        );
                    }
                    r
                }
                Some(Err(e)) => {
                    log::warn!("{device}: {e}; using the configured role");
                    self.fallback_record(i, default_role)
                }
                None => self.fallback_record(i, default_role),
            };
            self.meters[i].record = Some(record);
        }
        self.register_service(i)
    }

    fn fallback_record(&self, i: usize, role: Role) -> DeviceRecord {
        DeviceRecord {
            role,
            instance: self.free_instance(i, role),
            custom_name: String::new(),
            position: 0,
        }
    }

    /// The lowest instance from 40 up not used by another of our meters in `role`.
    fn free_instance(&self, i: usize, role: Role) -> i32 {
        let taken = |n: i32| {
            self.meters
                .iter()
                .enumerate()
                .any(|(j, m)| j != i && m.record.as_ref().is_some_and(|r| r.role == role && r.instance == n))
        };
        (PREFERRED_INSTANCE..)
            .find(|n| !taken(*n))
            .unwrap_or(PREFERRED_INSTANCE)
    }

    /// (Re-)create meter `i`'s service from its record: tree first, name last.
    fn register_service(&mut self, i: usize) -> Result<(), ExitReason> {
        let m = &mut self.meters[i];
        let Some(record) = m.record.clone() else { return Ok(()) };
        if let Some(old) = m.published.take() {
            log::info!("releasing {}", old.service.name());
            // Released synchronously: the same name may be claimed again just below (an
            // instance change keeps the class), and a dropped connection frees its name
            // only when the daemon notices.
            let name = old.service.name().to_owned();
            if let Err(e) = old.service.release() {
                log::warn!("releasing {name}: {e}");
            }
        }
        let identity = MeterIdentity {
            model: m.model(),
            role: record.role,
            instance: record.instance,
            custom_name: record.custom_name.clone(),
            position: record.position,
            connection: self.port.connection(m.spec.address.get()),
            serial: m.device.clone(),
            process_name: PROCESS_NAME,
            process_version: env!("CARGO_PKG_VERSION"),
        };
        let (mut tree, paths) = match layout::build_tree(&identity) {
            Ok(t) => t,
            Err(e) => {
                log::error!("{}: {e}", m.device);
                return Err(ExitReason::BusLost);
            }
        };
        // A meter that is present starts with its last known state only
        // after its next reading; until then everything is invalid.
        tree.clear_changes();
        let name = self.port.service_name(record.role.class(), m.spec.address.get());
        match Service::new(&self.config.bus, &name, tree) {
            Ok(service) => {
                log::info!("published {name} (device instance {})", record.instance);
                m.presence = Presence::new(self.config.failures_to_vanish);
                m.published = Some(Published { service, paths });
                Ok(())
            }
            Err(e) => {
                log::error!("cannot publish {name}: {e}");
                Err(ExitReason::BusLost)
            }
        }
    }

    fn meter_by_device(&self, device: &str) -> Option<usize> {
        self.meters.iter().position(|m| m.device == device)
    }

    fn apply_setting_change(&mut self, change: SettingChange) -> Result<(), ExitReason> {
        let Some(i) = self.meter_by_device(&change.device) else {
            return Ok(());
        };
        let Some(family) = self.meters[i].family else {
            return Ok(());
        };
        let Some(record) = self.meters[i].record.as_mut() else {
            return Ok(());
        };
        match change.field {
            Field::ClassAndVrmInstance => {
                let parsed = change
                    .value
                    .as_str()
                    .and_then(parse_class_and_instance)
                    .and_then(|(c, n)| Some((c.parse::<Role>().ok()?, n)));
                match parsed {
                    Some((role, n)) if role.family() == family => {
                        if (role, n) != (record.role, record.instance) {
                            log::info!(
                                "{}: localsettings now says {role}:{n} (was {}:{}); re-registering",
                                change.device,
                                record.role,
                                record.instance
                            );
                            record.role = role;
                            record.instance = n;
                            return self.register_service(i);
                        }
                    }
                    _ => log::warn!("{}: ignoring ClassAndVrmInstance {:?}", change.device, change.value),
                }
            }
            Field::CustomName => {
                let name = change.value.as_str().unwrap_or("").to_string();
                if name != record.custom_name {
                    record.custom_name = name.clone();
                    self.set_path(i, "/CustomName", Value::Str(name));
                }
            }
            Field::Position => {
                if let Some(p) = change.value.as_i64()
                    && p as i32 != record.position
                {
                    record.position = p as i32;
                    self.set_path(i, "/Position", Value::Int(p));
                }
            }
        }
        Ok(())
    }

    fn set_path(&mut self, i: usize, path: &str, value: Value) {
        if let Some(p) = self.meters[i].published.as_mut() {
            let _ = p.service.tree_mut().set_path(path, value);
        }
    }

    fn apply_action(&mut self, action: Action) -> Result<(), ExitReason> {
        match action {
            Action::CustomName(i, name) => {
                let device = self.meters[i].device.clone();
                if let Some(r) = self.meters[i].record.as_mut() {
                    r.custom_name = name.clone();
                }
                if let Some(link) = self.settings.as_mut()
                    && let Err(e) = link.store(&device, Field::CustomName, &Value::Str(name))
                {
                    log::warn!("{device}: custom name not saved: {e}");
                }
            }
            Action::Position(i, position) => {
                let device = self.meters[i].device.clone();
                if let Some(r) = self.meters[i].record.as_mut() {
                    r.position = position;
                }
                if let Some(link) = self.settings.as_mut()
                    && let Err(e) = link.store(&device, Field::Position, &Value::Int(i64::from(position)))
                {
                    log::warn!("{device}: position not saved: {e}");
                }
            }
            Action::Role(i, role) => {
                let device = self.meters[i].device.clone();
                let Some(record) = self.meters[i].record.clone() else {
                    return Ok(());
                };
                if record.role == role {
                    return Ok(());
                }
                let (new_role, instance) = match self.settings.as_mut() {
                    Some(link) => match link.set_class(&device, role, record.instance) {
                        Ok(v) => v,
                        Err(e) => {
                            log::warn!("{device}: role change to {role} not stored ({e}); applying it anyway");
                            (role, record.instance)
                        }
                    },
                    None => (role, self.free_instance(i, role)),
                };
                log::info!(
                    "{device}: role {} -> {new_role} (device instance {instance})",
                    record.role
                );
                if let Some(r) = self.meters[i].record.as_mut() {
                    r.role = new_role;
                    r.instance = instance;
                }
                return self.register_service(i);
            }
        }
        Ok(())
    }

    fn save_energy(&mut self, force: bool) {
        for m in &mut self.meters {
            if m.energy.state() != m.energy_saved && (force || m.energy_saved_at.elapsed() >= ENERGY_SAVE_EVERY) {
                save_state(self.config, m);
            }
        }
    }
}

fn save_state(config: &Config, m: &mut Meter) {
    let state = m.energy.state();
    match energy_store::save(&config.state_dir, &m.device, &state) {
        Ok(()) => {
            m.energy_saved = state;
            m.energy_saved_at = Instant::now();
        }
        Err(e) => log::warn!(
            "{}: cannot save energy state in {}: {e}",
            m.device,
            config.state_dir.display()
        ),
    }
}

/// Decide on a `SetValue` from the GUI or MQTT; queue what must be stored.
fn on_write(
    i: usize,
    family: Family,
    role: Role,
    path: &str,
    value: &Value,
    actions: &mut Vec<Action>,
) -> WriteOutcome {
    match (path, value) {
        ("/Role", Value::Str(text)) => match text.parse::<Role>() {
            Ok(new) if Role::allowed(family).contains(&new) => {
                actions.push(Action::Role(i, new));
                WriteOutcome::Accept
            }
            _ => WriteOutcome::Reject(2),
        },
        ("/CustomName", Value::Str(name)) if name.len() <= 64 && !name.chars().any(char::is_control) => {
            actions.push(Action::CustomName(i, name.clone()));
            WriteOutcome::Accept
        }
        ("/Position", Value::Int(p)) => match role.position() {
            Some(kind) if (0..=i64::from(kind.max())).contains(p) => {
                actions.push(Action::Position(i, *p as i32));
                WriteOutcome::Accept
            }
            _ => WriteOutcome::Reject(2),
        },
        _ => WriteOutcome::Reject(2),
    }
}

fn describe_failure(why: PollFailure) -> String {
    match why {
        PollFailure::NoAnswer => "no answer".into(),
        PollFailure::Garbled => "garbled replies".into(),
        PollFailure::Refused(code) => format!("refused: {code}"),
        PollFailure::Other => "error".into(),
    }
}

fn log_energy_event(device: &str, event: EnergyEvent) {
    match event {
        EnergyEvent::CounterDropped { from, to } => log::warn!(
            "{device}: energy counter dropped from {from} Wh to {to} Wh (reset, replacement or wrap); \
             the published total carries on from where it was"
        ),
        EnergyEvent::JumpHeld { from, to } => {
            log::warn!("{device}: implausible energy jump {from} -> {to} Wh held back until confirmed")
        }
        EnergyEvent::JumpConfirmed { from, to } => {
            log::info!("{device}: energy jump {from} -> {to} Wh confirmed by the next reading")
        }
    }
}

/// The meters to use when none are configured: the factory address 1,
/// probed as AC then DC, with the family's default role.
pub fn default_meters() -> Vec<MeterSpec> {
    vec![MeterSpec {
        address: Address::FACTORY_DEFAULT,
        model: ModelChoice::Auto,
        role: None,
    }]
}
