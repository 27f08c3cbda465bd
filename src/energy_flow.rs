//! Energy flows through a MultiPlus, derived from two AC meters and a
//! battery monitor: the sans-IO core of the `pzem-energy` service.
//!
//! Newer MultiPlus inverters publish three vebus counters (kWh, Doubles;
//! `venus-conventions.md` §4.4) that older ones lack:
//!
//! | [`Flow`] | D-Bus path | energy from → to |
//! |---|---|---|
//! | [`Flow::AcIn1ToAcOut`] | `/Energy/AcIn1ToAcOut` | grid straight to the loads |
//! | [`Flow::AcIn1ToInverter`] | `/Energy/AcIn1ToInverter` | grid into the battery |
//! | [`Flow::InverterToAcOut`] | `/Energy/InverterToAcOut` | battery to the loads |
//!
//! With a meter on the Multi's AC input, one on its AC output and a battery
//! monitor (`/History/DischargedEnergy`, §4.3) they can be derived. Each
//! step takes the energy each source counted since the previous step
//! (dIn, dOut, dDis) and [`split`]s it:
//! `p = clamp(dOut − dDis, 0, min(dIn, dOut))`, then
//! `AcIn1ToAcOut += p`, `InverterToAcOut += dOut − p`,
//! `AcIn1ToInverter += dIn − p`.
//!
//! # Guarantees
//!
//! Everything is counted in whole **watt-hours** (`u64`), so sums are exact:
//!
//! * `AcIn1ToAcOut + AcIn1ToInverter` grows by exactly the AC-input
//!   energy, and `AcIn1ToAcOut + InverterToAcOut` by exactly the AC-output
//!   energy, over any interval (between step boundaries).
//! * No flow ever decreases, whatever the sources do.
//! * A battery discharge larger than the AC output (inverter losses, DC
//!   loads) only makes the passthrough 0; nothing goes negative.
//!
//! # Units and conversion
//!
//! Sources publish kWh as `f64`. [`kwh_to_wh`] rounds to the nearest Wh:
//! every source here counts in whole Wh (PZEM) or in 10 Wh (BMV history,
//! 0.01 kWh), so the rounding only removes the binary representation
//! error, and since rounding is monotonic it never turns a rising counter
//! into a falling one. Deltas are differences of rounded counters, so they
//! add up with no drift. NaN, infinite, negative values and values beyond
//! 2^53 Wh (where `f64` loses whole Wh) are invalid: the source counts as
//! absent and a [`FlowEvent::Invalid`] tells why. Published values are
//! `Wh / 1000` ([`wh_to_kwh`]).
//!
//! # Sources that are absent, jitter or restart
//!
//! * An **absent** source (a `None` reading: its service is gone or the
//!   value is invalid on the bus) contributes nothing. When it returns, its
//!   first reading is compared with its last one, so the whole delta is
//!   booked then and totals are conserved.
//! * A counter that goes **down by at most**
//!   [`FlowConfig::backwards_tolerance_wh`] is rounding jitter of a coarse
//!   source: ignored, the highest value stays the reference, so the jitter
//!   never books anything twice.
//! * A counter that goes **down by more** (meter reset, battery history
//!   cleared, device replaced) restarted from zero: its new value is booked
//!   as the energy since the restart, never negative energy, and
//!   [`FlowEvent::CounterRestarted`] reports it.
//!
//! # Steps
//!
//! A step books what changed within about one poll cycle, all three sources
//! together: the first reading that moves a counter starts a settle timer
//! ([`FlowConfig::settle`]), and the step happens when it expires, with
//! every change that arrived meanwhile. The timer is not pushed back by
//! later changes, so a steady flow still gives a step per settle period.
//!
//! # Persistence and restarts
//!
//! [`FlowState`] holds the flows and each source's counter as of the last
//! step. [`FlowTracker`] asks to save it ([`Output::Save`]) within
//! [`FlowConfig::save_within`] of any change and on [`FlowTracker::flush`]
//! (SIGTERM). Started from a saved state, the tracker compares the first
//! readings with the saved counters, so the energy that flowed while the
//! service was down is booked as one step. The state is one checksummed
//! line ([`FlowState::to_line`], [`FlowState::parse`]); keep it with
//! the crate's state-file module, which writes atomically and keeps a backup.
//!
//! After a crash (no flush) the tracker restarts from the last save, so the
//! flows it publishes can be up to [`FlowConfig::save_within`] of energy
//! below what it published before; that energy is booked again from the
//! saved counters, so nothing is lost or counted twice, but a consumer
//! sees the counters step back once, as when mk2-dbus restarts.
//!
//! # Driving the tracker
//!
//! In the style of `quinn-proto`: every input carries `now`, the tracker
//! reads no clock and does no I/O. After each input, call
//! [`FlowTracker::poll`] until it returns `None` and act on each
//! [`Output`]; wake up at [`FlowTracker::poll_timeout`] and call
//! [`FlowTracker::handle_timeout`]. Publish [`FlowTracker::flows`] when the
//! service starts.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The largest counter accepted, in Wh: 2^53, beyond which `f64` kWh
/// values no longer resolve whole watt-hours.
pub const MAX_COUNTER_WH: u64 = 1 << 53;

/// One of the three inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The meter on the Multi's AC input (its energy counter).
    AcIn,
    /// The meter on the Multi's AC output (its energy counter).
    AcOut,
    /// The battery monitor's `/History/DischargedEnergy`.
    Battery,
}

impl Source {
    /// The three sources, in a fixed order.
    pub const ALL: [Source; 3] = [Source::AcIn, Source::AcOut, Source::Battery];

