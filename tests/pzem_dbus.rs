//! The real `pzem-dbus` binary against the simulator on a pseudo-terminal and a private
//! dbus-daemon with the localsettings double, seen through a client that does what Venus's
//! monitor does (GetItems when a name appears, then ItemsChanged/PropertiesChanged).
//!
//! Every child process is killed by PID when its guard drops, also when a test fails.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/rig.rs"]
mod rig;

use pzem::dbus::{BusClient, Event, Value};
use pzem::sim::{Faults, Pacing, SimBus, SimMeter, SimServer, TcpFraming};
use pzem::{AcReading, Model, Reading};
use rig::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const SETTINGS: &str = "com.victronenergy.settings";
const SECOND: Duration = Duration::from_secs(1);

/// A simulated line; each meter's counter starts at a different non-zero value, so a
/// published energy in Wh instead of kWh cannot pass.
fn line(meters: &[(Model, u8)], seed: u64) -> SimBus {
    let meters = meters
        .iter()
        .map(|&(m, a)| {
            let mut meter = SimMeter::new(m, a);
            meter.set_energy_wh(12_345 * u32::from(a));
            meter
        })
        .collect();
    SimBus::new(meters, seed)
}

fn pty(meters: &[(Model, u8)], seed: u64) -> (SimServer, String) {
    let sim = SimServer::pty(line(meters, seed), Pacing::NONE).unwrap();
    let path = sim.path().unwrap().to_owned();
    (sim, path)
}

fn served(sim: &SimServer, address: u8) -> Vec<Reading> {
    sim.bus()
        .served()
        .filter(|s| s.address == address)
        .map(|s| s.reading)
        .collect()
}

fn setting(device: &str, name: &str) -> String {
    format!("/Settings/Devices/{device}/{name}")
}

fn settings_value(rig: &Rig, path: &str) -> Option<Value> {
    rig.settings.as_ref().and_then(|s| s.value(path))
}

