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
//! # Sources that are absent, jitter, restart or jump
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
//!   cleared, device replaced) restarted: its new value is the energy
//!   counted since the restart, and it is booked
//!   ([`FlowEvent::CounterRestarted`]) only when it is **plausible** for the
//!   time since the source was last seen ([`FlowConfig::max_increase_wh`]:
//!   [`FlowConfig::max_power_w`] for all that time). Otherwise the new value
//!   is only the new reference, nothing is booked
//!   ([`FlowEvent::CounterReplaced`]): a replaced battery monitor with
//!   500 kWh of history books nothing.
//! * A counter that goes **up by more than is plausible** is held back
//!   ([`FlowEvent::JumpHeld`]). The next reading decides: one that goes on
//!   plausibly from the held value confirms a new counter (a replaced
//!   device), which becomes the reference with nothing booked
//!   ([`FlowEvent::CounterReplaced`]); any other reading drops the held
//!   value as a glitch ([`FlowEvent::JumpDropped`]) and counts as usual.
//!   Venus services publish changes only, so a new counter that stays put
//!   sends no further reading: a held value that no reading contradicts for
//!   [`HOLD_FOR`] is confirmed as well.
//!
//! "Last seen" is the last reading that agreed with the reference (equal,
//! above it, or within the jitter tolerance). For counters restored from a
//! saved state it is the save, when the driver says how long ago that was
//! ([`FlowTracker::set_downtime`]); otherwise the time is unknown, and then
//! a rise is booked (the energy that flowed while the service was down) and
//! a drop is taken as a replacement. Conservation stays exact over what is
//! booked: every rule above books a source's energy once or not at all, for
//! all three flows together.
//!
//! # Steps
//!
//! A step books what changed within about one poll cycle, all three sources
//! together: the first reading that moves a counter starts a settle timer
//! ([`FlowConfig::settle`]), and the step happens when it expires, with
//! every change that arrived meanwhile. The timer is not pushed back by
//! later changes, so a steady flow still gives a step per settle period.
//!
//! The battery history counts in 10 Wh (0.01 kWh) steps, so with a short
//! settle time most steps see no battery change and a few see 10 Wh at
//! once. That never breaks the sums, but it moves energy between the two
//! AC-input flows: during power assist (grid and battery both feeding the
//! loads) a step without a battery change books the whole input as
//! passthrough, and the step with the 10 Wh books less passthrough and some
//! "grid into the battery". The error is at most about 10 Wh per battery
//! step; a settle time that spans several battery steps (e.g. a minute at
//! 600 W) averages it out at the cost of later updates.
//!
//! # Persistence and restarts
//!
//! [`FlowState`] holds the flows and each source's counter as of the last
//! step. [`FlowTracker`] asks to save it ([`Output::Save`]) within
//! [`FlowConfig::save_within`] of any change and on [`FlowTracker::flush`]
//! (SIGTERM). Started from a saved state, the tracker compares the first
//! readings with the saved counters, so the energy that flowed while the
//! service was down is booked as one step. The state is one checksummed
//! line ([`FlowState::to_line`], [`FlowState::parse`]) that also carries
//! the wall-clock time of the save, stamped by the driver, so the next
//! start knows how long the service was down; keep it with the crate's
//! state-file module, which writes atomically and keeps a backup.
//!
//! After a crash (no flush) the tracker restarts from the last save; the
//! energy booked after it is booked again from the saved counters, so
//! nothing is lost or counted twice. A driver that published flows booked
//! after the last save would then see them step back once, which VRM books
//! as energy: publish only flows that are saved (`pzem-energy` publishes
//! the flows of each [`Output::Save`] once it is on disk).
//!
//! # Driving the tracker
//!
//! In the style of `quinn-proto`: every input carries `now`, the tracker
//! reads no clock and does no I/O. After each input, call
//! [`FlowTracker::poll`] until it returns `None` and act on each
//! [`Output`]; wake up at [`FlowTracker::poll_timeout`] and call
//! [`FlowTracker::handle_timeout`].

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

/// The largest counter accepted, in Wh: 2^53, beyond which `f64` kWh
/// values no longer resolve whole watt-hours.
pub const MAX_COUNTER_WH: u64 = 1 << 53;