    /// What the source is, for log lines.
    pub fn describe(self) -> &'static str {
        match self {
            Source::AcIn => "AC-input meter",
            Source::AcOut => "AC-output meter",
            Source::Battery => "battery monitor",
        }
    }

    fn index(self) -> usize {
        match self {
            Source::AcIn => 0,
            Source::AcOut => 1,
            Source::Battery => 2,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// One of the three derived flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Grid straight through to the loads.
    AcIn1ToAcOut,
    /// Grid through the charger into the battery.
    AcIn1ToInverter,
    /// Battery through the inverter to the loads.
    InverterToAcOut,
}

impl Flow {
    /// The three flows, in a fixed order.
    pub const ALL: [Flow; 3] = [Flow::AcIn1ToAcOut, Flow::AcIn1ToInverter, Flow::InverterToAcOut];

    /// The vebus D-Bus path that carries the flow (kWh, Double).
    pub fn path(self) -> &'static str {
        match self {
            Flow::AcIn1ToAcOut => "/Energy/AcIn1ToAcOut",
            Flow::AcIn1ToInverter => "/Energy/AcIn1ToInverter",
            Flow::InverterToAcOut => "/Energy/InverterToAcOut",
        }
    }
}

/// Energy of the three flows in Wh: running totals, or one step's
/// increments (see [`split`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flows {
    /// Grid straight to the loads, Wh.
    pub ac_in_to_ac_out_wh: u64,
    /// Grid into the battery, Wh.
    pub ac_in_to_inverter_wh: u64,
    /// Battery to the loads, Wh.
    pub inverter_to_ac_out_wh: u64,
}

impl Flows {
    /// One flow, Wh.
    pub fn wh(&self, flow: Flow) -> u64 {
        match flow {
            Flow::AcIn1ToAcOut => self.ac_in_to_ac_out_wh,
            Flow::AcIn1ToInverter => self.ac_in_to_inverter_wh,
            Flow::InverterToAcOut => self.inverter_to_ac_out_wh,
        }
    }

    /// One flow in kWh, the unit published on D-Bus.
    pub fn kwh(&self, flow: Flow) -> f64 {
        wh_to_kwh(self.wh(flow))
    }

    /// The energy that came in through the AC input:
    /// `AcIn1ToAcOut + AcIn1ToInverter`, Wh.
    pub fn ac_in_wh(&self) -> u64 {
        self.ac_in_to_ac_out_wh.saturating_add(self.ac_in_to_inverter_wh)
    }

    /// The energy that went out through the AC output:
    /// `AcIn1ToAcOut + InverterToAcOut`, Wh.
    pub fn ac_out_wh(&self) -> u64 {
        self.ac_in_to_ac_out_wh.saturating_add(self.inverter_to_ac_out_wh)
    }

    /// `self` plus the increments `step` (saturating at `u64::MAX`, which
    /// no real installation reaches).
    pub fn add(&self, step: &Flows) -> Flows {
        Flows {
            ac_in_to_ac_out_wh: self.ac_in_to_ac_out_wh.saturating_add(step.ac_in_to_ac_out_wh),
            ac_in_to_inverter_wh: self.ac_in_to_inverter_wh.saturating_add(step.ac_in_to_inverter_wh),
            inverter_to_ac_out_wh: self.inverter_to_ac_out_wh.saturating_add(step.inverter_to_ac_out_wh),
        }
    }
}

/// Split one step's energies (all Wh) into the three flow increments.
///
/// `d_in`: energy through the AC input, `d_out`: through the AC output,
/// `d_discharged`: the battery's discharged energy, all since the previous
/// step. The passthrough is `p = clamp(d_out − d_discharged, 0,
/// min(d_in, d_out))`; the AC output not passed through came from the
/// battery and the AC input not passed through went into it. The
/// increments are never negative, and `AcIn1ToAcOut + AcIn1ToInverter ==
/// d_in`, `AcIn1ToAcOut + InverterToAcOut == d_out` exactly.
pub fn split(d_in: u64, d_out: u64, d_discharged: u64) -> Flows {
    let passthrough = d_out.saturating_sub(d_discharged).min(d_in);
    Flows {
        ac_in_to_ac_out_wh: passthrough,
        ac_in_to_inverter_wh: d_in - passthrough,
        inverter_to_ac_out_wh: d_out - passthrough,
    }
}

/// Why a kWh value from a source cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKwh {
    /// NaN or infinite.
    NotFinite,
    /// Below zero: an energy counter cannot be negative.
    Negative,
    /// Above [`MAX_COUNTER_WH`].
    TooLarge,
}

impl fmt::Display for InvalidKwh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidKwh::NotFinite => "not a finite number",
            InvalidKwh::Negative => "negative",
            InvalidKwh::TooLarge => "too large for an energy counter",
        })
    }
}

/// A counter in kWh (as published on D-Bus) to whole Wh, rounded to the
/// nearest. `-0.0` is 0; NaN, infinite, negative and too large values are
/// refused.
pub fn kwh_to_wh(kwh: f64) -> Result<u64, InvalidKwh> {
    if !kwh.is_finite() {
        return Err(InvalidKwh::NotFinite);
    }
    if kwh < 0.0 {
        return Err(InvalidKwh::Negative);
    }
    let wh = (kwh * 1000.0).round();
    if wh > MAX_COUNTER_WH as f64 {
        return Err(InvalidKwh::TooLarge);
    }
    // In range and integral: the cast is exact.
    Ok(wh as u64)
}

/// Wh to kWh for publishing (exact up to [`MAX_COUNTER_WH`], then the
/// nearest `f64`).
pub fn wh_to_kwh(wh: u64) -> f64 {
    wh as f64 / 1000.0
}

/// What must survive a restart: the flows and each source's counter as of
/// the last step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// The three flow totals.
    pub flows: Flows,
    /// The AC-input meter's counter at the last step, Wh (`None`: never
    /// read).
    pub ac_in_wh: Option<u64>,
    /// The AC-output meter's counter at the last step, Wh.
    pub ac_out_wh: Option<u64>,
    /// The battery's discharged-energy counter at the last step, Wh.
    pub battery_wh: Option<u64>,
}

/// A state line that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowStateError(pub String);

impl fmt::Display for FlowStateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt energy-flow state: {}", self.0)
    }
}