/// Waits until the settings double holds `want` at `path`.
fn wait_setting(rig: &Rig, path: &str, want: Value) {
    let deadline = Instant::now() + 5 * SECOND;
    while settings_value(rig, path).as_ref() != Some(&want) {
        assert!(
            Instant::now() < deadline,
            "{path}: {:?}, want {want:?}",
            settings_value(rig, path)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const MANDATORY: [&str; 13] = [
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
];
const AC_MEASUREMENTS: [&str; 9] = [
    "/Ac/Power",
    "/Ac/L1/Power",
    "/Ac/L1/Voltage",
    "/Ac/L1/Current",
    "/Ac/Frequency",
    "/Ac/PowerFactor",
    "/Ac/L1/PowerFactor",
    "/Ac/Energy/Forward",
    "/Ac/L1/Energy/Forward",
];

/// Types per venus-conventions §3/§4: measurements Double (or invalid), counts Int,
/// text Str, `/AllowedRoles` a string list.
fn check_types(service: &str, items: &BTreeMap<String, Value>) {
    for (path, value) in items {
        let ok = match path.as_str() {
            "/DeviceInstance" | "/ProductId" | "/Connected" | "/NrOfPhases" | "/IsGenericEnergyMeter" | "/Position" => {
                matches!(value, Value::Int(_))
            }
            "/Alarms/HighVoltage" | "/Alarms/LowVoltage" => matches!(value, Value::Int(_) | Value::Invalid),
            "/Mgmt/ProcessName"
            | "/Mgmt/ProcessVersion"
            | "/Mgmt/Connection"
            | "/ProductName"
            | "/CustomName"
            | "/Serial"
            | "/Role" => matches!(value, Value::Str(_)),
            "/FirmwareVersion" | "/HardwareVersion" => matches!(value, Value::Str(_) | Value::Invalid),
            "/AllowedRoles" => matches!(value, Value::StrList(l) if !l.is_empty()),
            p if p.starts_with("/Ac/") || p.starts_with("/Dc/") || p.starts_with("/History/") => {
                matches!(value, Value::Double(_) | Value::Invalid)
            }
            other => panic!("{service}: unexpected path {other}"),
        };
        assert!(ok, "{service}: {path} has the wrong type: {value:?}");
    }
}

/// Every `ItemsChanged` of `service`: absolute keys only, and no key whose value equals the
/// value that service last signalled for it (changed keys only).
fn check_only_changes(mon: &Monitor, service: &str) -> usize {
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    let mut n = 0;
    for seen in &mon.log {
        match &seen.event {
            Event::ItemsChanged { service: s, changes } if s == service => {
                n += 1;
                assert!(!changes.is_empty(), "{service}: empty ItemsChanged");
                for (p, v) in changes {
                    assert!(p.starts_with('/'), "{service}: relative key {p} in ItemsChanged");
                    if let Some(before) = last.get(p) {
                        assert!(before != v, "{service}: {p} = {v:?} sent again unchanged");
                    }
                    last.insert(p.clone(), v.clone());
                }
            }
            Event::PropertiesChanged {
                service: s,
                path,
                value,
            } if s == service => {
                last.insert(path.clone(), value.clone());
            }
            Event::NameOwnerChanged { name, .. } if name == service => last.clear(),
            _ => {}
        }
    }
    n
}

/// Replays what the monitor saw of `service` from its last appearance, and asserts that after
/// every signal the measurements show one reading the simulator served at `address` (with
/// `offset_wh` added to the energy) or are all invalid with `/Connected` 0. Returns the
/// number of `ItemsChanged` checked.
fn check_every_state_was_served(
    mon: &Monitor,
    sim: &SimServer,
    service: &str,
    address: u8,
    dc_energy: &str,
    offset_wh: u64,
) -> usize {
    let readings = served(sim, address);
    let appeared = mon
        .appeared
        .iter()
        .rev()
        .find(|a| a.service == service)
        .expect("service appeared");
    let mut view = appeared.items.clone().expect("GetItems answered");
    let measurement_paths: Vec<&str> = match readings.first() {
        Some(r) => derived(r, dc_energy, 0).into_iter().map(|(p, _)| p).collect(),
        None => panic!("nothing served at {address}"),
    };
    let mut checked = 0;
    for seen in mon.log.iter().filter(|s| s.at >= appeared.at) {
        let Event::ItemsChanged { service: s, changes } = &seen.event else {
            continue;
        };
        if s != service {
            continue;
        }
        for (p, v) in changes {
            view.insert(p.clone(), v.clone());
        }
        checked += 1;
        let invalid = measurement_paths.iter().all(|p| view.get(*p) == Some(&Value::Invalid));
        if invalid {
            assert_eq!(
                view.get("/Connected"),
                Some(&Value::Int(0)),
                "{service}: invalid but connected"
            );
            continue;
        }
        assert_eq!(
            view.get("/Connected"),
            Some(&Value::Int(1)),
            "{service}: values while not connected"
        );
        let shown: Vec<_> = measurement_paths.iter().map(|p| (*p, view.get(*p).cloned())).collect();
        assert!(
            readings.iter().any(|r| shows(&view, r, dc_energy, offset_wh)),
            "{service}: published state {shown:?} is not a reading the simulator served ({} served)",
            readings.len()
        );
    }
    checked
}

/// Blocks until the simulator has answered `n` more reads at `address`.
fn wait_served(sim: &SimServer, address: u8, n: usize, within: Duration) {
    let start = served(sim, address).len();
    let deadline = Instant::now() + within;
    while served(sim, address).len() < start + n {
        assert!(
            Instant::now() < deadline,
            "the simulator was not polled {n} times at {address}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn busctl(rig: &Rig, args: &[&str]) -> String {
    let o = std::process::Command::new("busctl")
        .arg(format!("--address={}", rig.bus.address()))
        .args(args)
        .output()
        .expect("busctl");
    assert!(
        o.status.success(),
        "busctl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn conformance_of_two_grid_meters() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem016, 2)], 1);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:016:grid"], &[]);
    let _p = rig.start(BIN, "pzem", &args);
    let (g1, g2) = (service_name("grid", &tty, 1), service_name("grid", &tty, 2));
    rig.monitor.wait_connected(&g1, 10 * SECOND);
    rig.monitor.wait_connected(&g2, 10 * SECOND);

    // The name is claimed only once the tree is complete: the GetItems made right after
    // NameOwnerChanged already has /DeviceInstance and every mandatory path.
    for (service, instance, addr) in [(&g1, 40, 1), (&g2, 41, 2)] {
        let first = rig.monitor.appeared.iter().find(|a| &a.service == service).unwrap();
        let items = first.items.as_ref().expect("GetItems right after NameOwnerChanged");
        for p in MANDATORY.iter().chain(&["/NrOfPhases"]).chain(&AC_MEASUREMENTS) {
            assert!(items.contains_key(*p), "{service}: {p} missing at appearance");
        }
        assert!(!items.contains_key("/Position"), "grid has no /Position");
        assert_eq!(items["/DeviceInstance"], Value::Int(instance), "{service}");
        check_types(service, items);
        // The instance is the one localsettings allocated (grid:40, then grid:41).
        let stored = settings_value(&rig, &setting(&settings_id(&tty, addr), "ClassAndVrmInstance"));
        assert_eq!(stored, Some(Value::from(format!("grid:{instance}").as_str())));
        let now = rig.monitor.client.get_items(service).unwrap();
        check_types(service, &now);
        assert_eq!(now["/ProductName"], Value::from("PZEM-016"));
        assert_eq!(now["/ProductId"], Value::Int(0xFFFF));
        assert_eq!(now["/NrOfPhases"], Value::Int(1));
        assert_eq!(now["/Role"], Value::from("grid"));
        assert_eq!(now["/Mgmt/ProcessName"], Value::from("pzem-dbus"));
        let port = tty.strip_prefix("/dev/").unwrap();
        assert_eq!(
            now["/Mgmt/Connection"],
            Value::from(format!("Modbus RTU {port}:{addr}").as_str())
        );
        assert_eq!(
            now["/AllowedRoles"],
            Value::StrList(
                ["grid", "pvinverter", "genset", "acload", "evcharger", "heatpump"]
                    .map(String::from)
                    .to_vec()
            )
        );
        // Invalid: empty `ai` on the wire, `---` as text.
        assert_eq!(now["/FirmwareVersion"], Value::Invalid);
        assert_eq!(rig.monitor.client.get_text(service, "/FirmwareVersion").unwrap(), "---");
        // Values equal the simulator's (the state shown is one it served).
        assert!(
            served(&sim, addr).iter().any(|r| shows(&now, r, "", 0)),
            "{service}: {now:?}"
        );
    }

    // Wire level, once: types as signatures, invalid as `ai 0` with text `---`.
    let items = busctl(&rig, &["call", &g1, "/", "com.victronenergy.BusItem", "GetItems"]);
    for want in [
        "\"/DeviceInstance\" 2 \"Value\" i 40 \"Text\" s \"40\"",
        "\"/Connected\" 2 \"Value\" i 1",
        "\"/NrOfPhases\" 2 \"Value\" i 1",
        "\"/Ac/Energy/Forward\" 2 \"Value\" d ",
        "\"/Ac/L1/Power\" 2 \"Value\" d ",
        "\"/AllowedRoles\" 2 \"Value\" av 6 s \"grid\" s \"pvinverter\"",
        "\"/FirmwareVersion\" 2 \"Value\" ai 0 \"Text\" s \"---\"",
        "\"/ProductName\" 2 \"Value\" s \"PZEM-016\"",
    ] {
        assert!(items.contains(want), "{want} not in {items}");
    }
    assert!(items.contains("kWh\""), "energy text in kWh: {items}");
    // GetValue/GetText on / and on /Ac: relative keys.
    let root = busctl(&rig, &["call", &g1, "/", "com.victronenergy.BusItem", "GetValue"]);
    assert!(root.starts_with("v a{sv} "), "{root}");
    assert!(
        root.contains("\"DeviceInstance\" i 40") && root.contains("\"Ac/L1/Power\" d "),
        "{root}"
    );
    assert!(!root.contains("\"/"), "absolute key in GetValue on /: {root}");
    let root_text = busctl(&rig, &["call", &g1, "/", "com.victronenergy.BusItem", "GetText"]);
    assert!(root_text.starts_with("v a{ss} ") && root_text.contains("\"FirmwareVersion\" \"---\""));
    let ac = busctl(&rig, &["call", &g1, "/Ac", "com.victronenergy.BusItem", "GetValue"]);
    assert!(ac.starts_with("v a{sv} ") && ac.contains("\"L1/Voltage\" d ") && ac.contains("\"Power\" d "));
    assert!(!ac.contains("\"Ac/") && !ac.contains("\"/"), "{ac}");
    let ac_text = busctl(&rig, &["call", &g1, "/Ac", "com.victronenergy.BusItem", "GetText"]);
    assert!(
        ac_text.starts_with("v a{ss} ") && ac_text.contains("\"Frequency\" \""),
        "{ac_text}"
    );

    // One ItemsChanged per poll at most, changed keys only, absolute keys.
    let before = served(&sim, 1).len();
    let signals_before = rig.monitor.items_changed(&g1).count();
    rig.monitor.pump_for(2 * SECOND);
    let polls = served(&sim, 1).len() - before;
    let signals = rig.monitor.items_changed(&g1).count() - signals_before;
    assert!(polls >= 5, "only {polls} polls in 2 s at -i 200");
    assert!(signals <= polls + 1, "{signals} ItemsChanged for {polls} polls");
    assert!(
        signals >= polls / 2,
        "moving values but only {signals} ItemsChanged for {polls} polls"
    );
    check_only_changes(&rig.monitor, &g1);
    check_only_changes(&rig.monitor, &g2);
    check_every_state_was_served(&rig.monitor, &sim, &g1, 1, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &g2, 2, "", 0);

    // Nothing changes → no signal: meter 2 frozen with no load.
    {
        let mut bus = sim.bus();
        let m = bus.meter_mut(2).unwrap();
        m.frozen = true;
        let r = m.ac();
        m.set_ac(AcReading {
            power_dw: 0,
            current_ma: 0,
            ..r
        });
    }
    wait_served(&sim, 2, 2, 5 * SECOND);
    rig.monitor.pump_for(Duration::from_millis(300));
    let quiet_from = rig.monitor.items_changed(&g2).count();
    wait_served(&sim, 2, 6, 5 * SECOND);
    rig.monitor.pump_for(Duration::from_millis(300));
    assert_eq!(
        rig.monitor.items_changed(&g2).count(),
        quiet_from,
        "ItemsChanged while nothing changed"
    );
    assert_eq!(rig.monitor.get(&g2, "/Ac/Power"), Some(&Value::Double(0.0)));

    // Read-only paths refuse SetValue and keep their value.
    for (path, v) in [
        ("/DeviceInstance", Value::Int(7)),
        ("/Ac/L1/Power", Value::Double(1.0)),
        ("/ProductName", Value::from("x")),
        ("/Connected", Value::Int(0)),
        ("/AllowedRoles", Value::StrList(vec!["grid".into()])),
    ] {
        let code = rig.monitor.client.set_value(&g1, path, &v).unwrap();
        assert_ne!(code, 0, "SetValue on read-only {path} accepted");
    }
    assert_eq!(
        rig.monitor.client.get_value(&g1, "/DeviceInstance").unwrap(),
        Value::Int(40)
    );
}

#[test]
fn mixed_ac_and_dc_meters_on_one_line() {
    let meters = [
        (Model::Pzem016, 1),
        (Model::Pzem017, 2),
        (Model::Pzem014, 3),
        (Model::Pzem003, 4),
    ];
    let (sim, tty) = pty(&meters, 2);
    let mut rig = Rig::new(true);
    let args = rig.args(
        &["-d", &tty],
        &["1:016:grid", "2:017:dcload", "3:014:pvinverter", "4:003:dcsource"],
        &[],
    );
    let _p = rig.start(BIN, "pzem", &args);
    let cases = [
        ("grid", 1, "PZEM-016", ""),
        ("dcload", 2, "PZEM-017", "/History/EnergyIn"),
        ("pvinverter", 3, "PZEM-014", ""),
        ("dcsource", 4, "PZEM-003", "/History/EnergyOut"),
    ];
    for (class, addr, _, _) in cases {
        rig.monitor
            .wait_connected(&service_name(class, &tty, addr), 10 * SECOND);
    }
    rig.monitor.pump_for(SECOND);
    for (class, addr, product, dc_energy) in cases {
        let service = service_name(class, &tty, addr);
        let items = rig.monitor.client.get_items(&service).unwrap();
        check_types(&service, &items);
        for p in MANDATORY {
            assert!(items.contains_key(p), "{service}: {p} missing");
        }
        assert_eq!(items["/ProductName"], Value::from(product), "{service}");
        assert_eq!(
            items["/DeviceInstance"],
            Value::Int(40),
            "{service}: first of its class"
        );
        if dc_energy.is_empty() {
            assert!(items.contains_key("/Ac/L1/Power") && !items.contains_key("/Dc/0/Power"));
        } else {
            for p in ["/Dc/0/Voltage", "/Dc/0/Current", "/Dc/0/Power", dc_energy] {
                assert!(items.contains_key(p), "{service}: {p} missing");
            }
            let other = if dc_energy.ends_with("In") {
                "/History/EnergyOut"
            } else {
                "/History/EnergyIn"
            };
            assert!(!items.contains_key(other), "{service}: {other} should not be there");
            assert!(!items.contains_key("/Ac/Power"));
        }
        assert_eq!(items.contains_key("/Position"), class == "pvinverter", "{service}");
        assert!(
            served(&sim, addr).iter().any(|r| shows(&items, r, dc_energy, 0)),
            "{service}: {items:?} is not a served reading"
        );
        let n = check_every_state_was_served(&rig.monitor, &sim, &service, addr, dc_energy, 0);
        assert!(n >= 3, "{service}: only {n} ItemsChanged");
        check_only_changes(&rig.monitor, &service);
    }
}

#[test]
fn role_switch_custom_name_position_and_restart() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1)], 3);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid"], &[]);
    let mut p = rig.start(BIN, "pzem1", &args);
    let (grid, acload) = (service_name("grid", &tty, 1), service_name("acload", &tty, 1));
    let id = settings_id(&tty, 1);
    rig.monitor.wait_connected(&grid, 10 * SECOND);

    // /CustomName: accepted, announced with PropertiesChanged, persisted in localsettings.
    assert_eq!(
        rig.monitor
            .client
            .set_value(&grid, "/CustomName", &"Shed".into())
            .unwrap(),
        0
    );
    wait_setting(&rig, &setting(&id, "CustomName"), Value::from("Shed"));
    rig.monitor.until(5 * SECOND, "PropertiesChanged of /CustomName", |m| {
        m.log.iter().any(|s| {
            matches!(&s.event, Event::PropertiesChanged { service, path, value }
                if service == &grid && path == "/CustomName" && value == &Value::from("Shed"))
        })
    });
    // Grid has no /Position.
    let e = rig
        .monitor
        .client
        .set_value(&grid, "/Position", &Value::Int(0))
        .unwrap_err();
    assert_eq!(e.dbus_name(), Some("org.freedesktop.DBus.Error.UnknownObject"));

    // /Role: a new service under the new class, the old name gone, the setting updated.
    assert_eq!(
        rig.monitor.client.set_value(&grid, "/Role", &"acload".into()).unwrap(),
        0
    );
    rig.monitor.wait_connected(&acload, 10 * SECOND);
    rig.monitor
        .until(5 * SECOND, "old name gone", |m| !m.view.contains_key(&grid));
    assert!(rig.monitor.client.name_owner(&grid).unwrap().is_none());
    wait_setting(&rig, &setting(&id, "ClassAndVrmInstance"), Value::from("acload:40"));
    let appeared = rig.monitor.appeared.iter().rev().find(|a| a.service == acload).unwrap();
    let items = appeared.items.as_ref().unwrap();
    assert_eq!(items["/DeviceInstance"], Value::Int(40), "acload:40 from the setting");
    assert_eq!(items["/Role"], Value::from("acload"));
    assert_eq!(items["/CustomName"], Value::from("Shed"));
    assert_eq!(items["/IsGenericEnergyMeter"], Value::Int(1));
    assert!(items.contains_key("/Position"));
    assert_eq!(p.try_exit(), None, "still running after the role switch");

    // /Position: 0..=1 for acload (0 = AC output, 1 = AC input), persisted.
    let set = |m: &mut Monitor, v: Value| m.client.set_value(&acload, "/Position", &v).unwrap();
    assert_eq!(set(&mut rig.monitor, Value::Int(1)), 0);
    wait_setting(&rig, &setting(&id, "Position"), Value::Int(1));
    assert_ne!(set(&mut rig.monitor, Value::Int(2)), 0, "2 is not an acload position");
    assert_ne!(set(&mut rig.monitor, Value::Int(-1)), 0);
    assert_eq!(
        rig.monitor.client.get_value(&acload, "/Position").unwrap(),
        Value::Int(1)
    );
    assert_eq!(settings_value(&rig, &setting(&id, "Position")), Some(Value::Int(1)));

    // Restart: role, instance, name and position come back from localsettings.
    assert_eq!(p.terminate(), Some(0), "SIGTERM stops it with 0");
    rig.monitor
        .until(5 * SECOND, "acload gone", |m| !m.view.contains_key(&acload));
    let _p2 = rig.start(BIN, "pzem2", &args);
    rig.monitor.wait_connected(&acload, 10 * SECOND);
    let items = rig.monitor.client.get_items(&acload).unwrap();
    assert_eq!(items["/CustomName"], Value::from("Shed"));
    assert_eq!(items["/Position"], Value::Int(1));
    assert_eq!(items["/DeviceInstance"], Value::Int(40));
    assert!(
        !rig.monitor.view.contains_key(&grid),
        "configured grid role lost to the GUI's choice"
    );
    drop(sim);
}

