//! What `pzem-info` found out, as plain data (sans-IO): the renderers in
//! [`super::text`] and [`super::json`] turn it into output.

use std::time::Duration;

use crate::address::Address;
use crate::dc::Shunt;
use crate::model::{Family, Model};
use crate::reading::{Parameters, Reading};

/// One meter: who it is, what it measures and how it is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeterReport {
    /// The address the request went to (may be the general address 0xF8).
    pub queried: Address,
    /// The model: as named with `-t`, or the generic model of the family found.
    pub model: Model,
    /// The measurements.
    pub reading: Reading,
    /// The parameters (they include the address the meter has stored).
    pub parameters: Parameters,
}

impl MeterReport {
    /// AC or DC.
    pub fn family(&self) -> Family {
        self.reading.family()
    }

    /// The address the meter has stored (holding register 0x0002).
    pub fn stored_address(&self) -> u8 {
        match self.parameters {
            Parameters::Ac(p) => p.address,
            Parameters::Dc(p) => p.address,
        }
    }
}

/// A meter found by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanHit {
    /// Where it answered.
    pub address: Address,
    /// Its model (generic unless named with `-t`).
    pub model: Model,
    /// What it measured.
    pub reading: Reading,
}

/// An address where something answered, but not usefully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanIssue {
    /// The address.
    pub address: Address,
    /// What went wrong, for people.
    pub problem: String,
    /// Whether the replies were garbled (two meters sharing the address,
    /// noise, or wrong serial settings).
    pub garbled: bool,
}

/// The result of a bus scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanReport {
    /// First address scanned.
    pub from: u8,
    /// Last address scanned.
    pub to: u8,
    /// Meters that answered, by address.
    pub found: Vec<ScanHit>,
    /// Addresses with garbled or refused replies.
    pub issues: Vec<ScanIssue>,
    /// How long the scan took.
    pub elapsed: Duration,
}

/// A setting that was changed and read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The meter's Modbus address.
    Address {
        /// Address before.
        from: u8,
        /// Address now (read back there).
        to: u8,
        /// False when the meter already had that address and nothing was written.
        written: bool,
    },
    /// The energy counter was reset.
    EnergyReset {
        /// Counter before, Wh.
        before_wh: u32,
        /// Counter read back after the reset, Wh.
        after_wh: u32,
    },
    /// A PZEM-017's shunt range.
    Shunt {
        /// Range before.
        before: Option<Shunt>,
        /// Range read back.
        after: Shunt,
    },
    /// An AC meter's power alarm threshold.
    PowerAlarm {
        /// Threshold before, W.
        before_w: u16,
        /// Threshold read back, W.
        after_w: u16,
    },
    /// A DC meter's voltage alarm thresholds.
    VoltageAlarms {
        /// High and low threshold before, 0.01 V.
        before_cv: (u16, u16),
        /// High and low threshold read back, 0.01 V.
        after_cv: (u16, u16),
    },
}

impl Change {
    /// What changed, as `(before, after)` pairs of the same field, in
    /// display order: the text and the JSON output both render these.
    /// (Whether an address was written at all is [`Change::Address`]'s
    /// `written`.)
    pub fn fields(&self) -> Vec<(Field, Field)> {
        match *self {
            Change::Address { from, to, .. } => vec![(address(from), address(to))],
            Change::EnergyReset { before_wh, after_wh } => vec![(energy(before_wh), energy(after_wh))],
            Change::Shunt { before, after } => vec![(shunt(before), shunt(Some(after)))],
            Change::PowerAlarm { before_w, after_w } => vec![(power_alarm(before_w), power_alarm(after_w))],
            Change::VoltageAlarms { before_cv, after_cv } => vec![
                (high_voltage_alarm(before_cv.0), high_voltage_alarm(after_cv.0)),
                (low_voltage_alarm(before_cv.1), low_voltage_alarm(after_cv.1)),
            ],
        }
    }

    /// The action's name as on the command line, e.g. `set-shunt`.
    pub fn action(&self) -> &'static str {
        match self {
            Change::Address { .. } => "set-address",
            Change::EnergyReset { .. } => "reset-energy",
            Change::Shunt { .. } => "set-shunt",
            Change::PowerAlarm { .. } => "set-power-alarm",
            Change::VoltageAlarms { .. } => "set-voltage-alarms",
        }
    }
}

/// A change and the meter as read back afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeReport {
    /// What changed.
    pub change: Change,
    /// The meter after the change, read at its (new) address.
    pub meter: MeterReport,
}

/// Anything `pzem-info` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// One meter (no action given).
    Meter(MeterReport),
    /// A bus scan.
    Scan(ScanReport),
    /// A setting changed and confirmed.
    Change(ChangeReport),
}