impl std::error::Error for FlowStateError {}

const STATE_TAG: &str = "pzem-flow-v1";

/// The fields of a state line, in the order they are written.
const FIELDS: [&str; 6] = [
    "ac_in_to_ac_out_wh",
    "ac_in_to_inverter_wh",
    "inverter_to_ac_out_wh",
    "ac_in_wh",
    "ac_out_wh",
    "battery_wh",
];

impl FlowState {
    /// The counter of `source` at the last step, Wh.
    pub fn counter(&self, source: Source) -> Option<u64> {
        match source {
            Source::AcIn => self.ac_in_wh,
            Source::AcOut => self.ac_out_wh,
            Source::Battery => self.battery_wh,
        }
    }

    fn counters(&self) -> [Option<u64>; 3] {
        [self.ac_in_wh, self.ac_out_wh, self.battery_wh]
    }

    /// The state as one line: `pzem-flow-v1 ac_in_to_ac_out_wh=N
    /// ac_in_to_inverter_wh=N inverter_to_ac_out_wh=N ac_in_wh=N|-
    /// ac_out_wh=N|- battery_wh=N|-` and a checksum of the line
    /// (` crc=XXXX`, CRC-16/MODBUS in hex), so a torn or edited file is
    /// detected.
    pub fn to_line(&self) -> String {
        let counter = |c: Option<u64>| c.map_or_else(|| "-".to_string(), |v| v.to_string());
        let f = &self.flows;
        let body = format!(
            "{STATE_TAG} {}={} {}={} {}={} {}={} {}={} {}={}",
            FIELDS[0],
            f.ac_in_to_ac_out_wh,
            FIELDS[1],
            f.ac_in_to_inverter_wh,
            FIELDS[2],
            f.inverter_to_ac_out_wh,
            FIELDS[3],
            counter(self.ac_in_wh),
            FIELDS[4],
            counter(self.ac_out_wh),
            FIELDS[5],
            counter(self.battery_wh),
        );
        let sum = crate::crc::crc16(body.as_bytes());
        format!("{body} crc={sum:04x}\n")
    }

    /// Parse a line written by [`FlowState::to_line`]. Any other text,
    /// including a torn or edited line, is an error that says what is
    /// wrong; no input makes it panic.
    pub fn parse(text: &str) -> Result<FlowState, FlowStateError> {
        let err = |why: String| FlowStateError(why);
        let line = text.strip_suffix('\n').unwrap_or(text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (body, sum) = line.rsplit_once(" crc=").ok_or_else(|| err("no checksum".into()))?;
        if sum.len() != 4 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err("the checksum is not 4 hex digits".into()));
        }
        let sum = u16::from_str_radix(sum, 16).map_err(|_| err("the checksum is not 4 hex digits".into()))?;
        if crate::crc::crc16(body.as_bytes()) != sum {
            return Err(err("the checksum does not match (torn or edited file)".into()));
        }
        let mut words = body.split(' ');
        if words.next() != Some(STATE_TAG) {
            return Err(err(format!("not a {STATE_TAG} line")));
        }
        let mut values: [Option<Option<u64>>; 6] = [None; 6];
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| err("a field without '='".into()))?;
            let i = FIELDS
                .iter()
                .position(|f| *f == key)
                .ok_or_else(|| err("unknown field".into()))?;
            if values[i].is_some() {
                return Err(err(format!("{} given twice", FIELDS[i])));
            }
            let number = if value == "-" && i >= 3 {
                None
            } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| err(format!("{} is too large", FIELDS[i])))?,
                )
            } else {
                return Err(err(format!("{} is not a number", FIELDS[i])));
            };
            values[i] = Some(number);
        }
        let mut got = [None; 6];
        for (i, v) in values.iter().enumerate() {
            got[i] = v.ok_or_else(|| err(format!("{} is missing", FIELDS[i])))?;
        }
        // The flows were checked to be numbers above (`-` only for counters).
        let total = |i: usize| got[i].unwrap_or(0);
        Ok(FlowState {
            flows: Flows {
                ac_in_to_ac_out_wh: total(0),
                ac_in_to_inverter_wh: total(1),
                inverter_to_ac_out_wh: total(2),
            },
            ac_in_wh: got[3],
            ac_out_wh: got[4],
            battery_wh: got[5],
        })
    }
}

/// Settings of a [`FlowTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// How long after the first counter change a step is booked, so that
    /// the changes of the three sources from one poll cycle land in one
    /// step. About one poll interval of the meters; default 2 s.
    pub settle: Duration,
    /// Changed state is saved at most this long after the change; default
    /// 60 s.
    pub save_within: Duration,
    /// A counter that goes down by at most this many Wh is taken as
    /// rounding jitter and ignored; a larger drop is a restart from zero.
    /// Default 10 Wh, the BMV history resolution (0.01 kWh).
    pub backwards_tolerance_wh: u64,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        FlowConfig {
            settle: Duration::from_secs(2),
            save_within: Duration::from_secs(60),
            backwards_tolerance_wh: 10,
        }
    }
}

/// Something the log should tell about.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FlowEvent {
    /// The first reading of a source that has no saved counter: counting
    /// starts here, nothing before it is booked.
    Baseline {
        /// Which source.
        source: Source,
        /// Its counter, Wh.
        wh: u64,
    },
    /// The source went away (service gone or value invalid on the bus); it
    /// contributes nothing until it returns.
    Absent {
        /// Which source.
        source: Source,
    },
    /// The source published a value that cannot be an energy counter; it
    /// counts as absent until a valid value arrives.
    Invalid {
        /// Which source.
        source: Source,
        /// The value, kWh.
        kwh: f64,
        /// What is wrong with it.
        why: InvalidKwh,
    },
    /// The source is back after being absent or invalid; what it counted
    /// meanwhile is booked in the next step.
    Back {
        /// Which source.
        source: Source,
        /// Its counter now, Wh.
        wh: u64,
    },
    /// The counter went down by more than the jitter tolerance (reset,
    /// history cleared, device replaced): taken as a restart from zero, so
    /// its new value is booked as the energy since then.
    CounterRestarted {
        /// Which source.
        source: Source,
        /// The highest counter before, Wh.
        from_wh: u64,
        /// The counter now, Wh.
        to_wh: u64,
    },
}