#[test]
fn instance_edit_in_settings_is_followed() {
    let (_sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 4);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcsystem"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let grid = service_name("grid", &tty, 1);
    let dc = service_name("dcsystem", &tty, 2);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    let path = setting(&settings_id(&tty, 1), "ClassAndVrmInstance");

    // As the GUI's VRM instance page does: write the setting.
    let mut gui = BusClient::new(&rig.bus.bus()).unwrap();
    assert_eq!(gui.set_value(SETTINGS, &path, &"grid:45".into()).unwrap(), 0);
    rig.monitor.until(10 * SECOND, "re-registered with instance 45", |m| {
        m.get(&grid, "/DeviceInstance") == Some(&Value::Int(45))
    });
    // It was a new registration (NameOwnerChanged, then GetItems), not an in-place change.
    let last = rig.monitor.appeared.iter().rev().find(|a| a.service == grid).unwrap();
    assert_eq!(last.items.as_ref().unwrap()["/DeviceInstance"], Value::Int(45));
    rig.monitor.wait_connected(&grid, 5 * SECOND);
    assert_eq!(p.try_exit(), None, "pzem-dbus died re-registering:\n{}", p.log_text());

    // A class change written in settings is followed too (DC meter to dcload).
    let dc_path = setting(&settings_id(&tty, 2), "ClassAndVrmInstance");
    assert_eq!(gui.set_value(SETTINGS, &dc_path, &"dcload:41".into()).unwrap(), 0);
    let dcload = service_name("dcload", &tty, 2);
    rig.monitor.wait_connected(&dcload, 10 * SECOND);
    assert_eq!(rig.monitor.get(&dcload, "/DeviceInstance"), Some(&Value::Int(41)));
    rig.monitor
        .until(5 * SECOND, "dcsystem gone", |m| !m.view.contains_key(&dc));
    // And an AC class written on a DC meter is ignored.
    assert_eq!(gui.set_value(SETTINGS, &dc_path, &"grid:50".into()).unwrap(), 0);
    rig.monitor.pump_for(Duration::from_millis(600));
    assert!(rig.monitor.view.contains_key(&dcload));
    assert!(!rig.monitor.view.contains_key(&service_name("grid", &tty, 2)));
    assert_eq!(p.try_exit(), None, "{}", p.log_text());
}