/// How long a held jump waits for a reading that contradicts it before it is
/// confirmed as a new counter ([`FlowEvent::CounterReplaced`]).
pub const HOLD_FOR: Duration = Duration::from_secs(10);

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

    /// Its position in [`Source::ALL`], for arrays indexed by source.
    pub fn index(self) -> usize {
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
/// the last step, and when the state was saved.
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
    /// Wall-clock time of the save, seconds since the Unix epoch: stamped
    /// by the driver when it writes the state, read back at the next start
    /// to tell the tracker how long the service was down
    /// ([`FlowTracker::set_downtime`]). The tracker itself never sets it
    /// (its [`Output::Save`] states carry `None`).
    pub saved_at_unix_s: Option<u64>,
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

const STATE_TAG: &str = "pzem-flow-v2";

/// The fields of a state line, in the order they are written. The flows
/// (the first three) are always numbers; the others may be `-` (unknown).
const FIELDS: [&str; 7] = [
    "ac_in_to_ac_out_wh",
    "ac_in_to_inverter_wh",
    "inverter_to_ac_out_wh",
    "ac_in_wh",
    "ac_out_wh",
    "battery_wh",
    "saved_at_unix_s",
];

/// How many of [`FIELDS`] are flows (never `-`).
const FLOW_FIELDS: usize = 3;

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

    /// The state as one line: `pzem-flow-v2 ac_in_to_ac_out_wh=N
    /// ac_in_to_inverter_wh=N inverter_to_ac_out_wh=N ac_in_wh=N|-
    /// ac_out_wh=N|- battery_wh=N|- saved_at_unix_s=N|-` and a checksum of
    /// the line (` crc=XXXX`, CRC-16/MODBUS in hex), so a torn or edited
    /// file is detected.
    pub fn to_line(&self) -> String {
        let optional = |c: Option<u64>| c.map_or_else(|| "-".to_string(), |v| v.to_string());
        let f = &self.flows;
        let values = [
            f.ac_in_to_ac_out_wh.to_string(),
            f.ac_in_to_inverter_wh.to_string(),
            f.inverter_to_ac_out_wh.to_string(),
            optional(self.ac_in_wh),
            optional(self.ac_out_wh),
            optional(self.battery_wh),
            optional(self.saved_at_unix_s),
        ];
        let mut body = String::from(STATE_TAG);
        for (field, value) in FIELDS.iter().zip(values) {
            body.push(' ');
            body.push_str(field);
            body.push('=');
            body.push_str(&value);
        }
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
        let mut values: [Option<Option<u64>>; FIELDS.len()] = [None; FIELDS.len()];
        for word in words {
            let (key, value) = word.split_once('=').ok_or_else(|| err("a field without '='".into()))?;
            let i = FIELDS
                .iter()
                .position(|f| *f == key)
                .ok_or_else(|| err("unknown field".into()))?;
            if values[i].is_some() {
                return Err(err(format!("{} given twice", FIELDS[i])));
            }
            let number = if value == "-" && i >= FLOW_FIELDS {
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
        let mut got = [None; FIELDS.len()];
        for (i, v) in values.iter().enumerate() {
            got[i] = v.ok_or_else(|| err(format!("{} is missing", FIELDS[i])))?;
        }
        // The flows were checked to be numbers above (`-` only for the others).
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
            saved_at_unix_s: got[6],
        })
    }
}

/// Settings of a [`FlowTracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// How long after the first counter change a step is booked, so that
    /// the changes of the three sources from one poll cycle land in one
    /// step. About one poll interval of the meters; default 2 s. (See the
    /// module documentation on the battery's 10 Wh steps.)
    pub settle: Duration,
    /// Changed state is saved at most this long after the change; default
    /// 60 s.
    pub save_within: Duration,
    /// A counter that goes down by at most this many Wh is taken as
    /// rounding jitter and ignored; a larger drop is a restart. Also the
    /// allowance for a coarse source's step in
    /// [`FlowConfig::max_increase_wh`]. Default 10 Wh, the BMV history
    /// resolution (0.01 kWh).
    pub backwards_tolerance_wh: u64,
    /// The most power, W, that can flow through any one source: the bound
    /// of what a counter may plausibly gain in a given time (see
    /// [`FlowConfig::max_increase_wh`]). Default 20 kW, generous for a
    /// MultiPlus installation.
    pub max_power_w: u64,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        FlowConfig {
            settle: Duration::from_secs(2),
            save_within: Duration::from_secs(60),
            backwards_tolerance_wh: 10,
            max_power_w: 20_000,
        }
    }
}

