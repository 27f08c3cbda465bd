//! pzem-energy's logic as a sans-IO state machine.
//!
//! [`FlowService`] is fed what happened on the bus, each input with the time it happened:
//! the followed services' comings, goings and values ([`FlowService::handle_followed`]),
//! the answers to its own requests ([`FlowService::handle_record`],
//! [`FlowService::handle_instance_stored`], [`FlowService::handle_saved`]), localsettings
//! changes ([`FlowService::handle_setting`]), `SetValue`s on its own service
//! ([`FlowService::handle_write`]) and the passing of time ([`FlowService::handle_timeout`]).
//! It answers with [`Command`]s ([`FlowService::poll_command`]) and says when it next needs
//! waking ([`FlowService::deadline`]). It reads no clock and does no I/O; the loop in
//! [`super::service_loop`] does.
//!
//! What it decides:
//! - **inputs**: which services to follow and read (the two AC meters' `/Ac/Energy/Forward`,
//!   the battery monitor's `/History/DischargedEnergy`, the battery service named by
//!   `com.victronenergy.system /Dc/Battery/BatteryService` when none is configured), when a
//!   read has failed or taken too long (absent, read again later), and what each value
//!   means for the [`FlowTracker`];
//! - **publishing**: the flows published are always the flows of the last state on disk,
//!   so a crash never makes a published counter step back (the tracker re-books what was
//!   booked after the last save); a save is due within [`FlowConfig::save_within`] of any
//!   change. `/Connected` is 1 while the AC-output meter and the battery monitor have
//!   values (the AC-input meter is silent in a grid outage, which is normal);
//! - **identity**: the device instance from localsettings (`vebus:<n>` or
//!   `pzem_energy:<n>`), and in vebus mode kept above every real vebus service's instance,
//!   re-registering when a real one appears above it or an edit puts it below (§4.4).

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::dbus::{Followed, SET_REJECTED, Value, WriteOutcome};
use crate::energy_flow::{FlowConfig, FlowState, FlowTracker, Flows, Output, Source};
use crate::venus::naming::valid_custom_name;
use crate::venus::settings::parse_class_text;

/// `/Mgmt/ProcessName`.
pub const PROCESS_NAME: &str = "pzem-energy";
/// The settings id: `/Settings/Devices/pzem_energy/…`.
pub const SETTINGS_ID: &str = "pzem_energy";
/// The namespace of vebus services.
pub const VEBUS_NAMESPACE: &str = "com.victronenergy.vebus";
/// The system service, whose `/Dc/Battery/BatteryService` names the battery.
pub const SYSTEM_SERVICE: &str = "com.victronenergy.system";
/// The path of the system service that names the battery monitor (§4.3, §8).
pub const BATTERY_SERVICE_PATH: &str = "/Dc/Battery/BatteryService";
/// `/Interfaces/Mk2/Connection` of the emulated vebus service: a `/dev/ttyUSB…`-style
/// text, so systemcalc does not count it as on-board (§4.4); it names no real device.
pub const MK2_CONNECTION: &str = "/dev/ttyUSB-pzem-energy";
/// The instance asked for in vebus mode when no real vebus service is known: above the
/// instances the GX gives its own VE.Bus ports, so that a Multi appearing later rarely
/// forces a re-registration.
pub const DEFAULT_VEBUS_INSTANCE: i32 = 300;
/// The instance asked for in `own` mode.
pub const DEFAULT_OWN_INSTANCE: i32 = 0;
/// How often a device-instance correction is written before the service goes on with the
/// instance it needs, unstored.
const STORE_TRIES: u8 = 3;

/// Why pzem-energy stopped; the process exit code. The one home of the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to stop (SIGTERM/SIGINT); the state was saved.
    Stopped = 0,
    /// Bad flags or configuration.
    Usage = 2,
    /// The D-Bus connection is lost or the service name is taken.
    BusLost = 4,
}

impl ExitReason {
    /// Every reason, in code order.
    pub const ALL: [ExitReason; 3] = [ExitReason::Stopped, ExitReason::Usage, ExitReason::BusLost];

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, for `--help` and the docs.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitReason::Stopped => "stopped by a signal (the state was saved)",
            ExitReason::Usage => "usage or config error",
            ExitReason::BusLost => "the D-Bus connection failed or the service name is taken",
        }
    }
}

/// Under which name and class the flows are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishMode {
    /// `com.victronenergy.vebus.pzem_energy`: where the GX and VRM look for the counters,
    /// as a second vebus device kept out of the real Multi's way.
    Vebus,
    /// `com.victronenergy.pzem_energy.flows`: a class no Victron consumer knows, for owners
    /// who want no second vebus device (read it over MQTT, Node-RED, `dbus-spy`).
    Own,
}

impl PublishMode {
    /// The class: `vebus` or `pzem_energy`.
    pub fn class(self) -> &'static str {
        match self {
            PublishMode::Vebus => "vebus",
            PublishMode::Own => "pzem_energy",
        }
    }

    /// The service name.
    pub fn service_name(self) -> &'static str {
        match self {
            PublishMode::Vebus => "com.victronenergy.vebus.pzem_energy",
            PublishMode::Own => "com.victronenergy.pzem_energy.flows",
        }
    }

    /// The instance asked for when nothing else decides.
    fn default_instance(self) -> i32 {
        match self {
            PublishMode::Vebus => DEFAULT_VEBUS_INSTANCE,
            PublishMode::Own => DEFAULT_OWN_INSTANCE,
        }
    }
}

impl std::str::FromStr for PublishMode {
    type Err = String;

    fn from_str(s: &str) -> Result<PublishMode, String> {
        match s {
            "vebus" => Ok(PublishMode::Vebus),
            "own" => Ok(PublishMode::Own),
            _ => Err(format!("'{s}' is not a publish mode; use vebus or own")),
        }
    }
}

/// The path a source's counter is read from.
pub fn counter_path(source: Source) -> &'static str {
    match source {
        Source::AcIn | Source::AcOut => "/Ac/Energy/Forward",
        Source::Battery => "/History/DischargedEnergy",
    }
}

/// How the machine is set up.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    /// The AC-input meter's service.
    pub ac_in: String,
    /// The AC-output meter's service.
    pub ac_out: String,
    /// The battery monitor's service; `None`: the one the system service names.
    pub battery: Option<String>,
    /// How the flows are published.
    pub publish: PublishMode,
    /// The flow tracker's settings.
    pub flow: FlowConfig,
    /// How long to wait at start-up for the vebus services' instances before registering
    /// anyway.
    pub discovery_wait: Duration,
    /// How long a read may take before it counts as failed; a failed read of a service
    /// that is there is tried again this long after.
    pub read_timeout: Duration,
}