/// The largest published AC energy total of `service` seen so far.
fn energy_seen(mon: &Monitor, service: &str) -> Vec<f64> {
    let mut out = Vec::new();
    for a in mon.appeared.iter().filter(|a| a.service == service) {
        if let Ok(items) = &a.items
            && let Some(Value::Double(e)) = items.get("/Ac/Energy/Forward")
        {
            out.push((a.at, *e));
        }
    }
    let mut out: Vec<(Instant, f64)> = out;
    for s in &mon.log {
        if let Event::ItemsChanged { service: x, changes } = &s.event
            && x == service
        {
            for (p, v) in changes {
                if let ("/Ac/Energy/Forward", Value::Double(e)) = (p.as_str(), v) {
                    out.push((s.at, *e));
                }
            }
        }
    }
    out.sort_by_key(|(t, _)| *t);
    out.into_iter().map(|(_, e)| e).collect()
}

#[test]
fn counter_reset_keeps_energy_monotonic_across_restarts() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1)], 5);
    {
        let mut bus = sim.bus();
        let m = bus.meter_mut(1).unwrap();
        m.frozen = true;
        // 20 kW: about 1.1 Wh per 200 ms poll, within the plausibility limit.
        m.set_ac(AcReading {
            voltage_dv: 2300,
            current_ma: 87_000,
            power_dw: 200_000,
            energy_wh: 50_000,
            frequency_dhz: 500,
            power_factor_centi: 100,
            power_alarm: false,
        });
    }
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid"], &[]);
    let mut p = rig.start(BIN, "pzem1", &args);
    let grid = service_name("grid", &tty, 1);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.until(
        5 * SECOND,
        "50 kWh published",
        |m| matches!(m.get(&grid, "/Ac/Energy/Forward"), Some(Value::Double(e)) if *e >= 50.002),
    );
    let before_reset = energy_seen(&rig.monitor, &grid).into_iter().fold(0.0, f64::max);
    sim.bus().meter_mut(1).unwrap().set_energy_wh(0); // as a 0x42 reset does
    wait_served(&sim, 1, 8, 5 * SECOND);
    rig.monitor.until(
        5 * SECOND,
        "counting on after the reset",
        |m| matches!(m.get(&grid, "/Ac/Energy/Forward"), Some(Value::Double(e)) if *e > before_reset + 0.002),
    );
    let series = energy_seen(&rig.monitor, &grid);
    assert!(
        series.windows(2).all(|w| w[1] >= w[0]),
        "energy went backwards: {series:?}"
    );
    let raw_now = f64::from(sim.bus().meter_mut(1).unwrap().energy_wh()) / 1000.0;
    assert!(raw_now < 1.0, "the simulator was reset");
    assert!(
        p.log_text().contains("dropped"),
        "the reset is logged:\n{}",
        p.log_text()
    );

    // Restart: the total carries on from the persisted offset.
    assert_eq!(p.terminate(), Some(0));
    let last = *energy_seen(&rig.monitor, &grid).last().unwrap();
    rig.monitor
        .until(5 * SECOND, "grid gone", |m| !m.view.contains_key(&grid));
    let mut p2 = rig.start(BIN, "pzem2", &args);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    let Some(Value::Double(after)) = rig.monitor.get(&grid, "/Ac/Energy/Forward").cloned() else {
        panic!("no energy after restart");
    };
    assert!(after >= last, "restart went back from {last} to {after} kWh");
    assert!(after < last + 0.5, "restart jumped from {last} to {after} kWh");
    let raw = served(&sim, 1).last().unwrap().energy_wh();
    assert!(
        (after - (before_reset + f64::from(raw) / 1000.0)).abs() < 0.0031,
        "published {after} kWh is not offset {before_reset} + counter {raw} Wh"
    );
    assert_eq!(p2.terminate(), Some(0));
}

#[test]
fn silent_meter_is_invalidated_and_comes_back() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 6);
    let mut rig = Rig::new(true);
    // -t 300: a D-Bus thread that waited on the serial line would show in the latency below.
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcload"], &["-t", "300"]);
    let mut p = rig.start(BIN, "pzem", &args);
    let (grid, dc) = (service_name("grid", &tty, 1), service_name("dcload", &tty, 2));
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(Duration::from_millis(500));

    sim.bus().meter_mut(1).unwrap().silent = true;
    let went = Instant::now();
    // Three failures in a row (a cycle is then ~300 ms): invalid within a few poll periods.
    rig.monitor.until(4 * SECOND, "meter 1 invalidated", |m| {
        m.get(&grid, "/Connected") == Some(&Value::Int(0))
            && AC_MEASUREMENTS.iter().all(|p| m.get(&grid, p) == Some(&Value::Invalid))
    });
    let took = went.elapsed();
    // GetItems agrees (no stale or zero values); the DC meter is unaffected.
    let items = rig.monitor.client.get_items(&grid).unwrap();
    for path in AC_MEASUREMENTS {
        assert_eq!(items[path], Value::Invalid, "{path} after silence");
        assert_eq!(rig.monitor.client.get_text(&grid, path).unwrap(), "---");
    }
    assert_eq!(rig.monitor.get(&dc, "/Connected"), Some(&Value::Int(1)));
    assert!(matches!(rig.monitor.get(&dc, "/Dc/0/Voltage"), Some(Value::Double(_))));
    assert!(p.log_text().contains("stopped answering"), "{}", p.log_text());

    // Calls are answered while the line waits out timeouts (300 ms per poll of meter 1).
    let mut latencies: Vec<Duration> = (0..40)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(7 * (i % 5)));
            let t = Instant::now();
            rig.monitor.client.get_value(&grid, "/Connected").unwrap();
            t.elapsed()
        })
        .collect();
    latencies.sort();
    let (p50, p90, max) = (latencies[20], latencies[36], latencies[39]);
    assert!(
        p90 < Duration::from_millis(50),
        "GetValue p50 {p50:?} p90 {p90:?} max {max:?}"
    );
    eprintln!("GetValue during serial timeouts: p50 {p50:?} p90 {p90:?} max {max:?}");

    // Back by itself.
    sim.bus().meter_mut(1).unwrap().silent = false;
    rig.monitor.wait_connected(&grid, 5 * SECOND);
    rig.monitor.pump_for(Duration::from_millis(300));
    let items = rig.monitor.client.get_items(&grid).unwrap();
    assert!(served(&sim, 1).iter().any(|r| shows(&items, r, "", 0)), "{items:?}");
    // Every state published through all of it was served or all-invalid.
    check_every_state_was_served(&rig.monitor, &sim, &grid, 1, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &dc, 2, "/History/EnergyIn", 0);
    assert_eq!(p.try_exit(), None);
    eprintln!("invalidated {took:?} after the meter went silent");
}

