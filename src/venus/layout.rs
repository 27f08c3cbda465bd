//! The D-Bus path tree of one published meter, and how readings fill it.
//!
//! Built once per service (the tree is complete before the name is
//! claimed); each poll then sets a fixed set of items by id, so the steady
//! state neither looks up paths nor formats text (text is made only for the
//! items an `ItemsChanged` carries or a client asks for).

use crate::dbus::TreeError;
use crate::dbus::{Format, ItemId, ItemTree, Kind, TreeBuilder, Value};
use crate::model::{Family, Model};
use crate::{AcReading, DcReading};

use super::role::Role;

/// `/ProductId` for third-party devices.
pub const PRODUCT_ID: i64 = 0xFFFF;

/// Everything about a meter that its tree shows besides measurements.
#[derive(Clone, Debug, PartialEq)]
pub struct MeterIdentity {
    /// The model (`/ProductName`).
    pub model: Model,
    /// The class it is published as (`/Role`).
    pub role: Role,
    /// `/DeviceInstance`, from localsettings.
    pub instance: i32,
    /// `/CustomName`.
    pub custom_name: String,
    /// `/Position`, used when the role has one.
    pub position: i32,
    /// `/Mgmt/Connection`, e.g. `Modbus RTU ttyUSB0:1`.
    pub connection: String,
    /// `/Serial`: the stable device id.
    pub serial: String,
    /// `/Mgmt/ProcessName`.
    pub process_name: &'static str,
    /// `/Mgmt/ProcessVersion`.
    pub process_version: &'static str,
    /// `/NrOfPhases` of an AC meter: 1, or 2 and 3 for a group of phase meters.
    pub phases: u8,
}

/// Ids of the items a poll sets.
#[derive(Clone, Copy, Debug)]
pub struct MeterPaths {
    /// `/Connected`.
    pub connected: ItemId,
    measurements: Measurements,
}

/// Ids of the measurement items, in the order of their tables.
#[derive(Clone, Copy, Debug)]
enum Measurements {
    Ac {
        /// [`PHASE_MEASUREMENTS`] of L1..L`count`.
        phases: [[ItemId; 5]; 3],
        count: usize,
        /// [`AC_TOTALS`].
        totals: [ItemId; 4],
    },
    Dc([ItemId; DC_MEASUREMENTS_OUT.len()]),
}

/// New values for a meter's tree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Update {
    /// An AC meter: L1 (a single meter), or every phase of a group.
    Ac {
        /// Each phase's news, L1 first; entries beyond the meter's phases
        /// (L2 and L3 of a single meter) are not looked at.
        phases: [PhaseUpdate; 3],
    },
    /// A DC meter's reading and monotonic energy total.
    Dc {
        /// The reading.
        reading: DcReading,
        /// The published energy total, Wh.
        energy_wh: u64,
    },
}

/// What a poll cycle tells about one phase.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PhaseUpdate {
    /// It answered: its reading and monotonic energy total.
    Fresh {
        /// The reading.
        reading: AcReading,
        /// The published energy total, Wh.
        energy_wh: u64,
    },
    /// It failed a poll but does not count as gone yet: keep its values.
    Unchanged,
    /// It is gone: its values are invalid, and so are the totals.
    Absent,
}

const W: Format = Format::number(1, "W");
const KWH: Format = Format::number(3, "kWh");
const PF: Format = Format::number(2, "");

macro_rules! phase_table {
    ($l:literal) => {
        [
            (concat!("/Ac/", $l, "/Voltage"), Kind::Double, Format::number(1, "V")),
            (concat!("/Ac/", $l, "/Current"), Kind::Double, Format::number(3, "A")),
            (concat!("/Ac/", $l, "/Power"), Kind::Double, W),
            (concat!("/Ac/", $l, "/PowerFactor"), Kind::Double, PF),
            (concat!("/Ac/", $l, "/Energy/Forward"), Kind::Double, KWH),
        ]
    };
}

/// The paths of each phase L1, L2, L3, declared once, with kind and text;
/// `phase_values` gives their values in the same order.
const PHASE_MEASUREMENTS: [[(&str, Kind, Format); 5]; 3] = [phase_table!("L1"), phase_table!("L2"), phase_table!("L3")];