impl fmt::Display for FlowEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FlowEvent::Baseline { source, wh } => write!(
                f,
                "{source}: first reading {:.3} kWh, no saved counter: counting starts here",
                wh_to_kwh(wh)
            ),
            FlowEvent::Absent { source } => {
                write!(f, "{source}: absent, contributes nothing until it returns")
            }
            FlowEvent::Invalid { source, kwh, why } => {
                write!(f, "{source}: invalid reading {kwh} kWh ({why}), treated as absent")
            }
            FlowEvent::Back { source, wh } => write!(
                f,
                "{source}: back at {:.3} kWh, what it counted meanwhile is booked now",
                wh_to_kwh(wh)
            ),
            FlowEvent::CounterRestarted { source, from_wh, to_wh } => write!(
                f,
                "{source}: counter went back from {:.3} kWh to {:.3} kWh (reset, history cleared or device \
                 replaced); counted as a restart from zero",
                wh_to_kwh(from_wh),
                wh_to_kwh(to_wh)
            ),
        }
    }
}

/// What the tracker asks its driver to do, from [`FlowTracker::poll`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// Log this.
    Event(FlowEvent),
    /// A step booked energy: publish these totals (as kWh, [`Flows::kwh`]).
    Publish(Flows),
    /// Save this state (e.g. `state_file::save(path, &state.to_line())`);
    /// call [`FlowTracker::save_failed`] if that fails.
    Save(FlowState),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presence {
    /// No reading since the tracker started.
    Unheard,
    Present,
    Absent,
    Invalid,
}

#[derive(Clone, Copy, Debug)]
struct Track {
    /// The highest counter since the last restart from zero: the reference
    /// the next reading is compared with.
    high: Option<u64>,
    /// Energy counted since the last step, Wh.
    pending: u64,
    presence: Presence,
}

/// The energy-flow state machine (sans-IO; see the module documentation).
#[derive(Clone, Debug)]
pub struct FlowTracker {
    config: FlowConfig,
    /// Flows and counters as of the last step.
    state: FlowState,
    tracks: [Track; 3],
    /// When the first change of the coming step arrived.
    changed_since: Option<Instant>,
    /// When the state first changed after the last save.
    dirty_since: Option<Instant>,
    publish: bool,
    save: bool,
    events: VecDeque<FlowEvent>,
}

impl FlowTracker {
    /// A tracker that continues from `state` (the default state to start
    /// from zero).
    pub fn new(config: FlowConfig, state: FlowState) -> FlowTracker {
        let track = |high| Track {
            high,
            pending: 0,
            presence: Presence::Unheard,
        };
        let [a, b, c] = state.counters();
        FlowTracker {
            config,
            state,
            tracks: [track(a), track(b), track(c)],
            changed_since: None,
            dirty_since: None,
            publish: false,
            save: false,
            // Room for a burst of events, so the steady state never allocates.
            events: VecDeque::with_capacity(16),
        }
    }

    /// The flow totals as of the last step.
    pub fn flows(&self) -> Flows {
        self.state.flows
    }

    /// The state as of the last step (what [`Output::Save`] carries).
    pub fn state(&self) -> FlowState {
        self.state
    }

    /// Source `source` now reads `kwh` (`None`: absent, i.e. its service is
    /// gone or the value is invalid on the bus). Steps that were due by
    /// `now` are booked first.
    pub fn reading(&mut self, now: Instant, source: Source, kwh: Option<f64>) {
        self.handle_timeout(now);
        let tolerance = self.config.backwards_tolerance_wh;
        let track = &mut self.tracks[source.index()];
        let Some(kwh) = kwh else {
            if track.presence != Presence::Absent {
                track.presence = Presence::Absent;
                self.events.push_back(FlowEvent::Absent { source });
            }
            return;
        };
        let wh = match kwh_to_wh(kwh) {
            Ok(wh) => wh,
            Err(why) => {
                if track.presence != Presence::Invalid {
                    track.presence = Presence::Invalid;
                    self.events.push_back(FlowEvent::Invalid { source, kwh, why });
                }
                return;
            }
        };
        if matches!(track.presence, Presence::Absent | Presence::Invalid) {
            self.events.push_back(FlowEvent::Back { source, wh });
        }
        track.presence = Presence::Present;
        let changed = match track.high {
            None => {
                self.events.push_back(FlowEvent::Baseline { source, wh });
                true
            }
            Some(high) if wh >= high => {
                track.pending = track.pending.saturating_add(wh - high);
                wh != high
            }
            Some(high) if high - wh <= tolerance => false,
            Some(high) => {
                track.pending = track.pending.saturating_add(wh);
                self.events.push_back(FlowEvent::CounterRestarted {
                    source,
                    from_wh: high,
                    to_wh: wh,
                });
                true
            }
        };
        if changed {
            track.high = Some(wh);
            self.changed_since.get_or_insert(now);
        }
    }

