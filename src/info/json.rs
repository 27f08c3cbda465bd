//! The `--json` output: one document with the same content as the text.

use crate::model::Model;
use crate::reading::Reading;

use super::PROGRAM;
use super::json_writer::JsonValue;
use super::report::{
    Change, ChangeReport, Field, FieldValue, MeterReport, Report, ScanReport, parameter_fields, reading_fields,
};

fn field_value(f: &Field) -> JsonValue {
    match f.value {
        FieldValue::Fixed { raw, places } => JsonValue::fixed(raw, places),
        FieldValue::Flag(on) => JsonValue::Bool(on),
        FieldValue::Missing(_) => JsonValue::Null,
    }
}

fn fields(list: Vec<Field>) -> JsonValue {
    JsonValue::object(list.iter().map(|f| (f.key, field_value(f))))
}

fn model(m: Model) -> JsonValue {
    match m {
        Model::GenericAc | Model::GenericDc => JsonValue::Null,
        m => JsonValue::string(m.product_name()),
    }
}

fn reading(r: &Reading) -> JsonValue {
    fields(reading_fields(r))
}

/// One meter as a JSON object.
pub fn meter(m: &MeterReport) -> JsonValue {
    JsonValue::object([
        ("queried_address", JsonValue::int(m.queried.get())),
        ("general_address", JsonValue::Bool(m.queried.is_general())),
        ("address", JsonValue::int(m.stored_address())),
        ("family", JsonValue::string(m.family().name())),
        ("model", model(m.model)),
        ("reading", reading(&m.reading)),
        ("parameters", fields(parameter_fields(&m.parameters))),
    ])
}