/// The totals of an AC meter; [`ac_totals`] computes them.
const AC_TOTALS: [(&str, Kind, Format); 4] = [
    ("/Ac/Power", Kind::Double, W),
    ("/Ac/Energy/Forward", Kind::Double, KWH),
    ("/Ac/Frequency", Kind::Double, Format::number(1, "Hz")),
    ("/Ac/PowerFactor", Kind::Double, PF),
];

/// The values of one phase's [`PHASE_MEASUREMENTS`].
fn phase_values(r: &AcReading, energy_wh: u64) -> [Value; 5] {
    [
        r.voltage_v(),
        r.current_a(),
        r.power_w(),
        r.power_factor(),
        energy_wh as f64 / 1000.0,
    ]
    .map(Value::Double)
}

/// The [`AC_TOTALS`] of a meter's phases; `None` leaves a total as it is.
///
/// Power and energy are sums, and invalid as soon as a phase is gone (a
/// partial sum is not the total); while a phase has only missed a poll they
/// stay as they are. The frequency is L1's. The power factor of one meter
/// is its own; of a group, the total active power over the total apparent
/// power (the sum of each phase's voltage times current), not a mean.
fn ac_totals(phases: &[PhaseUpdate]) -> [Option<Value>; 4] {
    let frequency = match phases.first() {
        Some(PhaseUpdate::Fresh { reading, .. }) => Some(Value::Double(reading.frequency_hz())),
        Some(PhaseUpdate::Unchanged) => None,
        Some(PhaseUpdate::Absent) | None => Some(Value::Invalid),
    };
    if phases.is_empty() || phases.contains(&PhaseUpdate::Absent) {
        return [
            Some(Value::Invalid),
            Some(Value::Invalid),
            frequency,
            Some(Value::Invalid),
        ];
    }
    let (mut power_dw, mut energy_wh, mut apparent_va) = (0u64, 0u64, 0f64);
    for p in phases {
        let PhaseUpdate::Fresh { reading, energy_wh: e } = p else {
            return [None, None, frequency, None];
        };
        power_dw += u64::from(reading.power_dw);
        energy_wh += e;
        apparent_va += reading.voltage_v() * reading.current_a();
    }
    let power_w = power_dw as f64 / 10.0;
    let power_factor = match phases {
        [PhaseUpdate::Fresh { reading, .. }] => reading.power_factor(),
        _ if apparent_va > 0.0 => (power_w / apparent_va).clamp(0.0, 1.0),
        _ => 0.0,
    };
    [
        Some(Value::Double(power_w)),
        Some(Value::Double(energy_wh as f64 / 1000.0)),
        frequency,
        Some(Value::Double(power_factor)),
    ]
}

/// The measurement paths of a DC meter whose role produces energy
/// (`/History/EnergyOut`); [`DC_MEASUREMENTS_IN`] for consumers.
const DC_MEASUREMENTS_OUT: [(&str, Kind, Format); 6] = dc_table("/History/EnergyOut");
/// The measurement paths of a DC meter whose role consumes energy (`/History/EnergyIn`).
const DC_MEASUREMENTS_IN: [(&str, Kind, Format); 6] = dc_table("/History/EnergyIn");

const fn dc_table(energy: &'static str) -> [(&'static str, Kind, Format); 6] {
    [
        ("/Dc/0/Voltage", Kind::Double, Format::number(2, "V")),
        ("/Dc/0/Current", Kind::Double, Format::number(2, "A")),
        ("/Dc/0/Power", Kind::Double, W),
        (energy, Kind::Double, KWH),
        ("/Alarms/HighVoltage", Kind::Int, Format::Plain),
        ("/Alarms/LowVoltage", Kind::Int, Format::Plain),
    ]
}

/// The values of a DC table for a reading and the published energy total.
fn dc_values(r: &DcReading, energy_wh: u64) -> [Value; DC_MEASUREMENTS_OUT.len()] {
    [
        Value::Double(r.voltage_v()),
        Value::Double(r.current_a()),
        Value::Double(r.power_w()),
        Value::Double(energy_wh as f64 / 1000.0),
        Value::Int(alarm(r.high_voltage_alarm)),
        Value::Int(alarm(r.low_voltage_alarm)),
    ]
}

/// The DC table of a role: produced energy for sources, consumed for loads.
fn dc_measurements(role: Role) -> &'static [(&'static str, Kind, Format); 6] {
    if role.dc_energy_is_out() {
        &DC_MEASUREMENTS_OUT
    } else {
        &DC_MEASUREMENTS_IN
    }
}