impl FlowConfig {
    /// The largest counter increase, Wh, that is plausible after `elapsed`:
    /// [`crate::energy::max_increase_for_power_wh`] at [`FlowConfig::max_power_w`]
    /// (whole Wh, with [`crate::energy::PLAUSIBILITY_MARGIN_WH`]), plus
    /// [`FlowConfig::backwards_tolerance_wh`] (a coarse source moves in steps of that
    /// size). Saturates instead of overflowing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pzem::energy_flow::FlowConfig;
    /// // 20 kW for a minute: 333.3 Wh, rounded up, plus 2 + 10.
    /// assert_eq!(FlowConfig::default().max_increase_wh(Duration::from_secs(60)), 346);
    /// ```
    pub fn max_increase_wh(&self, elapsed: Duration) -> u64 {
        crate::energy::max_increase_for_power_wh(self.max_power_w, elapsed).saturating_add(self.backwards_tolerance_wh)
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
    /// history cleared) and its new value is plausible for the time since
    /// it was last seen: taken as a restart from zero, its new value is
    /// booked as the energy since then.
    CounterRestarted {
        /// Which source.
        source: Source,
        /// The highest counter before, Wh.
        from_wh: u64,
        /// The counter now, Wh.
        to_wh: u64,
    },
    /// The counter moved in a way no flow within
    /// [`FlowConfig::max_power_w`] explains: a drop to a value that is not
    /// plausible as a restart from zero, or a jump up confirmed by the next
    /// reading (a replaced device, history changed). The new value is the
    /// reference from now on and nothing is booked for the move.
    CounterReplaced {
        /// Which source.
        source: Source,
        /// The counter before, Wh.
        from_wh: u64,
        /// The counter now, Wh.
        to_wh: u64,
    },
    /// The counter jumped up by more than is plausible for the time since
    /// it was last seen: held back, nothing booked, until the next reading
    /// confirms it (then [`FlowEvent::CounterReplaced`]) or not
    /// ([`FlowEvent::JumpDropped`]), or [`HOLD_FOR`] passes without one
    /// (confirmed).
    JumpHeld {
        /// Which source.
        source: Source,
        /// The reference counter, Wh.
        from_wh: u64,
        /// The value held back, Wh.
        to_wh: u64,
    },
    /// A held jump was not confirmed: the next reading did not go on from
    /// it, so it was a glitch and is ignored.
    JumpDropped {
        /// Which source.
        source: Source,
        /// The value that was held back, Wh.
        held_wh: u64,
        /// The reading that did not confirm it, Wh.
        now_wh: u64,
    },
}

impl FlowEvent {
    /// Whether the event deserves more than an informational log line: a
    /// counter that moved in a way that loses or refuses energy.
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            FlowEvent::Invalid { .. }
                | FlowEvent::CounterRestarted { .. }
                | FlowEvent::CounterReplaced { .. }
                | FlowEvent::JumpHeld { .. }
                | FlowEvent::JumpDropped { .. }
        )
    }
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
                "{source}: counter went back from {:.3} kWh to {:.3} kWh (reset or history cleared); counted as a \
                 restart from zero",
                wh_to_kwh(from_wh),
                wh_to_kwh(to_wh)
            ),
            FlowEvent::CounterReplaced { source, from_wh, to_wh } => write!(
                f,
                "{source}: COUNTER REPLACED: it went from {:.3} kWh to {:.3} kWh, more than the maximum power \
                 explains (device replaced or history changed); {:.3} kWh is the new reference and nothing is \
                 booked for the change",
                wh_to_kwh(from_wh),
                wh_to_kwh(to_wh),
                wh_to_kwh(to_wh)
            ),
            FlowEvent::JumpHeld { source, from_wh, to_wh } => write!(
                f,
                "{source}: counter jumped from {:.3} kWh to {:.3} kWh, more than the maximum power explains; held \
                 back until the next reading",
                wh_to_kwh(from_wh),
                wh_to_kwh(to_wh)
            ),
            FlowEvent::JumpDropped {
                source,
                held_wh,
                now_wh,
            } => write!(
                f,
                "{source}: the jump to {:.3} kWh was a glitch (the counter reads {:.3} kWh); ignored",
                wh_to_kwh(held_wh),
                wh_to_kwh(now_wh)
            ),
        }
    }
}

/// What the tracker asks its driver to do, from [`FlowTracker::poll`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Output {
    /// Log this.
    Event(FlowEvent),
    /// Save this state (e.g. `state_file::save(path, &state.to_line())`,
    /// stamping [`FlowState::saved_at_unix_s`] first); call
    /// [`FlowTracker::save_failed`] if that fails.
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

/// When a track's reference was last seen: at `at`, with `before` of time
/// that had passed unseen before `at` (a downtime).
#[derive(Clone, Copy, Debug)]
struct LastSeen {
    at: Instant,
    before: Duration,
}

impl LastSeen {
    fn now(at: Instant) -> LastSeen {
        LastSeen {
            at,
            before: Duration::ZERO,
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.at).saturating_add(self.before)
    }
}

#[derive(Clone, Copy, Debug)]
struct Track {
    /// The highest counter since the last restart or replacement: the
    /// reference the next reading is compared with.
    high: Option<u64>,
    /// When the reference was last seen; `None`: unknown (restored from a
    /// saved state of unknown age).
    seen: Option<LastSeen>,
    /// An implausible jump waiting for the next reading: its value and when
    /// it was read.
    held: Option<(u64, Instant)>,
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
    save: bool,
    events: VecDeque<FlowEvent>,
}

impl FlowTracker {
    /// A tracker that continues from `state` (the default state to start
    /// from zero). How old the saved counters are is unknown until
    /// [`FlowTracker::set_downtime`] says.
    pub fn new(config: FlowConfig, state: FlowState) -> FlowTracker {
        let state = FlowState {
            saved_at_unix_s: None,
            ..state
        };
        let track = |high| Track {
            high,
            seen: None,
            held: None,
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
            save: false,
            // Room for a burst of events, so the steady state never allocates.
            events: VecDeque::with_capacity(16),
        }
    }