    /// When [`FlowTracker::handle_timeout`] should be called next: the
    /// step's settle deadline or the save deadline, whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let settle = deadline(self.changed_since, self.config.settle);
        let save = deadline(self.dirty_since, self.config.save_within);
        match (settle, save) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Book the step and ask for the save that are due by `now` (calling it
    /// early or more than once does no harm).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = deadline(self.changed_since, self.config.settle).filter(|d| *d <= now) {
            // Booked as of its deadline, even when the driver is late.
            self.step(deadline);
        }
        if deadline(self.dirty_since, self.config.save_within).is_some_and(|d| d <= now) {
            self.dirty_since = None;
            self.save = true;
        }
    }

    /// Shutting down (SIGTERM) or asked to flush: book pending changes
    /// now and ask to save.
    pub fn flush(&mut self, now: Instant) {
        self.handle_timeout(now);
        if self.changed_since.is_some() {
            self.step(now);
        }
        self.dirty_since = None;
        self.save = true;
    }

    /// The last [`Output::Save`] could not be written: ask again within
    /// [`FlowConfig::save_within`] of `now`.
    pub fn save_failed(&mut self, now: Instant) {
        self.dirty_since.get_or_insert(now);
    }

    /// The next thing to do: events first (in order), then the flows to
    /// publish, then the state to save. `None` when there is nothing.
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(event) = self.events.pop_front() {
            return Some(Output::Event(event));
        }
        if std::mem::take(&mut self.publish) {
            return Some(Output::Publish(self.state.flows));
        }
        if std::mem::take(&mut self.save) {
            return Some(Output::Save(self.state));
        }
        None
    }

    /// Book everything counted since the last step, as of `now`.
    fn step(&mut self, now: Instant) {
        self.changed_since = None;
        let [d_in, d_out, d_dis] = self.tracks.map(|t| t.pending);
        let increments = split(d_in, d_out, d_dis);
        let before = self.state;
        self.state.flows = self.state.flows.add(&increments);
        self.state.ac_in_wh = self.tracks[0].high;
        self.state.ac_out_wh = self.tracks[1].high;
        self.state.battery_wh = self.tracks[2].high;
        for t in &mut self.tracks {
            t.pending = 0;
        }
        if self.state.flows != before.flows {
            self.publish = true;
        }
        if self.state != before {
            self.dirty_since.get_or_insert(now);
        }
    }
}