/// Why a tree could not be made.
#[derive(Debug)]
pub enum LayoutError {
    /// The role is not for this model's family.
    RoleMismatch {
        /// The model.
        model: Model,
        /// The role.
        role: Role,
    },
    /// The tree itself was refused.
    Tree(TreeError),
    /// A path the layout declared is missing from the built tree.
    Missing(&'static str),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::RoleMismatch { model, role } => write!(f, "{model} cannot take the role {role}"),
            LayoutError::Tree(e) => write!(f, "{e}"),
            LayoutError::Missing(p) => write!(f, "path {p} missing from the tree"),
        }
    }
}

impl std::error::Error for LayoutError {}

/// Build the complete tree for a meter: mandatory paths, role paths and
/// measurements (all invalid until the first reading, `/Connected` 0).
pub fn build_tree(id: &MeterIdentity) -> Result<(ItemTree, MeterPaths), LayoutError> {
    let family = id.model.family();
    if id.role.family() != family {
        return Err(LayoutError::RoleMismatch {
            model: id.model,
            role: id.role,
        });
    }
    let mut t = TreeBuilder::new();
    t.add("/Mgmt/ProcessName", Kind::Str, Format::Plain)
        .value(id.process_name);
    t.add("/Mgmt/ProcessVersion", Kind::Str, Format::Plain)
        .value(id.process_version);
    t.add("/Mgmt/Connection", Kind::Str, Format::Plain)
        .value(id.connection.as_str());
    t.add("/DeviceInstance", Kind::Int, Format::Plain)
        .value(i64::from(id.instance));
    t.add("/ProductId", Kind::Int, Format::Hex).value(PRODUCT_ID);
    t.add("/ProductName", Kind::Str, Format::Plain)
        .value(id.model.product_name());
    t.add("/FirmwareVersion", Kind::Str, Format::Plain);
    t.add("/HardwareVersion", Kind::Str, Format::Plain);
    t.add("/Connected", Kind::Int, Format::Plain).value(0i64);
    t.add("/CustomName", Kind::Str, Format::Plain)
        .value(id.custom_name.as_str())
        .writable();
    t.add("/Serial", Kind::Str, Format::Plain).value(id.serial.as_str());
    t.add("/Role", Kind::Str, Format::Plain)
        .value(id.role.class())
        .writable();
    let allowed: Vec<String> = Role::allowed(family).iter().map(|r| r.class().to_string()).collect();
    t.add("/AllowedRoles", Kind::StrList, Format::Plain)
        .value(Value::StrList(allowed));
    if let Some(kind) = id.role.position() {
        t.add("/Position", Kind::Int, Format::Plain)
            .value(i64::from(id.position.clamp(0, kind.max())))
            .writable();
    }
    if family == Family::Ac {
        t.add("/NrOfPhases", Kind::Int, Format::Plain)
            .value(i64::from(id.phases.clamp(1, 3)));
        t.add("/IsGenericEnergyMeter", Kind::Int, Format::Plain)
            .value(i64::from(id.role != Role::Grid));
    }
    let count = usize::from(id.phases.clamp(1, 3));
    let tables: Vec<&[(&str, Kind, Format)]> = match family {
        Family::Ac => PHASE_MEASUREMENTS[..count]
            .iter()
            .map(|t| t.as_slice())
            .chain([AC_TOTALS.as_slice()])
            .collect(),
        Family::Dc => vec![dc_measurements(id.role).as_slice()],
    };
    for &(path, kind, format) in tables.iter().copied().flatten() {
        t.add(path, kind, format);
    }
    let tree = t.build().map_err(LayoutError::Tree)?;
    let id_of = |p: &'static str| tree.id(p).ok_or(LayoutError::Missing(p));
    let connected = id_of("/Connected")?;
    let ids_of = |table: &[(&'static str, Kind, Format)], out: &mut [ItemId]| -> Result<(), LayoutError> {
        for (slot, &(path, _, _)) in out.iter_mut().zip(table) {
            *slot = id_of(path)?;
        }
        Ok(())
    };
    let measurements = match family {
        Family::Ac => {
            let mut phases = [[connected; 5]; 3];
            for (ids, table) in phases.iter_mut().zip(&PHASE_MEASUREMENTS[..count]) {
                ids_of(table, ids)?;
            }
            let mut totals = [connected; 4];
            ids_of(&AC_TOTALS, &mut totals)?;
            Measurements::Ac { phases, count, totals }
        }
        Family::Dc => {
            let mut ids = [connected; DC_MEASUREMENTS_OUT.len()];
            ids_of(dc_measurements(id.role), &mut ids)?;
            Measurements::Dc(ids)
        }
    };
    let paths = MeterPaths {
        connected,
        measurements,
    };
    Ok((tree, paths))
}

/// Venus alarm level of a PZEM alarm bit: 0 ok, 2 alarm.
fn alarm(on: bool) -> i64 {
    if on { 2 } else { 0 }
}

/// Fill the tree from an update. `/Connected` becomes 1 when a phase
/// answered and 0 when every phase is gone. An update of the wrong family
/// changes nothing and returns false.
pub fn publish(tree: &mut ItemTree, paths: &MeterPaths, update: &Update) -> bool {
    match (&paths.measurements, update) {
        (
            Measurements::Ac {
                phases: ids,
                count,
                totals,
            },
            Update::Ac { phases, .. },
        ) => {
            let phases = &phases[..*count];
            for (ids, phase) in ids.iter().zip(phases) {
                match phase {
                    PhaseUpdate::Fresh { reading, energy_wh } => set_all(tree, ids, phase_values(reading, *energy_wh)),
                    PhaseUpdate::Absent => set_all(tree, ids, [const { Value::Invalid }; 5]),
                    PhaseUpdate::Unchanged => {}
                }
            }
            for (id, value) in totals.iter().zip(ac_totals(phases)) {
                if let Some(value) = value {
                    tree.set(*id, value);
                }
            }
            if phases.iter().any(|p| matches!(p, PhaseUpdate::Fresh { .. })) {
                tree.set(paths.connected, 1i64);
            } else if phases.iter().all(|p| *p == PhaseUpdate::Absent) {
                tree.set(paths.connected, 0i64);
            }
        }
        (Measurements::Dc(ids), Update::Dc { reading, energy_wh }) => {
            set_all(tree, ids, dc_values(reading, *energy_wh));
            tree.set(paths.connected, 1i64);
        }
        _ => return false,
    }
    true
}

fn set_all<const N: usize>(tree: &mut ItemTree, ids: &[ItemId; N], values: [Value; N]) {
    for (id, value) in ids.iter().zip(values) {
        tree.set(*id, value);
    }
}

/// Mark the meter absent: `/Connected` 0 and every measurement invalid.
pub fn invalidate(tree: &mut ItemTree, paths: &MeterPaths) {
    match &paths.measurements {
        Measurements::Ac { phases, count, totals } => {
            for id in phases[..*count].iter().flatten().chain(totals) {
                tree.set(*id, Value::Invalid);
            }
        }
        Measurements::Dc(ids) => {
            for id in ids {
                tree.set(*id, Value::Invalid);
            }
        }
    }
    tree.set(paths.connected, 0i64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AcReading, DcReading};

    fn identity(model: Model, role: Role) -> MeterIdentity {
        MeterIdentity {
            model,
            role,
            instance: 41,
            custom_name: String::new(),
            position: 1,
            connection: "Modbus RTU ttyUSB0:1".into(),
            serial: "pzem_ttyUSB0_1".into(),
            process_name: "pzem-dbus",
            process_version: "0.1.0",
            phases: 1,
        }
    }

    fn single(reading: AcReading, energy_wh: u64) -> Update {
        let mut phases = [PhaseUpdate::Unchanged; 3];
        phases[0] = PhaseUpdate::Fresh { reading, energy_wh };
        Update::Ac { phases }
    }

    fn value(tree: &ItemTree, path: &str) -> Value {
        tree.value(tree.id(path).unwrap()).clone()
    }

    #[test]
    fn ac_tree_has_mandatory_and_phase_paths() {
        let (tree, _) = build_tree(&identity(Model::Pzem016, Role::Grid)).unwrap();
        for p in [
            "/Mgmt/ProcessName",
            "/Mgmt/ProcessVersion",
            "/Mgmt/Connection",
            "/DeviceInstance",
            "/ProductId",
            "/ProductName",
            "/FirmwareVersion",
            "/HardwareVersion",
            "/Connected",
            "/CustomName",
            "/Serial",
            "/Role",
            "/AllowedRoles",
            "/NrOfPhases",
            "/Ac/Power",
            "/Ac/L1/Power",
            "/Ac/L1/Current",
            "/Ac/L1/Voltage",
            "/Ac/Frequency",
            "/Ac/Energy/Forward",
            "/Ac/L1/Energy/Forward",
            "/Ac/L1/PowerFactor",
        ] {
            assert!(tree.id(p).is_some(), "{p} missing");
        }
        assert!(tree.id("/Position").is_none(), "grid has no position");
        assert_eq!(value(&tree, "/DeviceInstance"), Value::Int(41));
        assert_eq!(value(&tree, "/Ac/L1/Power"), Value::Invalid);
        assert_eq!(value(&tree, "/Connected"), Value::Int(0));
        let (tree, _) = build_tree(&identity(Model::Pzem016, Role::PvInverter)).unwrap();
        assert_eq!(value(&tree, "/Position"), Value::Int(1));
        assert_eq!(value(&tree, "/IsGenericEnergyMeter"), Value::Int(1));
    }

    #[test]
    fn readings_fill_in_venus_units() {
        let (mut tree, paths) = build_tree(&identity(Model::Pzem016, Role::Grid)).unwrap();
        let r = AcReading {
            voltage_dv: 2301,
            current_ma: 1234,
            power_dw: 2750,
            energy_wh: 5,
            frequency_dhz: 500,
            power_factor_centi: 97,
            power_alarm: false,
        };
        assert!(publish(&mut tree, &paths, &single(r, 12_345)));
        assert_eq!(value(&tree, "/Ac/L1/Voltage"), Value::Double(230.1));
        assert_eq!(value(&tree, "/Ac/L1/Current"), Value::Double(1.234));
        assert_eq!(value(&tree, "/Ac/Power"), Value::Double(275.0));
        assert_eq!(value(&tree, "/Ac/L1/Power"), Value::Double(275.0));
        assert_eq!(value(&tree, "/Ac/Energy/Forward"), Value::Double(12.345));
        assert_eq!(value(&tree, "/Connected"), Value::Int(1));
        invalidate(&mut tree, &paths);
        assert_eq!(value(&tree, "/Ac/L1/Voltage"), Value::Invalid);
        assert_eq!(value(&tree, "/Ac/Energy/Forward"), Value::Invalid);
        assert_eq!(value(&tree, "/Connected"), Value::Int(0));
        let dc = Update::Dc {
            reading: DcReading::default(),
            energy_wh: 0,
        };
        assert!(!publish(&mut tree, &paths, &dc));
    }

    #[test]
    fn dc_energy_path_follows_role() {
        let (tree, _) = build_tree(&identity(Model::Pzem017, Role::DcSource)).unwrap();
        assert!(tree.id("/History/EnergyOut").is_some() && tree.id("/History/EnergyIn").is_none());
        let (mut tree, paths) = build_tree(&identity(Model::Pzem017, Role::DcLoad)).unwrap();
        assert!(tree.id("/History/EnergyIn").is_some() && tree.id("/History/EnergyOut").is_none());
        let r = DcReading {
            voltage_cv: 1325,
            current_ca: 420,
            power_dw: 556,
            low_voltage_alarm: true,
            ..Default::default()
        };
        publish(
            &mut tree,
            &paths,
            &Update::Dc {
                reading: r,
                energy_wh: 500,
            },
        );
        assert_eq!(value(&tree, "/Dc/0/Power"), Value::Double(55.6));
        assert_eq!(value(&tree, "/Dc/0/Voltage"), Value::Double(13.25));
        assert_eq!(value(&tree, "/History/EnergyIn"), Value::Double(0.5));
        assert_eq!(value(&tree, "/Alarms/LowVoltage"), Value::Int(2));
        assert_eq!(value(&tree, "/Alarms/HighVoltage"), Value::Int(0));
    }

    #[test]
    fn role_must_fit_the_family() {
        assert!(matches!(
            build_tree(&identity(Model::Pzem017, Role::Grid)),
            Err(LayoutError::RoleMismatch { .. })
        ));
    }

    fn ac(voltage_dv: u16, current_ma: u32, power_dw: u32, pf: u16) -> AcReading {
        AcReading {
            voltage_dv,
            current_ma,
            power_dw,
            energy_wh: 0,
            frequency_dhz: 500,
            power_factor_centi: pf,
            power_alarm: false,
        }
    }

    #[test]
    fn three_phase_totals_are_sums_and_the_power_factor_is_p_over_s() {
        let fresh = |reading, energy_wh| PhaseUpdate::Fresh { reading, energy_wh };
        // 230 V × 10 A at 0.5 (1150 W), 230 V × 2 A at 1.0 (460 W), 240 V × 5 A at 0.8 (960 W).
        let phases = [
            fresh(ac(2300, 10_000, 11_500, 50), 1_000),
            fresh(ac(2300, 2_000, 4_600, 100), 2_500),
            fresh(ac(2400, 5_000, 9_600, 80), 10),
        ];
        let [power, energy, frequency, pf] = ac_totals(&phases);
        assert_eq!(power, Some(Value::Double(2570.0)));
        assert_eq!(energy, Some(Value::Double(3.51)));
        assert_eq!(frequency, Some(Value::Double(50.0)));
        // ΣP / ΣS = 2570 / (2300 + 460 + 1200) = 0.649, not the mean of the factors (0.767).
        let Some(Value::Double(pf)) = pf else { panic!("{pf:?}") };
        assert!((pf - 2570.0 / 3960.0).abs() < 1e-12, "{pf}");
        // One phase gone: the sums are invalid, L1's frequency stays.
        let gone = [phases[0], PhaseUpdate::Absent, phases[2]];
        assert_eq!(
            ac_totals(&gone),
            [
                Some(Value::Invalid),
                Some(Value::Invalid),
                Some(Value::Double(50.0)),
                Some(Value::Invalid)
            ]
        );
        // One phase missed a poll: the sums stay as they are.
        let missed = [PhaseUpdate::Unchanged, phases[1], phases[2]];
        assert_eq!(ac_totals(&missed), [None, None, None, None]);
        // No load at all: a factor of 0, as the meters say.
        assert_eq!(
            ac_totals(&[fresh(ac(2300, 0, 0, 0), 0), fresh(ac(2300, 0, 0, 0), 0)])[3],
            Some(Value::Double(0.0))
        );
        // A single meter's factor is its own.
        assert_eq!(ac_totals(&[phases[0]])[3], Some(Value::Double(0.5)));
    }

    #[test]
    fn a_three_phase_tree_has_every_phase_and_fills_them() {
        let mut id = identity(Model::Pzem016, Role::Grid);
        id.phases = 3;
        let (mut tree, paths) = build_tree(&id).unwrap();
        assert_eq!(value(&tree, "/NrOfPhases"), Value::Int(3));
        for l in ["L1", "L2", "L3"] {
            for leaf in ["Voltage", "Current", "Power", "PowerFactor", "Energy/Forward"] {
                assert!(tree.id(&format!("/Ac/{l}/{leaf}")).is_some(), "{l}/{leaf}");
            }
        }
        let update = |phases| Update::Ac { phases };
        let r = PhaseUpdate::Fresh {
            reading: ac(2301, 1_000, 2_000, 90),
            energy_wh: 1_500,
        };
        assert!(publish(&mut tree, &paths, &update([r, r, r])));
        assert_eq!(value(&tree, "/Ac/L3/Voltage"), Value::Double(230.1));
        assert_eq!(value(&tree, "/Ac/Power"), Value::Double(600.0));
        assert_eq!(value(&tree, "/Ac/Energy/Forward"), Value::Double(4.5));
        assert_eq!(value(&tree, "/Connected"), Value::Int(1));
        assert!(publish(&mut tree, &paths, &update([r, PhaseUpdate::Absent, r])));
        assert_eq!(value(&tree, "/Ac/L2/Power"), Value::Invalid);
        assert_eq!(value(&tree, "/Ac/L2/Energy/Forward"), Value::Invalid);
        assert_eq!(value(&tree, "/Ac/L3/Power"), Value::Double(200.0));
        assert_eq!(value(&tree, "/Ac/Power"), Value::Invalid);
        assert_eq!(value(&tree, "/Connected"), Value::Int(1));
        let gone = PhaseUpdate::Absent;
        assert!(publish(&mut tree, &paths, &update([gone, gone, gone])));
        assert_eq!(value(&tree, "/Connected"), Value::Int(0));
        assert_eq!(value(&tree, "/Ac/Frequency"), Value::Invalid);
    }
}