#[test]
fn exit_1_when_no_meter_answers_at_start_up() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1)], 7);
    sim.bus().meter_mut(1).unwrap().silent = true;
    let rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcload"], &["-t", "300"]);
    let mut p = rig.start(BIN, "pzem", &args);
    let code = p.wait_exit(5 * SECOND);
    assert_eq!(code, Some(1), "log:\n{}", p.log_text());
    assert!(p.started.elapsed() < 5 * SECOND);
    assert!(p.log_text().contains("no PZEM meter answered"), "{}", p.log_text());
}

#[test]
fn exit_1_when_every_meter_stays_silent() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 8);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcload"], &["--silent-exit", "1"]);
    let mut p = rig.start(BIN, "pzem", &args);
    rig.monitor.wait_connected(&service_name("grid", &tty, 1), 10 * SECOND);
    // One silent meter is not enough.
    sim.bus().meter_mut(1).unwrap().silent = true;
    assert_eq!(p.wait_exit(2 * SECOND), None, "exited with one meter still answering");
    sim.bus().meter_mut(2).unwrap().silent = true;
    let went = Instant::now();
    assert_eq!(p.wait_exit(4 * SECOND), Some(1), "log:\n{}", p.log_text());
    // Silence counts from the last answer, which came up to one poll interval (200 ms)
    // before the second meter was silenced.
    assert!(
        went.elapsed() >= Duration::from_millis(750),
        "exited before --silent-exit"
    );
}

#[test]
fn exit_3_when_the_tty_hangs_up() {
    let (mut sim, tty) = pty(&[(Model::Pzem016, 1)], 9);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    rig.monitor.wait_connected(&service_name("grid", &tty, 1), 10 * SECOND);
    sim.hang_up();
    assert_eq!(p.wait_exit(5 * SECOND), Some(3), "log:\n{}", p.log_text());
}

#[test]
fn exit_4_when_the_bus_daemon_dies() {
    let (_sim, tty) = pty(&[(Model::Pzem016, 1)], 10);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    rig.monitor.wait_connected(&service_name("grid", &tty, 1), 10 * SECOND);
    let Rig {
        bus,
        settings,
        monitor,
        dir,
    } = rig;
    drop(monitor);
    drop(bus); // kills the daemon (that PID only)
    let code = p.wait_exit(5 * SECOND);
    assert_eq!(code, Some(4), "log:\n{}", p.log_text());
    drop((settings, dir));
}

#[test]
fn exit_2_on_bad_flags_and_config() {
    let dir = TempDir::new("flags");
    let conf = dir.path().join("pzem.conf");
    std::fs::write(&conf, "1 016 grid\n2 017 gird\n").unwrap();
    let dup = dir.path().join("dup.conf");
    std::fs::write(&dup, "# two at one address\n1 016 grid\n1 017 dcload\n").unwrap();
    let cases: [(&[&str], &str); 10] = [
        (&["-d", "/dev/null", "-m", "1:017:grid"], "DC meter but grid"),
        (&["-d", "/dev/null", "-m", "0:016:grid"], "1 to 247"),
        (&["-d", "/dev/null", "-m", "1:016:grid", "-m", "1:017:dcload"], "twice"),
        (&["-d", "/dev/null", "-m", "1:016:grid", "-i", "0.5"], "--interval"),
        (&["-d", "/dev/null", "-m", "1:016:grid", "--bogus"], "bogus"),
        (&["-m", "1:016:grid"], "-d /dev/ttyUSB0"),
        (&["-d", "/dev/null", "--tcp", "h:1", "-m", "1:016:grid"], "not both"),
        (&["-d", "/dev/null", "-c", conf.to_str().unwrap()], "line 2"),
        (&["-d", "/dev/null", "-c", dup.to_str().unwrap()], "line 3"),
        (&["-d", "/dev/null", "-c", "/nonexistent/pzem.conf"], "cannot read"),
    ];
    for (args, says) in cases {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut p = Proc::spawn(BIN, &args, &dir.path().join("out.log"));
        assert_eq!(p.wait_exit(5 * SECOND), Some(2), "{args:?}: {}", p.log_text());
        let log = p.log_text();
        assert!(log.contains(says), "{args:?} should say {says:?}: {log}");
        std::fs::remove_file(dir.path().join("out.log")).unwrap();
    }
}

#[test]
fn fault_injection_never_publishes_a_wrong_value() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 11);
    sim.bus().faults = Faults::parse("no-reply=0.1,bad-crc=0.1,truncated=0.1,garbage=0.1").unwrap();
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:016:grid", "2:017:dcsource"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let (grid, dc) = (service_name("grid", &tty, 1), service_name("dcsource", &tty, 2));
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(6 * SECOND);
    assert_eq!(p.try_exit(), None, "{}", p.log_text());
    let requests = sim.bus().requests();
    let a = check_every_state_was_served(&rig.monitor, &sim, &grid, 1, "", 0);
    let b = check_every_state_was_served(&rig.monitor, &sim, &dc, 2, "/History/EnergyOut", 0);
    check_only_changes(&rig.monitor, &grid);
    check_only_changes(&rig.monitor, &dc);
    // Also every single value, path by path, against every served reading.
    for (service, addr, e) in [(&grid, 1, ""), (&dc, 2, "/History/EnergyOut")] {
        let readings = served(&sim, addr);
        for s in rig.monitor.items_changed(service) {
            let Event::ItemsChanged { changes, .. } = &s.event else {
                unreachable!()
            };
            for (path, v) in changes {
                if v.is_invalid()
                    || !(path.starts_with("/Ac/") || path.starts_with("/Dc/") || path.starts_with("/History/"))
                {
                    continue;
                }
                assert!(
                    readings
                        .iter()
                        .any(|r| derived(r, e, 0).iter().any(|(p, want)| p == path && same(v, want))),
                    "{service}: {path} = {v:?} was never held by the simulator"
                );
            }
        }
    }
    assert!(
        a >= 5 && b >= 5,
        "too few signals to judge: {a}, {b} ({requests} requests)"
    );
    eprintln!("fault injection: {requests} requests, {a} + {b} ItemsChanged checked");
}

