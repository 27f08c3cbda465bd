//! The D-Bus path tree of one published meter, and how readings fill it.
//!
//! Built once per service (the tree is complete before the name is
//! claimed); each poll then sets a fixed set of items by id, so the steady
//! state neither looks up paths nor formats text (text is made only for the
//! items an `ItemsChanged` carries or a client asks for).

use crate::dbus::TreeError;
use crate::dbus::{Format, ItemId, ItemTree, Kind, TreeBuilder, Value};
use crate::model::{Family, Model};
use crate::{AcReading, DcReading, Reading};

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
}

/// Ids of the items a poll sets.
#[derive(Clone, Copy, Debug)]
pub struct MeterPaths {
    /// `/Connected`.
    pub connected: ItemId,
    /// The measurement items, in the order of the family's table
    /// ([`AC_MEASUREMENTS`] or the DC one of the role).
    measurements: Measurements,
}

/// Ids of the measurement items, in table order.
#[derive(Clone, Copy, Debug)]
enum Measurements {
    Ac([ItemId; AC_MEASUREMENTS.len()]),
    Dc([ItemId; DC_MEASUREMENTS_OUT.len()]),
}

const W: Format = Format::number(1, "W");
const KWH: Format = Format::number(3, "kWh");
const PF: Format = Format::number(2, "");

/// The measurement paths of a single-phase AC meter, each once, with its
/// kind and text; [`ac_values`] gives their values in the same order.
pub const AC_MEASUREMENTS: [(&str, Kind, Format); 9] = [
    ("/Ac/Power", Kind::Double, W),
    ("/Ac/L1/Power", Kind::Double, W),
    ("/Ac/L1/Voltage", Kind::Double, Format::number(1, "V")),
    ("/Ac/L1/Current", Kind::Double, Format::number(3, "A")),
    ("/Ac/Frequency", Kind::Double, Format::number(1, "Hz")),
    ("/Ac/PowerFactor", Kind::Double, PF),
    ("/Ac/L1/PowerFactor", Kind::Double, PF),
    ("/Ac/Energy/Forward", Kind::Double, KWH),
    ("/Ac/L1/Energy/Forward", Kind::Double, KWH),
];

/// The values of [`AC_MEASUREMENTS`] for a reading and the published energy total.
fn ac_values(r: &AcReading, energy_kwh: f64) -> [Value; AC_MEASUREMENTS.len()] {
    let (p, pf) = (r.power_w(), r.power_factor());
    [
        p,
        p,
        r.voltage_v(),
        r.current_a(),
        r.frequency_hz(),
        pf,
        pf,
        energy_kwh,
        energy_kwh,
    ]
    .map(Value::Double)
}

/// The measurement paths of a DC meter whose role produces energy
/// (`/History/EnergyOut`); [`DC_MEASUREMENTS_IN`] for consumers.
pub const DC_MEASUREMENTS_OUT: [(&str, Kind, Format); 6] = dc_table("/History/EnergyOut");
/// The measurement paths of a DC meter whose role consumes energy (`/History/EnergyIn`).
pub const DC_MEASUREMENTS_IN: [(&str, Kind, Format); 6] = dc_table("/History/EnergyIn");

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
fn dc_values(r: &DcReading, energy_kwh: f64) -> [Value; DC_MEASUREMENTS_OUT.len()] {
    [
        Value::Double(r.voltage_v()),
        Value::Double(r.current_a()),
        Value::Double(r.power_w()),
        Value::Double(energy_kwh),
        Value::Int(alarm(r.high_voltage_alarm)),
        Value::Int(alarm(r.low_voltage_alarm)),
    ]
}

/// The DC table of a role: produced energy for sources, consumed for loads.
pub fn dc_measurements(role: Role) -> &'static [(&'static str, Kind, Format); 6] {
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
    let table: &[(&str, Kind, Format)] = match family {
        Family::Ac => {
            t.add("/NrOfPhases", Kind::Int, Format::Plain).value(1i64);
            t.add("/IsGenericEnergyMeter", Kind::Int, Format::Plain)
                .value(i64::from(id.role != Role::Grid));
            &AC_MEASUREMENTS
        }
        Family::Dc => dc_measurements(id.role),
    };
    for &(path, kind, format) in table {
        t.add(path, kind, format);
    }
    let tree = t.build().map_err(LayoutError::Tree)?;
    let id_of = |p: &'static str| tree.id(p).ok_or(LayoutError::Missing(p));
    let mut ids = [id_of("/Connected")?; AC_MEASUREMENTS.len()];
    for (slot, &(path, _, _)) in ids.iter_mut().zip(table) {
        *slot = id_of(path)?;
    }
    let measurements = match family {
        Family::Ac => Measurements::Ac(ids),
        Family::Dc => {
            let mut dc = [ids[0]; DC_MEASUREMENTS_OUT.len()];
            dc.copy_from_slice(&ids[..DC_MEASUREMENTS_OUT.len()]);
            Measurements::Dc(dc)
        }
    };
    let paths = MeterPaths {
        connected: id_of("/Connected")?,
        measurements,
    };
    Ok((tree, paths))
}

/// The DC energy path of a role: produced energy for sources, consumed for loads.
pub fn energy_path(role: Role) -> &'static str {
    dc_measurements(role)[3].0
}

/// Venus alarm level of a PZEM alarm bit: 0 ok, 2 alarm.
fn alarm(on: bool) -> i64 {
    if on { 2 } else { 0 }
}

/// Fill the tree from a reading; `energy_kwh` is the monotonic published
/// total. Sets `/Connected` to 1. A reading of the wrong family changes
/// nothing and returns false.
pub fn publish(tree: &mut ItemTree, paths: &MeterPaths, reading: &Reading, energy_kwh: f64) -> bool {
    match (&paths.measurements, reading) {
        (Measurements::Ac(ids), Reading::Ac(r)) => set_all(tree, ids, ac_values(r, energy_kwh)),
        (Measurements::Dc(ids), Reading::Dc(r)) => set_all(tree, ids, dc_values(r, energy_kwh)),
        _ => return false,
    }
    tree.set(paths.connected, 1i64);
    true
}

fn set_all<const N: usize>(tree: &mut ItemTree, ids: &[ItemId; N], values: [Value; N]) {
    for (id, value) in ids.iter().zip(values) {
        tree.set(*id, value);
    }
}

/// Mark the meter absent: `/Connected` 0 and every measurement invalid.
pub fn invalidate(tree: &mut ItemTree, paths: &MeterPaths) {
    let ids: &[ItemId] = match &paths.measurements {
        Measurements::Ac(ids) => ids,
        Measurements::Dc(ids) => ids,
    };
    for id in ids {
        tree.set(*id, Value::Invalid);
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
        }
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
        assert!(publish(&mut tree, &paths, &Reading::Ac(r), 12.345));
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
        assert!(!publish(&mut tree, &paths, &Reading::Dc(DcReading::default()), 0.0));
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
        publish(&mut tree, &paths, &Reading::Dc(r), 0.5);
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
}
