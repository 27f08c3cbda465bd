//! Human-readable output: aligned labels, values with units.

use std::fmt::Write as _;

use crate::address::Address;
use crate::model::Model;
use crate::reading::Reading;

use super::json_writer::fixed;
use super::report::{
    Change, ChangeReport, Field, FieldValue, MeterReport, Report, ScanReport, energy, parameter_fields, reading_fields,
};

/// Render any report.
pub fn render(report: &Report) -> String {
    match report {
        Report::Meter(m) => meter(m),
        Report::Scan(s) => scan(s),
        Report::Change(c) => change(c),
    }
}

/// `PZEM-016 (AC)`, or `PZEM AC meter` when the exact model is unknown.
pub fn model_label(model: Model) -> String {
    match model {
        Model::GenericAc | Model::GenericDc => model.product_name().to_string(),
        m => format!("{} ({})", m.product_name(), m.family()),
    }
}

/// A field's value with its unit, e.g. `230.1 V`, `off`, `ALARM`.
pub fn value_text(field: &Field) -> String {
    match field.value {
        FieldValue::Fixed { raw, places } if field.unit.is_empty() => fixed(raw, places),
        FieldValue::Fixed { raw, places } => format!("{} {}", fixed(raw, places), field.unit),
        FieldValue::Flag(true) => "ALARM".to_string(),
        FieldValue::Flag(false) => "off".to_string(),
        FieldValue::Missing(why) => why.to_string(),
    }
}

/// Where a request went: `address 7`, or `the general address 0xF8`.
pub fn address_phrase(address: Address) -> String {
    if address.is_general() {
        "the general address 0xF8".to_string()
    } else {
        format!("address {address}")
    }
}

/// An energy counter (Wh) as shown, e.g. `12.345 kWh`.
pub fn kwh(wh: u32) -> String {
    value_text(&energy(wh))
}