    /// The counters restored from the saved state were last seen at most
    /// `downtime` before `now`, which bounds what their first readings may
    /// book. The driver knows from [`FlowState::saved_at_unix_s`] and the
    /// wall clock; since the counters are those of the last step before the
    /// save, pass the time since the save plus [`FlowConfig::save_within`]
    /// (and the stamp's resolution): too short a downtime refuses energy
    /// that really flowed. Call it before the first reading; it changes
    /// nothing for a source already read.
    pub fn set_downtime(&mut self, now: Instant, downtime: Duration) {
        for t in &mut self.tracks {
            if t.presence == Presence::Unheard && t.high.is_some() {
                t.seen = Some(LastSeen {
                    at: now,
                    before: downtime,
                });
            }
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

    /// Whether the last reading of `source` was a usable counter (not absent, not
    /// invalid, and there was one since the tracker started).
    pub fn is_present(&self, source: Source) -> bool {
        self.tracks[source.index()].presence == Presence::Present
    }

    /// Source `source` now reads `kwh` (`None`: absent, i.e. its service is
    /// gone or the value is invalid on the bus). Steps that were due by
    /// `now` are booked first.
    pub fn reading(&mut self, now: Instant, source: Source, kwh: Option<f64>) {
        self.handle_timeout(now);
        let config = self.config;
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
        let Some(high) = track.high else {
            self.events.push_back(FlowEvent::Baseline { source, wh });
            track.high = Some(wh);
            track.seen = Some(LastSeen::now(now));
            self.changed_since.get_or_insert(now);
            return;
        };
        // `None`: how long since the reference was seen is unknown.
        let bound = track.seen.map(|s| config.max_increase_wh(s.elapsed(now)));
        let held = track.held.take();
        let changed = if wh >= high && bound.is_none_or(|b| wh - high <= b) {
            // Counting on, plausibly: book the rise.
            if let Some((held_wh, _)) = held {
                self.events.push_back(FlowEvent::JumpDropped {
                    source,
                    held_wh,
                    now_wh: wh,
                });
            }
            track.pending = track.pending.saturating_add(wh - high);
            track.seen = Some(LastSeen::now(now));
            wh != high
        } else if wh >= high {
            // A rise no flow within the power bound explains.
            match held {
                Some((held_wh, held_at))
                    if wh >= held_wh
                        && wh - held_wh <= config.max_increase_wh(now.saturating_duration_since(held_at)) =>
                {
                    self.events.push_back(FlowEvent::CounterReplaced {
                        source,
                        from_wh: high,
                        to_wh: wh,
                    });
                    track.seen = Some(LastSeen::now(now));
                    true
                }
                _ => {
                    track.held = Some((wh, now));
                    self.events.push_back(FlowEvent::JumpHeld {
                        source,
                        from_wh: high,
                        to_wh: wh,
                    });
                    false
                }
            }
        } else if high - wh <= config.backwards_tolerance_wh {
            // Jitter of a coarse source: the reference stays, and was just seen.
            if let Some((held_wh, _)) = held {
                self.events.push_back(FlowEvent::JumpDropped {
                    source,
                    held_wh,
                    now_wh: wh,
                });
            }
            track.seen = Some(LastSeen::now(now));
            false
        } else {
            // Restarted: its value is what it counted since, if that is plausible.
            if bound.is_some_and(|b| wh <= b) {
                track.pending = track.pending.saturating_add(wh);
                self.events.push_back(FlowEvent::CounterRestarted {
                    source,
                    from_wh: high,
                    to_wh: wh,
                });
            } else {
                self.events.push_back(FlowEvent::CounterReplaced {
                    source,
                    from_wh: high,
                    to_wh: wh,
                });
            }
            track.seen = Some(LastSeen::now(now));
            true
        };
        if changed {
            track.high = Some(wh);
            self.changed_since.get_or_insert(now);
        }
    }

    /// The source is now a different device (e.g. the system's battery
    /// service changed) at `now`: its next reading is a new baseline,
    /// compared with nothing. What it counted before is booked in the next
    /// step, which is due as after any change (so the saved state forgets
    /// the old counter too).
    pub fn forget(&mut self, now: Instant, source: Source) {
        self.handle_timeout(now);
        let track = &mut self.tracks[source.index()];
        if track.high.is_some() {
            self.changed_since.get_or_insert(now);
        }
        track.high = None;
        track.seen = None;
        track.held = None;
        track.presence = Presence::Unheard;
    }

    /// When [`FlowTracker::handle_timeout`] should be called next: the
    /// step's settle deadline, the save deadline or the end of a hold,
    /// whichever is first.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let settle = deadline(self.changed_since, self.config.settle);
        let save = deadline(self.dirty_since, self.config.save_within);
        let holds = self
            .tracks
            .iter()
            .filter_map(|t| deadline(t.held.map(|h| h.1), HOLD_FOR));
        [settle, save].into_iter().flatten().chain(holds).min()
    }

    /// Confirm the holds that ran [`HOLD_FOR`] without a contradicting
    /// reading by `now`.
    fn confirm_holds(&mut self, now: Instant) {
        for (track, source) in self.tracks.iter_mut().zip(Source::ALL) {
            let Some((wh, at)) = track.held else { continue };
            let Some(end) = deadline(Some(at), HOLD_FOR).filter(|d| *d <= now) else {
                continue;
            };
            track.held = None;
            self.events.push_back(FlowEvent::CounterReplaced {
                source,
                from_wh: track.high.unwrap_or(0),
                to_wh: wh,
            });
            track.high = Some(wh);
            track.seen = Some(LastSeen::now(end));
            self.changed_since.get_or_insert(end);
        }
    }

    /// Book the step, confirm the holds and ask for the save that are due
    /// by `now` (calling it early or more than once does no harm).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.confirm_holds(now);
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

    /// The next thing to do: events first (in order), then the state to
    /// save. `None` when there is nothing. The flows to publish are those of
    /// each [`Output::Save`] once it is on disk (see the module
    /// documentation); [`FlowTracker::flows`] are the totals booked so far.
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(event) = self.events.pop_front() {
            return Some(Output::Event(event));
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
    /// A minute: steps in these tests are minutes apart, so that their energy is
    /// plausible at the default 20 kW bound.
    const M: Duration = Duration::from_secs(60);

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

    /// A tracker that has seen all three counters at `in_kwh`, `out_kwh`,
    /// `dis_kwh` and booked and saved them (nothing pending or due).
    fn primed(t0: Instant, in_kwh: f64, out_kwh: f64, dis_kwh: f64) -> FlowTracker {
        let mut t = FlowTracker::new(FlowConfig::default(), FlowState::default());
        t.reading(t0, Source::AcIn, Some(in_kwh));
        t.reading(t0, Source::AcOut, Some(out_kwh));
        t.reading(t0, Source::Battery, Some(dis_kwh));
        t.flush(t0);
        let out = drain(&mut t);
        assert_eq!(t.flows(), Flows::default(), "baselines book nothing");
        assert!(matches!(out.last(), Some(Output::Save(_))));
        assert_eq!(t.poll_timeout(), None);
        t
    }

    /// Feed one cycle of readings and book it; the flows then, if the cycle
    /// changed them.
    fn cycle(t: &mut FlowTracker, now: Instant, readings: [Option<f64>; 3]) -> Option<Flows> {
        let before = t.flows();
        for (source, kwh) in Source::ALL.into_iter().zip(readings) {
            t.reading(now, source, kwh);
        }
        t.handle_timeout(now + 2 * S);
        drain(t);
        (t.flows() != before).then(|| t.flows())
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
        let t1 = t0 + 10 * M;
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
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(100, 400, 0));
        assert_eq!(t.poll_timeout(), Some(t1 + 62 * S), "saved within a minute");
        t.handle_timeout(t1 + 62 * S);
        let saved = FlowState {
            flows: flows(100, 400, 0),
            ac_in_wh: Some(10_500),
            ac_out_wh: Some(20_100),
            battery_wh: Some(5_000),
            saved_at_unix_s: None,
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
            cycle(&mut t, t0 + 10 * M, [Some(0.3), Some(0.3), Some(0.0)]),
            Some(flows(300, 0, 0))
        );
        // Inverting: grid gone (meter reads on, no energy), 200 Wh out, 230 Wh from the battery.
        assert_eq!(
            cycle(&mut t, t0 + 20 * M, [Some(0.3), Some(0.5), Some(0.23)]),
            Some(flows(300, 0, 200))
        );
        // Power assist: 100 Wh in, 300 Wh out, 220 Wh from the battery: p = 80.
        assert_eq!(
            cycle(&mut t, t0 + 30 * M, [Some(0.4), Some(0.8), Some(0.45)]),
            Some(flows(380, 20, 420))
        );
    }

    #[test]
    fn grid_outage_with_the_ac_input_meter_absent() {
        let t0 = Instant::now();
        let mut t = primed(t0, 100.0, 50.0, 10.0);
        // Mains fails; the AC-input meter (powered by mains) goes silent.
        t.reading(t0 + 5 * M, Source::AcIn, None);
        assert_eq!(events(&drain(&mut t)), vec![FlowEvent::Absent { source: Source::AcIn }]);
        assert_eq!(
            cycle(&mut t, t0 + 10 * M, [None, Some(50.2), Some(10.25)]),
            Some(flows(0, 0, 200))
        );
        assert_eq!(
            cycle(&mut t, t0 + 20 * M, [None, Some(50.3), Some(10.36)]),
            Some(flows(0, 0, 300))
        );
        // Mains back: the meter counted 1 Wh before it died and 400 Wh since.
        t.reading(t0 + 30 * M, Source::AcIn, Some(100.401));
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
            cycle(&mut t, t0 + 30 * M, [Some(100.401), Some(50.4), Some(10.36)]),
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
            cycle(&mut t, t0 + 10 * M, [Some(0.1), Some(0.1), None]),
            Some(flows(100, 0, 0))
        );
        // Back with 200 Wh discharged meanwhile (part of it during the step above).
        assert_eq!(
            cycle(&mut t, t0 + 20 * M, [Some(0.2), Some(0.35), Some(0.2)]),
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
            cycle(&mut t, t0 + 20 * S + M, [Some(5.0), Some(0.08), Some(0.06)]),
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
        t.reading(t0 + 9 * M, Source::AcOut, Some(1.5));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::Back {
                source: Source::AcOut,
                wh: 1_500
            }]
        );
        t.handle_timeout(t0 + 9 * M + 2 * S);
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(0, 0, 500));
    }

    #[test]
    fn restart_after_downtime_books_it_as_one_step() {
        let t0 = Instant::now();
        let mut t = primed(t0, 10.0, 10.0, 10.0);
        assert_eq!(
            cycle(&mut t, t0 + 10 * M, [Some(10.1), Some(10.1), Some(10.0)]),
            Some(flows(100, 0, 0))
        );
        t.flush(t0 + 11 * M);
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
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(1_100, 1_000, 500));
    }

    #[test]
    fn flush_books_pending_changes_at_once_and_asks_to_save() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        t.reading(t0 + 10 * M, Source::AcIn, Some(1.2));
        t.reading(t0 + 10 * M, Source::AcOut, Some(1.1));
        t.flush(t0 + 10 * M);
        let expected = FlowState {
            flows: flows(100, 100, 0),
            ac_in_wh: Some(1_200),
            ac_out_wh: Some(1_100),
            battery_wh: Some(1_000),
            saved_at_unix_s: None,
        };
        assert_eq!(drain(&mut t), vec![Output::Save(expected)]);
        assert_eq!(t.poll_timeout(), None);
        // Nothing pending: still asks to save.
        t.flush(t0 + 11 * M);
        assert_eq!(drain(&mut t), vec![Output::Save(expected)]);
    }

    #[test]
    fn a_failed_save_is_asked_again() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        let t1 = t0 + 10 * M;
        cycle(&mut t, t1, [Some(1.1), Some(1.0), Some(1.0)]);
        t.handle_timeout(t1 + 62 * S);
        assert!(matches!(drain(&mut t)[..], [Output::Save(_)]));
        t.save_failed(t1 + 63 * S);
        assert_eq!(t.poll_timeout(), Some(t1 + 123 * S));
        t.handle_timeout(t1 + 123 * S);
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
        let t1 = t0 + 10 * M;
        t.reading(t1, Source::AcOut, Some(0.1));
        // The driver woke late: the next reading arrives after the deadline.
        t.reading(t1 + 5 * S, Source::AcOut, Some(0.101));
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(0, 0, 100));
        assert_eq!(t.poll_timeout(), Some(t1 + 7 * S));
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let t0 = Instant::now();
        let config = FlowConfig {
            settle: Duration::MAX,
            save_within: Duration::MAX,
            backwards_tolerance_wh: u64::MAX,
            max_power_w: u64::MAX,
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
            "AC-output meter: counter went back from 3.000 kWh to 0.020 kWh (reset or history cleared); counted \
             as a restart from zero"
        );
        assert_eq!(Flow::AcIn1ToInverter.path(), "/Energy/AcIn1ToInverter");
    }

    #[test]
    fn max_increase_is_power_times_time_plus_the_allowances() {
        let c = FlowConfig::default();
        assert_eq!(c.max_increase_wh(Duration::ZERO), 12);
        // 20 kW for a second is 5.6 Wh, rounded up.
        assert_eq!(c.max_increase_wh(S), 18);
        assert_eq!(c.max_increase_wh(60 * M), 20_012);
        let huge = FlowConfig {
            max_power_w: u64::MAX,
            ..c
        };
        assert_eq!(huge.max_increase_wh(Duration::MAX), u64::MAX);
        assert_eq!(huge.max_increase_wh(Duration::ZERO), 12);
    }

    #[test]
    fn a_replaced_battery_monitor_with_a_long_history_books_nothing() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 800.0);
        // Replaced by one with 500 kWh of history: a drop no restart from zero explains.
        let t1 = t0 + 10 * M;
        t.reading(t1, Source::Battery, Some(500.0));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterReplaced {
                source: Source::Battery,
                from_wh: 800_000,
                to_wh: 500_000
            }]
        );
        // Counting goes on from the new counter.
        assert_eq!(
            cycle(&mut t, t1 + M, [Some(1.0), Some(1.2), Some(500.25)]),
            Some(flows(0, 0, 200))
        );
        assert_eq!(t.state().battery_wh, Some(500_250));
        // Replaced by one with more history than that: a jump, held, then confirmed.
        let t2 = t1 + 10 * M;
        t.reading(t2, Source::Battery, Some(900.0));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::JumpHeld {
                source: Source::Battery,
                from_wh: 500_250,
                to_wh: 900_000
            }]
        );
        assert_eq!(t.poll_timeout(), Some(t2 + HOLD_FOR), "nothing booked; the hold's end");
        t.reading(t2 + S, Source::Battery, Some(900.01));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterReplaced {
                source: Source::Battery,
                from_wh: 500_250,
                to_wh: 900_010
            }]
        );
        t.handle_timeout(t2 + 3 * S);
        assert_eq!(drain(&mut t), vec![], "no energy booked, nothing to publish");
        assert_eq!(t.state().battery_wh, Some(900_010));
        assert_eq!(t.flows(), flows(0, 0, 200));
        assert!(t.poll_timeout().is_some(), "the new counter is saved");
    }

    #[test]
    fn a_held_jump_that_stays_put_is_confirmed_after_a_while() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 800.0);
        let t1 = t0 + 10 * M;
        // A replaced monitor whose counter then stays put: no further reading comes.
        t.reading(t1, Source::Battery, Some(900.0));
        assert!(matches!(events(&drain(&mut t))[..], [FlowEvent::JumpHeld { .. }]));
        assert_eq!(t.poll_timeout(), Some(t1 + HOLD_FOR));
        t.handle_timeout(t1 + HOLD_FOR - Duration::from_millis(1));
        assert!(drain(&mut t).is_empty());
        t.handle_timeout(t1 + HOLD_FOR);
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterReplaced {
                source: Source::Battery,
                from_wh: 800_000,
                to_wh: 900_000
            }]
        );
        // The new reference is stepped and saved; counting goes on from it.
        t.handle_timeout(t1 + HOLD_FOR + 2 * S);
        assert_eq!(t.state().battery_wh, Some(900_000));
        assert_eq!(
            cycle(&mut t, t1 + 2 * M, [Some(1.0), Some(1.1), Some(900.1)]),
            Some(flows(0, 0, 100))
        );
    }

    #[test]
    fn a_glitch_up_is_held_then_dropped() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 1.0);
        let t1 = t0 + 10 * M;
        // The AC-output meter reads 1000 kWh once, then its true value again.
        t.reading(t1, Source::AcOut, Some(1000.0));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::JumpHeld {
                source: Source::AcOut,
                from_wh: 1_000,
                to_wh: 1_000_000
            }]
        );
        t.reading(t1 + S, Source::AcOut, Some(1.05));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::JumpDropped {
                source: Source::AcOut,
                held_wh: 1_000_000,
                now_wh: 1_050
            }]
        );
        t.handle_timeout(t1 + 3 * S);
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(0, 0, 50));
        assert!(
            FlowEvent::JumpDropped {
                source: Source::AcOut,
                held_wh: 1,
                now_wh: 2
            }
            .is_warning()
        );
        assert!(!FlowEvent::Absent { source: Source::AcIn }.is_warning());
    }

    #[test]
    fn a_restart_is_booked_only_when_plausible_for_the_time() {
        let t0 = Instant::now();
        let mut t = primed(t0, 5.0, 3.0, 1.0);
        // A second later the AC-input meter reads 0.5 kWh: 500 Wh cannot have been counted
        // since a restart within that second.
        t.reading(t0 + S, Source::AcIn, Some(0.5));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterReplaced {
                source: Source::AcIn,
                from_wh: 5_000,
                to_wh: 500
            }]
        );
        // An hour later it restarted again and counted 100 Wh since: plausible, booked.
        t.reading(t0 + 60 * M, Source::AcIn, Some(0.1));
        assert_eq!(
            events(&drain(&mut t))
                .into_iter()
                .filter(|e| matches!(e, FlowEvent::CounterRestarted { .. }))
                .collect::<Vec<_>>(),
            vec![FlowEvent::CounterRestarted {
                source: Source::AcIn,
                from_wh: 500,
                to_wh: 100
            }]
        );
        t.handle_timeout(t0 + 60 * M + 2 * S);
        drain(&mut t);
        assert_eq!(t.flows(), flows(0, 100, 0));
    }

    /// A saved state as `restart_…` tests load it.
    fn saved_state() -> FlowState {
        FlowState {
            flows: flows(1, 2, 3),
            ac_in_wh: Some(10_000),
            ac_out_wh: Some(20_000),
            battery_wh: Some(5_000),
            saved_at_unix_s: Some(1_000),
        }
    }

    #[test]
    fn restart_the_downtime_bounds_the_first_readings() {
        let t0 = Instant::now();
        let mut t = FlowTracker::new(FlowConfig::default(), saved_state());
        assert_eq!(t.state().saved_at_unix_s, None, "the tracker never carries the stamp");
        // Down for 5 minutes: at most 20 kW × 5 min = 1667 Wh (+12) per source.
        t.set_downtime(t0, 5 * M);
        t.reading(t0, Source::AcIn, Some(11.5));
        t.reading(t0, Source::AcOut, Some(60.0));
        t.reading(t0, Source::Battery, Some(0.2));
        assert_eq!(
            events(&drain(&mut t)),
            vec![
                FlowEvent::JumpHeld {
                    source: Source::AcOut,
                    from_wh: 20_000,
                    to_wh: 60_000
                },
                FlowEvent::CounterRestarted {
                    source: Source::Battery,
                    from_wh: 5_000,
                    to_wh: 200
                }
            ]
        );
        t.handle_timeout(t0 + 2 * S);
        // dIn 1500, dOut 0 (held), dDis 200: all of the input into the battery.
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(1, 1_502, 3));
    }

    #[test]
    fn restart_without_a_known_downtime_books_rises_and_replaces_on_drops() {
        let t0 = Instant::now();
        let mut t = FlowTracker::new(FlowConfig::default(), saved_state());
        t.reading(t0, Source::AcOut, Some(60.0));
        t.reading(t0, Source::Battery, Some(0.2));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::CounterReplaced {
                source: Source::Battery,
                from_wh: 5_000,
                to_wh: 200
            }]
        );
        t.handle_timeout(t0 + 2 * S);
        assert_eq!(drain(&mut t), vec![]);
        assert_eq!(t.flows(), flows(1, 2, 40_003));
        // Once read, the counters are bounded as usual.
        t.reading(t0 + 3 * S, Source::AcOut, Some(70.0));
        assert!(matches!(
            events(&drain(&mut t))[..],
            [FlowEvent::JumpHeld {
                source: Source::AcOut,
                ..
            }]
        ));
    }

    #[test]
    fn a_forgotten_source_starts_from_a_new_baseline() {
        let t0 = Instant::now();
        let mut t = primed(t0, 1.0, 1.0, 100.0);
        t.forget(t0 + M / 2, Source::Battery);
        t.reading(t0 + M, Source::Battery, Some(3.0));
        assert_eq!(
            events(&drain(&mut t)),
            vec![FlowEvent::Baseline {
                source: Source::Battery,
                wh: 3_000
            }]
        );
        assert_eq!(
            cycle(&mut t, t0 + 2 * M, [Some(1.0), Some(1.1), Some(3.1)]),
            Some(flows(0, 0, 100))
        );
        assert_eq!(t.state().battery_wh, Some(3_100));
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
                saved_at_unix_s: Some(1_767_225_600),
            },
        ] {
            let line = s.to_line();
            assert!(line.starts_with("pzem-flow-v2 ") && line.ends_with('\n'), "{line}");
            assert_eq!(FlowState::parse(&line), Ok(s));
            assert_eq!(FlowState::parse(line.trim_end()), Ok(s));
        }
        assert_eq!(
            FlowState::default().to_line(),
            "pzem-flow-v2 ac_in_to_ac_out_wh=0 ac_in_to_inverter_wh=0 inverter_to_ac_out_wh=0 \
             ac_in_wh=- ac_out_wh=- battery_wh=- saved_at_unix_s=- crc=374a\n"
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
        assert_eq!(reason(&signed("pzem-flow-v1")), "not a pzem-flow-v2 line");
        let all = "ac_in_to_ac_out_wh=0 ac_in_to_inverter_wh=0 inverter_to_ac_out_wh=0 ac_in_wh=- ac_out_wh=- \
                   battery_wh=- saved_at_unix_s=-";
        assert_eq!(
            reason(&signed(&format!("pzem-flow-v2 {all} ac_in_wh=1"))),
            "ac_in_wh given twice"
        );
        assert_eq!(
            reason(&signed("pzem-flow-v2 ac_in_to_ac_out_wh=0")),
            "ac_in_to_inverter_wh is missing"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v2 {}",
                all.replace("ac_in_to_ac_out_wh=0", "ac_in_to_ac_out_wh=-")
            ))),
            "ac_in_to_ac_out_wh is not a number"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v2 {}",
                all.replace("ac_in_wh=-", "ac_in_wh=+5")
            ))),
            "ac_in_wh is not a number"
        );
        assert_eq!(
            reason(&signed(&format!(
                "pzem-flow-v2 {}",
                all.replace("ac_in_wh=-", "ac_in_wh=99999999999999999999")
            ))),
            "ac_in_wh is too large"
        );
        assert_eq!(reason(&signed(&format!("pzem-flow-v2 {all} x=1"))), "unknown field");
        assert_eq!(reason(&signed(&format!("pzem-flow-v2 {all} x"))), "a field without '='");
        assert_eq!(reason(&signed(&format!("pzem-flow-v2  {all}"))), "a field without '='");
    }
}