impl Report {
    /// The action's name: `show`, `scan` or the change's.
    pub fn action(&self) -> &'static str {
        match self {
            Report::Meter(_) => "show",
            Report::Scan(_) => "scan",
            Report::Change(c) => c.change.action(),
        }
    }
}

/// How a field's value is to be shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// The fixed-point number `raw / 10^places`.
    Fixed {
        /// Raw integer.
        raw: u64,
        /// Decimal places.
        places: u8,
    },
    /// An on/off status (alarms).
    Flag(bool),
    /// Not available; the text says why (JSON `null`).
    Missing(&'static str),
}

/// One labelled value with its unit: the common ground of the human and
/// JSON output, so both always carry the same content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// JSON key, e.g. `voltage_v`.
    pub key: &'static str,
    /// Human label, e.g. `Voltage`.
    pub label: &'static str,
    /// What names the value in one-line output (scan rows, change lines),
    /// e.g. `PF` for the power factor; empty when the unit says enough.
    pub short: &'static str,
    /// The value.
    pub value: FieldValue,
    /// Unit symbol (empty for none).
    pub unit: &'static str,
}

const fn fixed(key: &'static str, label: &'static str, raw: u64, places: u8, unit: &'static str) -> Field {
    Field {
        key,
        label,
        short: "",
        value: FieldValue::Fixed { raw, places },
        unit,
    }
}

const fn flag(key: &'static str, label: &'static str, on: bool) -> Field {
    Field {
        key,
        label,
        short: "",
        value: FieldValue::Flag(on),
        unit: "",
    }
}

impl Field {
    const fn with_short(self, short: &'static str) -> Field {
        Field { short, ..self }
    }
}

/// The energy counter (Wh) as a field: `energy_kwh`, kWh to the Wh.
pub fn energy(wh: u32) -> Field {
    fixed("energy_kwh", "Energy", u64::from(wh), 3, "kWh")
}

fn address(a: u8) -> Field {
    fixed("address", "Address", u64::from(a), 0, "")
}

fn power_alarm(w: u16) -> Field {
    fixed("power_alarm_w", "Power alarm threshold", u64::from(w), 0, "W")
}

fn high_voltage_alarm(cv: u16) -> Field {
    fixed(
        "high_voltage_alarm_v",
        "High-voltage alarm threshold",
        u64::from(cv),
        2,
        "V",
    )
    .with_short("high")
}

fn low_voltage_alarm(cv: u16) -> Field {
    fixed(
        "low_voltage_alarm_v",
        "Low-voltage alarm threshold",
        u64::from(cv),
        2,
        "V",
    )
    .with_short("low")
}

fn shunt(s: Option<Shunt>) -> Field {
    match s {
        Some(s) => fixed("shunt_a", "Shunt range", u64::from(s.amps()), 0, "A"),
        None => Field {
            key: "shunt_a",
            label: "Shunt range",
            short: "",
            value: FieldValue::Missing("none (no shunt register: PZEM-003, internal 10 A)"),
            unit: "",
        },
    }
}

/// The measurements, in display order, with units and their resolution.
pub fn reading_fields(reading: &Reading) -> Vec<Field> {
    match reading {
        Reading::Ac(r) => vec![
            fixed("voltage_v", "Voltage", u64::from(r.voltage_dv), 1, "V"),
            fixed("current_a", "Current", u64::from(r.current_ma), 3, "A"),
            fixed("power_w", "Power", u64::from(r.power_dw), 1, "W"),
            energy(r.energy_wh),
            fixed("frequency_hz", "Frequency", u64::from(r.frequency_dhz), 1, "Hz"),
            fixed("power_factor", "Power factor", u64::from(r.power_factor_centi), 2, "").with_short("PF"),
            flag("power_alarm", "Power alarm", r.power_alarm),
        ],
        Reading::Dc(r) => vec![
            fixed("voltage_v", "Voltage", u64::from(r.voltage_cv), 2, "V"),
            fixed("current_a", "Current", u64::from(r.current_ca), 2, "A"),
            fixed("power_w", "Power", u64::from(r.power_dw), 1, "W"),
            energy(r.energy_wh),
            flag("high_voltage_alarm", "High-voltage alarm", r.high_voltage_alarm),
            flag("low_voltage_alarm", "Low-voltage alarm", r.low_voltage_alarm),
        ],
    }
}

/// The parameters, in display order.
pub fn parameter_fields(parameters: &Parameters) -> Vec<Field> {
    match parameters {
        Parameters::Ac(p) => vec![address(p.address), power_alarm(p.power_alarm_w)],
        Parameters::Dc(p) => vec![
            address(p.address),
            high_voltage_alarm(p.high_voltage_alarm_cv),
            low_voltage_alarm(p.low_voltage_alarm_cv),
            shunt(p.shunt),
        ],
    }
}
