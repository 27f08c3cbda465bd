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
use crate::dbus::service::{SET_REJECTED, WriteOutcome};
use crate::energy::{EnergyEvent, EnergyState, MonotonicEnergy, max_plausible_increase_wh};
use crate::error::Error;
use crate::exchange::{Ended, Exchange, Framing};
use crate::frame::{ExceptionCode, Reply, Request, RequestFrame};
use crate::model::{Family, Model};
use crate::{AcReading, DcReading, Reading, ac, dc};

use super::config::MeterSpec;
use super::layout::MeterIdentity;
use super::naming::PortId;
use super::presence::{Presence, PresenceChange};
use super::role::Role;
use super::settings::{ClassAndInstance, DeviceRecord, Field, PREFERRED_INSTANCE, SettingChange};

/// Process name published in `/Mgmt/ProcessName`.
pub const PROCESS_NAME: &str = "pzem-dbus";

/// How often changed energy state is written to flash at most.
pub const ENERGY_SAVE_EVERY: Duration = Duration::from_secs(600);

/// Tries per meter at start-up.
const PROBE_TRIES: u8 = 2;

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
        /// Its role when it has no record yet, or a record of another family.
        default_role: Role,
        /// The roles its family may take.
        allowed: &'static [Role],
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
    /// A reading to publish, with the monotonic energy total in kWh: one
    /// `ItemsChanged` with what changed.
    Publish {
        /// The meter.
        address: Address,
        /// What it read.
        reading: Reading,
        /// Its published energy total.
        energy_kwh: f64,
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
}

struct Meter {
    spec: MeterSpec,
    id: String,
    family: Option<Family>,
    record: Option<DeviceRecord>,
    presence: Presence,
    energy: MonotonicEnergy,
    energy_saved: EnergyState,
    energy_saved_at: Instant,
    save_pending: bool,
    last_ok: Option<Instant>,
}

impl Meter {
    fn model(&self) -> Model {
        self.spec.model.resolve(self.family)
    }
}

#[derive(Clone, Copy, Debug)]
enum Phase {
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
    address: Address,
    family: Family,
}

/// The meters on one line, as a state machine (see the module docs).
pub struct MeterLine {
    config: LineConfig,
    meters: Vec<Meter>,
    exchange: Exchange,
    phase: Phase,
    in_flight: Option<InFlight>,
    /// An `auto` meter that refused the AC registers, to be read as DC next.
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
    /// An `auto` meter refused the AC registers: it may be a DC meter.
    NotAc,
    Failed(PollFailure),
}