#[test]
fn malformed_calls_are_refused_and_the_service_keeps_running() {
    let (_sim, tty) = pty(&[(Model::Pzem014, 1)], 12);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:014:pvinverter"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let pv = service_name("pvinverter", &tty, 1);
    rig.monitor.wait_connected(&pv, 10 * SECOND);
    let c = &mut rig.monitor.client;
    // Wrong types and values: refused with a non-zero code.
    assert_ne!(c.set_value(&pv, "/Role", &Value::Int(3)).unwrap(), 0, "int role");
    assert_ne!(c.set_value(&pv, "/Role", &"battery".into()).unwrap(), 0, "unknown role");
    assert_ne!(
        c.set_value(&pv, "/Role", &"dcload".into()).unwrap(),
        0,
        "DC role on AC meter"
    );
    assert_ne!(c.set_value(&pv, "/Role", &Value::Invalid).unwrap(), 0, "invalid role");
    assert_ne!(c.set_value(&pv, "/Position", &Value::Int(3)).unwrap(), 0, "position 3");
    assert_ne!(
        c.set_value(&pv, "/Position", &Value::Int(-1)).unwrap(),
        0,
        "position -1"
    );
    assert_ne!(
        c.set_value(&pv, "/Position", &Value::Double(1.5)).unwrap(),
        0,
        "position 1.5"
    );
    assert_ne!(
        c.set_value(&pv, "/Position", &"1".into()).unwrap(),
        0,
        "position as text"
    );
    assert_ne!(
        c.set_value(&pv, "/CustomName", &Value::Int(1)).unwrap(),
        0,
        "name as int"
    );
    assert_ne!(
        c.set_value(&pv, "/CustomName", &Value::from("x".repeat(300).as_str()))
            .unwrap(),
        0,
        "300-byte name"
    );
    assert_eq!(
        c.set_value(&pv, "/Position", &Value::Int(2)).unwrap(),
        0,
        "AC input 2 is fine"
    );
    // Unknown paths and GetItems off the root: D-Bus errors.
    for (path, member) in [("/Nope", "GetValue"), ("/Ac/L9/Power", "SetValue"), ("/Ac", "GetItems")] {
        let conn = dbus::blocking::Connection::new_address(rig.bus.address()).unwrap();
        let proxy = conn.with_proxy(pv.as_str(), path, Duration::from_secs(5));
        let r: Result<(), dbus::Error> = if member == "SetValue" {
            proxy.method_call("com.victronenergy.BusItem", member, (dbus::arg::Variant(1i32),))
        } else {
            proxy.method_call("com.victronenergy.BusItem", member, ())
        };
        let e = r.expect_err("refused");
        let want = if path == "/Ac" {
            "UnknownMethod"
        } else {
            "UnknownObject"
        };
        assert!(e.name().unwrap_or("").ends_with(want), "{path} {member}: {e:?}");
    }
    // SetValue without a variant, with two arguments.
    let conn = dbus::blocking::Connection::new_address(rig.bus.address()).unwrap();
    let proxy = conn.with_proxy(pv.as_str(), "/Role", Duration::from_secs(5));
    let r: Result<(i32,), _> = proxy.method_call("com.victronenergy.BusItem", "SetValue", ("acload",));
    assert!(r.is_err(), "SetValue with a bare string");
    let r: Result<(i32,), _> = proxy.method_call(
        "com.victronenergy.BusItem",
        "SetValue",
        (dbus::arg::Variant("acload"), 1i32),
    );
    assert!(r.is_err(), "SetValue with two arguments");
    // Still there, unchanged, and answering.
    rig.monitor.pump_for(Duration::from_millis(500));
    assert_eq!(p.try_exit(), None, "{}", p.log_text());
    let items = rig.monitor.client.get_items(&pv).unwrap();
    assert_eq!(items["/Role"], Value::from("pvinverter"));
    assert_eq!(items["/Position"], Value::Int(2));
    assert_eq!(items["/Connected"], Value::Int(1));
    assert!(rig.monitor.view.contains_key(&pv));
    let log = p.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn without_localsettings_it_runs_with_the_configured_role() {
    let (sim, tty) = pty(&[(Model::Pzem017, 3), (Model::Pzem016, 4)], 13);
    let mut rig = Rig::new(false);
    let args = rig.args(
        &["-d", &tty],
        &["3:017:alternator", "4:016:genset"],
        &["--settings-wait", "1"],
    );
    let mut p = rig.start(BIN, "pzem", &args);
    let alt = service_name("alternator", &tty, 3);
    let genset = service_name("genset", &tty, 4);
    rig.monitor.wait_connected(&alt, 10 * SECOND);
    rig.monitor.wait_connected(&genset, 5 * SECOND);
    assert!(
        p.started.elapsed() >= Duration::from_millis(900),
        "did not wait for localsettings"
    );
    let log = p.log_text();
    assert!(log.contains("com.victronenergy.settings did not appear"), "{log}");
    let items = rig.monitor.client.get_items(&alt).unwrap();
    assert_eq!(items["/DeviceInstance"], Value::Int(40));
    assert_eq!(items["/Role"], Value::from("alternator"));
    assert!(items.contains_key("/History/EnergyOut"));
    rig.monitor.pump_for(SECOND);
    check_every_state_was_served(&rig.monitor, &sim, &alt, 3, "/History/EnergyOut", 0);
    check_every_state_was_served(&rig.monitor, &sim, &genset, 4, "", 0);
    // GUI writes still work in memory.
    assert_eq!(
        rig.monitor
            .client
            .set_value(&alt, "/CustomName", &"Alt".into())
            .unwrap(),
        0
    );
    assert_eq!(
        rig.monitor.client.get_value(&alt, "/CustomName").unwrap(),
        Value::from("Alt")
    );
    assert_eq!(p.try_exit(), None);
}

#[test]
fn rtu_over_tcp() {
    let sim = SimServer::tcp(
        "127.0.0.1:0",
        TcpFraming::Rtu,
        line(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 14),
        Pacing::NONE,
    )
    .unwrap();
    let addr = sim.local_addr().unwrap().to_string();
    let mut rig = Rig::new(true);
    let args = rig.args(&["--tcp", &addr], &["1:016:grid", "2:017:dcload"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let port: String = addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let grid = format!("com.victronenergy.grid.pzem_{port}_1");
    let dc = format!("com.victronenergy.dcload.pzem_{port}_2");
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    let items = rig.monitor.client.get_items(&grid).unwrap();
    assert_eq!(
        items["/Mgmt/Connection"],
        Value::from(format!("Modbus RTU over TCP {addr}:1").as_str())
    );
    check_every_state_was_served(&rig.monitor, &sim, &grid, 1, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &dc, 2, "/History/EnergyIn", 0);
    assert_eq!(p.try_exit(), None);
}

#[test]
fn auto_models_are_probed() {
    let (sim, tty) = pty(&[(Model::Pzem016, 1), (Model::Pzem017, 2)], 15);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1:auto", "2:auto:dcload"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let (grid, dc) = (service_name("grid", &tty, 1), service_name("dcload", &tty, 2));
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    assert_eq!(
        rig.monitor.get(&grid, "/ProductName"),
        Some(&Value::from("PZEM AC meter"))
    );
    assert_eq!(
        rig.monitor.get(&dc, "/ProductName"),
        Some(&Value::from("PZEM DC meter"))
    );
    check_every_state_was_served(&rig.monitor, &sim, &grid, 1, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &dc, 2, "/History/EnergyIn", 0);
    assert_eq!(p.try_exit(), None);
}

#[test]
fn meters_from_a_config_file() {
    let (sim, tty) = pty(&[(Model::Pzem016, 4), (Model::Pzem017, 7)], 16);
    let mut rig = Rig::new(true);
    let conf = rig.dir.path().join("pzem.conf");
    std::fs::write(
        &conf,
        "# two meters\n4  016  pvinverter\n7:017:alternator  # on the engine\n",
    )
    .unwrap();
    let args = rig.args(&["-d", &tty, "-c", conf.to_str().unwrap()], &[], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let (pv, alt) = (service_name("pvinverter", &tty, 4), service_name("alternator", &tty, 7));
    rig.monitor.wait_connected(&pv, 10 * SECOND);
    rig.monitor.wait_connected(&alt, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    assert_eq!(rig.monitor.get(&pv, "/Position"), Some(&Value::Int(0)));
    check_every_state_was_served(&rig.monitor, &sim, &pv, 4, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &alt, 7, "/History/EnergyOut", 0);
    assert_eq!(p.try_exit(), None);
}

#[test]
fn each_line_gets_its_own_config_section_with_names_and_timing() {
    let (sim, tty) = pty(&[(Model::Pzem016, 4), (Model::Pzem017, 7)], 19);
    let port = tty.rsplit('/').next().unwrap();
    let mut rig = Rig::new(true);
    let conf = rig.dir.path().join("pzem.conf");
    std::fs::write(
        &conf,
        format!(
            "# for lines without their own section\n1 016 grid\n\
             [meters ttyOTHER]\n9 016 grid\n\
             [meters {port}]\ninterval-ms = 100\n4 016 pvinverter Roof array\n7:017:alternator\n"
        ),
    )
    .unwrap();
    // Without -i: the section's interval applies.
    let mut args = rig.args(&["-d", &tty, "-c", conf.to_str().unwrap()], &[], &[]);
    let i = args.iter().position(|a| a == "-i").unwrap();
    args.drain(i..i + 2);
    let mut p = rig.start(BIN, "pzem", &args);
    let (pv, alt) = (service_name("pvinverter", &tty, 4), service_name("alternator", &tty, 7));
    rig.monitor.wait_connected(&pv, 10 * SECOND);
    rig.monitor.wait_connected(&alt, 10 * SECOND);
    assert_eq!(rig.monitor.get(&pv, "/CustomName"), Some(&Value::from("Roof array")));
    assert_eq!(rig.monitor.get(&alt, "/CustomName"), Some(&Value::from("")));
    let before = rig.monitor.items_changed(&pv).count();
    rig.monitor.pump_for(2 * SECOND);
    let polls = rig.monitor.items_changed(&pv).count() - before;
    assert!(
        polls >= 8,
        "interval-ms = 100 should give ~20 updates in 2 s, not {polls}"
    );
    let names = rig.monitor.client.list_services().unwrap();
    assert!(
        !names.iter().any(|n| n.ends_with("_1") || n.ends_with("_9")),
        "meters of other sections published: {names:?}"
    );
    check_every_state_was_served(&rig.monitor, &sim, &pv, 4, "", 0);
    assert_eq!(p.try_exit(), None);
}

#[test]
fn without_meters_the_factory_address_is_probed() {
    let (sim, tty) = pty(&[(Model::Pzem017, 1)], 17);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty, "-c", "/nonexistent/pzem.conf"], &[], &[]);
    // An explicit config file that cannot be read is a usage error...
    let mut p = rig.start(BIN, "bad", &args);
    assert_eq!(p.wait_exit(5 * SECOND), Some(2));
    // ...while no -m and no -c probes address 1 (as DC here: role dcsource).
    let args = rig.args(&["-d", &tty], &[], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let dc = service_name("dcsource", &tty, 1);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    check_every_state_was_served(&rig.monitor, &sim, &dc, 1, "/History/EnergyOut", 0);
    assert_eq!(p.try_exit(), None);
}

#[test]
fn modbus_tcp_gateway() {
    let sim = SimServer::tcp(
        "127.0.0.1:0",
        TcpFraming::Mbap,
        line(&[(Model::Pzem016, 3)], 18),
        Pacing::NONE,
    )
    .unwrap();
    let addr = sim.local_addr().unwrap().to_string();
    let mut rig = Rig::new(true);
    let args = rig.args(&["--tcp", &addr, "--modbus-tcp"], &["3:016:genset"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let port: String = addr
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let genset = format!("com.victronenergy.genset.pzem_{port}_3");
    rig.monitor.wait_connected(&genset, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    let items = rig.monitor.client.get_items(&genset).unwrap();
    assert_eq!(
        items["/Mgmt/Connection"],
        Value::from(format!("Modbus TCP {addr}:3").as_str())
    );
    check_every_state_was_served(&rig.monitor, &sim, &genset, 3, "", 0);
    assert_eq!(p.try_exit(), None);
}

/// Values of `path` in a GetItems answer, as a number.
fn num(items: &BTreeMap<String, Value>, path: &str) -> Option<f64> {
    match items.get(path) {
        Some(Value::Double(d)) => Some(*d),
        _ => None,
    }
}

#[test]
fn three_single_phase_meters_as_one_three_phase_meter() {
    let meters = [
        (Model::Pzem016, 1),
        (Model::Pzem016, 2),
        (Model::Pzem016, 3),
        (Model::Pzem017, 9),
    ];
    let (sim, tty) = pty(&meters, 21);
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &["1+2+3:016:grid", "9:017:dcsource"], &[]);
    let mut p = rig.start(BIN, "pzem", &args);
    let (grid, dc) = (service_name("grid", &tty, 1), service_name("dcsource", &tty, 9));
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(Duration::from_millis(600));
    let names = rig.monitor.client.list_services().unwrap();
    for a in [2, 3] {
        assert!(
            !names.iter().any(|n| n.ends_with(&format!("_{a}"))),
            "a service for address {a}: {names:?}"
        );
    }

    // One service, three phases; the totals are the sums of what the phases publish.
    let items = rig.monitor.client.get_items(&grid).unwrap();
    assert_eq!(items["/NrOfPhases"], Value::Int(3));
    let phase = |l: u8, leaf: &str| num(&items, &format!("/Ac/L{l}/{leaf}")).unwrap_or_else(|| panic!("L{l} {leaf}"));
    let sum = |leaf: &str| (1..=3).map(|l| phase(l, leaf)).sum::<f64>();
    assert!(
        (num(&items, "/Ac/Power").unwrap() - sum("Power")).abs() < 1e-6,
        "{items:?}"
    );
    assert!((num(&items, "/Ac/Energy/Forward").unwrap() - sum("Energy/Forward")).abs() < 1e-6);
    // The meters started at 12.345, 24.690, 37.035 kWh: kWh, not Wh, and each phase its own.
    assert!(
        (sum("Energy/Forward") - 74.07).abs() < 0.05,
        "{}",
        sum("Energy/Forward")
    );
    let (p_total, s_total) = (1..=3).fold((0.0, 0.0), |(p, s), l| {
        (p + phase(l, "Power"), s + phase(l, "Voltage") * phase(l, "Current"))
    });
    let pf = num(&items, "/Ac/PowerFactor").unwrap();
    assert!(
        (pf - (p_total / s_total).clamp(0.0, 1.0)).abs() < 1e-9,
        "pf {pf}, P {p_total}, S {s_total}"
    );
    // Each phase shows a reading its own meter served (raw registers, independently converted).
    for l in 1..=3u8 {
        let shown = served(&sim, l).iter().any(|r| {
            let Reading::Ac(r) = r else { return false };
            (phase(l, "Voltage") - f64::from(r.voltage_dv) / 10.0).abs() < 1e-9
                && (phase(l, "Power") - f64::from(r.power_dw) / 10.0).abs() < 1e-9
        });
        assert!(shown, "L{l} shows no reading meter {l} served");
    }

    // L2 goes silent: its paths and the totals become invalid, L1 and L3 stay valid.
    sim.bus().meter_mut(2).unwrap().silent = true;
    rig.monitor.until(5 * SECOND, "L2 and the totals invalidated", |m| {
        m.get(&grid, "/Ac/L2/Power") == Some(&Value::Invalid) && m.get(&grid, "/Ac/Power") == Some(&Value::Invalid)
    });
    rig.monitor.pump_for(Duration::from_millis(500));
    let items = rig.monitor.client.get_items(&grid).unwrap();
    for leaf in ["Voltage", "Current", "Power", "PowerFactor", "Energy/Forward"] {
        assert_eq!(items[&format!("/Ac/L2/{leaf}")], Value::Invalid, "L2 {leaf}");
        assert!(num(&items, &format!("/Ac/L1/{leaf}")).is_some() && num(&items, &format!("/Ac/L3/{leaf}")).is_some());
    }
    for total in ["/Ac/Power", "/Ac/Energy/Forward", "/Ac/PowerFactor"] {
        assert_eq!(items[total], Value::Invalid, "{total}");
    }
    assert!(num(&items, "/Ac/Frequency").is_some(), "the frequency is L1's");
    assert_eq!(items["/Connected"], Value::Int(1));
    assert!(p.log_text().contains("phase L2"), "{}", p.log_text());
    // And back.
    sim.bus().meter_mut(2).unwrap().silent = false;
    rig.monitor.until(5 * SECOND, "totals back", |m| {
        matches!(m.get(&grid, "/Ac/Power"), Some(Value::Double(_)))
    });

    // A reset of one phase's counter: its energy and the total never go back.
    let before = num(&rig.monitor.client.get_items(&grid).unwrap(), "/Ac/Energy/Forward").unwrap();
    sim.bus().meter_mut(3).unwrap().set_energy_wh(0);
    rig.monitor.pump_for(2 * SECOND);
    let energies: Vec<f64> = rig
        .monitor
        .items_changed(&grid)
        .filter_map(|s| match &s.event {
            Event::ItemsChanged { changes, .. } => changes
                .iter()
                .find(|(k, _)| k == "/Ac/Energy/Forward")
                .and_then(|(_, v)| v.as_f64()),
            _ => None,
        })
        .collect();
    assert!(energies.windows(2).all(|w| w[1] >= w[0]), "{energies:?}");
    assert!(*energies.last().unwrap() >= before);

    // The group switches role as one meter.
    assert_eq!(
        rig.monitor.client.set_value(&grid, "/Role", &"acload".into()).unwrap(),
        0
    );
    let acload = service_name("acload", &tty, 1);
    rig.monitor.wait_connected(&acload, 5 * SECOND);
    let items = rig.monitor.client.get_items(&acload).unwrap();
    assert_eq!(items["/NrOfPhases"], Value::Int(3));
    assert!(num(&items, "/Ac/L3/Power").is_some());
    assert_eq!(p.try_exit(), None, "{}", p.log_text());
    assert_eq!(p.terminate(), Some(0));
}

/// Waits until `name` has an owner on the bus (a new run's service, not a cached one).
fn wait_owner(rig: &mut Rig, name: &str) {
    let deadline = Instant::now() + 10 * SECOND;
    while rig.monitor.client.name_owner(name).unwrap().is_none() {
        assert!(Instant::now() < deadline, "{name} did not appear");
        rig.monitor.pump_for(Duration::from_millis(50));
    }
}

/// The discovery memory file of the line `tty` in the rig's state directory.
fn memory_file(rig: &Rig, tty: &str) -> std::path::PathBuf {
    let port = settings_id(tty, 1);
    let port = port.strip_suffix("_1").unwrap();
    rig.dir.path().join("energy").join(format!("{port}.discovered"))
}

#[test]
fn discovery_publishes_meters_at_3_and_7_and_remembers_the_silent_one() {
    let (sim, tty) = pty(&[(Model::Pzem016, 3), (Model::Pzem017, 7)], 22);
    let mut rig = Rig::new(true);
    let bare = rig.args(&["-d", &tty], &[], &[]);
    let (grid, dc) = (service_name("grid", &tty, 3), service_name("dcsource", &tty, 7));
    let mut p = rig.start(BIN, "scan1", &bare);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    check_every_state_was_served(&rig.monitor, &sim, &grid, 3, "", 0);
    check_every_state_was_served(&rig.monitor, &sim, &dc, 7, "/History/EnergyOut", 0);
    assert!(memory_file(&rig, &tty).exists(), "{}", p.log_text());
    assert_eq!(p.terminate(), Some(0));

    // Next start: the DC meter is silent (say, its supply is off); it is still published.
    sim.bus().meter_mut(7).unwrap().silent = true;
    let mut p = rig.start(BIN, "scan2", &bare);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    wait_owner(&mut rig, &dc);
    let items = rig.monitor.client.get_items(&dc).unwrap();
    assert_eq!(items["/Connected"], Value::Int(0));
    assert_eq!(items["/Dc/0/Power"], Value::Invalid);
    assert_eq!(items["/History/EnergyOut"], Value::Invalid);
    // It answers again: values come.
    sim.bus().meter_mut(7).unwrap().silent = false;
    rig.monitor.wait_connected(&dc, 10 * SECOND);
    assert_eq!(p.terminate(), Some(0));

    // --forget clears the memory of this line, and exits.
    let mut forget = bare.clone();
    forget.push("--forget".into());
    let mut f = rig.start(BIN, "forget", &forget);
    assert_eq!(f.wait_exit(5 * SECOND), Some(0), "{}", f.log_text());
    assert!(
        f.log_text().contains("forgot the DC meter at address 7"),
        "{}",
        f.log_text()
    );
    assert!(!memory_file(&rig, &tty).exists());
    // Now a silent meter is not published any more.
    sim.bus().meter_mut(7).unwrap().silent = true;
    let mut p = rig.start(BIN, "scan3", &bare);
    rig.monitor.wait_connected(&grid, 10 * SECOND);
    rig.monitor.pump_for(SECOND);
    assert!(
        rig.monitor.client.name_owner(&dc).unwrap().is_none(),
        "forgotten, silent, not published"
    );
    assert_eq!(p.terminate(), Some(0));
}

#[test]
fn an_empty_bus_is_scanned_in_under_4_s_and_exits_1() {
    // Real 9600-baud timing; nothing answers and nothing is remembered.
    let sim = SimServer::pty(line(&[], 23), Pacing::real(pzem::StopBits::Two)).unwrap();
    let tty = sim.path().unwrap().to_owned();
    let rig = Rig::new(true);
    let mut p = rig.start(BIN, "empty", &rig.args(&["-d", &tty], &[], &[]));
    let code = p.wait_exit(10 * SECOND);
    let took = p.started.elapsed();
    assert_eq!(code, Some(1), "{}", p.log_text());
    assert!(took < Duration::from_secs(4), "the scan of 1-32 took {took:?}");
    assert!(p.log_text().contains("none is remembered"), "{}", p.log_text());
    eprintln!("empty scan of 1-32 and exit: {took:?}");
}

#[test]
fn a_meter_silent_for_30_days_is_forgotten() {
    use pzem::venus::discovery::Memory;
    let (_sim, tty) = pty(&[(Model::Pzem016, 3)], 24);
    let mut rig = Rig::new(true);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut memory = Memory::default();
    memory.seen(pzem::Address::unit(5).unwrap(), pzem::Family::Ac, now - 31 * 86_400);
    memory.seen(pzem::Address::unit(6).unwrap(), pzem::Family::Dc, now - 29 * 86_400);
    let file = memory_file(&rig, &tty);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, memory.to_text()).unwrap();
    let mut p = rig.start(BIN, "old", &rig.args(&["-d", &tty, "--discover", "1-4"], &[], &[]));
    rig.monitor.wait_connected(&service_name("grid", &tty, 3), 10 * SECOND);
    wait_owner(&mut rig, &service_name("dcsource", &tty, 6));
    let log = p.log_text();
    assert!(log.contains("forgetting the AC meter at address 5"), "{log}");
    assert!(
        rig.monitor
            .client
            .name_owner(&service_name("acload", &tty, 5))
            .unwrap()
            .is_none()
    );
    let kept = Memory::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let kept: Vec<u8> = kept.meters().iter().map(|m| m.address.get()).collect();
    assert_eq!(kept, vec![3, 6], "5 forgotten, 3 found, 6 still remembered");
    assert_eq!(p.terminate(), Some(0));
}