/// `wait` after `since`; `None` when there is no `since` or the sum does
/// not fit in an `Instant` (a deadline that never comes).
fn deadline(since: Option<Instant>, wait: Duration) -> Option<Instant> {
    since.and_then(|t| t.checked_add(wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn flows(in_to_out: u64, in_to_inv: u64, inv_to_out: u64) -> Flows {
        Flows {
            ac_in_to_ac_out_wh: in_to_out,
            ac_in_to_inverter_wh: in_to_inv,
            inverter_to_ac_out_wh: inv_to_out,
        }
    }

    fn drain(t: &mut FlowTracker) -> Vec<Output> {
        std::iter::from_fn(|| t.poll()).collect()
    }

    fn events(outputs: &[Output]) -> Vec<FlowEvent> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    fn published(outputs: &[Output]) -> Option<Flows> {
        outputs.iter().rev().find_map(|o| match o {
            Output::Publish(f) => Some(*f),
            _ => None,
        })
    }

    /// A tracker that has seen all three counters at `in_kwh`, `out_kwh`,
    /// `dis_kwh` and booked and saved them (nothing pending or due).
    fn primed(t0: Instant, in_kwh: f64, out_kwh: f64, dis_kwh: f64) -> FlowTracker {
        let mut t = FlowTracker::new(FlowConfig::default(), FlowState::default());
        t.reading(t0, Source::AcIn, Some(in_kwh));
        t.reading(t0, Source::AcOut, Some(out_kwh));
        t.reading(t0, Source::Battery, Some(dis_kwh));
        t.flush(t0);
        let out = drain(&mut t);
        assert_eq!(published(&out), None, "baselines book nothing");
        assert!(matches!(out.last(), Some(Output::Save(_))));
        assert_eq!(t.poll_timeout(), None);
        t
    }

    /// Feed one cycle of readings and book it; the flows published.
    fn cycle(t: &mut FlowTracker, now: Instant, readings: [Option<f64>; 3]) -> Option<Flows> {
        for (source, kwh) in Source::ALL.into_iter().zip(readings) {
            t.reading(now, source, kwh);
        }
        t.handle_timeout(now + 2 * S);
        published(&drain(t))
    }

    // The pure rule, hand-computed.

    #[test]
    fn split_grid_charging() {
        // 500 Wh in, 100 Wh to the loads, the battery charges.
        assert_eq!(split(500, 100, 0), flows(100, 400, 0));
    }

    #[test]
    fn split_passthrough() {
        assert_eq!(split(300, 300, 0), flows(300, 0, 0));
    }

    #[test]
    fn split_inverting() {
        // No grid; 230 Wh out of the battery for 200 Wh at the loads.
        assert_eq!(split(0, 200, 230), flows(0, 0, 200));
    }

    #[test]
    fn split_power_assist() {
        // Grid 100 Wh and battery 220 Wh feed 300 Wh of loads: p = 300 - 220 = 80.
        assert_eq!(split(100, 300, 220), flows(80, 20, 220));
    }

    #[test]
    fn split_discharge_above_ac_output_stays_sane() {
        // Losses and DC loads: the battery gave more than the AC output took.
        assert_eq!(split(0, 100, 150), flows(0, 0, 100));
        assert_eq!(split(50, 100, 150), flows(0, 50, 100));
    }

    #[test]
    fn split_passthrough_never_exceeds_the_input() {
        assert_eq!(split(40, 300, 0), flows(40, 0, 260));
        assert_eq!(split(0, 0, 0), flows(0, 0, 0));
        assert_eq!(split(u64::MAX, u64::MAX, 0), flows(u64::MAX, 0, 0));
    }

    // Conversion.

    #[test]
    fn kwh_conversion_rounds_to_whole_wh_and_refuses_nonsense() {
        assert_eq!(kwh_to_wh(0.123), Ok(123));
        assert_eq!(kwh_to_wh(1234.567), Ok(1_234_567));
        assert_eq!(kwh_to_wh(0.01), Ok(10));
        assert_eq!(kwh_to_wh(0.1 + 0.2), Ok(300));
        assert_eq!(kwh_to_wh(0.0), Ok(0));
        assert_eq!(kwh_to_wh(-0.0), Ok(0));
        assert_eq!(kwh_to_wh(0.0004), Ok(0));
        assert_eq!(kwh_to_wh(0.0005), Ok(1));
        assert_eq!(kwh_to_wh(f64::NAN), Err(InvalidKwh::NotFinite));
        assert_eq!(kwh_to_wh(f64::INFINITY), Err(InvalidKwh::NotFinite));
        assert_eq!(kwh_to_wh(f64::NEG_INFINITY), Err(InvalidKwh::NotFinite));
        assert_eq!(kwh_to_wh(-0.001), Err(InvalidKwh::Negative));
        assert_eq!(kwh_to_wh(f64::MIN_POSITIVE), Ok(0));
        assert_eq!(kwh_to_wh(f64::MAX), Err(InvalidKwh::TooLarge));
        assert_eq!(kwh_to_wh(MAX_COUNTER_WH as f64 / 1000.0), Ok(MAX_COUNTER_WH));
        for wh in [0, 1, 999, 123_456_789, MAX_COUNTER_WH] {
            assert_eq!(kwh_to_wh(wh_to_kwh(wh)), Ok(wh));
        }
    }

    // The tracker, hand-computed scenarios.

    #[test]
    fn one_cycle_of_three_sources_is_one_step() {
        let t0 = Instant::now();
        let mut t = primed(t0, 10.0, 20.0, 5.0);
        let t1 = t0 + 10 * S;
        // The AC meters move together, the battery a little later.
        t.reading(t1, Source::AcIn, Some(10.5));
        assert_eq!(t.poll_timeout(), Some(t1 + 2 * S), "settle starts at the first change");
        t.reading(t1 + S / 10, Source::AcOut, Some(20.1));
        t.reading(t1 + S, Source::Battery, Some(5.0));
        assert_eq!(t.poll_timeout(), Some(t1 + 2 * S), "later changes do not push it back");
        t.handle_timeout(t1 + 2 * S - Duration::from_millis(1));
        assert_eq!(drain(&mut t), vec![]);
        t.handle_timeout(t1 + 2 * S);
        // Grid charging: 500 Wh in, 100 Wh out, no discharge.
        assert_eq!(drain(&mut t), vec![Output::Publish(flows(100, 400, 0))]);
        assert_eq!(t.poll_timeout(), Some(t1 + 62 * S), "saved within a minute");
        t.handle_timeout(t1 + 62 * S);
        let saved = FlowState {
            flows: flows(100, 400, 0),
            ac_in_wh: Some(10_500),
            ac_out_wh: Some(20_100),
            battery_wh: Some(5_000),
        };
        assert_eq!(drain(&mut t), vec![Output::Save(saved)]);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn unchanged_readings_book_nothing() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 2.0, 3.0);
        t.handle_timeout(t0 + 100 * S);
        drain(&mut t);
        assert_eq!(cycle(&mut t, t0 + 200 * S, [Some(1.0), Some(2.0), Some(3.0)]), None);
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn passthrough_inverting_and_power_assist() {
        let t0 = Instant::now();
        let mut t = primed(t0, 0.0, 0.0, 0.0);
        // Passthrough: 300 Wh in, 300 Wh out.
        assert_eq!(
            cycle(&mut t, t0 + 10 * S, [Some(0.3), Some(0.3), Some(0.0)]),
            Some(flows(300, 0, 0))
        );
        // Inverting: grid gone (meter reads on, no energy), 200 Wh out, 230 Wh from the battery.
        assert_eq!(
            cycle(&mut t, t0 + 20 * S, [Some(0.3), Some(0.5), Some(0.23)]),
            Some(flows(300, 0, 200))
        );
        // Power assist: 100 Wh in, 300 Wh out, 220 Wh from the battery: p = 80.
        assert_eq!(
            cycle(&mut t, t0 + 30 * S, [Some(0.4), Some(0.8), Some(0.45)]),
            Some(flows(380, 20, 420))
        );
    }

    #[test]
    fn grid_outage_with_the_ac_input_meter_absent() {
        let t0 = Instant::now();
        let mut t = primed(t0, 100.0, 50.0, 10.0);
        // Mains fails; the AC-input meter (powered by mains) goes silent.
        t.reading(t0 + 5 * S, Source::AcIn, None);
        assert_eq!(events(&drain(&mut t)), vec![FlowEvent::Absent { source: Source::AcIn }]);
        assert_eq!(
            cycle(&mut t, t0 + 10 * S, [None, Some(50.2), Some(10.25)]),
            Some(flows(0, 0, 200))
        );
        assert_eq!(
            cycle(&mut t, t0 + 20 * S, [None, Some(50.3), Some(10.36)]),
            Some(flows(0, 0, 300))
        );
        // Mains back: the meter counted 1 Wh before it died and 400 Wh since.
        t.reading(t0 + 30 * S, Source::AcIn, Some(100.401));
        let out = drain(&mut t);
        assert_eq!(
            events(&out),
            vec![FlowEvent::Back {
                source: Source::AcIn,
                wh: 100_401
            }]
        );
        // Passthrough 100 Wh, the rest of the input into the battery.
        assert_eq!(
            cycle(&mut t, t0 + 30 * S, [Some(100.401), Some(50.4), Some(10.36)]),
            Some(flows(100, 301, 300))
        );
        let f = t.flows();
        assert_eq!(f.ac_in_wh(), 401, "the whole input delta is booked");
        assert_eq!(f.ac_out_wh(), 400);
    }

    #[test]
    fn absent_battery_returns_with_its_whole_delta() {
        let t0 = Instant::now();
        let mut t = primed(t0, 0.0, 0.0, 0.0);
        // Battery monitor restarting: no discharge known, all passthrough.
        assert_eq!(
            cycle(&mut t, t0 + 10 * S, [Some(0.1), Some(0.1), None]),
            Some(flows(100, 0, 0))
        );
        // Back with 200 Wh discharged meanwhile (part of it during the step above).
        assert_eq!(
            cycle(&mut t, t0 + 20 * S, [Some(0.2), Some(0.35), Some(0.2)]),
            Some(flows(150, 50, 200))
        );
        assert_eq!(t.flows().ac_in_wh(), 200);
        assert_eq!(t.flows().ac_out_wh(), 350);
    }

    #[test]
    fn a_counter_reset_to_zero_is_a_restart_not_negative_energy() {
        let t0 = Instant::now();
        let mut t = primed(t0, 5.0, 3.0, 1.0);
        // The AC-output meter was reset and has counted 20 Wh since.
        t.reading(t0 + 10 * S, Source::AcOut, Some(0.02));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterRestarted {
                source: Source::AcOut,
                from_wh: 3_000,
                to_wh: 20
            }]
        );
        assert_eq!(
            cycle(&mut t, t0 + 10 * S, [Some(5.0), Some(0.03), Some(1.0)]),
            Some(flows(0, 0, 30))
        );
        // Battery history cleared to exactly 0: nothing booked, counting goes on from 0.
        t.reading(t0 + 20 * S, Source::Battery, Some(0.0));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterRestarted {
                source: Source::Battery,
                from_wh: 1_000,
                to_wh: 0
            }]
        );
        assert_eq!(
            cycle(&mut t, t0 + 20 * S, [Some(5.0), Some(0.08), Some(0.06)]),
            Some(flows(0, 0, 80))
        );
        assert_eq!(t.state().battery_wh, Some(60));
    }

    #[test]
    fn coarse_jitter_books_nothing_twice() {
        let t0 = Instant::now();
        let mut t = primed(t0, 0.0, 0.0, 1.24);
        // A coarse source flips between two 0.01 kWh steps.
        for (i, kwh) in [1.23, 1.24, 1.23, 1.24, 1.23].into_iter().enumerate() {
            assert_eq!(
                cycle(&mut t, t0 + (10 + i as u32) * S, [Some(0.0), Some(0.0), Some(kwh)]),
                None
            );
        }
        assert_eq!(t.state().battery_wh, Some(1_240));
        assert!(events(&drain(&mut t)).is_empty());
        // Float noise around a whole Wh.
        t.reading(t0 + 20 * S, Source::AcIn, Some(0.000_499_999_9));
        t.reading(t0 + 20 * S, Source::AcIn, Some(0.0));
        assert_eq!(t.poll_timeout(), None);
    }

    #[test]
    fn invalid_values_are_absent_with_one_event_each_time_they_start() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        t.reading(t0 + 5 * S, Source::Battery, Some(f64::NAN));
        t.reading(t0 + 6 * S, Source::Battery, Some(f64::NAN));
        t.reading(t0 + 7 * S, Source::AcOut, Some(-2.0));
        t.reading(t0 + 8 * S, Source::AcIn, Some(f64::INFINITY));
        let ev = events(&drain(&mut t));
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(matches!(
            ev[0],
            FlowEvent::Invalid {
                source: Source::Battery,
                why: InvalidKwh::NotFinite,
                ..
            }
        ));
        assert_eq!(
            ev[1],
            FlowEvent::Invalid {
                source: Source::AcOut,
                kwh: -2.0,
                why: InvalidKwh::Negative
            }
        );
        assert!(ev[0].to_string().contains("battery monitor: invalid reading NaN kWh"));
        assert_eq!(t.poll_timeout(), None, "nothing changed");
        t.reading(t0 + 9 * S, Source::AcOut, Some(1.5));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::Back {
                source: Source::AcOut,
                wh: 1_500
            }]
        );
        t.handle_timeout(t0 + 20 * S);
        assert_eq!(drain(&mut t), vec![Output::Publish(flows(0, 0, 500))]);
    }

    #[test]
    fn restart_after_downtime_books_it_as_one_step() {
        let t0 = Instant::now();
        let mut t = primed(t0, 10.0, 10.0, 10.0);
        assert_eq!(
            cycle(&mut t, t0 + 10 * S, [Some(10.1), Some(10.1), Some(10.0)]),
            Some(flows(100, 0, 0))
        );
        t.flush(t0 + 11 * S);
        let Some(Output::Save(state)) = t.poll() else {
            panic!("flush asks to save")
        };
        let line = state.to_line();
        // Down for an hour: 2 kWh in, 1.5 kWh out, 0.5 kWh discharged.
        let mut t = FlowTracker::new(FlowConfig::default(), FlowState::parse(&line).unwrap());
        assert_eq!(t.flows(), flows(100, 0, 0));
        let t1 = t0 + 3600 * S;
        t.reading(t1, Source::AcIn, Some(12.1));
        t.reading(t1, Source::AcOut, Some(11.6));
        t.reading(t1 + S, Source::Battery, Some(10.5));
        assert!(events(&drain(&mut t)).is_empty(), "saved counters, no baselines");
        t.handle_timeout(t1 + 2 * S);
        // p = 1500 - 500 = 1000; 1000 Wh into the battery, 500 Wh from it.
        assert_eq!(drain(&mut t), vec![Output::Publish(flows(1_100, 1_000, 500))]);
    }

    #[test]
    fn flush_books_pending_changes_at_once_and_asks_to_save() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        t.reading(t0 + 10 * S, Source::AcIn, Some(1.2));
        t.reading(t0 + 10 * S, Source::AcOut, Some(1.1));
        t.flush(t0 + 10 * S);
        let expected = FlowState {
            flows: flows(100, 100, 0),
            ac_in_wh: Some(1_200),
            ac_out_wh: Some(1_100),
            battery_wh: Some(1_000),
        };
        assert_eq!(
            drain(&mut t),
            vec![Output::Publish(expected.flows), Output::Save(expected)]
        );
        assert_eq!(t.poll_timeout(), None);
        // Nothing pending: still asks to save.
        t.flush(t0 + 11 * S);
        assert_eq!(drain(&mut t), vec![Output::Save(expected)]);
    }

    #[test]
    fn a_failed_save_is_asked_again() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        cycle(&mut t, t0, [Some(1.1), Some(1.0), Some(1.0)]);
        t.handle_timeout(t0 + 62 * S);
        assert!(matches!(drain(&mut t)[..], [Output::Save(_)]));
        t.save_failed(t0 + 63 * S);
        assert_eq!(t.poll_timeout(), Some(t0 + 123 * S));
        t.handle_timeout(t0 + 123 * S);
        assert!(matches!(drain(&mut t)[..], [Output::Save(_)]));
    }

    #[test]
    fn a_fresh_start_sets_baselines_and_saves_them() {
        let t0 = Instant::now();
        let mut t = FlowTracker::new(FlowConfig::default(), FlowState::default());
        t.reading(t0, Source::AcIn, Some(7.0));
        t.reading(t0, Source::Battery, None);
        assert_eq!(
            events(&drain(&mut t)),
            vec![
                FlowEvent::Baseline {
                    source: Source::AcIn,
                    wh: 7_000
                },
                FlowEvent::Absent {
                    source: Source::Battery
                }
            ]
        );
        t.handle_timeout(t0 + 62 * S);
        assert_eq!(
            drain(&mut t),
            vec![Output::Save(FlowState {
                ac_in_wh: Some(7_000),
                ..FlowState::default()
            })]
        );
    }

    #[test]
    fn a_late_input_books_the_due_step_first() {
        let t0 = Instant::now();
        let mut t = primed(t0, 0.0, 0.0, 0.0);
        t.reading(t0 + 10 * S, Source::AcOut, Some(0.1));
        // The driver woke late: the next reading arrives after the deadline.
        t.reading(t0 + 15 * S, Source::AcOut, Some(0.2));
        assert_eq!(drain(&mut t), vec![Output::Publish(flows(0, 0, 100))]);
        assert_eq!(t.poll_timeout(), Some(t0 + 17 * S));
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let t0 = Instant::now();
        let config = FlowConfig {
            settle: Duration::MAX,
            save_within: Duration::MAX,
            backwards_tolerance_wh: u64::MAX,
        };
        let mut t = FlowTracker::new(config, FlowState::default());
        t.reading(t0, Source::AcIn, Some(1.0));
        t.reading(t0, Source::AcIn, Some(2.0));
        assert_eq!(t.poll_timeout(), None);
        t.handle_timeout(t0 + 1000 * S);
        t.flush(t0 + 1000 * S);
        assert_eq!(t.state().ac_in_wh, Some(2_000));
    }

    #[test]
    fn events_read_well() {
        let e = FlowEvent::CounterRestarted {
            source: Source::AcOut,
            from_wh: 3_000,
            to_wh: 20,
        };
        assert_eq!(
            e.to_string(),
            "AC-output meter: counter went back from 3.000 kWh to 0.020 kWh (reset, history cleared or device \
             replaced); counted as a restart from zero"
        );
        assert_eq!(Flow::AcIn1ToInverter.path(), "/Energy/AcIn1ToInverter");
    }

    // The state line.

    #[test]
    fn state_lines_round_trip() {
        for s in [
            FlowState::default(),
            FlowState {
                flows: flows(1, 2, u64::MAX),
                ac_in_wh: Some(0),
                ac_out_wh: None,
                battery_wh: Some(MAX_COUNTER_WH),
            },
        ] {
            let line = s.to_line();
            assert!(line.starts_with("pzem-flow-v1 ") && line.ends_with('\n'), "{line}");
            assert_eq!(FlowState::parse(&line), Ok(s));
            assert_eq!(FlowState::parse(line.trim_end()), Ok(s));
        }
        assert_eq!(
            FlowState::default().to_line(),
            "pzem-flow-v1 ac_in_to_ac_out_wh=0 ac_in_to_inverter_wh=0 inverter_to_ac_out_wh=0 \
             ac_in_wh=- ac_out_wh=- battery_wh=- crc=0825\n"
        );
    }

    /// `body` with a correct checksum, to reach the checks after it.
    fn signed(body: &str) -> String {
        format!("{body} crc={:04x}\n", crate::crc::crc16(body.as_bytes()))
    }

    #[test]
    fn damaged_state_lines_are_refused_with_a_reason() {
        let line = FlowState::default().to_line();
        let reason = |text: &str| FlowState::parse(text).unwrap_err().0;
        assert_eq!(reason(""), "no checksum");
        assert_eq!(reason(&line[..line.len() / 2]), "no checksum");
        assert_eq!(reason(&line[..line.len() - 2]), "the checksum is not 4 hex digits");
        assert!(reason(&line.replace("ac_in_wh=-", "ac_in_wh=5")).contains("does not match"));
        assert_eq!(reason(&signed("pzem-flow-v2")), "not a pzem-flow-v1 line");
        let all = "ac_in_to_ac_out_wh=0 ac_in_to_inverter_wh=0 inverter_to_ac_out_wh=0 ac_in_wh=- ac_out_wh=- \
                   battery_wh=-";
        assert_eq!(
            reason(&signed(&format!("pzem-flow-v1 {all} ac_in_wh=1"))),
            "ac_in_wh given twice"
        );
        assert_eq!(
            reason(&signed("pzem-flow-v1 ac_in_to_ac_out_wh=0")),
            "ac_in_to_inverter_wh is missing"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v1 {}",
                all.replace("ac_in_to_ac_out_wh=0", "ac_in_to_ac_out_wh=-")
            ))),
            "ac_in_to_ac_out_wh is not a number"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v1 {}",
                all.replace("ac_in_wh=-", "ac_in_wh=+5")
            ))),
            "ac_in_wh is not a number"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v1 {}",
                all.replace("ac_in_wh=-", "ac_in_wh=99999999999999999999")
            ))),
            "ac_in_wh is too large"
        );
        assert_eq!(reason(&signed(&format!("pzem-flow-v1 {all} x=1"))), "unknown field");
        assert_eq!(reason(&signed(&format!("pzem-flow-v1 {all} x"))), "a field without '='");
        assert_eq!(reason(&signed(&format!("pzem-flow-v1  {all}"))), "a field without '='");
    }
}