impl MeterLine {
    /// A machine for `config`, starting its probe at `now`. Meters start
    /// with empty energy state; restore saved state with
    /// [`MeterLine::restore_energy`] before the first input.
    pub fn new(config: LineConfig, now: Instant) -> MeterLine {
        let meters = config
            .meters
            .iter()
            .map(|spec| Meter {
                spec: *spec,
                id: config.port.device_id(spec.address.get()),
                family: spec.model.family(),
                record: None,
                presence: Presence::new(config.failures_to_vanish),
                energy: MonotonicEnergy::default(),
                energy_saved: EnergyState::default(),
                energy_saved_at: now,
                save_pending: false,
                last_ok: None,
            })
            .collect();
        let mut line = MeterLine {
            exchange: Exchange::new(config.framing, config.timeout),
            phase: Phase::Probing {
                until: now + config.startup_budget,
                index: 0,
                tries: 0,
            },
            meters,
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

    /// The settings id of the meter at `address` (`pzem_<port>_<address>`),
    /// also the name of its energy state file.
    pub fn meter_id(&self, address: Address) -> Option<&str> {
        self.meter(address).map(|m| m.id.as_str())
    }

    /// The addresses of the meters, in polling order.
    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        self.meters.iter().map(|m| m.spec.address)
    }

    /// The energy state a meter continues from (loaded from its file).
    pub fn restore_energy(&mut self, address: Address, state: EnergyState) {
        if let Some(m) = self.meter_mut(address) {
            m.energy = MonotonicEnergy::new(state);
            m.energy_saved = state;
        }
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When the machine next needs [`MeterLine::handle_timeout`]: a reply
    /// timeout, the next request (poll time and inter-frame silence), an
    /// energy save, the silent-exit limit. `None`: only inputs matter.
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
        for m in &self.meters {
            if m.energy.state() != m.energy_saved && !m.save_pending {
                earliest(Some(m.energy_saved_at + ENERGY_SAVE_EVERY));
            }
        }
        next
    }

    /// Bytes arrived from the line at `now`.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        let input = self.exchange.handle_input(now, bytes);
        if input.dropped > 0 {
            log::debug!("dropped {} stray byte(s) from the line", input.dropped);
        }
        if let Some(ended) = input.ended {
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
                Ok(role) if Role::allowed(family).contains(&role) => (role != record.role).then_some(Command::StoreClass {
                    address,
                    role,
                    instance: record.instance,
                }),
                _ => return WriteOutcome::Reject(SET_REJECTED),
            },
            ("/CustomName", Value::Str(name)) if name.len() <= 64 && !name.chars().any(char::is_control) => {
                record.custom_name.clone_from(name);
                Some(Command::StoreSetting {
                    address,
                    field: Field::CustomName,
                    value: Value::Str(name.clone()),
                })
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
        let Some(i) = self.meters.iter().position(|m| m.id == change.device) else {
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
                                change.device,
                                record.role,
                                record.instance
                            );
                            record.role = role;
                            record.instance = instance;
                            self.start_service(i);
                        }
                    }
                    _ => log::warn!("{}: ignoring ClassAndVrmInstance {:?}", change.device, change.value),
                }
            }
            Field::CustomName => {
                let name = change.value.as_str().unwrap_or("");
                if name != record.custom_name {
                    record.custom_name = name.to_owned();
                    self.commands.push_back(Command::SetPath {
                        address,
                        path: "/CustomName",
                        value: Value::Str(name.to_owned()),
                    });
                }
            }
            Field::Position => {
                let max = record.role.position().map_or(0, |k| k.max());
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
        if let Some(m) = self.meter_mut(address) {
            m.energy_saved = state;
            m.energy_saved_at = now;
            m.save_pending = false;
        }
    }

    /// A save of the meter's energy state failed: try again later.
    pub fn handle_energy_save_failed(&mut self, now: Instant, address: Address) {
        if let Some(m) = self.meter_mut(address) {
            m.energy_saved_at = now;
            m.save_pending = false;
        }
    }

    /// Stop for `reason` (a signal, the line or the bus lost): save what
    /// changed, then [`Command::Exit`].
    pub fn shutdown(&mut self, _now: Instant, reason: ExitReason) {
        if matches!(self.phase, Phase::Done) {
            return;
        }
        for m in &mut self.meters {
            if m.energy.state() != m.energy_saved {
                m.save_pending = true;
                self.commands.push_back(Command::SaveEnergy {
                    address: m.spec.address,
                    state: m.energy.state(),
                });
            }
        }
        self.phase = Phase::Done;
        self.commands.push_back(Command::Exit(reason));
    }

    fn meter(&self, address: Address) -> Option<&Meter> {
        self.meters.iter().find(|m| m.spec.address == address)
    }

    fn meter_mut(&mut self, address: Address) -> Option<&mut Meter> {
        self.meters.iter_mut().find(|m| m.spec.address == address)
    }

    fn index_of(&self, address: Address) -> Option<usize> {
        self.meters.iter().position(|m| m.spec.address == address)
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
            custom_name: record.custom_name,
            position: record.position,
            connection: self.config.port.connection(address),
            serial: m.id.clone(),
            process_name: PROCESS_NAME,
            process_version: env!("CARGO_PKG_VERSION"),
        };
        // A new service starts with everything invalid until its next reading.
        m.presence = Presence::new(self.config.failures_to_vanish);
        self.commands.push_back(Command::StartService {
            address: m.spec.address,
            name: self.config.port.service_name(record.role.class(), address),
            identity,
        });
    }

    /// When the next request may go out: after the inter-frame silence, and
    /// between cycles at the next cycle's start. `None` when none will.
    fn next_request_at(&self) -> Option<Instant> {
        let cycle = match self.phase {
            Phase::Done => return None,
            Phase::Running { cycle_start, index } if index >= self.meters.len() && self.retry_as_dc.is_none() => {
                Some(cycle_start + self.config.poll_interval)
            }
            Phase::Probing { .. } | Phase::Running { .. } => None,
        };
        match (cycle, self.exchange.send_not_before()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Issue what is due at `now`: the next request, energy saves, exits.
    fn advance(&mut self, now: Instant) {
        if matches!(self.phase, Phase::Done) {
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
            match self.phase {
                Phase::Done => return,
                Phase::Probing { until, index, tries } => {
                    let out_of_time = now >= until;
                    if index >= self.meters.len() || out_of_time {
                        self.finish_probe(now, out_of_time);
                        continue;
                    }
                    if tries >= PROBE_TRIES {
                        self.phase = Phase::Probing {
                            until,
                            index: index + 1,
                            tries: 0,
                        };
                        continue;
                    }
                    self.phase = Phase::Probing {
                        until,
                        index,
                        tries: tries + 1,
                    };
                    self.send(now, index, None);
                    return;
                }
                Phase::Running { cycle_start, index } => {
                    if index < self.meters.len() {
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
                    self.phase = Phase::Running {
                        cycle_start: start,
                        index: 0,
                    };
                }
            }
        }
    }

    fn finish_probe(&mut self, now: Instant, out_of_time: bool) {
        if out_of_time {
            log::warn!("the start-up probe ran out of time");
        }
        if self.answered_at_start == 0 {
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
            if !m.presence.is_present() {
                log::warn!("no answer from address {} on {} at start-up", m.spec.address, self.config.place);
            }
            // A meter of known family is published even when silent (its values invalid).
            if let Some(family) = m.family {
                self.commands.push_back(Command::Register {
                    address: m.spec.address,
                    default_role: m.spec.role_for(family),
                    allowed: Role::allowed(family),
                });
            }
        }
        self.last_any_ok = now;
        self.phase = Phase::Running {
            cycle_start: now,
            index: 0,
        };
    }

    /// Send the read for meter `index`; `family` overrides what is known
    /// (the DC retry of an `auto` meter).
    fn send(&mut self, now: Instant, index: usize, family: Option<Family>) {
        let m = &self.meters[index];
        let family = family.or(m.family).unwrap_or(Family::Ac);
        let request = match family {
            Family::Ac => READ_AC,
            Family::Dc => READ_DC,
        };
        let frame = self.exchange.start(now, m.spec.address, request);
        self.in_flight = Some(InFlight {
            address: m.spec.address,
            family,
        });
        self.commands.push_back(Command::Transmit(frame));
    }

    fn on_exchange_ended(&mut self, now: Instant, ended: Ended) {
        let Some(flight) = self.in_flight.take() else { return };
        let Some(index) = self.index_of(flight.address) else { return };
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
                        && self.meters[index].family.is_none()
                        && e.exception() == Some(ExceptionCode::IllegalDataAddress) =>
                {
                    Outcome::NotAc
                }
                Err(e) => Outcome::Failed(PollFailure::of(&e)),
            },
        };
        if let Outcome::NotAc = outcome {
            // Same meter, same turn: ask for the DC registers once the line is quiet.
            self.retry_as_dc = Some(index);
            return;
        }
        self.on_outcome(now, index, outcome);
        match &mut self.phase {
            Phase::Probing { index: i, tries, .. } => {
                if self.meters[index].presence.is_present() {
                    *i += 1;
                    *tries = 0;
                }
            }
            Phase::Running { index: i, .. } => *i += 1,
            Phase::Done => {}
        }
    }

    fn on_outcome(&mut self, now: Instant, index: usize, outcome: Outcome) {
        let probing = matches!(self.phase, Phase::Probing { .. });
        let m = &mut self.meters[index];
        match outcome {
            Outcome::Reading(reading) => {
                self.last_any_ok = now;
                let family = reading.family();
                let identified = m.family.is_none();
                m.family = Some(family);
                let appeared = m.presence.ok() == PresenceChange::Appeared;
                if probing {
                    if appeared {
                        self.answered_at_start += 1;
                        log::info!(
                            "{} at address {} answers on {}",
                            m.model(),
                            m.spec.address,
                            self.config.place
                        );
                    }
                } else if appeared {
                    log::info!("{} at address {} answers", m.model(), m.spec.address);
                }
                let max_step = m
                    .last_ok
                    .map(|t| max_plausible_increase_wh(family, now.duration_since(t)));
                m.last_ok = Some(now);
                let (total_wh, event) = m.energy.update(reading.energy_wh(), max_step);
                if let Some(event) = event {
                    log_energy_event(&m.id, event);
                    if matches!(event, EnergyEvent::CounterDropped { .. }) && !m.save_pending {
                        m.save_pending = true;
                        self.commands.push_back(Command::SaveEnergy {
                            address: m.spec.address,
                            state: m.energy.state(),
                        });
                    }
                }
                if identified && !probing {
                    log::info!("{} at address {} identified", Model::generic(family), m.spec.address);
                    self.commands.push_back(Command::Register {
                        address: m.spec.address,
                        default_role: m.spec.role_for(family),
                        allowed: Role::allowed(family),
                    });
                }
                if !probing && m.record.is_some() {
                    self.commands.push_back(Command::Publish {
                        address: m.spec.address,
                        reading,
                        energy_kwh: total_wh as f64 / 1000.0,
                    });
                }
            }
            Outcome::NotAc => {}
            Outcome::Failed(why) => {
                if probing {
                    log::debug!("probe at {}: {why}", m.spec.address);
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
                let m = &mut self.meters[index];
                if m.presence.failed() == PresenceChange::Vanished {
                    log::warn!(
                        "{} at address {} stopped answering ({why}); its values are invalid until it is back",
                        m.model(),
                        m.spec.address,
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

    fn save_due(&mut self, now: Instant) {
        for m in &mut self.meters {
            if !m.save_pending
                && m.energy.state() != m.energy_saved
                && now.duration_since(m.energy_saved_at) >= ENERGY_SAVE_EVERY
            {
                m.save_pending = true;
                self.commands.push_back(Command::SaveEnergy {
                    address: m.spec.address,
                    state: m.energy.state(),
                });
            }
        }
    }
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
