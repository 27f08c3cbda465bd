//! pzem-dbus's logic: the meters on one line, as a sans-IO state machine.
//!
//! [`MeterLine`] is fed what happened, each input with the time it happened:
//! bytes from the line ([`MeterLine::handle_input`]), a `SetValue` from the GUI
//! ([`MeterLine::handle_write`]), a localsettings change
//! ([`MeterLine::handle_setting`]), the answers to its own requests
//! ([`MeterLine::handle_record`], [`MeterLine::handle_class_stored`],
//! [`MeterLine::handle_energy_saved`]) and the passing of time
//! ([`MeterLine::handle_timeout`]). It answers with [`Command`]s, taken with
//! [`MeterLine::poll_command`], and says when it next needs to be woken
//! ([`MeterLine::deadline`]). It never reads a clock and does no I/O: the
//! loop in [`super::service_loop`] does that, and [`super::layout`] turns a
//! [`Command::Publish`] into D-Bus items.
//!
//! What it decides:
//! - start-up: probe every configured meter (two tries each, within a
//!   budget); exit 1 when none answers, so serial-starter can try another
//!   driver;
//! - polling: one cycle visits every meter once, a cycle starts every poll
//!   interval (or at once after the previous one with interval 0), requests
//!   keep the inter-frame silence; an `auto` meter is read as AC, and as DC
//!   when it refuses the AC registers;
//! - presence: a few failures in a row and a meter's values are invalid;
//! - energy: totals never go backwards and are saved within
//!   [`ENERGY_SAVE_EVERY`], at once after a counter reset, and at exit;
//! - the service's identity: localsettings record, role switch, instance
//!   edits, custom name and position, and which writes are refused.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::dbus::Value;
use crate::dbus::{SET_REJECTED, WriteOutcome};
use crate::energy::{EnergyEvent, EnergyState, MonotonicEnergy, max_plausible_increase_wh};
use crate::error::Error;
use crate::exchange::{Ended, Exchange, Framing};
use crate::frame::{ExceptionCode, Reply, Request, RequestFrame};
use crate::model::{Family, Model, ModelChoice};
use crate::{AcReading, DcReading, Reading, ac, dc};

use super::config::MeterSpec;
use super::layout::{MeterIdentity, PhaseUpdate, Update};
use super::naming::{PortId, valid_custom_name};
use super::presence::{Presence, PresenceChange};
use super::role::Role;
use super::settings::{ClassAndInstance, DeviceRecord, Field, PREFERRED_INSTANCE, SettingChange};

/// Process name published in `/Mgmt/ProcessName`.
pub const PROCESS_NAME: &str = "pzem-dbus";

/// How often changed energy state is written to flash at most.
pub const ENERGY_SAVE_EVERY: Duration = Duration::from_secs(600);

/// Tries per meter at start-up (one when scanning a range).
const PROBE_TRIES: u8 = 2;

/// How often a discovered meter that keeps answering is remembered anew.
const SEEN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Why pzem-dbus stopped; the process exit code. The one home of the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Asked to stop (SIGTERM/SIGINT).
    Stopped = 0,
    /// No meter answered at start-up, or all went silent.
    NoMeter = 1,
    /// Bad flags or configuration.
    Usage = 2,
    /// The line went away or cannot be opened.
    LineGone = 3,
    /// The D-Bus connection is lost or a name cannot be claimed.
    BusLost = 4,
}

impl ExitReason {
    /// Every reason, in code order.
    pub const ALL: [ExitReason; 5] = [
        ExitReason::Stopped,
        ExitReason::NoMeter,
        ExitReason::Usage,
        ExitReason::LineGone,
        ExitReason::BusLost,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// What the code means, for `--help` and the docs.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitReason::Stopped => "stopped by a signal",
            ExitReason::NoMeter => {
                "no meter answered at start-up, or all meters were silent for --silent-exit seconds \
                 (serial-starter then tries other drivers)"
            }
            ExitReason::Usage => "usage or config error",
            ExitReason::LineGone => "the serial line or gateway went away",
            ExitReason::BusLost => "the D-Bus connection failed or a service name is taken",
        }
    }
}

/// What the loop around the machine must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Write this frame to the line.
    Transmit(RequestFrame),
    /// Look up or create the meter's record in localsettings
    /// ([`MeterLine::meter_id`] names it), then answer with
    /// [`MeterLine::handle_record`].
    Register {
        /// The meter.
        address: Address,
        /// Its role when it has no record yet, or a record of another family
        /// (the family's roles, `Role::allowed`, are the ones it may keep).
        default_role: Role,
    },
    /// Publish the meter's service with this identity, releasing the one it
    /// had first: the tree is complete before the name is claimed.
    StartService {
        /// The meter.
        address: Address,
        /// `com.victronenergy.<role>.pzem_<tty>_<address>`.
        name: String,
        /// Everything its tree shows besides measurements.
        identity: MeterIdentity,
    },
    /// New values to publish: one `ItemsChanged` with what changed. For a
    /// group of phase meters, once per cycle after its last phase was polled.
    Publish {
        /// The meter (a group's L1 address).
        address: Address,
        /// The readings, with their monotonic energy totals.
        update: Update,
    },
    /// The meter stopped answering: `/Connected` 0, measurements invalid.
    Invalidate {
        /// The meter.
        address: Address,
    },
    /// Set one path of the meter's service (a change made in localsettings).
    SetPath {
        /// The meter.
        address: Address,
        /// The path.
        path: &'static str,
        /// Its value.
        value: Value,
    },
    /// Store one of the meter's settings in localsettings.
    StoreSetting {
        /// The meter.
        address: Address,
        /// Which setting.
        field: Field,
        /// Its value.
        value: Value,
    },
    /// Store `<role>:<instance>` as the meter's class, then answer with
    /// [`MeterLine::handle_class_stored`].
    StoreClass {
        /// The meter.
        address: Address,
        /// The new role.
        role: Role,
        /// The instance asked for.
        instance: i32,
    },
    /// Persist the meter's energy state; answer with
    /// [`MeterLine::handle_energy_saved`] when it is on disk.
    SaveEnergy {
        /// The meter.
        address: Address,
        /// What to persist.
        state: EnergyState,
    },
    /// A discovered meter answered: remember it (with the wall-clock time).
    /// Issued when it first answers, then at most once a day.
    Seen {
        /// The meter.
        address: Address,
        /// What it is.
        family: Family,
    },
    /// Stop: every command before this one has been issued.
    Exit(ExitReason),
}

/// What localsettings kept of a class change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassStored {
    /// Stored; localsettings may have moved the instance.
    Stored(ClassAndInstance),
    /// Not stored (no localsettings, or it refused): applied anyway.
    NotStored,
}

/// How the machine is set up.
#[derive(Clone, Debug)]
pub struct LineConfig {
    /// The line as the user named it (`/dev/ttyUSB0`, `host:port`), for the log.
    pub place: String,
    /// The meters, in polling order.
    pub meters: Vec<MeterSpec>,
    /// The line's identity, for service names and settings ids.
    pub port: PortId,
    /// Framing of the line.
    pub framing: Framing,
    /// Reply timeout.
    pub timeout: Duration,
    /// Time from one polling cycle's start to the next; zero: back to back.
    pub poll_interval: Duration,
    /// Time allowed for the start-up probe.
    pub startup_budget: Duration,
    /// Failed polls in a row before a meter's values are invalidated.
    pub failures_to_vanish: u32,
    /// Exit when every meter has been silent this long (`None`: never).
    pub silent_exit: Option<Duration>,
    /// Scanning for meters instead of configured ones: `meters` are the
    /// addresses to scan (`auto`), and only those that answer, or that an
    /// earlier scan remembered, are published.
    pub discovery: Option<Discovery>,
}

/// What a discovering machine needs besides the addresses to scan.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// Meters earlier scans found: published even when silent now.
    pub remembered: Vec<(Address, Family)>,
    /// The reply timeout while scanning.
    pub scan_timeout: Duration,
}

/// One published meter: a single meter, or a group of phase meters.
struct Meter {
    spec: MeterSpec,
    /// Its settings id (the L1 meter's id).
    id: String,
    family: Option<Family>,
    record: Option<DeviceRecord>,
    /// One per Modbus address, L1 first.
    phases: Vec<PhaseMeter>,
}

/// The name a meter shows: the one given in the GUI (localsettings), else
/// the configured one.
fn shown_name<'a>(spec: &'a MeterSpec, record: &'a DeviceRecord) -> &'a str {
    match &spec.name {
        Some(configured) if record.custom_name.is_empty() => configured,
        _ => &record.custom_name,
    }
}

/// The state of one Modbus meter (a phase of a group, or a single meter).
struct PhaseMeter {
    address: Address,
    /// `pzem_<port>_<address>`: the name of its energy state file.
    id: String,
    presence: Presence,
    energy: MonotonicEnergy,
    energy_saved: EnergyState,
    energy_saved_at: Instant,
    save_pending: bool,
    last_ok: Option<Instant>,
    /// Its reading in the current cycle (groups publish all phases at once).
    fresh: Option<(AcReading, u64)>,
    /// When a discovered meter was last reported as seen.
    seen_reported: Option<Instant>,
}