/// A scan as a JSON object.
pub fn scan(s: &ScanReport) -> JsonValue {
    let elapsed_ms = u64::try_from(s.elapsed.as_millis()).unwrap_or(u64::MAX);
    JsonValue::object([
        ("from", JsonValue::int(s.from)),
        ("to", JsonValue::int(s.to)),
        ("elapsed_s", JsonValue::fixed(elapsed_ms, 3)),
        (
            "meters",
            JsonValue::Array(
                s.found
                    .iter()
                    .map(|h| {
                        JsonValue::object([
                            ("address", JsonValue::int(h.address.get())),
                            ("family", JsonValue::string(h.reading.family().name())),
                            ("model", model(h.model)),
                            ("reading", reading(&h.reading)),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "problems",
            JsonValue::Array(
                s.issues
                    .iter()
                    .map(|i| {
                        JsonValue::object([
                            ("address", JsonValue::int(i.address.get())),
                            ("garbled", JsonValue::Bool(i.garbled)),
                            ("problem", JsonValue::string(i.problem.clone())),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

/// A confirmed change as a JSON object.
pub fn change(c: &ChangeReport) -> JsonValue {
    let mut what: Vec<(String, JsonValue)> = Vec::new();
    for (before, after) in c.change.fields() {
        what.push((format!("{}_before", before.key), field_value(&before)));
        what.push((format!("{}_after", after.key), field_value(&after)));
    }
    if let Change::Address { written, .. } = c.change {
        what.push(("written".into(), JsonValue::Bool(written)));
    }
    JsonValue::object([
        ("confirmed", JsonValue::Bool(true)),
        ("change", JsonValue::Object(what)),
        ("meter", meter(&c.meter)),
    ])
}

fn header(action: &str, device: &str) -> Vec<(String, JsonValue)> {
    vec![
        ("tool".into(), JsonValue::string(PROGRAM)),
        ("version".into(), JsonValue::string(env!("CARGO_PKG_VERSION"))),
        ("action".into(), JsonValue::string(action)),
        ("device".into(), JsonValue::string(device)),
    ]
}

/// The whole document for a successful run on `device`.
pub fn document(report: &Report, device: &str) -> JsonValue {
    let mut doc = header(report.action(), device);
    doc.push(("ok".into(), JsonValue::Bool(true)));
    let (key, body) = match report {
        Report::Meter(m) => ("meter", meter(m)),
        Report::Scan(s) => ("scan", scan(s)),
        Report::Change(c) => ("result", change(c)),
    };
    doc.push((key.into(), body));
    JsonValue::Object(doc)
}

/// The document for a failed run: the same message as on stderr, the exit
/// code and, when a meter was addressed, its address.
pub fn error_document(action: &str, device: &str, exit_code: u8, address: Option<u8>, message: &str) -> JsonValue {
    let mut doc = header(action, device);
    doc.push(("ok".into(), JsonValue::Bool(false)));
    doc.push((
        "error".into(),
        JsonValue::object([
            ("exit_code", JsonValue::int(exit_code)),
            ("address", address.map_or(JsonValue::Null, JsonValue::int)),
            ("message", JsonValue::string(message)),
        ]),
    ));
    JsonValue::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::reading::Parameters;
    use crate::{AcParameters, AcReading, DcParameters, DcReading, Shunt};

    fn dc() -> MeterReport {
        MeterReport {
            queried: Address::unit(2).unwrap(),
            model: Model::Pzem017,
            reading: Reading::Dc(DcReading {
                voltage_cv: 1320,
                current_ca: 5,
                power_dw: 7,
                energy_wh: 12_345,
                high_voltage_alarm: true,
                low_voltage_alarm: false,
            }),
            parameters: Parameters::Dc(DcParameters {
                high_voltage_alarm_cv: 1440,
                low_voltage_alarm_cv: 1150,
                address: 2,
                shunt: Some(Shunt::A300),
            }),
        }
    }

    #[test]
    fn dc_meter_document() {
        let text = document(&Report::Meter(dc()), "/dev/tty\"X\"").to_pretty();
        assert!(text.contains("\"device\": \"/dev/tty\\\"X\\\"\""));
        assert!(text.contains("\"voltage_v\": 13.20,"));
        assert!(text.contains("\"current_a\": 0.05,"));
        assert!(text.contains("\"power_w\": 0.7,"));
        assert!(text.contains("\"energy_kwh\": 12.345,"));
        assert!(text.contains("\"high_voltage_alarm\": true,"));
        assert!(text.contains("\"shunt_a\": 300\n"));
        assert!(text.contains("\"model\": \"PZEM-017\""));
        assert!(text.contains("\"family\": \"DC\""));
    }

    #[test]
    fn ac_change_document() {
        let m = MeterReport {
            queried: Address::GENERAL,
            model: Model::GenericAc,
            reading: Reading::Ac(AcReading::default()),
            parameters: Parameters::Ac(AcParameters {
                power_alarm_w: 100,
                address: 7,
            }),
        };
        let c = ChangeReport {
            change: Change::PowerAlarm {
                before_w: 23_000,
                after_w: 100,
            },
            meter: m,
        };
        let text = document(&Report::Change(c), "d").to_pretty();
        assert!(text.contains("\"action\": \"set-power-alarm\""));
        assert!(text.contains("\"power_alarm_w_after\": 100\n"));
        assert!(text.contains("\"queried_address\": 248,"));
        assert!(text.contains("\"general_address\": true,"));
        assert!(text.contains("\"model\": null,"));
        assert!(text.contains("\"power_factor\": 0.00,"));
    }

    /// The keys of the `change` object, in order.
    fn change_keys(change: Change) -> Vec<String> {
        match super::change(&ChangeReport { change, meter: dc() }) {
            JsonValue::Object(pairs) => match &pairs[1] {
                (k, JsonValue::Object(what)) if k == "change" => what.iter().map(|(k, _)| k.clone()).collect(),
                other => panic!("not the change object: {other:?}"),
            },
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn change_objects() {
        assert_eq!(
            change_keys(Change::VoltageAlarms {
                before_cv: (30_000, 700),
                after_cv: (1440, 1150)
            }),
            [
                "high_voltage_alarm_v_before",
                "high_voltage_alarm_v_after",
                "low_voltage_alarm_v_before",
                "low_voltage_alarm_v_after"
            ]
        );
        assert_eq!(
            change_keys(Change::Address {
                from: 1,
                to: 2,
                written: true
            }),
            ["address_before", "address_after", "written"]
        );
        let c = ChangeReport {
            change: Change::Shunt {
                before: None,
                after: Shunt::A50,
            },
            meter: dc(),
        };
        let text = document(&Report::Change(c), "d").to_pretty();
        assert!(text.contains("\"shunt_a_before\": null,"), "{text}");
        assert!(text.contains("\"shunt_a_after\": 50\n"), "{text}");
        let c = ChangeReport {
            change: Change::EnergyReset {
                before_wh: 12_345,
                after_wh: 0,
            },
            meter: dc(),
        };
        let text = document(&Report::Change(c), "d").to_pretty();
        assert!(text.contains("\"energy_kwh_before\": 12.345,"), "{text}");
        assert!(text.contains("\"energy_kwh_after\": 0.000\n"), "{text}");
    }

    #[test]
    fn error_doc() {
        let text = error_document("show", "d", 3, Some(1), "no answer\nat all").to_pretty();
        assert!(text.contains("\"ok\": false,"));
        assert!(text.contains("\"message\": \"no answer\\nat all\""));
        assert!(text.contains("\"exit_code\": 3,"));
    }
}
