//! The D-Bus tree of the published flows service.
//!
//! Both modes publish the mandatory paths (§3), `/Connected` and the ten vebus energy paths
//! of §4.4 as Doubles in kWh: the three derived flows, and 0 for the seven others, as the
//! real driver publishes them for a single-input Multi. The vebus mode adds
//! `/Interfaces/Mk2/Connection` ([`super::machine::MK2_CONNECTION`]) so that systemcalc
//! does not count the service as on-board.

use crate::dbus::{Format, ItemId, ItemTree, Kind, TreeBuilder, TreeError};
use crate::energy_flow::{Flow, Flows};

use super::machine::{Identity, MK2_CONNECTION, PROCESS_NAME, PublishMode, SETTINGS_ID};
use crate::venus::layout::PRODUCT_ID;

/// `/ProductName`.
pub const PRODUCT_NAME: &str = "PZEM energy flows";

/// The ten vebus energy paths (§4.4), in the table's order.
pub const ENERGY_PATHS: [&str; 10] = [
    "/Energy/AcIn1ToAcOut",
    "/Energy/AcIn1ToInverter",
    "/Energy/AcIn2ToAcOut",
    "/Energy/AcIn2ToInverter",
    "/Energy/AcOutToAcIn1",
    "/Energy/AcOutToAcIn2",
    "/Energy/InverterToAcIn1",
    "/Energy/InverterToAcIn2",
    "/Energy/InverterToAcOut",
    "/Energy/OutToInverter",
];

const KWH: Format = Format::number(3, "kWh");

/// Ids of the items that change after the start.
#[derive(Clone, Copy, Debug)]
pub struct FlowPaths {
    /// The three derived flows, in [`Flow::ALL`] order.
    pub flows: [ItemId; 3],
    /// `/Connected`.
    pub connected: ItemId,
    /// `/CustomName`.
    pub custom_name: ItemId,
}

/// Build the complete tree (every value set: the tree is complete before the name is
/// claimed).
pub fn build_tree(id: &Identity) -> Result<(ItemTree, FlowPaths), TreeError> {
    let mut t = TreeBuilder::new();
    t.add("/Mgmt/ProcessName", Kind::Str, Format::Plain).value(PROCESS_NAME);
    t.add("/Mgmt/ProcessVersion", Kind::Str, Format::Plain)
        .value(env!("CARGO_PKG_VERSION"));
    t.add("/Mgmt/Connection", Kind::Str, Format::Plain)
        .value(id.connection.as_str());
    t.add("/DeviceInstance", Kind::Int, Format::Plain)
        .value(i64::from(id.instance));
    t.add("/ProductId", Kind::Int, Format::Hex).value(PRODUCT_ID);
    t.add("/ProductName", Kind::Str, Format::Plain).value(PRODUCT_NAME);
    t.add("/FirmwareVersion", Kind::Str, Format::Plain);
    t.add("/HardwareVersion", Kind::Str, Format::Plain);
    t.add("/Connected", Kind::Int, Format::Plain)
        .value(i64::from(id.connected));
    t.add("/CustomName", Kind::Str, Format::Plain)
        .value(id.custom_name.as_str())
        .writable();
    t.add("/Serial", Kind::Str, Format::Plain).value(SETTINGS_ID);
    if id.mode == PublishMode::Vebus {
        t.add("/Interfaces/Mk2/Connection", Kind::Str, Format::Plain)
            .value(MK2_CONNECTION);
    }
    for path in ENERGY_PATHS {
        let value = Flow::ALL
            .into_iter()
            .find(|f| f.path() == path)
            .map_or(0.0, |f| id.flows.kwh(f));
        t.add(path, Kind::Double, KWH).value(value);
    }
    let tree = t.build()?;
    let id_of = |p: &str| tree.id(p).ok_or_else(|| TreeError::BadPath(p.to_owned()));
    // Built from Flow::ALL, the order `publish` zips them with.
    let [a, b, c] = Flow::ALL.map(|f| id_of(f.path()));
    let paths = FlowPaths {
        flows: [a?, b?, c?],
        connected: id_of("/Connected")?,
        custom_name: id_of("/CustomName")?,
    };
    Ok((tree, paths))
}

/// Set the three flows (kWh); returns whether any changed.
pub fn publish(tree: &mut ItemTree, paths: &FlowPaths, flows: &Flows) -> bool {
    let mut changed = false;
    for (id, flow) in paths.flows.iter().zip(Flow::ALL) {
        changed |= tree.set(*id, flows.kwh(flow));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::Value;

    fn identity(mode: PublishMode) -> Identity {
        Identity {
            mode,
            instance: 277,
            custom_name: "Multi flows".into(),
            connection: "AC-in a, AC-out b, battery c".into(),
            flows: Flows {
                ac_in_to_ac_out_wh: 1_300,
                ac_in_to_inverter_wh: 1_250,
                inverter_to_ac_out_wh: 1_000,
            },
            connected: true,
        }
    }

    fn value(tree: &ItemTree, path: &str) -> Value {
        tree.value(tree.id(path).unwrap_or_else(|| panic!("{path} missing")))
            .clone()
    }

    #[test]
    fn vebus_tree_has_mandatory_energy_and_mk2_paths() {
        let (tree, paths) = build_tree(&identity(PublishMode::Vebus)).unwrap();
        for p in [
            "/Mgmt/ProcessName",
            "/Mgmt/ProcessVersion",
            "/Mgmt/Connection",
            "/ProductId",
            "/ProductName",
            "/FirmwareVersion",
            "/HardwareVersion",
            "/Serial",
        ] {
            assert!(tree.id(p).is_some(), "{p}");
        }
        assert_eq!(value(&tree, "/DeviceInstance"), Value::Int(277));
        assert_eq!(value(&tree, "/Connected"), Value::Int(1));
        assert_eq!(value(&tree, "/CustomName"), Value::from("Multi flows"));
        assert_eq!(value(&tree, "/Interfaces/Mk2/Connection"), Value::from(MK2_CONNECTION));
        assert!(MK2_CONNECTION.starts_with("/dev/ttyUSB"));
        assert_eq!(value(&tree, "/Energy/AcIn1ToAcOut"), Value::Double(1.3));
        assert_eq!(value(&tree, "/Energy/AcIn1ToInverter"), Value::Double(1.25));
        assert_eq!(value(&tree, "/Energy/InverterToAcOut"), Value::Double(1.0));
        for p in ENERGY_PATHS {
            assert!(matches!(value(&tree, p), Value::Double(_)), "{p} is a Double");
        }
        assert_eq!(value(&tree, "/Energy/AcIn2ToAcOut"), Value::Double(0.0));
        assert_eq!(value(&tree, "/Energy/OutToInverter"), Value::Double(0.0));
        assert_eq!(tree.len(), 12 + 10);
        let mut tree = tree;
        let more = Flows {
            ac_in_to_ac_out_wh: 1_301,
            ..identity(PublishMode::Vebus).flows
        };
        assert!(publish(&mut tree, &paths, &more));
        assert!(!publish(&mut tree, &paths, &more));
        assert_eq!(value(&tree, "/Energy/AcIn1ToAcOut"), Value::Double(1.301));
    }

    #[test]
    fn own_tree_has_no_mk2_connection() {
        let (tree, _) = build_tree(&identity(PublishMode::Own)).unwrap();
        assert!(tree.id("/Interfaces/Mk2/Connection").is_none());
        assert_eq!(tree.len(), 11 + 10);
    }
}