/// One meter: a heading, then its measurements and parameters with the
/// labels aligned.
pub fn meter(m: &MeterReport) -> String {
    let readings = reading_fields(&m.reading);
    let params = parameter_fields(&m.parameters);
    let width = readings.iter().chain(&params).map(|f| f.label.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = write!(out, "{} at {}", model_label(m.model), address_phrase(m.queried));
    if m.queried.is_general() {
        let _ = write!(out, "; its own address is {}", m.stored_address());
    }
    out.push('\n');
    for (title, fields) in [("Measurements", &readings), ("Parameters", &params)] {
        let _ = writeln!(out, "{title}");
        for f in fields {
            let _ = writeln!(out, "  {:<width$}  {}", f.label, value_text(f));
        }
    }
    out
}

/// A field for one-line output: its short name, if it has one, then its
/// value, e.g. `PF 0.95`, `high 14.40 V`, `230.1 V`.
pub fn short_text(field: &Field) -> String {
    if field.short.is_empty() {
        value_text(field)
    } else {
        format!("{} {}", field.short, value_text(field))
    }
}

/// The reading as cells for one line: values with units, alarms only when on.
pub fn reading_cells(reading: &Reading) -> Vec<String> {
    let mut cells = Vec::new();
    let mut alarms = Vec::new();
    for f in reading_fields(reading) {
        match f.value {
            FieldValue::Flag(true) => alarms.push(f.label.to_uppercase()),
            FieldValue::Flag(false) => {}
            _ => cells.push(short_text(&f)),
        }
    }
    cells.extend(alarms);
    cells
}

/// Cells every reading starts with: voltage, current, power, energy.
const COMMON_CELLS: usize = 4;

/// A scan: what answered where, one line each, and how long it took.
pub fn scan(s: &ScanReport) -> String {
    let mut out = String::new();
    let n = s.found.len();
    let _ = writeln!(
        out,
        "Scanned addresses {}-{} in {:.1} s: {} meter{} found.",
        s.from,
        s.to,
        s.elapsed.as_secs_f64(),
        n,
        if n == 1 { "" } else { "s" }
    );
    if n > 0 {
        let rows: Vec<(String, String, Vec<String>)> = s
            .found
            .iter()
            .map(|h| (h.address.to_string(), model_label(h.model), reading_cells(&h.reading)))
            .collect();
        let model_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max("Model".len());
        // Voltage, current, power and energy line up in columns; what
        // follows differs between AC and DC and is left as it comes.
        let widths: Vec<usize> = (0..COMMON_CELLS)
            .map(|i| {
                rows.iter()
                    .filter_map(|r| r.2.get(i))
                    .map(String::len)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = writeln!(out, "Address  {:<model_w$}  Reading", "Model");
        for (address, model, cells) in &rows {
            let mut line = format!("{address:>7}  {model:<model_w$}");
            for (i, cell) in cells.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "  {cell:>w$}");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    if !s.issues.is_empty() {
        let _ = writeln!(out, "Problems:");
        for issue in &s.issues {
            let _ = writeln!(out, "{:>7}  {}", issue.address.to_string(), issue.problem);
        }
    }
    out
}

/// A change's fields as `before -> after`, e.g. `high 300.00 V -> 14.40 V, low 7.00 V -> 11.50 V`.
fn transitions(change: &Change) -> String {
    change
        .fields()
        .iter()
        .map(|(before, after)| format!("{} -> {}", short_text(before), value_text(after)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A confirmed change, then the meter as read back.
pub fn change(c: &ChangeReport) -> String {
    let what = transitions(&c.change);
    let line = match c.change {
        Change::Address { to, written: true, .. } => {
            format!("Address changed: {what} (read back: the meter answers at {to}).")
        }
        Change::Address { to, .. } => format!("The meter already has address {to}; nothing was written."),
        Change::EnergyReset { .. } => format!("Energy counter reset: {what} (read back)."),
        Change::Shunt { .. } => format!("Shunt range set: {what} (read back)."),
        Change::PowerAlarm { .. } => format!("Power alarm threshold set: {what} (read back)."),
        Change::VoltageAlarms { .. } => format!("Voltage alarm thresholds set: {what} (read back)."),
    };
    format!("{line}\n{}", meter(&c.meter))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::address::Address;
    use crate::dc::Shunt;
    use crate::info::report::{ScanHit, ScanIssue};
    use crate::reading::Parameters;
    use crate::{AcParameters, AcReading, DcParameters, DcReading};

    fn ac_meter() -> MeterReport {
        MeterReport {
            queried: Address::unit(1).unwrap(),
            model: Model::Pzem016,
            reading: Reading::Ac(AcReading {
                voltage_dv: 2301,
                current_ma: 2345,
                power_dw: 5123,
                energy_wh: 12_345,
                frequency_dhz: 500,
                power_factor_centi: 95,
                power_alarm: false,
            }),
            parameters: Parameters::Ac(AcParameters {
                power_alarm_w: 23_000,
                address: 1,
            }),
        }
    }

    fn dc_meter() -> MeterReport {
        MeterReport {
            queried: Address::GENERAL,
            model: Model::GenericDc,
            reading: Reading::Dc(DcReading {
                voltage_cv: 1320,
                current_ca: 455,
                power_dw: 601,
                energy_wh: 7,
                high_voltage_alarm: false,
                low_voltage_alarm: true,
            }),
            parameters: Parameters::Dc(DcParameters {
                high_voltage_alarm_cv: 30_000,
                low_voltage_alarm_cv: 700,
                address: 9,
                shunt: None,
            }),
        }
    }

    #[test]
    fn ac_meter_text_is_aligned_with_units() {
        let text = meter(&ac_meter());
        assert_eq!(
            text,
            "PZEM-016 (AC) at address 1\n\
             Measurements\n\
             \x20 Voltage                230.1 V\n\
             \x20 Current                2.345 A\n\
             \x20 Power                  512.3 W\n\
             \x20 Energy                 12.345 kWh\n\
             \x20 Frequency              50.0 Hz\n\
             \x20 Power factor           0.95\n\
             \x20 Power alarm            off\n\
             Parameters\n\
             \x20 Address                1\n\
             \x20 Power alarm threshold  23000 W\n"
        );
    }

    #[test]
    fn dc_meter_at_general_address() {
        let text = meter(&dc_meter());
        assert!(text.starts_with("PZEM DC meter at the general address 0xF8; its own address is 9\n"));
        assert!(text.contains("  Voltage                       13.20 V\n"));
        assert!(text.contains("  Low-voltage alarm             ALARM\n"));
        assert!(text.contains("  Low-voltage alarm threshold   7.00 V\n"));
        assert!(text.contains("  Shunt range                   none (no shunt register"));
    }

    #[test]
    fn scan_table() {
        let s = ScanReport {
            from: 1,
            to: 247,
            found: vec![
                ScanHit {
                    address: Address::unit(1).unwrap(),
                    model: Model::GenericAc,
                    reading: ac_meter().reading,
                },
                ScanHit {
                    address: Address::unit(12).unwrap(),
                    model: Model::GenericDc,
                    reading: dc_meter().reading,
                },
            ],
            issues: vec![ScanIssue {
                address: Address::unit(5).unwrap(),
                problem: "garbled".into(),
                garbled: true,
            }],
            elapsed: Duration::from_millis(21_480),
        };
        let text = scan(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Scanned addresses 1-247 in 21.5 s: 2 meters found.");
        assert_eq!(lines[1], "Address  Model          Reading");
        assert_eq!(
            lines[2],
            "      1  PZEM AC meter  230.1 V  2.345 A  512.3 W  12.345 kWh  50.0 Hz  PF 0.95"
        );
        assert_eq!(
            lines[3],
            "     12  PZEM DC meter  13.20 V   4.55 A   60.1 W   0.007 kWh  LOW-VOLTAGE ALARM"
        );
        assert_eq!(lines[4], "Problems:");
        assert_eq!(lines[5], "      5  garbled");
    }

    #[test]
    fn empty_scan() {
        let s = ScanReport {
            from: 3,
            to: 3,
            found: vec![],
            issues: vec![],
            elapsed: Duration::ZERO,
        };
        assert_eq!(scan(&s), "Scanned addresses 3-3 in 0.0 s: 0 meters found.\n");
    }

    #[test]
    fn changes() {
        let c = ChangeReport {
            change: Change::Shunt {
                before: Some(Shunt::A100),
                after: Shunt::A200,
            },
            meter: dc_meter(),
        };
        assert!(change(&c).starts_with("Shunt range set: 100 A -> 200 A (read back).\nPZEM DC meter"));
        let c = ChangeReport {
            change: Change::VoltageAlarms {
                before_cv: (30_000, 700),
                after_cv: (1440, 1150),
            },
            meter: dc_meter(),
        };
        assert!(
            change(&c).starts_with(
                "Voltage alarm thresholds set: high 300.00 V -> 14.40 V, low 7.00 V -> 11.50 V (read back)."
            )
        );
        let c = ChangeReport {
            change: Change::EnergyReset {
                before_wh: 12_345,
                after_wh: 0,
            },
            meter: ac_meter(),
        };
        assert!(change(&c).starts_with("Energy counter reset: 12.345 kWh -> 0.000 kWh (read back)."));
        let c = ChangeReport {
            change: Change::Address {
                from: 1,
                to: 1,
                written: false,
            },
            meter: ac_meter(),
        };
        assert!(change(&c).starts_with("The meter already has address 1; nothing was written."));
        let c = ChangeReport {
            change: Change::Address {
                from: 1,
                to: 20,
                written: true,
            },
            meter: ac_meter(),
        };
        assert!(change(&c).starts_with("Address changed: 1 -> 20 (read back: the meter answers at 20).\n"));
        let c = ChangeReport {
            change: Change::PowerAlarm {
                before_w: 23_000,
                after_w: 1500,
            },
            meter: ac_meter(),
        };
        assert!(change(&c).starts_with("Power alarm threshold set: 23000 W -> 1500 W (read back).\n"));
    }
}