impl Meter {
    fn model(&self) -> Model {
        self.spec.model.resolve(self.family)
    }
}

/// Where the machine is; `index` counts Modbus meters in polling order.
#[derive(Clone, Copy, Debug)]
enum Stage {
    /// Start-up probe of meter `index`, try `tries` so far.
    Probing { until: Instant, index: usize, tries: u8 },
    /// Polling meter `index` of the cycle that started at `cycle_start`.
    Running { cycle_start: Instant, index: usize },
    /// Exit issued.
    Done,
}

/// What the request in flight is for.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    /// The meter, as its index in `targets`.
    index: usize,
    family: Family,
}

/// The meters on one line, as a state machine (see the module docs).
pub struct MeterLine {
    config: LineConfig,
    meters: Vec<Meter>,
    /// Every Modbus meter as (meter, phase), in polling order: a group's
    /// phases one after the other, so they are read in the same cycle.
    targets: Vec<(usize, usize)>,
    exchange: Exchange,
    stage: Stage,
    in_flight: Option<InFlight>,
    /// An `auto` meter (its target index) that refused the AC registers, to
    /// be read as DC next.
    retry_as_dc: Option<usize>,
    commands: VecDeque<Command>,
    answered_at_start: usize,
    last_any_ok: Instant,
}

/// The two read requests, known at compile time.
const READ_AC: Request = fixed(Request::read_input_registers(0, ac::INPUT_REGISTERS));
const READ_DC: Request = fixed(Request::read_input_registers(0, dc::INPUT_REGISTERS));

const fn fixed(request: Result<Request, crate::frame::RequestError>) -> Request {
    match request {
        Ok(r) => r,
        Err(_) => panic!("invalid constant request"),
    }
}

/// Why a poll failed, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PollFailure {
    NoAnswer,
    Garbled,
    Refused(ExceptionCode),
    Unexpected,
}

impl PollFailure {
    fn of(e: &Error) -> PollFailure {
        match e {
            Error::NoAnswer => PollFailure::NoAnswer,
            e if e.is_garbled() => PollFailure::Garbled,
            e => e.exception().map_or(PollFailure::Unexpected, PollFailure::Refused),
        }
    }
}

impl std::fmt::Display for PollFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollFailure::NoAnswer => f.write_str("no answer"),
            PollFailure::Garbled => f.write_str("garbled replies"),
            PollFailure::Refused(code) => write!(f, "refused: {code}"),
            PollFailure::Unexpected => f.write_str("values outside the register map"),
        }
    }
}

/// The outcome of one request.
enum Outcome {
    Reading(Reading),
    Failed(PollFailure),
}

impl MeterLine {
    /// A machine for `config`, starting its probe at `now`. Meters start
    /// with empty energy state; restore saved state with
    /// [`MeterLine::restore_energy`] before the first input.
    pub fn new(config: LineConfig, now: Instant) -> MeterLine {
        let phase = |address: Address| PhaseMeter {
            address,
            id: config.port.settings_id(address.get()),
            presence: Presence::new(config.failures_to_vanish),
            energy: MonotonicEnergy::default(),
            energy_saved: EnergyState::default(),
            energy_saved_at: now,
            save_pending: false,
            last_ok: None,
            fresh: None,
            seen_reported: None,
        };
        let mut specs = config.meters.clone();
        let mut startup_budget = config.startup_budget;
        if let Some(discovery) = &config.discovery {
            // Remembered meters are scanned too, wherever they are.
            for &(address, _) in &discovery.remembered {
                if !specs.iter().any(|s| s.address == address) {
                    specs.push(MeterSpec::single(address, ModelChoice::Auto, None));
                }
            }
            specs.sort_by_key(|s| s.address);
            // One request per address, its timeout and the silence; DC meters take two.
            let per_address = discovery.scan_timeout + Duration::from_millis(60);
            startup_budget = startup_budget.max(per_address * specs.len() as u32);
        }
        let meters: Vec<Meter> = specs
            .iter()
            .map(|spec| Meter {
                spec: spec.clone(),
                id: config.port.settings_id(spec.address.get()),
                family: spec.model.family(),
                record: None,
                phases: spec.addresses().map(phase).collect(),
            })
            .collect();
        let targets = targets_of(&meters);
        let timeout = config.discovery.as_ref().map_or(config.timeout, |d| d.scan_timeout);
        let mut line = MeterLine {
            exchange: Exchange::new(config.framing, timeout),
            stage: Stage::Probing {
                until: now + startup_budget,
                index: 0,
                tries: 0,
            },
            meters,
            targets,
            in_flight: None,
            retry_as_dc: None,
            // Room for a burst of commands (a start-up registers every meter).
            commands: VecDeque::with_capacity(64),
            answered_at_start: 0,
            last_any_ok: now,
            config,
        };
        line.advance(now);
        line
    }

    /// The id of the Modbus meter at `address` (`pzem_<port>_<address>`): the
    /// name of its energy state file, and for a published meter (a group's
    /// L1 address) its settings id.
    pub fn meter_id(&self, address: Address) -> Option<&str> {
        self.locate(address).map(|(i, k)| self.meters[i].phases[k].id.as_str())
    }