/// Everything the published service shows besides the flows' later changes.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    /// Name and class.
    pub mode: PublishMode,
    /// `/DeviceInstance`.
    pub instance: i32,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/Mgmt/Connection`: where the flows come from.
    pub connection: String,
    /// The flows to start with (the last saved).
    pub flows: Flows,
    /// `/Connected`.
    pub connected: bool,
}

/// What localsettings holds for the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The class of `ClassAndVrmInstance`.
    pub class: String,
    /// The instance of `ClassAndVrmInstance`.
    pub instance: i32,
    /// `CustomName`.
    pub custom_name: String,
}

/// A change of the service's settings made in localsettings (the GUI's VRM instances page,
/// another client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingChange {
    /// `ClassAndVrmInstance` now holds this text.
    ClassAndVrmInstance(String),
    /// `CustomName` now holds this text.
    CustomName(String),
}

/// What the loop around the machine must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Report the comings and goings of every name in this namespace.
    WatchNamespace(&'static str),
    /// Follow this service (its signals, and whether it is there).
    Follow(String),
    /// Stop following this service.
    Unfollow(String),
    /// Ask this service for all its items, without waiting for the answer.
    ReadItems(String),
    /// Look up or create the service's record in localsettings, asking for
    /// `class:instance`; answer with [`FlowService::handle_record`].
    Register {
        /// The class.
        class: &'static str,
        /// The instance to ask for.
        instance: i32,
    },
    /// Write `class:instance` to the record and read back what localsettings kept; answer
    /// with [`FlowService::handle_instance_stored`].
    StoreInstance {
        /// The class.
        class: &'static str,
        /// The instance.
        instance: i32,
    },
    /// Store the custom name in localsettings.
    StoreCustomName(String),
    /// Publish the service with this identity, releasing the one published before: the
    /// tree is complete before the name is claimed.
    StartService(Identity),
    /// Set the three flows in the service (one `ItemsChanged`).
    Publish(Flows),
    /// Set `/Connected`.
    SetConnected(bool),
    /// Set `/CustomName` (a change made in localsettings).
    SetCustomName(String),
    /// Save this state; answer with [`FlowService::handle_saved`].
    Save(FlowState),
    /// Stop: every command before this one has been issued.
    Exit(ExitReason),
}

/// One of the three inputs as the bus shows it.
#[derive(Clone, Debug, Default)]
struct Input {
    /// Its service; `None` while the system names no battery.
    service: Option<String>,
    /// Whether the service is on the bus.
    present: bool,
    /// Whether the missing counter path was reported.
    warned_missing: bool,
}

/// A real vebus service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Vebus {
    instance: Option<i32>,
    /// Whether its items were read (or the read failed): it no longer holds up the
    /// start-up registration.
    settled: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the vebus services' instances, until then at the latest.
    Discovering { until: Instant },
    /// `Register` issued, waiting for the record.
    Registering,
    /// A `StoreInstance` is out (the service may or may not be published yet).
    Storing { tries: u8 },
    /// Published (or about to be).
    Running,
    /// Exit issued.
    Done,
}

/// The published service's identity, once decided.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Registration {
    instance: i32,
    custom_name: String,
}

/// pzem-energy's state machine (see the module documentation).
pub struct FlowService {
    config: ServiceConfig,
    tracker: FlowTracker,
    inputs: [Input; 3],
    /// Real vebus services by name (vebus mode).
    vebus: BTreeMap<String, Vebus>,
    listed: bool,
    /// Whether the system service is on the bus (automatic battery).
    /// Reads in flight and when they time out.
    reads: BTreeMap<String, Instant>,
    /// Services to read again, and when.
    retries: BTreeMap<String, Instant>,
    phase: Phase,
    registration: Option<Registration>,
    started: bool,
    /// The flows of the last state on disk: what is published.
    published: Flows,
    connected: bool,
    commands: VecDeque<Command>,
}

impl FlowService {
    /// A machine for `config`, continuing from `state` (loaded from disk) at `now`.
    /// `downtime`: how long ago the state was saved, when the wall clock can tell.
    /// `save_at_once`: the state came from a fallback copy (the main file was damaged or
    /// missing), so it is written back at once.
    pub fn new(
        config: ServiceConfig,
        state: FlowState,
        now: Instant,
        downtime: Option<Duration>,
        save_at_once: bool,
    ) -> FlowService {
        let mut tracker = FlowTracker::new(config.flow, state);
        if let Some(d) = downtime {
            tracker.set_downtime(now, d);
        }
        let input = |service: Option<&String>| Input {
            service: service.cloned(),
            ..Input::default()
        };
        let inputs = [
            input(Some(&config.ac_in)),
            input(Some(&config.ac_out)),
            input(config.battery.as_ref()),
        ];
        let mut machine = FlowService {
            tracker,
            inputs,
            vebus: BTreeMap::new(),
            listed: false,
            reads: BTreeMap::new(),
            retries: BTreeMap::new(),
            phase: Phase::Discovering {
                until: now + config.discovery_wait,
            },
            registration: None,
            started: false,
            published: state.flows,
            connected: false,
            commands: VecDeque::with_capacity(32),
            config,
        };
        if machine.config.publish == PublishMode::Vebus {
            machine.commands.push_back(Command::WatchNamespace(VEBUS_NAMESPACE));
        }
        let mut follow: Vec<String> = vec![machine.config.ac_in.clone(), machine.config.ac_out.clone()];
        match &machine.config.battery {
            Some(b) => follow.push(b.clone()),
            None => {
                log::info!("battery monitor: the one {SYSTEM_SERVICE} names in {BATTERY_SERVICE_PATH}");
                follow.push(SYSTEM_SERVICE.to_owned());
            }
        }
        for s in follow {
            machine.commands.push_back(Command::Follow(s));
        }
        if save_at_once {
            machine.commands.push_back(Command::Save(machine.tracker.state()));
        }
        if machine.config.publish == PublishMode::Own {
            machine.register(now);
        }
        machine
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the machine next needs [`FlowService::handle_timeout`].
    pub fn deadline(&self) -> Option<Instant> {
        let discovery = match self.phase {
            Phase::Discovering { until } => Some(until),
            _ => None,
        };
        [
            self.tracker.poll_timeout(),
            discovery,
            self.reads.values().min().copied(),
            self.retries.values().min().copied(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The flows published now (the last saved).
    pub fn published(&self) -> Flows {
        self.published
    }

    /// The device instance of the published service, once decided.
    pub fn instance(&self) -> Option<i32> {
        self.registration.as_ref().map(|r| r.instance)
    }

    /// The service the battery is read from now.
    pub fn battery_service(&self) -> Option<&str> {
        self.inputs[Source::Battery.index()].service.as_deref()
    }

    fn our_name(&self) -> &'static str {
        self.config.publish.service_name()
    }

    /// The sources whose service is `service`.
    fn sources_of(&self, service: &str) -> Vec<Source> {
        Source::ALL
            .into_iter()
            .filter(|s| self.inputs[s.index()].service.as_deref() == Some(service))
            .collect()
    }

    fn is_system(&self, service: &str) -> bool {
        self.config.battery.is_none() && service == SYSTEM_SERVICE
    }

    fn is_real_vebus(&self, service: &str) -> bool {
        self.config.publish == PublishMode::Vebus
            && service != self.our_name()
            && service
                .strip_prefix(VEBUS_NAMESPACE)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    /// Whether a read of `service` still matters.
    fn wanted(&self, service: &str) -> bool {
        !self.sources_of(service).is_empty() || self.is_system(service) || self.vebus.contains_key(service)
    }

    fn read(&mut self, now: Instant, service: &str) {
        self.retries.remove(service);
        self.reads.insert(service.to_owned(), now + self.config.read_timeout);
        self.commands.push_back(Command::ReadItems(service.to_owned()));
    }

    /// Something happened to a followed service.
    pub fn handle_followed(&mut self, now: Instant, event: Followed) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        match event {
            Followed::Appeared { service } => self.on_appeared(now, &service),
            Followed::Vanished { service } => self.on_vanished(now, &service),
            Followed::Items {
                service,
                items,
                complete,
            } => self.on_items(now, &service, &items, complete),
            Followed::ReadFailed { service, error } => self.on_read_failed(now, &service, &error),
            Followed::Listed { .. } => {
                self.listed = true;
                self.maybe_register(now);
            }
        }
        self.after_input(now);
    }

    fn on_appeared(&mut self, now: Instant, service: &str) {
        if service == self.our_name() {
            return;
        }
        let mut read = false;
        // Read when it appears, not followed: a device instance changes only by
        // re-registering (§9), which the namespace watch reports, and the Multi's own
        // frequent signals are none of our business.
        if self.is_real_vebus(service) && !self.vebus.contains_key(service) {
            log::info!("{service}: a VE.Bus device; reading its device instance");
            self.vebus.insert(service.to_owned(), Vebus::default());
            read = true;
        }
        for source in self.sources_of(service) {
            self.inputs[source.index()].present = true;
            log::info!("{source}: {service} is on the bus");
            read = true;
        }
        if self.is_system(service) {
            read = true;
        }
        if read {
            self.read(now, service);
        }
    }

    fn on_vanished(&mut self, now: Instant, service: &str) {
        self.reads.remove(service);
        self.retries.remove(service);
        if self.vebus.remove(service).is_some() {
            log::info!("{service}: the VE.Bus device left the bus");
            self.maybe_register(now);
        }
        for source in self.sources_of(service) {
            self.inputs[source.index()].present = false;
            log::info!("{source}: {service} left the bus");
            self.tracker.reading(now, source, None);
        }
        if self.is_system(service) {
            log::info!(
                "{SYSTEM_SERVICE} left the bus; the battery stays {:?}",
                self.battery_service()
            );
        }
    }

    fn on_items(&mut self, now: Instant, service: &str, items: &[(String, Value)], complete: bool) {
        if complete {
            self.reads.remove(service);
        }
        let find = |path: &str| items.iter().find(|(p, _)| p == path).map(|(_, v)| v);
        for source in self.sources_of(service) {
            let path = counter_path(source);
            let value = match find(path) {
                Some(v) => v,
                None if complete => {
                    let input = &mut self.inputs[source.index()];
                    if !input.warned_missing {
                        input.warned_missing = true;
                        log::warn!("{source}: {service} publishes no {path}; it counts as absent");
                    }
                    self.tracker.reading(now, source, None);
                    continue;
                }
                None => continue,
            };
            let kwh = match value {
                Value::Double(x) => Some(*x),
                Value::Int(i) => Some(*i as f64),
                Value::Invalid => None,
                other => {
                    log::warn!("{source}: {service} {path} is {other:?}, not a number; it counts as absent");
                    None
                }
            };
            self.inputs[source.index()].warned_missing = false;
            self.tracker.reading(now, source, kwh);
        }
        if self.is_system(service) {
            match find(BATTERY_SERVICE_PATH) {
                Some(v) => {
                    let named = v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
                    self.set_battery_service(now, named);
                }
                None if complete => self.set_battery_service(now, None),
                None => {}
            }
        }
        if let Some(vebus) = self.vebus.get_mut(service) {
            let mut changed = false;
            if let Some(v) = find("/DeviceInstance") {
                let instance = v.as_i64().and_then(|i| i32::try_from(i).ok());
                changed |= vebus.instance != instance;
                vebus.instance = instance;
            } else if complete {
                changed |= vebus.instance.is_some();
                vebus.instance = None;
            }
            let mk2 = find("/Interfaces/Mk2/Connection").and_then(|v| v.as_str());
            if complete {
                vebus.settled = true;
                changed = true;
            }
            if changed {
                log::info!(
                    "{service}: device instance {}, MK2 connection {}",
                    vebus.instance.map_or_else(|| "none".to_string(), |i| i.to_string()),
                    mk2.unwrap_or("unknown or none (none counts as on-board)")
                );
                self.vebus_changed(now);
            }
        }
    }

    fn on_read_failed(&mut self, now: Instant, service: &str, error: &str) {
        self.reads.remove(service);
        if !self.wanted(service) {
            return;
        }
        log::warn!(
            "{service}: read failed ({error}); trying again in {:?}",
            self.config.read_timeout
        );
        for source in self.sources_of(service) {
            self.tracker.reading(now, source, None);
        }
        if let Some(v) = self.vebus.get_mut(service) {
            v.settled = true;
            self.maybe_register(now);
        }
        self.retries.insert(service.to_owned(), now + self.config.read_timeout);
    }

    /// The system names `named` as the battery service.
    fn set_battery_service(&mut self, now: Instant, named: Option<String>) {
        let named = match named {
            Some(n) if super::options::check_service(&n).is_err() => {
                log::warn!(
                    "{SYSTEM_SERVICE} names {n:?} as the battery, not a service name; the battery counts as absent"
                );
                None
            }
            Some(n) if n == self.our_name() => {
                log::error!(
                    "{SYSTEM_SERVICE} takes OUR service {n} as the battery; ignoring it (is the device instance \
                     above the real Multi's?)"
                );
                None
            }
            n => n,
        };
        let battery = Source::Battery.index();
        if self.inputs[battery].service == named {
            return;
        }
        let old = self.inputs[battery].service.take();
        if let Some(old) = &old {
            if self.sources_of(old).is_empty() && old != SYSTEM_SERVICE {
                self.commands.push_back(Command::Unfollow(old.clone()));
                self.reads.remove(old);
                self.retries.remove(old);
            }
            // Another device: its counter has nothing to do with the old one's.
            self.tracker.forget(now, Source::Battery);
        }
        self.inputs[battery] = Input {
            service: named.clone(),
            ..Input::default()
        };
        match &named {
            Some(n) => {
                log::info!("battery monitor: {n} (named by {SYSTEM_SERVICE})");
                if let Some(other) = self.sources_of(n).into_iter().find(|s| *s != Source::Battery) {
                    // Followed already for another input: no new appearance will come.
                    self.inputs[battery].present = self.inputs[other.index()].present;
                    self.read(now, n);
                } else {
                    self.commands.push_back(Command::Follow(n.clone()));
                }
            }
            None => {
                log::warn!("battery monitor: {SYSTEM_SERVICE} names none; the battery counts as absent");
                self.tracker.reading(now, Source::Battery, None);
            }
        }
    }

    /// The highest instance of a real vebus service.
    fn max_real_instance(&self) -> Option<i32> {
        self.vebus.values().filter_map(|v| v.instance).max()
    }

    /// The instance to ask for, the one rule (§4.4): in vebus mode the highest real vebus
    /// service's instance + 1, or [`DEFAULT_VEBUS_INSTANCE`] when none is known; in `own`
    /// mode [`DEFAULT_OWN_INSTANCE`].
    fn instance_to_ask(&self) -> i32 {
        match (self.config.publish, self.max_real_instance()) {
            (PublishMode::Vebus, Some(max)) => max.saturating_add(1),
            (mode, _) => mode.default_instance(),
        }
    }

    /// `instance` if it may stay, else [`FlowService::instance_to_ask`].
    fn keep_or_ask(&self, instance: i32) -> i32 {
        if self.too_low(instance) {
            self.instance_to_ask()
        } else {
            instance
        }
    }

    /// Whether `instance` is too low for vebus mode.
    fn too_low(&self, instance: i32) -> bool {
        self.config.publish == PublishMode::Vebus && self.max_real_instance().is_some_and(|max| instance <= max)
    }

    /// Whether every real vebus service's instance is known (the namespace was listed and
    /// each one read, or its read failed).
    fn vebus_known(&self) -> bool {
        self.listed && self.vebus.values().all(|v| v.settled)
    }

    fn maybe_register(&mut self, now: Instant) {
        let Phase::Discovering { until } = self.phase else {
            return;
        };
        if self.config.publish == PublishMode::Own || self.vebus_known() || now >= until {
            self.register(now);
        }
    }

    fn register(&mut self, now: Instant) {
        if let Phase::Discovering { until } = self.phase
            && now >= until
            && self.config.publish == PublishMode::Vebus
            && !self.vebus_known()
        {
            log::warn!("registering before every VE.Bus device's instance is known; will move up if needed");
        }
        self.phase = Phase::Registering;
        self.commands.push_back(Command::Register {
            class: self.config.publish.class(),
            instance: self.instance_to_ask(),
        });
    }

    /// A real vebus service's instance changed, appeared or left.
    fn vebus_changed(&mut self, now: Instant) {
        self.maybe_register(now);
        let Some(current) = self.instance() else { return };
        if self.phase == Phase::Running && self.too_low(current) {
            let want = self.instance_to_ask();
            log::warn!(
                "a VE.Bus device has instance {} at or above ours ({current}): moving to {want} so that systemcalc \
                 keeps the real Multi as the battery service",
                self.max_real_instance().unwrap_or(0)
            );
            self.store_instance(want, 0);
        }
    }

    fn store_instance(&mut self, instance: i32, tries: u8) {
        self.phase = Phase::Storing { tries: tries + 1 };
        self.commands.push_back(Command::StoreInstance {
            class: self.config.publish.class(),
            instance,
        });
    }

    /// The answer to [`Command::Register`]: the record in localsettings, or `None` without
    /// localsettings (the instance asked for is used, and nothing persists).
    pub fn handle_record(&mut self, now: Instant, record: Option<Record>) {
        if self.phase != Phase::Registering {
            return;
        }
        let class = self.config.publish.class();
        match record {
            Some(r) if r.class == class && !self.too_low(r.instance) => {
                self.start_service(now, r.instance, r.custom_name);
            }
            Some(r) => {
                let want = self.instance_to_ask();
                log::info!(
                    "localsettings holds {}:{} for {SETTINGS_ID}; storing {class}:{want}",
                    r.class,
                    r.instance
                );
                self.registration = Some(Registration {
                    instance: want,
                    custom_name: r.custom_name,
                });
                self.store_instance(want, 0);
            }
            None => {
                let want = self.instance_to_ask();
                log::warn!("no localsettings: device instance {want}, not persisted; GUI changes will not persist");
                self.start_service(now, want, String::new());
            }
        }
    }

    /// The answer to [`Command::StoreInstance`]: the class and instance localsettings kept
    /// (it moves a taken instance up), or `None` when it could not be stored.
    pub fn handle_instance_stored(&mut self, now: Instant, stored: Option<(String, i32)>) {
        let Phase::Storing { tries } = self.phase else {
            return;
        };
        let class = self.config.publish.class();
        let custom_name = self
            .registration
            .as_ref()
            .map(|r| r.custom_name.clone())
            .unwrap_or_default();
        match stored {
            Some((c, n)) if c == class && !self.too_low(n) => self.start_service(now, n, custom_name),
            Some((c, n)) if tries < STORE_TRIES => {
                let want = self.instance_to_ask();
                log::warn!("localsettings kept {c}:{n}; storing {class}:{want}");
                self.store_instance(want, tries);
            }
            _ => {
                let want = self
                    .instance()
                    .map_or_else(|| self.instance_to_ask(), |current| self.keep_or_ask(current));
                log::error!("device instance {want} could not be stored in localsettings; using it anyway");
                self.start_service(now, want, custom_name);
            }
        }
    }

    fn connection_text(&self) -> String {
        format!(
            "AC-in {}, AC-out {}, battery {}",
            self.config.ac_in,
            self.config.ac_out,
            self.config.battery.as_deref().unwrap_or("of com.victronenergy.system")
        )
    }

    fn start_service(&mut self, _now: Instant, instance: i32, custom_name: String) {
        let unchanged = self.started
            && self
                .registration
                .as_ref()
                .is_some_and(|r| r.instance == instance && r.custom_name == custom_name);
        self.registration = Some(Registration {
            instance,
            custom_name: custom_name.clone(),
        });
        self.phase = Phase::Running;
        if unchanged {
            return;
        }
        log::info!(
            "publishing {} with device instance {instance}",
            self.config.publish.service_name()
        );
        self.started = true;
        self.connected = self.sources_connected();
        self.commands.push_back(Command::StartService(Identity {
            mode: self.config.publish,
            instance,
            custom_name,
            connection: self.connection_text(),
            flows: self.published,
            connected: self.connected,
        }));
    }

    /// A change in localsettings.
    pub fn handle_setting(&mut self, now: Instant, change: SettingChange) {
        if self.phase != Phase::Running {
            return;
        }
        let Some(current) = self.registration.clone() else {
            return;
        };
        match change {
            SettingChange::ClassAndVrmInstance(text) => {
                let class = self.config.publish.class();
                match parse_class_text(&text) {
                    Some((c, n)) if c == class && n == current.instance => {}
                    Some((c, n)) if c == class && !self.too_low(n) => {
                        log::info!(
                            "localsettings now says {class}:{n} (was {}); re-registering",
                            current.instance
                        );
                        self.start_service(now, n, current.custom_name);
                    }
                    Some((c, n)) => {
                        // Ours too low: moved up; another class: ours kept, in our class.
                        let want = if c == class {
                            self.instance_to_ask()
                        } else {
                            self.keep_or_ask(current.instance)
                        };
                        log::warn!(
                            "localsettings now says {c}:{n}; that would put this service at or below a real VE.Bus \
                             device or in another class: storing {class}:{want}"
                        );
                        self.store_instance(want, 0);
                    }
                    None => log::warn!("ignoring ClassAndVrmInstance {text:?}"),
                }
            }
            SettingChange::CustomName(name) => {
                if name != current.custom_name {
                    if let Some(r) = self.registration.as_mut() {
                        r.custom_name.clone_from(&name);
                    }
                    self.commands.push_back(Command::SetCustomName(name));
                }
            }
        }
    }

    /// A `SetValue` on the published service: only `/CustomName` is writable.
    pub fn handle_write(&mut self, _now: Instant, path: &str, value: &Value) -> WriteOutcome {
        match (path, value, self.registration.as_mut()) {
            ("/CustomName", Value::Str(name), Some(r)) if valid_custom_name(name) => {
                r.custom_name.clone_from(name);
                self.commands.push_back(Command::StoreCustomName(name.clone()));
                WriteOutcome::Accept
            }
            _ => WriteOutcome::Reject(SET_REJECTED),
        }
    }

    /// The answer to [`Command::Save`]: `ok` when `state` is on disk. Its flows are then
    /// published; a failed save is asked again later.
    pub fn handle_saved(&mut self, now: Instant, state: FlowState, ok: bool) {
        if !ok {
            self.tracker.save_failed(now);
            return;
        }
        if state.flows != self.published {
            self.published = state.flows;
            if self.started && self.phase != Phase::Done {
                self.commands.push_back(Command::Publish(state.flows));
            }
        }
    }

    /// Time passed: steps, saves, read timeouts and retries, the start-up wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        let timed_out: Vec<String> = self
            .reads
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for service in timed_out {
            self.on_read_failed(now, &service, "no answer");
        }
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for service in due {
            self.retries.remove(&service);
            if self.wanted(&service) {
                self.read(now, &service);
            }
        }
        self.maybe_register(now);
        self.tracker.handle_timeout(now);
        self.after_input(now);
    }

    /// Stop for `reason`: book what is pending, save, then [`Command::Exit`].
    pub fn shutdown(&mut self, now: Instant, reason: ExitReason) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        self.tracker.flush(now);
        self.drain_tracker();
        self.phase = Phase::Done;
        self.commands.push_back(Command::Exit(reason));
    }

    /// Whether the AC-output meter and the battery have values (see the module docs).
    fn sources_connected(&self) -> bool {
        [Source::AcOut, Source::Battery]
            .into_iter()
            .all(|s| self.inputs[s.index()].present && self.tracker.is_present(s))
    }

    fn after_input(&mut self, _now: Instant) {
        self.drain_tracker();
        let connected = self.sources_connected();
        if connected != self.connected && self.started && self.phase != Phase::Done {
            self.connected = connected;
            self.commands.push_back(Command::SetConnected(connected));
        }
    }

    fn drain_tracker(&mut self) {
        while let Some(out) = self.tracker.poll() {
            match out {
                Output::Event(e) if e.is_warning() => log::warn!("{e}"),
                Output::Event(e) => log::info!("{e}"),
                // Its flows are published once it is on disk (see handle_saved).
                Output::Save(state) => self.commands.push_back(Command::Save(state)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const GRID: &str = "com.victronenergy.grid.pzem_ttyUSB0_1";
    const LOADS: &str = "com.victronenergy.acload.pzem_ttyUSB0_2";
    const BATTERY: &str = "com.victronenergy.battery.ttyO2";
    const MULTI: &str = "com.victronenergy.vebus.ttyS4";
    const OURS: &str = "com.victronenergy.vebus.pzem_energy";

    fn config(publish: PublishMode, battery: Option<&str>) -> ServiceConfig {
        ServiceConfig {
            ac_in: GRID.into(),
            ac_out: LOADS.into(),
            battery: battery.map(str::to_owned),
            publish,
            flow: FlowConfig {
                settle: S,
                save_within: 10 * S,
                ..FlowConfig::default()
            },
            discovery_wait: 3 * S,
            read_timeout: 5 * S,
        }
    }

    fn drain(m: &mut FlowService) -> Vec<Command> {
        std::iter::from_fn(|| m.poll_command()).collect()
    }

    fn appeared(m: &mut FlowService, now: Instant, service: &str) {
        m.handle_followed(
            now,
            Followed::Appeared {
                service: service.into(),
            },
        );
    }

    fn items(m: &mut FlowService, now: Instant, service: &str, values: &[(&str, Value)], complete: bool) {
        m.handle_followed(
            now,
            Followed::Items {
                service: service.into(),
                items: values.iter().map(|(p, v)| (p.to_string(), v.clone())).collect(),
                complete,
            },
        );
    }

    fn multi_items(instance: i64, mk2: &str) -> Vec<(&'static str, Value)> {
        vec![
            ("/DeviceInstance", Value::Int(instance)),
            ("/Interfaces/Mk2/Connection", Value::from(mk2)),
            ("/State", Value::Int(3)),
        ]
    }

    fn started(cmds: &[Command]) -> Option<&Identity> {
        cmds.iter().find_map(|c| match c {
            Command::StartService(id) => Some(id),
            _ => None,
        })
    }

    /// A vebus-mode machine with the real Multi at 276, registered at 277, inputs present.
    fn running(t0: Instant, state: FlowState) -> FlowService {
        let mut m = FlowService::new(config(PublishMode::Vebus, Some(BATTERY)), state, t0, None, false);
        drain(&mut m);
        appeared(&mut m, t0, MULTI);
        m.handle_followed(
            t0,
            Followed::Listed {
                namespace: VEBUS_NAMESPACE.into(),
            },
        );
        items(&mut m, t0, MULTI, &multi_items(276, "/dev/ttyS4"), true);
        m.handle_record(
            t0,
            Some(Record {
                class: "vebus".into(),
                instance: 277,
                custom_name: String::new(),
            }),
        );
        drain(&mut m);
        m
    }

    fn flows(a: u64, b: u64, c: u64) -> Flows {
        Flows {
            ac_in_to_ac_out_wh: a,
            ac_in_to_inverter_wh: b,
            inverter_to_ac_out_wh: c,
        }
    }

    #[test]
    fn starts_by_following_and_registers_above_the_real_multi() {
        let t0 = Instant::now();
        let mut m = FlowService::new(
            config(PublishMode::Vebus, Some(BATTERY)),
            FlowState::default(),
            t0,
            None,
            false,
        );
        assert_eq!(
            drain(&mut m),
            [
                Command::WatchNamespace(VEBUS_NAMESPACE),
                Command::Follow(GRID.into()),
                Command::Follow(LOADS.into()),
                Command::Follow(BATTERY.into()),
            ]
        );
        assert_eq!(m.deadline(), Some(t0 + 3 * S), "the start-up wait");
        appeared(&mut m, t0, MULTI);
        appeared(&mut m, t0, OURS); // a leftover of ours is never a real Multi
        assert_eq!(drain(&mut m), [Command::ReadItems(MULTI.into())]);
        m.handle_followed(
            t0,
            Followed::Listed {
                namespace: VEBUS_NAMESPACE.into(),
            },
        );
        assert_eq!(drain(&mut m), [], "waits for the Multi's instance");
        items(&mut m, t0 + S / 10, MULTI, &multi_items(276, "/dev/ttyS4"), true);
        assert_eq!(
            drain(&mut m),
            [Command::Register {
                class: "vebus",
                instance: 277
            }]
        );
        // localsettings has an old record below the Multi: moved above it.
        m.handle_record(
            t0,
            Some(Record {
                class: "vebus".into(),
                instance: 3,
                custom_name: "Flows".into(),
            }),
        );
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 277
            }]
        );
        m.handle_instance_stored(t0, Some(("vebus".into(), 278)));
        let cmds = drain(&mut m);
        let id = started(&cmds).expect("published");
        assert_eq!((id.instance, id.custom_name.as_str()), (278, "Flows"));
        assert_eq!(id.mode, PublishMode::Vebus);
        assert!(!id.connected);
        assert_eq!(id.flows, Flows::default());
        assert_eq!(m.instance(), Some(278));
    }

    #[test]
    fn follows_real_vebus_instances_after_the_start() {
        let t0 = Instant::now();
        let mut m = running(t0, FlowState::default());
        assert_eq!(m.instance(), Some(277));
        // A second real Multi (an MK3-USB) appears above us.
        let usb = "com.victronenergy.vebus.ttyUSB0";
        appeared(&mut m, t0 + S, usb);
        assert_eq!(drain(&mut m), [Command::ReadItems(usb.into())]);
        items(&mut m, t0 + S, usb, &multi_items(289, "/dev/ttyUSB0"), true);
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 290
            }]
        );
        m.handle_instance_stored(t0 + S, Some(("vebus".into(), 290)));
        assert_eq!(started(&drain(&mut m)).map(|id| id.instance), Some(290));
        // Its instance edited later (ItemsChanged): still below us, nothing to do.
        items(&mut m, t0 + 2 * S, usb, &[("/DeviceInstance", Value::Int(100))], false);
        assert_eq!(drain(&mut m), []);
        // The GUI's VRM-instances page puts us at 5: moved back above.
        m.handle_setting(t0 + 3 * S, SettingChange::ClassAndVrmInstance("vebus:5".into()));
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 277
            }]
        );
        m.handle_instance_stored(t0 + 3 * S, Some(("vebus".into(), 277)));
        assert_eq!(started(&drain(&mut m)).map(|id| id.instance), Some(277));
        // ... and at 400: followed.
        m.handle_setting(t0 + 4 * S, SettingChange::ClassAndVrmInstance("vebus:400".into()));
        assert_eq!(started(&drain(&mut m)).map(|id| id.instance), Some(400));
        m.handle_setting(t0 + 4 * S, SettingChange::ClassAndVrmInstance("vebus:400".into()));
        m.handle_setting(t0 + 4 * S, SettingChange::ClassAndVrmInstance("garbage".into()));
        assert_eq!(drain(&mut m), []);
        m.handle_setting(t0 + 5 * S, SettingChange::CustomName("Energy".into()));
        assert_eq!(drain(&mut m), [Command::SetCustomName("Energy".into())]);
        // A real one leaving changes nothing.
        m.handle_followed(t0 + 6 * S, Followed::Vanished { service: usb.into() });
        assert_eq!(drain(&mut m), []);
        // One that re-registers (a new instance) is read again.
        appeared(&mut m, t0 + 7 * S, usb);
        assert_eq!(drain(&mut m), [Command::ReadItems(usb.into())]);
    }

    /// A vebus-mode machine that has read the real Multi at 276 and asked to register.
    fn registering_next_to_the_multi(t0: Instant) -> FlowService {
        let mut m = FlowService::new(
            config(PublishMode::Vebus, Some(BATTERY)),
            FlowState::default(),
            t0,
            None,
            false,
        );
        appeared(&mut m, t0, MULTI);
        m.handle_followed(
            t0,
            Followed::Listed {
                namespace: VEBUS_NAMESPACE.into(),
            },
        );
        items(&mut m, t0, MULTI, &multi_items(276, "/dev/ttyS4"), true);
        let cmds = drain(&mut m);
        assert_eq!(
            cmds.last(),
            Some(&Command::Register {
                class: "vebus",
                instance: 277
            })
        );
        m
    }

    #[test]
    fn the_instance_asked_for_is_the_instance_used() {
        let t0 = Instant::now();
        // No localsettings: runs with the instance it asked for, not the default.
        let mut m = registering_next_to_the_multi(t0);
        m.handle_record(t0, None);
        assert_eq!(started(&drain(&mut m)).map(|id| id.instance), Some(277));
        // A record of the other class: the instance asked for is stored.
        let mut m = registering_next_to_the_multi(t0);
        m.handle_record(
            t0,
            Some(Record {
                class: "pzem_energy".into(),
                instance: 0,
                custom_name: String::new(),
            }),
        );
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 277
            }]
        );
        // localsettings keeps the other class again: asked for the same instance.
        m.handle_instance_stored(t0, Some(("pzem_energy".into(), 0)));
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 277
            }]
        );
    }

    #[test]
    fn registers_after_the_start_up_wait_and_without_localsettings() {
        let t0 = Instant::now();
        let mut m = FlowService::new(
            config(PublishMode::Vebus, Some(BATTERY)),
            FlowState::default(),
            t0,
            None,
            false,
        );
        drain(&mut m);
        appeared(&mut m, t0, MULTI);
        drain(&mut m);
        m.handle_timeout(t0 + 3 * S - Duration::from_millis(1));
        assert_eq!(drain(&mut m), []);
        m.handle_timeout(t0 + 3 * S);
        assert_eq!(
            drain(&mut m),
            [Command::Register {
                class: "vebus",
                instance: DEFAULT_VEBUS_INSTANCE
            }]
        );
        m.handle_record(t0 + 3 * S, None);
        assert_eq!(
            started(&drain(&mut m)).map(|id| id.instance),
            Some(DEFAULT_VEBUS_INSTANCE)
        );
        // The Multi's answer finally comes: above us? No (276 < 300): nothing.
        items(&mut m, t0 + 4 * S, MULTI, &multi_items(276, "/dev/ttyS4"), true);
        assert_eq!(drain(&mut m), []);
        // A Multi at 350 without localsettings: stored nowhere, re-registered at once.
        items(
            &mut m,
            t0 + 5 * S,
            MULTI,
            &[("/DeviceInstance", Value::Int(350))],
            false,
        );
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "vebus",
                instance: 351
            }]
        );
        m.handle_instance_stored(t0 + 5 * S, None);
        assert_eq!(started(&drain(&mut m)).map(|id| id.instance), Some(351));
    }

    #[test]
    fn own_mode_registers_at_once_without_watching_vebus() {
        let t0 = Instant::now();
        let mut m = FlowService::new(
            config(PublishMode::Own, Some(BATTERY)),
            FlowState::default(),
            t0,
            None,
            false,
        );
        let cmds = drain(&mut m);
        assert!(!cmds.iter().any(|c| matches!(c, Command::WatchNamespace(_))));
        assert_eq!(
            cmds.last(),
            Some(&Command::Register {
                class: "pzem_energy",
                instance: 0
            })
        );
        // A vebus service is nothing to it.
        appeared(&mut m, t0, MULTI);
        assert_eq!(drain(&mut m), []);
        // A record of the other mode is switched over.
        m.handle_record(
            t0,
            Some(Record {
                class: "vebus".into(),
                instance: 277,
                custom_name: String::new(),
            }),
        );
        assert_eq!(
            drain(&mut m),
            [Command::StoreInstance {
                class: "pzem_energy",
                instance: 0
            }]
        );
        m.handle_instance_stored(t0, Some(("pzem_energy".into(), 0)));
        let cmds = drain(&mut m);
        assert_eq!(started(&cmds).map(|id| id.mode), Some(PublishMode::Own));
        assert_eq!(PublishMode::Own.service_name(), "com.victronenergy.pzem_energy.flows");
    }

    #[test]
    fn flows_are_published_once_saved_and_connected_follows_the_sources() {
        let t0 = Instant::now();
        let saved = FlowState {
            flows: flows(10, 20, 30),
            ..FlowState::default()
        };
        let mut m = running(t0, saved);
        assert_eq!(m.published(), flows(10, 20, 30));
        for s in [GRID, LOADS, BATTERY] {
            appeared(&mut m, t0, s);
        }
        assert_eq!(
            drain(&mut m),
            [
                Command::ReadItems(GRID.into()),
                Command::ReadItems(LOADS.into()),
                Command::ReadItems(BATTERY.into())
            ]
        );
        items(&mut m, t0, GRID, &[("/Ac/Energy/Forward", Value::Double(10.0))], true);
        items(&mut m, t0, LOADS, &[("/Ac/Energy/Forward", Value::Double(20.0))], true);
        assert_eq!(drain(&mut m), [], "not connected without the battery");
        items(
            &mut m,
            t0,
            BATTERY,
            &[
                ("/History/DischargedEnergy", Value::Double(5.0)),
                ("/Soc", Value::Double(80.0)),
            ],
            true,
        );
        assert_eq!(drain(&mut m), [Command::SetConnected(true)]);
        // The baselines are saved; the flows did not change: nothing to publish.
        m.handle_timeout(t0 + 11 * S);
        let cmds = drain(&mut m);
        let [Command::Save(state)] = &cmds[..] else {
            panic!("the baselines are saved: {cmds:?}")
        };
        assert_eq!(state.ac_in_wh, Some(10_000));
        m.handle_saved(t0 + 11 * S, *state, true);
        assert_eq!(drain(&mut m), []);
        // Grid charging: 500 Wh in, 100 Wh out, over ten minutes.
        let t1 = t0 + 600 * S;
        items(&mut m, t1, GRID, &[("/Ac/Energy/Forward", Value::Double(10.5))], false);
        items(&mut m, t1, LOADS, &[("/Ac/Energy/Forward", Value::Double(20.1))], false);
        // The battery announces other paths only: no change of its counter.
        items(&mut m, t1, BATTERY, &[("/Soc", Value::Double(81.0))], false);
        assert_eq!(m.deadline(), Some(t1 + S));
        m.handle_timeout(t1 + S);
        assert_eq!(drain(&mut m), [], "booked, not saved yet: nothing published");
        assert_eq!(m.deadline(), Some(t1 + 11 * S));
        m.handle_timeout(t1 + 11 * S);
        let cmds = drain(&mut m);
        let [Command::Save(state)] = &cmds[..] else {
            panic!("a save: {cmds:?}")
        };
        assert_eq!(state.flows, flows(110, 420, 30));
        // A failed save publishes nothing and is asked again.
        m.handle_saved(t1 + 11 * S, *state, false);
        assert_eq!(drain(&mut m), []);
        m.handle_timeout(t1 + 21 * S);
        let cmds = drain(&mut m);
        let [Command::Save(state)] = &cmds[..] else {
            panic!("a save again: {cmds:?}")
        };
        m.handle_saved(t1 + 21 * S, *state, true);
        assert_eq!(drain(&mut m), [Command::Publish(flows(110, 420, 30))]);
        assert_eq!(m.published(), flows(110, 420, 30));
        // The AC-output meter goes away: not connected; the AC-input meter alone would not matter.
        m.handle_followed(t1 + 30 * S, Followed::Vanished { service: LOADS.into() });
        assert_eq!(drain(&mut m), [Command::SetConnected(false)]);
        m.handle_followed(t1 + 31 * S, Followed::Vanished { service: GRID.into() });
        assert_eq!(drain(&mut m), []);
        appeared(&mut m, t1 + 32 * S, LOADS);
        items(
            &mut m,
            t1 + 32 * S,
            LOADS,
            &[("/Ac/Energy/Forward", Value::Invalid)],
            true,
        );
        assert_eq!(
            drain(&mut m),
            [Command::ReadItems(LOADS.into())],
            "an invalid value is absent"
        );
        items(
            &mut m,
            t1 + 33 * S,
            LOADS,
            &[("/Ac/Energy/Forward", Value::Double(20.1))],
            false,
        );
        assert_eq!(drain(&mut m), [Command::SetConnected(true)]);
    }

    #[test]
    fn the_system_names_the_battery() {
        let t0 = Instant::now();
        let mut m = FlowService::new(config(PublishMode::Vebus, None), FlowState::default(), t0, None, false);
        assert!(drain(&mut m).contains(&Command::Follow(SYSTEM_SERVICE.into())));
        assert_eq!(m.battery_service(), None);
        appeared(&mut m, t0, SYSTEM_SERVICE);
        assert_eq!(drain(&mut m), [Command::ReadItems(SYSTEM_SERVICE.into())]);
        items(
            &mut m,
            t0,
            SYSTEM_SERVICE,
            &[
                (BATTERY_SERVICE_PATH, Value::from(BATTERY)),
                ("/VebusService", Value::from(MULTI)),
            ],
            true,
        );
        assert_eq!(drain(&mut m), [Command::Follow(BATTERY.into())]);
        assert_eq!(m.battery_service(), Some(BATTERY));
        appeared(&mut m, t0, BATTERY);
        assert_eq!(drain(&mut m), [Command::ReadItems(BATTERY.into())]);
        items(
            &mut m,
            t0,
            BATTERY,
            &[("/History/DischargedEnergy", Value::Double(7.0))],
            true,
        );
        // Another battery monitor takes over: the old one is dropped, the new one followed.
        let other = "com.victronenergy.battery.ttyO4";
        items(
            &mut m,
            t0 + S,
            SYSTEM_SERVICE,
            &[(BATTERY_SERVICE_PATH, Value::from(other))],
            false,
        );
        assert_eq!(
            drain(&mut m),
            [Command::Unfollow(BATTERY.into()), Command::Follow(other.into())]
        );
        // The system names our own service: refused.
        items(
            &mut m,
            t0 + 2 * S,
            SYSTEM_SERVICE,
            &[(BATTERY_SERVICE_PATH, Value::from(OURS))],
            false,
        );
        assert_eq!(m.battery_service(), None);
        assert_eq!(drain(&mut m), [Command::Unfollow(other.into())]);
        // No battery at all (invalid).
        items(
            &mut m,
            t0 + 3 * S,
            SYSTEM_SERVICE,
            &[(BATTERY_SERVICE_PATH, Value::Invalid)],
            false,
        );
        assert_eq!(drain(&mut m), []);
        for nonsense in ["com.victronenergy.battery/256", "not a name", "com.victronenergy..x"] {
            items(
                &mut m,
                t0 + 3 * S,
                SYSTEM_SERVICE,
                &[(BATTERY_SERVICE_PATH, Value::from(nonsense))],
                false,
            );
            assert_eq!(drain(&mut m), [], "{nonsense}");
            assert_eq!(m.battery_service(), None);
        }
        // The real Multi as the battery (no monitor): followed for that, and read when the
        // follow finds it there.
        appeared(&mut m, t0 + 4 * S, MULTI);
        assert_eq!(drain(&mut m), [Command::ReadItems(MULTI.into())]);
        items(
            &mut m,
            t0 + 4 * S,
            SYSTEM_SERVICE,
            &[(BATTERY_SERVICE_PATH, Value::from(MULTI))],
            false,
        );
        assert_eq!(drain(&mut m), [Command::Follow(MULTI.into())]);
        appeared(&mut m, t0 + 4 * S, MULTI);
        assert_eq!(drain(&mut m), [Command::ReadItems(MULTI.into())]);
        items(&mut m, t0 + 4 * S, MULTI, &multi_items(276, "/dev/ttyS4"), true);
        // It has no /History/DischargedEnergy: absent (and said once).
        assert!(!m.tracker.is_present(Source::Battery));
    }

    #[test]
    fn failed_and_silent_reads_are_tried_again() {
        let t0 = Instant::now();
        let mut m = running(t0, FlowState::default());
        appeared(&mut m, t0, GRID);
        assert_eq!(drain(&mut m), [Command::ReadItems(GRID.into())]);
        assert_eq!(m.deadline(), Some(t0 + 5 * S));
        m.handle_timeout(t0 + 5 * S);
        assert_eq!(drain(&mut m), []);
        assert_eq!(m.deadline(), Some(t0 + 10 * S), "retry after the timeout");
        m.handle_timeout(t0 + 10 * S);
        assert_eq!(drain(&mut m), [Command::ReadItems(GRID.into())]);
        m.handle_followed(
            t0 + 11 * S,
            Followed::ReadFailed {
                service: GRID.into(),
                error: "gone".into(),
            },
        );
        m.handle_timeout(t0 + 16 * S);
        assert_eq!(drain(&mut m), [Command::ReadItems(GRID.into())]);
        // Gone meanwhile: no more retries.
        m.handle_followed(t0 + 17 * S, Followed::Vanished { service: GRID.into() });
        m.handle_timeout(t0 + 30 * S);
        assert_eq!(drain(&mut m), []);
        assert_eq!(m.deadline(), None);
    }

    #[test]
    fn writes_and_shutdown() {
        let t0 = Instant::now();
        let mut m = running(t0, FlowState::default());
        assert_eq!(
            m.handle_write(t0, "/CustomName", &Value::from("Multi flows")),
            WriteOutcome::Accept
        );
        assert_eq!(drain(&mut m), [Command::StoreCustomName("Multi flows".into())]);
        let long = "x".repeat(crate::venus::naming::MAX_CUSTOM_NAME + 1);
        for (path, value) in [
            ("/CustomName", Value::from(long.as_str())),
            ("/CustomName", Value::from("a\nb")),
            ("/Energy/AcIn1ToAcOut", Value::Double(0.0)),
            ("/DeviceInstance", Value::Int(1)),
        ] {
            assert_eq!(
                m.handle_write(t0, path, &value),
                WriteOutcome::Reject(SET_REJECTED),
                "{path}"
            );
        }
        assert_eq!(drain(&mut m), []);
        m.shutdown(t0 + S, ExitReason::Stopped);
        let cmds = drain(&mut m);
        assert!(
            matches!(&cmds[..], [Command::Save(_), Command::Exit(ExitReason::Stopped)]),
            "{cmds:?}"
        );
        m.shutdown(t0 + S, ExitReason::BusLost);
        appeared(&mut m, t0 + S, GRID);
        assert_eq!(drain(&mut m), [], "nothing after the exit");
    }

    #[test]
    fn a_state_from_a_fallback_copy_is_saved_at_once() {
        let t0 = Instant::now();
        let state = FlowState {
            flows: flows(1, 2, 3),
            ac_in_wh: Some(9),
            ..FlowState::default()
        };
        let mut m = FlowService::new(config(PublishMode::Own, Some(BATTERY)), state, t0, Some(60 * S), true);
        let cmds = drain(&mut m);
        assert!(cmds.contains(&Command::Save(state)), "{cmds:?}");
        assert_eq!("own".parse::<PublishMode>(), Ok(PublishMode::Own));
    }
}