    /// The addresses of every Modbus meter (every phase of a group), in
    /// polling order.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        self.targets.iter().map(|&(i, k)| self.meters[i].phases[k].address)
    }

    /// The energy state a meter continues from (loaded from its file).
    pub fn restore_energy(&mut self, address: Address, state: EnergyState) {
        if let Some(p) = self.phase_mut(address) {
            p.energy = MonotonicEnergy::new(state);
            p.energy_saved = state;
        }
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the machine next needs [`MeterLine::handle_timeout`]: a reply
    /// timeout, the next request (poll time and inter-frame silence), an
    /// energy save. `None`: only inputs matter. (Silence is judged on failed
    /// polls, which have their own deadlines.)
    pub fn deadline(&self) -> Option<Instant> {
        let mut next = self.exchange.deadline();
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.exchange.is_waiting() {
            earliest(self.next_request_at());
        }
        for p in self.meters.iter().flat_map(|m| &m.phases) {
            if p.energy.state() != p.energy_saved && !p.save_pending {
                earliest(Some(p.energy_saved_at + ENERGY_SAVE_EVERY));
            }
        }
        next
    }

    /// Bytes arrived from the line at `now`. Brings the machine up to `now`
    /// as [`MeterLine::handle_timeout`] would, so the loop needs not call both.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        let input = self.exchange.handle_input(now, bytes);
        if input.dropped > 0 {
            log::debug!("dropped {} stray byte(s) from the line", input.dropped);
        }
        if let Some(ended) = input.ended.or_else(|| self.exchange.handle_timeout(now)) {
            self.on_exchange_ended(now, ended);
        }
        self.advance(now);
    }

    /// Time passed: reply timeouts, poll times, energy saves, silent exit.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(ended) = self.exchange.handle_timeout(now) {
            self.on_exchange_ended(now, ended);
        }
        self.advance(now);
    }

    /// A `SetValue` from the GUI or MQTT on a writable path of the meter at
    /// `address`: accept it (queuing what must be stored) or refuse it.
    pub fn handle_write(&mut self, _now: Instant, address: Address, path: &str, value: &Value) -> WriteOutcome {
        let Some(i) = self.index_of(address) else {
            return WriteOutcome::Reject(SET_REJECTED);
        };
        let m = &mut self.meters[i];
        let (Some(family), Some(record)) = (m.family, m.record.as_mut()) else {
            return WriteOutcome::Reject(SET_REJECTED);
        };
        let store = match (path, value) {
            ("/Role", Value::Str(text)) => match text.parse::<Role>() {
                Ok(role) if Role::allowed(family).contains(&role) => {
                    (role != record.role).then_some(Command::StoreClass {
                        address,
                        role,
                        instance: record.instance,
                    })
                }
                _ => return WriteOutcome::Reject(SET_REJECTED),
            },
            ("/CustomName", Value::Str(name)) if valid_custom_name(name) => {
                record.custom_name.clone_from(name);
                self.commands.push_back(Command::StoreSetting {
                    address,
                    field: Field::CustomName,
                    value: Value::Str(name.clone()),
                });
                // Cleared in the GUI: the configured name shows again.
                return match &m.spec.name {
                    Some(configured) if name.is_empty() => WriteOutcome::AcceptAs(Value::Str(configured.clone())),
                    _ => WriteOutcome::Accept,
                };
            }
            ("/Position", Value::Int(p)) => match record.role.position() {
                Some(kind) if (0..=i64::from(kind.max())).contains(p) => {
                    record.position = *p as i32;
                    Some(Command::StoreSetting {
                        address,
                        field: Field::Position,
                        value: Value::Int(*p),
                    })
                }
                _ => return WriteOutcome::Reject(SET_REJECTED),
            },
            _ => return WriteOutcome::Reject(SET_REJECTED),
        };
        self.commands.extend(store);
        WriteOutcome::Accept
    }

    /// A meter's setting changed in localsettings (the GUI's VRM instance
    /// page, another client).
    pub fn handle_setting(&mut self, _now: Instant, change: SettingChange) {
        let Some(i) = self.meters.iter().position(|m| m.id == change.id) else {
            return;
        };
        let address = self.meters[i].spec.address;
        let m = &mut self.meters[i];
        let (Some(family), Some(record)) = (m.family, m.record.as_mut()) else {
            return;
        };
        match change.field {
            Field::ClassAndVrmInstance => {
                let parsed = change.value.as_str().and_then(ClassAndInstance::parse);
                match parsed {
                    Some(ClassAndInstance { role, instance }) if role.family() == family => {
                        if (role, instance) != (record.role, record.instance) {
                            log::info!(
                                "{}: localsettings now says {role}:{instance} (was {}:{}); re-registering",
                                change.id,
                                record.role,
                                record.instance
                            );
                            record.role = role;
                            record.instance = instance;
                            self.start_service(i);
                        }
                    }
                    _ => log::warn!("{}: ignoring ClassAndVrmInstance {:?}", change.id, change.value),
                }
            }
            Field::CustomName => {
                let name = change.value.as_str().unwrap_or("");
                if name != record.custom_name {
                    record.custom_name = name.to_owned();
                    let shown = shown_name(&m.spec, record).to_owned();
                    self.commands.push_back(Command::SetPath {
                        address,
                        path: "/CustomName",
                        value: Value::Str(shown),
                    });
                }
            }
            Field::Position => {
                // Roles without a position publish no /Position to set.
                let Some(kind) = record.role.position() else { return };
                let max = kind.max();
                if let Some(p) = change.value.as_i64()
                    && (0..=i64::from(max)).contains(&p)
                    && p as i32 != record.position
                {
                    record.position = p as i32;
                    self.commands.push_back(Command::SetPath {
                        address,
                        path: "/Position",
                        value: Value::Int(p),
                    });
                }
            }
        }
    }

    /// The answer to [`Command::Register`]: the record localsettings holds,
    /// or `None` without localsettings (the configured role and the lowest
    /// free instance from [`PREFERRED_INSTANCE`] are used).
    pub fn handle_record(&mut self, _now: Instant, address: Address, record: Option<DeviceRecord>) {
        let Some(i) = self.index_of(address) else { return };
        let Some(family) = self.meters[i].family else { return };
        let default_role = self.meters[i].spec.role_for(family);
        let record = match record {
            Some(r) => {
                if self.meters[i].spec.role.is_some_and(|configured| configured != r.role) {
                    log::info!(
                        "{}: role {} from localsettings (changed in the GUI) overrides the configured {default_role}",
                        self.meters[i].id,
                        r.role
                    );
                }
                r
            }
            None => DeviceRecord {
                role: default_role,
                instance: self.free_instance(i, default_role),
                custom_name: String::new(),
                position: 0,
            },
        };
        self.meters[i].record = Some(record);
        self.start_service(i);
    }

    /// The answer to [`Command::StoreClass`]: switch the meter's role and
    /// re-register its service.
    pub fn handle_class_stored(&mut self, _now: Instant, address: Address, role: Role, stored: ClassStored) {
        let Some(i) = self.index_of(address) else { return };
        let (role, instance) = match stored {
            ClassStored::Stored(c) => (c.role, c.instance),
            ClassStored::NotStored => (role, self.free_instance(i, role)),
        };
        let m = &mut self.meters[i];
        let Some(record) = m.record.as_mut() else { return };
        if m.family != Some(role.family()) {
            return;
        }
        log::info!("{}: role {} -> {role} (device instance {instance})", m.id, record.role);
        record.role = role;
        record.instance = instance;
        self.start_service(i);
    }

    /// The energy state of the meter at `address` is on disk.
    pub fn handle_energy_saved(&mut self, now: Instant, address: Address, state: EnergyState) {
        if let Some(p) = self.phase_mut(address) {
            p.energy_saved = state;
            p.energy_saved_at = now;
            p.save_pending = false;
        }
    }

    /// A save of the meter's energy state failed: try again later.
    pub fn handle_energy_save_failed(&mut self, now: Instant, address: Address) {
        if let Some(p) = self.phase_mut(address) {
            p.energy_saved_at = now;
            p.save_pending = false;
        }
    }

    /// Stop for `reason` (a signal, the line or the bus lost): save what
    /// changed, then [`Command::Exit`].
    pub fn shutdown(&mut self, _now: Instant, reason: ExitReason) {
        if matches!(self.stage, Stage::Done) {
            return;
        }
        for p in self.meters.iter_mut().flat_map(|m| &mut m.phases) {
            if p.energy.state() != p.energy_saved {
                p.save_pending = true;
                self.commands.push_back(Command::SaveEnergy {
                    address: p.address,
                    state: p.energy.state(),
                });
            }
        }
        self.stage = Stage::Done;
        self.commands.push_back(Command::Exit(reason));
    }

    /// The published meter whose service is named by `address`.
    fn index_of(&self, address: Address) -> Option<usize> {
        self.meters.iter().position(|m| m.spec.address == address)
    }

    /// (meter, phase) of the Modbus meter at `address`.
    fn locate(&self, address: Address) -> Option<(usize, usize)> {
        self.targets
            .iter()
            .copied()
            .find(|&(i, k)| self.meters[i].phases[k].address == address)
    }

    fn phase_mut(&mut self, address: Address) -> Option<&mut PhaseMeter> {
        let (i, k) = self.locate(address)?;
        Some(&mut self.meters[i].phases[k])
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

    fn start_service(&mut self, i: usize) {
        let m = &mut self.meters[i];
        let Some(record) = m.record.clone() else { return };
        let address = m.spec.address.get();
        let identity = MeterIdentity {
            model: m.model(),
            role: record.role,
            instance: record.instance,
            custom_name: shown_name(&m.spec, &record).to_owned(),
            position: record.position,
            connection: self.config.port.connection(address),
            serial: m.id.clone(),
            process_name: PROCESS_NAME,
            process_version: env!("CARGO_PKG_VERSION"),
            phases: m.phases.len() as u8,
        };
        // A new service starts with everything invalid until its next reading.
        for p in &mut m.phases {
            p.presence = Presence::new(self.config.failures_to_vanish);
            p.fresh = None;
        }
        self.commands.push_back(Command::StartService {
            address: m.spec.address,
            name: self.config.port.service_name(record.role.class(), address),
            identity,
        });
    }

    /// When the next request may go out: after the inter-frame silence, and
    /// between cycles at the next cycle's start. `None` when none will.
    fn next_request_at(&self) -> Option<Instant> {
        let cycle = match self.stage {
            Stage::Done => return None,
            Stage::Running { cycle_start, index } if index >= self.targets.len() && self.retry_as_dc.is_none() => {
                Some(cycle_start + self.config.poll_interval)
            }
            Stage::Probing { .. } | Stage::Running { .. } => None,
        };
        match (cycle, self.exchange.send_not_before()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Issue what is due at `now`: the next request, energy saves, exits.
    fn advance(&mut self, now: Instant) {
        if matches!(self.stage, Stage::Done) {
            return;
        }
        self.save_due(now);
        if self.exchange.is_waiting() || self.exchange.send_not_before().is_some_and(|t| t > now) {
            return;
        }
        if let Some(index) = self.retry_as_dc.take() {
            self.send(now, index, Some(Family::Dc));
            return;
        }
        loop {
            match self.stage {
                Stage::Done => return,
                Stage::Probing { until, index, tries } => {
                    let out_of_time = now >= until;
                    if index >= self.targets.len() || out_of_time {
                        self.finish_probe(now, out_of_time);
                        continue;
                    }
                    let max_tries = if self.config.discovery.is_some() {
                        1
                    } else {
                        PROBE_TRIES
                    };
                    if tries >= max_tries {
                        self.stage = Stage::Probing {
                            until,
                            index: index + 1,
                            tries: 0,
                        };
                        continue;
                    }
                    self.stage = Stage::Probing {
                        until,
                        index,
                        tries: tries + 1,
                    };
                    self.send(now, index, None);
                    return;
                }
                Stage::Running { cycle_start, index } => {
                    if index < self.targets.len() {
                        self.send(now, index, None);
                        return;
                    }
                    let next = cycle_start + self.config.poll_interval;
                    if now < next {
                        return;
                    }
                    // Keep the cadence unless a whole interval was lost.
                    let start = if now.duration_since(next) < self.config.poll_interval {
                        next
                    } else {
                        now
                    };
                    self.stage = Stage::Running {
                        cycle_start: start,
                        index: 0,
                    };
                }
            }
        }
    }

    fn finish_probe(&mut self, now: Instant, out_of_time: bool) {
        if out_of_time {
            let skipped: Vec<String> = match self.stage {
                Stage::Probing { index, .. } => self.targets[index.min(self.targets.len())..]
                    .iter()
                    .map(|&(i, k)| self.meters[i].phases[k].address.to_string())
                    .collect(),
                _ => Vec::new(),
            };
            log::warn!(
                "the start-up probe ran out of time before address(es) {}: configured meters are still \
                 published and polled; a scan does not remember them this time (narrow --discover)",
                skipped.join(", ")
            );
        }
        if let Some(discovery) = self.config.discovery.take() {
            self.keep_discovered(&discovery);
            self.exchange.set_timeout(self.config.timeout);
            self.config.discovery = Some(discovery);
            if self.meters.is_empty() {
                log::error!(
                    "no PZEM meter answered a scan of {} and none is remembered; exiting so serial-starter can \
                     try other drivers. Check wiring (A/B), termination, addresses and that AC meters have mains.",
                    self.config.place
                );
                self.shutdown(now, ExitReason::NoMeter);
                return;
            }
        } else if self.answered_at_start == 0 {
            let addresses: Vec<String> = self.meters.iter().map(|m| m.spec.address.to_string()).collect();
            log::error!(
                "no PZEM meter answered on {} (addresses {}); exiting so serial-starter can try other drivers. \
                 Check wiring (A/B), termination, addresses and that AC meters have mains.",
                self.config.place,
                addresses.join(", ")
            );
            self.shutdown(now, ExitReason::NoMeter);
            return;
        }
        for m in &self.meters {
            for p in m.phases.iter().filter(|p| !p.presence.is_present()) {
                log::warn!(
                    "no answer from address {} on {} at start-up",
                    p.address,
                    self.config.place
                );
            }
            // A meter of known family is published even when silent (its values invalid).
            if let Some(family) = m.family {
                self.commands.push_back(Command::Register {
                    address: m.spec.address,
                    default_role: m.spec.role_for(family),
                });
            }
        }
        self.last_any_ok = now;
        self.stage = Stage::Running {
            cycle_start: now,
            index: 0,
        };
    }

    /// After a scan: keep the meters that answered and the remembered ones
    /// (of the family remembered), drop the rest, and give default roles:
    /// the first AC meter `grid`, the next ones `acload`, DC meters `dcsource`.
    fn keep_discovered(&mut self, discovery: &Discovery) {
        let remembered = |a: Address| discovery.remembered.iter().find(|r| r.0 == a).map(|r| r.1);
        self.meters.retain_mut(|m| {
            if m.phases[0].presence.is_present() {
                return true;
            }
            let Some(family) = remembered(m.spec.address) else {
                return false;
            };
            log::info!(
                "{} at address {} is remembered from an earlier scan: published, invalid until it answers",
                Model::generic(family),
                m.spec.address
            );
            m.family = Some(family);
            true
        });
        self.meters.sort_by_key(|m| m.spec.address);
        let mut first_ac = true;
        for m in &mut self.meters {
            if m.spec.role.is_none() {
                m.spec.role = Some(match m.family {
                    Some(Family::Ac) if first_ac => Role::Grid,
                    Some(Family::Ac) => Role::AcLoad,
                    _ => Role::DcSource,
                });
            }
            first_ac &= m.family != Some(Family::Ac);
        }
        self.targets = targets_of(&self.meters);
        let found: Vec<String> = self
            .meters
            .iter()
            .map(|m| {
                format!(
                    "{} at {}",
                    Model::generic(m.family.unwrap_or(Family::Ac)),
                    m.spec.address
                )
            })
            .collect();
        let found = if found.is_empty() {
            "nothing".to_owned()
        } else {
            found.join(", ")
        };
        log::info!("scan of {}: {found}", self.config.place);
    }

    /// Send the read for meter `index`; `family` overrides what is known
    /// (the DC retry of an `auto` meter).
    fn send(&mut self, now: Instant, index: usize, family: Option<Family>) {
        let (i, k) = self.targets[index];
        let m = &self.meters[i];
        let family = family.or(m.family).unwrap_or(Family::Ac);
        let request = match family {
            Family::Ac => READ_AC,
            Family::Dc => READ_DC,
        };
        let frame = self.exchange.start(now, m.phases[k].address, request);
        self.in_flight = Some(InFlight { index, family });
        self.commands.push_back(Command::Transmit(frame));
    }

    fn on_exchange_ended(&mut self, now: Instant, ended: Ended) {
        let Some(flight) = self.in_flight.take() else { return };
        let index = flight.index;
        let (i, _) = self.targets[index];
        let outcome = match ended {
            Ended::Failed(e) => Outcome::Failed(PollFailure::of(&e)),
            Ended::Reply => match self.exchange.reply() {
                Ok(Reply::Registers(regs)) => match flight.family {
                    Family::Ac => AcReading::from_registers(&regs).map(Reading::Ac),
                    Family::Dc => DcReading::from_registers(&regs).map(Reading::Dc),
                }
                .map_or(Outcome::Failed(PollFailure::Unexpected), Outcome::Reading),
                Ok(_) => Outcome::Failed(PollFailure::Garbled),
                Err(e)
                    if flight.family == Family::Ac
                        && self.meters[i].family.is_none()
                        && e.exception() == Some(ExceptionCode::IllegalDataAddress) =>
                {
                    // An `auto` meter refused the AC registers: same meter, same turn,
                    // ask for the DC ones once the line is quiet.
                    self.retry_as_dc = Some(index);
                    return;
                }
                Err(e) => Outcome::Failed(PollFailure::of(&e)),
            },
        };
        self.on_outcome(now, index, outcome);
        match &mut self.stage {
            Stage::Probing { index: at, tries, .. } => {
                let (i, k) = self.targets[index];
                if self.meters[i].phases[k].presence.is_present() {
                    *at += 1;
                    *tries = 0;
                }
            }
            Stage::Running { index: at, .. } => *at += 1,
            Stage::Done => {}
        }
    }

    fn on_outcome(&mut self, now: Instant, index: usize, outcome: Outcome) {
        let probing = matches!(self.stage, Stage::Probing { .. });
        let (i, k) = self.targets[index];
        let m = &mut self.meters[i];
        let grouped = m.phases.len() > 1;
        let last_phase = k + 1 == m.phases.len();
        let p = &mut m.phases[k];
        match outcome {
            Outcome::Reading(reading) => {
                self.last_any_ok = now;
                let family = reading.family();
                let identified = m.family.is_none();
                m.family = Some(family);
                let model = m.spec.model.resolve(m.family);
                if p.presence.ok() == PresenceChange::Appeared {
                    if probing {
                        self.answered_at_start += 1;
                    }
                    if grouped {
                        log::info!(
                            "phase L{} ({model}) at address {} answers on {}",
                            k + 1,
                            p.address,
                            self.config.place
                        );
                    } else {
                        log::info!("{model} at address {} answers on {}", p.address, self.config.place);
                    }
                }
                if self.config.discovery.is_some()
                    && p.seen_reported.is_none_or(|t| now.duration_since(t) >= SEEN_EVERY)
                {
                    p.seen_reported = Some(now);
                    self.commands.push_back(Command::Seen {
                        address: p.address,
                        family,
                    });
                }
                let max_step = p
                    .last_ok
                    .map(|t| max_plausible_increase_wh(family, now.duration_since(t)));
                p.last_ok = Some(now);
                let (total_wh, event) = p.energy.update(reading.energy_wh(), max_step);
                if let Some(event) = event {
                    log_energy_event(&p.id, event);
                    if matches!(event, EnergyEvent::CounterDropped { .. }) && !p.save_pending {
                        p.save_pending = true;
                        self.commands.push_back(Command::SaveEnergy {
                            address: p.address,
                            state: p.energy.state(),
                        });
                    }
                }
                if identified && !probing {
                    log::info!("{} at address {} identified", Model::generic(family), p.address);
                    self.commands.push_back(Command::Register {
                        address: m.spec.address,
                        default_role: m.spec.role_for(family),
                    });
                }
                if probing || m.record.is_none() {
                    return;
                }
                match (grouped, reading) {
                    (false, Reading::Ac(r)) => {
                        let mut phases = [PhaseUpdate::Unchanged; 3];
                        phases[0] = PhaseUpdate::Fresh {
                            reading: r,
                            energy_wh: total_wh,
                        };
                        self.commands.push_back(Command::Publish {
                            address: m.spec.address,
                            update: Update::Ac { phases },
                        });
                    }
                    (false, Reading::Dc(r)) => self.commands.push_back(Command::Publish {
                        address: m.spec.address,
                        update: Update::Dc {
                            reading: r,
                            energy_wh: total_wh,
                        },
                    }),
                    (true, Reading::Ac(r)) => p.fresh = Some((r, total_wh)),
                    (true, Reading::Dc(_)) => {
                        log::warn!("address {} of an AC phase group answers as a DC meter", p.address);
                    }
                }
            }
            Outcome::Failed(why) => {
                if probing {
                    log::debug!("probe at {}: {why}", p.address);
                    return;
                }
                // Silence is what failed polls show, not the time since the last answer.
                if let Some(limit) = self.config.silent_exit
                    && now.duration_since(self.last_any_ok) >= limit
                {
                    log::error!(
                        "no meter on {} has answered for {limit:?}; exiting so serial-starter can re-probe the port",
                        self.config.place
                    );
                    self.shutdown(now, ExitReason::NoMeter);
                    return;
                }
                let m = &mut self.meters[i];
                let model = m.spec.model.resolve(m.family);
                let p = &mut m.phases[k];
                if p.presence.failed() == PresenceChange::Vanished {
                    if grouped {
                        log::warn!(
                            "phase L{} ({model}) at address {} stopped answering ({why}): L{} and the totals are invalid until it is back",
                            k + 1,
                            p.address,
                            k + 1
                        );
                    } else {
                        log::warn!(
                            "{model} at address {} stopped answering ({why}); its values are invalid until it is back",
                            p.address,
                        );
                        if m.record.is_some() {
                            self.commands.push_back(Command::Invalidate {
                                address: m.spec.address,
                            });
                        }
                    }
                }
            }
        }
        let m = &mut self.meters[i];
        if grouped && last_phase && m.record.is_some() {
            // The whole group was read this cycle: one update with every phase.
            let mut phases = [PhaseUpdate::Unchanged; 3];
            for (slot, p) in phases.iter_mut().zip(&mut m.phases) {
                *slot = match p.fresh.take() {
                    Some((reading, energy_wh)) => PhaseUpdate::Fresh { reading, energy_wh },
                    None if !p.presence.is_present() => PhaseUpdate::Absent,
                    None => PhaseUpdate::Unchanged,
                };
            }
            self.commands.push_back(Command::Publish {
                address: m.spec.address,
                update: Update::Ac { phases },
            });
        }
    }

    fn save_due(&mut self, now: Instant) {
        for p in self.meters.iter_mut().flat_map(|m| &mut m.phases) {
            if !p.save_pending
                && p.energy.state() != p.energy_saved
                && now.duration_since(p.energy_saved_at) >= ENERGY_SAVE_EVERY
            {
                p.save_pending = true;
                self.commands.push_back(Command::SaveEnergy {
                    address: p.address,
                    state: p.energy.state(),
                });
            }
        }
    }
}

/// Every Modbus meter as (meter, phase), in polling order: a group's phases
/// one after the other, so they are read in the same cycle.
fn targets_of(meters: &[Meter]) -> Vec<(usize, usize)> {
    meters
        .iter()
        .enumerate()
        .flat_map(|(i, m)| (0..m.phases.len()).map(move |k| (i, k)))
        .collect()
}

fn log_energy_event(id: &str, event: EnergyEvent) {
    match event {
        EnergyEvent::CounterDropped { from, to } => log::warn!(
            "{id}: energy counter dropped from {from} Wh to {to} Wh (reset, replacement or wrap); \
             the published total carries on from where it was"
        ),
        EnergyEvent::JumpHeld { from, to } => {
            log::warn!("{id}: implausible energy jump {from} -> {to} Wh held back until confirmed")
        }
        EnergyEvent::JumpConfirmed { from, to } => {
            log::info!("{id}: energy jump {from} -> {to} Wh confirmed by the next reading")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelChoice, StopBits, frame_gap_us};
    use crate::sim::{SimBus, SimMeter};

    const SECOND: Duration = Duration::from_secs(1);
    const TURNAROUND: Duration = Duration::from_millis(30);

    fn spec(address: u8, model: &str, role: Option<Role>) -> MeterSpec {
        MeterSpec::single(
            Address::unit(u32::from(address)).unwrap(),
            model.parse::<ModelChoice>().unwrap(),
            role,
        )
    }

    fn addr(n: u8) -> Address {
        Address::unit(u32::from(n)).unwrap()
    }

    fn config(meters: Vec<MeterSpec>) -> LineConfig {
        LineConfig {
            place: "/dev/ttyTEST".into(),
            meters,
            port: PortId::serial("/dev/ttyTEST", None),
            framing: Framing::rtu_serial(StopBits::Two),
            timeout: Duration::from_millis(300),
            poll_interval: SECOND,
            startup_budget: Duration::from_secs(4),
            failures_to_vanish: 3,
            silent_exit: Some(Duration::from_secs(60)),
            discovery: None,
        }
    }

    /// A machine wired to a simulated line with synthetic time: the test's
    /// stand-in for the service loop. localsettings answers with `record`.
    struct Rig {
        line: MeterLine,
        bus: SimBus,
        now: Instant,
        reply: Option<(Instant, Vec<u8>)>,
        settings: bool,
        /// Every command, with when it was issued.
        log: Vec<(Instant, Command)>,
        /// (instance, role) that localsettings keeps per address.
        stored: Vec<(Address, ClassAndInstance)>,
    }

    impl Rig {
        fn new(config: LineConfig, sims: Vec<SimMeter>, settings: bool) -> Rig {
            let now = Instant::now();
            let mut bus = SimBus::new(sims, 1);
            bus.advance_to(now);
            Rig {
                line: MeterLine::new(config, now),
                bus,
                now,
                reply: None,
                settings,
                log: Vec::new(),
                stored: Vec::new(),
            }
        }

        /// Carry out commands and let time pass until `until`.
        fn run_until(&mut self, until: Instant) {
            loop {
                self.drain();
                if self.exited().is_some() {
                    return;
                }
                let next = [self.line.deadline(), self.reply.as_ref().map(|r| r.0)]
                    .into_iter()
                    .flatten()
                    .min();
                let Some(next) = next.filter(|t| *t <= until) else {
                    self.now = until.max(self.now);
                    return;
                };
                self.now = next.max(self.now);
                match self.reply.take() {
                    Some((at, bytes)) if at <= self.now => self.line.handle_input(self.now, &bytes),
                    other => {
                        self.reply = other;
                        self.line.handle_timeout(self.now);
                    }
                }
            }
        }

        fn run_for(&mut self, d: Duration) {
            self.run_until(self.now + d);
        }

        fn drain(&mut self) {
            while let Some(c) = self.line.poll_command() {
                match &c {
                    Command::Transmit(frame) => {
                        let r = self.bus.respond_rtu(frame.as_bytes(), self.now);
                        if !r.bytes.is_empty() {
                            self.reply = Some((self.now + TURNAROUND + r.delay, r.bytes));
                        }
                    }
                    Command::Register {
                        address, default_role, ..
                    } => {
                        let record = self.settings.then(|| {
                            let kept = self.stored.iter().find(|s| s.0 == *address).map(|s| s.1);
                            let c = kept.unwrap_or(ClassAndInstance {
                                role: *default_role,
                                instance: 40 + self.stored.len() as i32,
                            });
                            self.stored.retain(|s| s.0 != *address);
                            self.stored.push((*address, c));
                            DeviceRecord {
                                role: c.role,
                                instance: c.instance,
                                custom_name: String::new(),
                                position: 0,
                            }
                        });
                        self.line.handle_record(self.now, *address, record);
                    }
                    Command::StoreClass {
                        address,
                        role,
                        instance,
                    } => {
                        let stored = if self.settings {
                            ClassStored::Stored(ClassAndInstance {
                                role: *role,
                                instance: instance + 100,
                            })
                        } else {
                            ClassStored::NotStored
                        };
                        self.line.handle_class_stored(self.now, *address, *role, stored);
                    }
                    Command::SaveEnergy { address, state } => {
                        self.line.handle_energy_saved(self.now, *address, *state);
                    }
                    _ => {}
                }
                self.log.push((self.now, c));
            }
        }

        fn exited(&self) -> Option<ExitReason> {
            self.log.iter().find_map(|(_, c)| match c {
                Command::Exit(r) => Some(*r),
                _ => None,
            })
        }

        fn published(&self, a: Address) -> Vec<(Instant, f64)> {
            self.log
                .iter()
                .filter_map(|(t, c)| match c {
                    Command::Publish { address, update } if *address == a => {
                        Some((*t, energy_of(update)? as f64 / 1000.0))
                    }
                    _ => None,
                })
                .collect()
        }

        fn count(&self, f: impl Fn(&Command) -> bool) -> usize {
            self.log.iter().filter(|(_, c)| f(c)).count()
        }

        fn services(&self) -> Vec<(String, i32)> {
            self.log
                .iter()
                .filter_map(|(_, c)| match c {
                    Command::StartService { name, identity, .. } => Some((name.clone(), identity.instance)),
                    _ => None,
                })
                .collect()
        }

        fn transmits(&self) -> Vec<(Instant, u8, u8)> {
            self.log
                .iter()
                .filter_map(|(t, c)| match c {
                    Command::Transmit(f) => Some((*t, f.as_bytes()[0], f.as_bytes()[5])),
                    _ => None,
                })
                .collect()
        }
    }

    /// The energy total (Wh) an update publishes: L1's, or the DC meter's.
    fn energy_of(update: &Update) -> Option<u64> {
        match update {
            Update::Ac { phases, .. } => match phases[0] {
                PhaseUpdate::Fresh { energy_wh, .. } => Some(energy_wh),
                _ => None,
            },
            Update::Dc { energy_wh, .. } => Some(*energy_wh),
        }
    }

    fn two_meters() -> Rig {
        Rig::new(
            config(vec![
                spec(1, "016", Some(Role::Grid)),
                spec(2, "017", Some(Role::DcLoad)),
            ]),
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem017, 2)],
            true,
        )
    }

    #[test]
    fn probes_registers_publishes_then_polls_each_meter_once_per_interval() {
        let mut rig = two_meters();
        rig.run_for(SECOND / 2);
        assert_eq!(
            rig.services(),
            vec![
                ("com.victronenergy.grid.pzem_ttyTEST_1".into(), 40),
                ("com.victronenergy.dcload.pzem_ttyTEST_2".into(), 41)
            ]
        );
        let t0 = rig.now;
        rig.run_for(10 * SECOND);
        for a in [addr(1), addr(2)] {
            let p = rig.published(a);
            assert!((10..=11).contains(&p.len()), "{} polls of {a} in 10 s", p.len());
            for w in p.windows(2) {
                let gap = w[1].0 - w[0].0;
                assert!(gap >= SECOND - Duration::from_millis(1) && gap < SECOND + Duration::from_millis(50));
                assert!(w[1].1 >= w[0].1, "energy went back");
            }
        }
        // Each request waits for the silence after the previous reply.
        let quiet = Duration::from_micros(frame_gap_us(StopBits::Two));
        let tx: Vec<_> = rig.transmits().into_iter().filter(|t| t.0 > t0).collect();
        for w in tx.windows(2) {
            assert!(w[1].0 - w[0].0 >= TURNAROUND + quiet, "{:?}", w[1].0 - w[0].0);
        }
        // AC meters are asked for 10 registers, DC meters for 8.
        assert!(tx.iter().all(|&(_, a, n)| (a, n) == (1, 10) || (a, n) == (2, 8)));
        assert_eq!(rig.exited(), None);
    }

    #[test]
    fn interval_zero_polls_back_to_back_at_the_silence() {
        let mut cfg = config(vec![spec(1, "016", None), spec(2, "017", None)]);
        cfg.poll_interval = Duration::ZERO;
        let mut rig = Rig::new(
            cfg,
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem017, 2)],
            true,
        );
        rig.run_for(SECOND);
        let quiet = Duration::from_micros(frame_gap_us(StopBits::Two));
        let tx = rig.transmits();
        let n = tx.len() as u32;
        // Every request goes out exactly one turnaround plus one silence after the last.
        assert!(
            n >= SECOND.as_micros() as u32 / (TURNAROUND + quiet).as_micros() as u32 - 1,
            "{n}"
        );
        for w in tx.windows(2).skip(4) {
            assert_eq!(w[1].0 - w[0].0, TURNAROUND + quiet);
        }
    }

    #[test]
    fn no_answer_at_start_up_exits_1_within_the_budget_having_sent_only_reads() {
        let mut rig = Rig::new(config(vec![spec(1, "auto", None), spec(7, "016", None)]), vec![], true);
        rig.run_for(10 * SECOND);
        assert_eq!(rig.exited(), Some(ExitReason::NoMeter));
        let (t_exit, _) = rig.log.last().unwrap();
        assert!(*t_exit - rig.log[0].0 < Duration::from_secs(2), "4 tries of 300 ms");
        let tx = rig.transmits();
        assert_eq!(tx.len(), 4, "two tries per meter");
        assert!(rig.count(|c| matches!(c, Command::Register { .. } | Command::StartService { .. })) == 0);
    }

    #[test]
    fn a_silent_meter_is_invalidated_once_and_published_again_when_back() {
        let mut rig = two_meters();
        rig.run_for(3 * SECOND);
        rig.bus.meter_mut(1).unwrap().silent = true;
        let silent_from = rig.now;
        rig.run_for(5 * SECOND);
        let invalidated: Vec<_> = rig
            .log
            .iter()
            .filter(|(_, c)| *c == Command::Invalidate { address: addr(1) })
            .map(|(t, _)| *t)
            .collect();
        assert_eq!(invalidated.len(), 1);
        // After the third failed poll, not before.
        assert!(
            invalidated[0] - silent_from >= 2 * SECOND,
            "{:?}",
            invalidated[0] - silent_from
        );
        assert!(rig.published(addr(1)).iter().all(|(t, _)| *t < silent_from + SECOND));
        // The DC meter carried on.
        assert!(rig.published(addr(2)).iter().filter(|(t, _)| *t > silent_from).count() >= 4);
        rig.bus.meter_mut(1).unwrap().silent = false;
        let back = rig.now;
        rig.run_for(2 * SECOND);
        assert!(rig.published(addr(1)).iter().any(|(t, _)| *t > back));
    }

    #[test]
    fn exits_when_every_meter_was_silent_for_the_limit_and_not_before() {
        let mut cfg = config(vec![spec(1, "016", None), spec(2, "017", None)]);
        cfg.silent_exit = Some(Duration::from_secs(5));
        let mut rig = Rig::new(
            cfg,
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem017, 2)],
            true,
        );
        rig.run_for(2 * SECOND);
        rig.bus.meter_mut(1).unwrap().silent = true;
        rig.run_for(10 * SECOND);
        assert_eq!(rig.exited(), None, "one meter still answers");
        rig.bus.meter_mut(2).unwrap().silent = true;
        let all_silent = rig.now;
        rig.run_for(10 * SECOND);
        assert_eq!(rig.exited(), Some(ExitReason::NoMeter));
        let t_exit = rig.log.last().unwrap().0;
        assert!(t_exit - all_silent >= Duration::from_secs(4) && t_exit - all_silent < Duration::from_secs(7));
    }

    #[test]
    fn a_role_write_stores_the_class_and_re_registers_under_the_new_class() {
        let mut rig = two_meters();
        rig.run_for(2 * SECOND);
        let now = rig.now;
        let w = |rig: &mut Rig, a: u8, path: &str, v: Value| rig.line.handle_write(now, addr(a), path, &v);
        assert_eq!(
            w(&mut rig, 1, "/Role", "dcload".into()),
            WriteOutcome::Reject(SET_REJECTED)
        );
        assert_eq!(
            w(&mut rig, 1, "/Role", "battery".into()),
            WriteOutcome::Reject(SET_REJECTED)
        );
        assert_eq!(
            w(&mut rig, 1, "/Role", Value::Int(3)),
            WriteOutcome::Reject(SET_REJECTED)
        );
        assert_eq!(
            w(&mut rig, 9, "/Role", "grid".into()),
            WriteOutcome::Reject(SET_REJECTED)
        );
        assert_eq!(
            w(&mut rig, 1, "/Role", "grid".into()),
            WriteOutcome::Accept,
            "unchanged is fine"
        );
        assert_eq!(rig.line.poll_command(), None, "nothing to store");
        assert_eq!(w(&mut rig, 1, "/Role", "acload".into()), WriteOutcome::Accept);
        rig.run_for(2 * SECOND);
        let services = rig.services();
        // localsettings (the double) moved the instance to 140: that is what is published.
        assert_eq!(
            services.last().unwrap(),
            &("com.victronenergy.acload.pzem_ttyTEST_1".into(), 140)
        );
        let restarted = rig
            .log
            .iter()
            .rposition(|(_, c)| matches!(c, Command::StartService { .. }))
            .unwrap();
        assert!(
            rig.log[restarted..]
                .iter()
                .any(|(_, c)| matches!(c, Command::Publish { address, .. } if *address == addr(1))),
            "published again under the new class"
        );
    }

    #[test]
    fn without_localsettings_roles_get_free_instances_from_40() {
        let mut rig = Rig::new(
            config(vec![spec(1, "016", Some(Role::Grid)), spec(2, "016", Some(Role::Grid))]),
            vec![SimMeter::new(Model::Pzem016, 1), SimMeter::new(Model::Pzem016, 2)],
            false,
        );
        rig.run_for(SECOND);
        let names: Vec<i32> = rig.services().iter().map(|s| s.1).collect();
        assert_eq!(names, vec![40, 41]);
        rig.line.handle_write(rig.now, addr(2), "/Role", &"acload".into());
        rig.run_for(SECOND);
        assert_eq!(
            rig.services().last().unwrap(),
            &("com.victronenergy.acload.pzem_ttyTEST_2".into(), 40)
        );
    }

    #[test]
    fn name_and_position_writes_are_checked_and_stored() {
        let mut rig = Rig::new(
            config(vec![spec(1, "016", Some(Role::PvInverter))]),
            vec![SimMeter::new(Model::Pzem016, 1)],
            true,
        );
        rig.run_for(SECOND);
        let now = rig.now;
        let mut w = |path: &str, v: Value| rig.line.handle_write(now, addr(1), path, &v);
        assert_eq!(w("/CustomName", "Shed\n".into()), WriteOutcome::Reject(SET_REJECTED));
        assert_eq!(
            w("/CustomName", "x".repeat(65).into()),
            WriteOutcome::Reject(SET_REJECTED)
        );
        assert_eq!(w("/Position", Value::Int(3)), WriteOutcome::Reject(SET_REJECTED));
        assert_eq!(w("/Position", Value::Int(-1)), WriteOutcome::Reject(SET_REJECTED));
        assert_eq!(w("/Ac/Power", Value::Double(1.0)), WriteOutcome::Reject(SET_REJECTED));
        assert_eq!(w("/CustomName", "Shed".into()), WriteOutcome::Accept);
        assert_eq!(w("/Position", Value::Int(2)), WriteOutcome::Accept);
        let stores: Vec<Command> = std::iter::from_fn(|| rig.line.poll_command()).collect();
        assert_eq!(
            stores,
            vec![
                Command::StoreSetting {
                    address: addr(1),
                    field: Field::CustomName,
                    value: "Shed".into()
                },
                Command::StoreSetting {
                    address: addr(1),
                    field: Field::Position,
                    value: Value::Int(2)
                }
            ]
        );
    }

    #[test]
    fn the_configured_name_shows_until_the_gui_gives_one() {
        let mut named = spec(1, "016", Some(Role::Grid));
        named.name = Some("Mains".into());
        for settings in [true, false] {
            let mut rig = Rig::new(
                config(vec![named.clone()]),
                vec![SimMeter::new(Model::Pzem016, 1)],
                settings,
            );
            rig.run_for(SECOND);
            let shown: Vec<String> = rig
                .log
                .iter()
                .filter_map(|(_, c)| match c {
                    Command::StartService { identity, .. } => Some(identity.custom_name.clone()),
                    _ => None,
                })
                .collect();
            assert_eq!(shown, ["Mains"], "with localsettings: {settings}");
        }
        let mut rig = Rig::new(config(vec![named]), vec![SimMeter::new(Model::Pzem016, 1)], true);
        rig.run_for(SECOND);
        let id = rig.line.meter_id(addr(1)).unwrap().to_owned();
        let now = rig.now;
        // A name given in the GUI wins; clearing it shows the configured one again.
        assert_eq!(
            rig.line.handle_write(now, addr(1), "/CustomName", &"Grid in".into()),
            WriteOutcome::Accept
        );
        assert_eq!(
            rig.line.handle_write(now, addr(1), "/CustomName", &"".into()),
            WriteOutcome::AcceptAs("Mains".into())
        );
        let stored: Vec<Value> = std::iter::from_fn(|| rig.line.poll_command())
            .filter_map(|c| match c {
                Command::StoreSetting {
                    field: Field::CustomName,
                    value,
                    ..
                } => Some(value),
                _ => None,
            })
            .collect();
        assert_eq!(
            stored,
            [Value::from("Grid in"), Value::from("")],
            "the GUI's names are stored, not the file's"
        );
        let change = |value: &str| SettingChange {
            id: id.clone(),
            field: Field::CustomName,
            value: value.into(),
        };
        rig.line.handle_setting(now, change("Boat"));
        rig.line.handle_setting(now, change(""));
        let set: Vec<Value> = std::iter::from_fn(|| rig.line.poll_command())
            .filter_map(|c| match c {
                Command::SetPath {
                    path: "/CustomName",
                    value,
                    ..
                } => Some(value),
                _ => None,
            })
            .collect();
        assert_eq!(set, [Value::from("Boat"), Value::from("Mains")]);
    }

    #[test]
    fn instance_edits_in_localsettings_re_register_and_bad_ones_are_ignored() {
        let mut rig = two_meters();
        rig.run_for(SECOND);
        let id = rig.line.meter_id(addr(1)).unwrap().to_owned();
        let change = |field, value: &str| SettingChange {
            id: id.clone(),
            field,
            value: value.into(),
        };
        let n = rig.services().len();
        for bad in ["grid", "dcload:3", "grid:x", "grid:40"] {
            rig.line
                .handle_setting(rig.now, change(Field::ClassAndVrmInstance, bad));
        }
        rig.run_for(SECOND);
        assert_eq!(rig.services().len(), n, "nothing re-registered");
        rig.line
            .handle_setting(rig.now, change(Field::ClassAndVrmInstance, "grid:45"));
        rig.line.handle_setting(rig.now, change(Field::CustomName, "Mains"));
        rig.run_for(SECOND);
        assert_eq!(rig.services().last().unwrap().1, 45);
        assert_eq!(
            rig.count(|c| *c
                == Command::SetPath {
                    address: addr(1),
                    path: "/CustomName",
                    value: "Mains".into()
                }),
            1
        );
    }

    #[test]
    fn a_counter_reset_is_saved_at_once_and_the_total_never_drops() {
        let mut rig = two_meters();
        rig.line.restore_energy(
            addr(1),
            EnergyState {
                offset_wh: 0,
                last_raw_wh: Some(5_000),
            },
        );
        rig.bus.meter_mut(1).unwrap().set_energy_wh(5_010);
        rig.run_for(3 * SECOND);
        assert_eq!(rig.count(|c| matches!(c, Command::SaveEnergy { .. })), 0);
        rig.bus.meter_mut(1).unwrap().set_energy_wh(0);
        rig.run_for(3 * SECOND);
        let saves: Vec<EnergyState> = rig
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::SaveEnergy { address, state } if *address == addr(1) => Some(*state),
                _ => None,
            })
            .collect();
        assert_eq!(saves.len(), 1);
        assert!(saves[0].offset_wh >= 5_010);
        let kwh: Vec<f64> = rig.published(addr(1)).iter().map(|p| p.1).collect();
        assert!(kwh.windows(2).all(|w| w[1] >= w[0]), "{kwh:?}");
        assert!(*kwh.last().unwrap() >= 5.010);
    }

    #[test]
    fn changed_energy_is_saved_every_ten_minutes_and_at_shutdown() {
        let mut rig = two_meters();
        rig.run_for(ENERGY_SAVE_EVERY + 5 * SECOND);
        let saves = rig.count(|c| matches!(c, Command::SaveEnergy { .. }));
        assert_eq!(saves, 2, "one per meter whose counter moved");
        rig.run_for(10 * SECOND);
        rig.line.shutdown(rig.now, ExitReason::Stopped);
        rig.drain();
        let tail: Vec<&Command> = rig.log.iter().rev().take(3).map(|(_, c)| c).collect();
        assert_eq!(tail[0], &Command::Exit(ExitReason::Stopped));
        assert!(tail[1..].iter().all(|c| matches!(c, Command::SaveEnergy { .. })));
    }

    #[test]
    fn an_auto_meter_refusing_ac_registers_is_read_as_dc() {
        let mut rig = Rig::new(
            config(vec![spec(5, "auto", None)]),
            vec![SimMeter::new(Model::Pzem017, 5)],
            true,
        );
        rig.run_for(3 * SECOND);
        let reg: Vec<Role> = rig
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::Register { default_role, .. } => Some(*default_role),
                _ => None,
            })
            .collect();
        assert_eq!(reg, vec![Role::DcSource]);
        assert_eq!(rig.services()[0].0, "com.victronenergy.dcsource.pzem_ttyTEST_5");
        assert!(rig.published(addr(5)).len() >= 2);
        // After the first, every read asks for the DC registers only.
        assert!(rig.transmits().iter().skip(2).all(|t| t.2 == 8));
    }

    #[test]
    fn the_deadline_is_the_next_cycle_between_cycles() {
        let mut rig = two_meters();
        rig.run_for(2500 * Duration::from_millis(1));
        let d = rig.line.deadline().unwrap();
        let last_tx = rig.transmits().last().unwrap().0;
        assert!(d > rig.now && d - last_tx < SECOND, "{:?}", d - rig.now);
        // Nothing happens before it.
        rig.line.handle_timeout(d - Duration::from_millis(1));
        assert_eq!(rig.line.poll_command(), None);
    }

    fn grid_of_three() -> Rig {
        let group = MeterSpec::parse("1+2+3:016:grid").unwrap();
        Rig::new(
            config(vec![group, spec(9, "017", None)]),
            vec![
                SimMeter::new(Model::Pzem016, 1),
                SimMeter::new(Model::Pzem016, 2),
                SimMeter::new(Model::Pzem016, 3),
                SimMeter::new(Model::Pzem017, 9),
            ],
            true,
        )
    }

    fn group_updates(rig: &Rig) -> Vec<(Instant, [PhaseUpdate; 3])> {
        rig.log
            .iter()
            .filter_map(|(t, c)| match c {
                Command::Publish {
                    address,
                    update: Update::Ac { phases },
                } if *address == addr(1) => Some((*t, *phases)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_phase_group_is_one_service_published_once_per_cycle_with_every_phase() {
        let mut rig = grid_of_three();
        rig.run_for(SECOND / 2);
        assert_eq!(
            rig.services(),
            vec![
                ("com.victronenergy.grid.pzem_ttyTEST_1".into(), 40),
                ("com.victronenergy.dcsource.pzem_ttyTEST_9".into(), 41)
            ]
        );
        let started = rig.log.iter().find_map(|(_, c)| match c {
            Command::StartService { identity, .. } if identity.role == Role::Grid => Some(identity.phases),
            _ => None,
        });
        assert_eq!(started, Some(3));
        rig.run_for(5 * SECOND);
        let updates = group_updates(&rig);
        assert!((5..=6).contains(&updates.len()), "{} updates in 5 s", updates.len());
        assert!(
            updates
                .iter()
                .all(|(_, p)| p.iter().all(|u| matches!(u, PhaseUpdate::Fresh { .. })))
        );
        // All three phases are read in one cycle, one right after the other.
        let tx = rig.transmits();
        let cycle: Vec<u8> = tx.iter().rev().take(4).rev().map(|t| t.1).collect();
        assert_eq!(cycle, vec![1, 2, 3, 9]);
        // Each phase has its own energy file.
        assert_eq!(rig.line.meter_id(addr(2)), Some("pzem_ttyTEST_2"));
        assert_eq!(
            rig.line.addresses().collect::<Vec<_>>(),
            vec![addr(1), addr(2), addr(3), addr(9)]
        );
    }

    #[test]
    fn a_silent_phase_is_absent_alone_and_comes_back() {
        let mut rig = grid_of_three();
        rig.run_for(3 * SECOND);
        rig.bus.meter_mut(2).unwrap().silent = true;
        let from = rig.now;
        rig.run_for(5 * SECOND);
        let after: Vec<[PhaseUpdate; 3]> = group_updates(&rig)
            .into_iter()
            .filter(|u| u.0 > from)
            .map(|u| u.1)
            .collect();
        // Two missed polls keep L2 as it was, the third makes it absent; L1 and L3 stay fresh.
        assert!(matches!(after[0][1], PhaseUpdate::Unchanged), "{:?}", after[0][1]);
        assert!(matches!(after[1][1], PhaseUpdate::Unchanged));
        assert!(after[2..].iter().all(|u| u[1] == PhaseUpdate::Absent), "{after:?}");
        assert!(
            after
                .iter()
                .all(|u| matches!((u[0], u[2]), (PhaseUpdate::Fresh { .. }, PhaseUpdate::Fresh { .. })))
        );
        assert_eq!(
            rig.count(|c| matches!(c, Command::Invalidate { .. })),
            0,
            "the group stays"
        );
        rig.bus.meter_mut(2).unwrap().silent = false;
        let back = rig.now;
        rig.run_for(2 * SECOND);
        let last = group_updates(&rig).into_iter().rfind(|u| u.0 > back).unwrap().1;
        assert!(last.iter().all(|u| matches!(u, PhaseUpdate::Fresh { .. })));
    }

    #[test]
    fn a_reset_of_one_phase_is_absorbed_and_saved_for_that_phase() {
        let mut rig = grid_of_three();
        rig.line.restore_energy(
            addr(3),
            EnergyState {
                offset_wh: 0,
                last_raw_wh: Some(7_000),
            },
        );
        rig.bus.meter_mut(3).unwrap().set_energy_wh(7_001);
        rig.run_for(3 * SECOND);
        rig.bus.meter_mut(3).unwrap().set_energy_wh(0);
        rig.run_for(3 * SECOND);
        let saved: Vec<Address> = rig
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::SaveEnergy { address, .. } => Some(*address),
                _ => None,
            })
            .collect();
        assert_eq!(saved, vec![addr(3)]);
        let l3: Vec<u64> = group_updates(&rig)
            .iter()
            .filter_map(|u| match u.1[2] {
                PhaseUpdate::Fresh { energy_wh, .. } => Some(energy_wh),
                _ => None,
            })
            .collect();
        assert!(
            l3.windows(2).all(|w| w[1] >= w[0]) && *l3.last().unwrap() >= 7_001,
            "{l3:?}"
        );
    }

    #[test]
    fn a_group_switches_role_as_one() {
        let mut rig = grid_of_three();
        rig.run_for(2 * SECOND);
        assert_eq!(
            rig.line.handle_write(rig.now, addr(2), "/Role", &"acload".into()),
            WriteOutcome::Reject(SET_REJECTED),
            "L2 names no service"
        );
        assert_eq!(
            rig.line.handle_write(rig.now, addr(1), "/Role", &"acload".into()),
            WriteOutcome::Accept
        );
        rig.run_for(2 * SECOND);
        let (name, _) = rig.services().last().unwrap().clone();
        assert_eq!(name, "com.victronenergy.acload.pzem_ttyTEST_1");
        let t = rig.now;
        rig.run_for(2 * SECOND);
        assert!(group_updates(&rig).iter().any(|u| u.0 > t));
    }

    fn scan(range: std::ops::RangeInclusive<u8>, remembered: Vec<(Address, Family)>, sims: Vec<SimMeter>) -> Rig {
        let mut cfg = config(range.map(|a| spec(a, "auto", None)).collect());
        cfg.discovery = Some(Discovery {
            remembered,
            scan_timeout: Duration::from_millis(100),
        });
        Rig::new(cfg, sims, true)
    }

    #[test]
    fn a_scan_publishes_what_answers_with_default_roles_and_remembers_it() {
        let mut rig = scan(
            1..=10,
            vec![],
            vec![
                SimMeter::new(Model::Pzem016, 3),
                SimMeter::new(Model::Pzem017, 7),
                SimMeter::new(Model::Pzem016, 9),
            ],
        );
        rig.run_for(3 * SECOND);
        assert_eq!(
            rig.services().iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            vec![
                "com.victronenergy.grid.pzem_ttyTEST_3",
                "com.victronenergy.dcsource.pzem_ttyTEST_7",
                "com.victronenergy.acload.pzem_ttyTEST_9"
            ]
        );
        let seen: Vec<(Address, Family)> = rig
            .log
            .iter()
            .filter_map(|(_, c)| match c {
                Command::Seen { address, family } => Some((*address, *family)),
                _ => None,
            })
            .collect();
        assert_eq!(
            seen,
            vec![(addr(3), Family::Ac), (addr(7), Family::Dc), (addr(9), Family::Ac)],
            "once each"
        );
        // After the scan only the meters found are polled, with the normal timeout.
        let t = rig.now;
        rig.run_for(3 * SECOND);
        let polled: std::collections::BTreeSet<u8> = rig.transmits().iter().filter(|x| x.0 > t).map(|x| x.1).collect();
        assert_eq!(polled.into_iter().collect::<Vec<_>>(), vec![3, 7, 9]);
        assert_eq!(rig.exited(), None);
    }

    #[test]
    fn an_empty_scan_of_32_addresses_exits_within_4_s() {
        let mut rig = scan(1..=32, vec![], vec![]);
        rig.run_for(10 * SECOND);
        assert_eq!(rig.exited(), Some(ExitReason::NoMeter));
        let took = rig.log.last().unwrap().0 - rig.log[0].0;
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert_eq!(rig.transmits().len(), 32, "one read per address");
    }

    #[test]
    fn a_remembered_meter_is_published_while_silent_and_answers_later() {
        let mut rig = scan(
            1..=8,
            vec![(addr(7), Family::Dc), (addr(20), Family::Ac)],
            vec![SimMeter::new(Model::Pzem016, 3)],
        );
        rig.bus.meters.push({
            let mut m = SimMeter::new(Model::Pzem017, 7);
            m.silent = true;
            m
        });
        rig.run_for(3 * SECOND);
        let names: Vec<String> = rig.services().into_iter().map(|s| s.0).collect();
        assert_eq!(
            names,
            vec![
                "com.victronenergy.grid.pzem_ttyTEST_3",
                "com.victronenergy.dcsource.pzem_ttyTEST_7",
                "com.victronenergy.acload.pzem_ttyTEST_20"
            ],
            "remembered ones outside the range are scanned too"
        );
        assert!(rig.published(addr(7)).is_empty());
        rig.bus.meter_mut(7).unwrap().silent = false;
        rig.run_for(3 * SECOND);
        assert!(!rig.published(addr(7)).is_empty());
        assert!(
            rig.count(|c| *c
                == Command::Seen {
                    address: addr(7),
                    family: Family::Dc
                })
                == 1
        );
    }

    #[test]
    fn a_position_setting_is_not_set_on_a_role_without_one() {
        let mut rig = Rig::new(
            config(vec![spec(1, "016", Some(Role::PvInverter))]),
            vec![SimMeter::new(Model::Pzem016, 1)],
            true,
        );
        rig.run_for(SECOND);
        let id = rig.line.meter_id(addr(1)).unwrap().to_owned();
        let change = |field, value: Value| SettingChange {
            id: id.clone(),
            field,
            value,
        };
        rig.line.handle_setting(rig.now, change(Field::Position, Value::Int(2)));
        rig.line
            .handle_setting(rig.now, change(Field::ClassAndVrmInstance, "grid:40".into()));
        rig.run_for(SECOND);
        let before = rig.count(|c| matches!(c, Command::SetPath { path: "/Position", .. }));
        assert_eq!(before, 1, "the pvinverter's position was set");
        // Now a grid meter: its tree has no /Position, so a stored one sets nothing.
        rig.line.handle_setting(rig.now, change(Field::Position, Value::Int(0)));
        rig.run_for(SECOND);
        assert_eq!(
            rig.count(|c| matches!(c, Command::SetPath { path: "/Position", .. })),
            before
        );
    }
}
