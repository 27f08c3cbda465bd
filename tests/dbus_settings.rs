//! The com.victronenergy.settings double behaves as localsettings does for a driver (§5),
//! exercised through `BusClient` and raw messages.

use pzem::dbus::testkit::{PrivateBus, SettingsDouble};
use pzem::dbus::{BusClient, Event, Setting, SettingResult, Value};
use std::time::Duration;

const SETTINGS: &str = "com.victronenergy.settings";

fn instance(id: &str) -> String {
    format!("/Settings/Devices/{id}/ClassAndVrmInstance")
}

fn ok(path: &str, value: &str) -> SettingResult {
    SettingResult {
        path: path.into(),
        error: 0,
        value: Some(Value::from(value)),
    }
}

/// Events after a round trip to the settings service (its signals precede its reply).
fn events_after_sync(client: &mut BusClient) -> Vec<Event> {
    client.get_items(SETTINGS).unwrap();
    let mut events = Vec::new();
    client.poll_events(&mut events).unwrap();
    events
}

#[test]
fn device_instances_are_allocated_per_class() {
    let bus = PrivateBus::start().unwrap();
    let settings = SettingsDouble::start(&bus.bus()).unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.wait_for_name(SETTINGS, Duration::from_secs(5)).unwrap();

    let (a, b, c) = (instance("pzem_a"), instance("pzem_b"), instance("pzem_c"));
    let r = client
        .add_settings(&[
            Setting::new(&a, "grid:40"),
            Setting::new(&b, "grid:40"),
            Setting::new(&c, "acload:40"),
        ])
        .unwrap();
    assert_eq!(r, [ok(&a, "grid:40"), ok(&b, "grid:41"), ok(&c, "acload:40")]);

    // Adding again keeps the stored value, whatever the default says now.
    let r = client.add_settings(&[Setting::new(&b, "grid:40")]).unwrap();
    assert_eq!(r, [ok(&b, "grid:41")]);
    assert_eq!(settings.value(&b), Some(Value::from("grid:41")));

    // Writing a taken instance moves it up to a free one, and is announced.
    client.subscribe(&[SETTINGS]).unwrap();
    assert_eq!(client.set_value(SETTINGS, &c, &"grid:40".into()).unwrap(), 0);
    assert_eq!(client.get_value(SETTINGS, &c).unwrap(), Value::from("grid:42"));
    assert_eq!(
        events_after_sync(&mut client),
        [Event::PropertiesChanged {
            service: SETTINGS.into(),
            path: c.clone(),
            value: Value::from("grid:42"),
        }]
    );
    // A setting does not collide with itself.
    assert_eq!(client.set_value(SETTINGS, &b, &"grid:41".into()).unwrap(), 0);
    assert_eq!(client.get_value(SETTINGS, &b).unwrap(), Value::from("grid:41"));
    assert_eq!(events_after_sync(&mut client), [], "unchanged: no signal");
}

#[test]
fn types_paths_and_ranges() {
    let bus = PrivateBus::start().unwrap();
    let settings = SettingsDouble::start(&bus.bus()).unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();

    let mut pos = Setting::new("/Settings/Devices/pzem_a/Position", 0);
    pos.min = Some(Value::Int(0));
    pos.max = Some(Value::Int(2));
    let r = client
        .add_settings(&[
            pos,
            Setting::new("/Settings/Devices/pzem_a/CustomName", ""),
            Setting::new("/Settings/Devices/pzem_a/Scale", 1.5),
            Setting::new("/Devices/pzem_a/Oops", 1),
        ])
        .unwrap();
    assert_eq!(r[0].error, 0);
    assert_eq!(r[0].value, Some(Value::Int(0)));
    assert_eq!(r[1].value, Some(Value::from("")));
    assert_eq!(r[2].value, Some(Value::Double(1.5)));
    assert_eq!(r[3].error, -9, "outside /Settings");

    let p = "/Settings/Devices/pzem_a/Position";
    assert_eq!(client.set_value(SETTINGS, p, &Value::Int(2)).unwrap(), 0);
    assert_eq!(client.set_value(SETTINGS, p, &Value::Int(3)).unwrap(), -1, "above max");
    assert_eq!(client.set_value(SETTINGS, p, &"x".into()).unwrap(), -1, "wrong type");
    assert_eq!(client.get_value(SETTINGS, p).unwrap(), Value::Int(2));
    assert_eq!(client.get_text(SETTINGS, p).unwrap(), "2");
    let name = "/Settings/Devices/pzem_a/CustomName";
    assert_eq!(client.set_value(SETTINGS, name, &"Shed".into()).unwrap(), 0);
    assert_eq!(settings.value(name), Some(Value::from("Shed")));

    let items = client.get_items(SETTINGS).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[p], Value::Int(2));
    let e = client.get_value(SETTINGS, "/Settings/Nope").unwrap_err();
    assert_eq!(e.dbus_name(), Some("org.freedesktop.DBus.Error.UnknownObject"));
}

#[test]
fn bool_and_unsigned_defaults_are_refused_and_paths_are_relative() {
    let bus = PrivateBus::start().unwrap();
    let settings = SettingsDouble::start(&bus.bus()).unwrap();
    let conn = dbus::blocking::Connection::new_address(bus.address()).unwrap();
    let add = |object: &str, path: &str, default: Box<dyn dbus::arg::RefArg>| {
        let mut d: std::collections::HashMap<&str, dbus::arg::Variant<Box<dyn dbus::arg::RefArg>>> =
            std::collections::HashMap::new();
        d.insert("path", dbus::arg::Variant(Box::new(path.to_owned())));
        d.insert("default", dbus::arg::Variant(default));
        let proxy = conn.with_proxy(SETTINGS, object, Duration::from_secs(5));
        let (r,): (Vec<dbus::arg::PropMap>,) = proxy
            .method_call("com.victronenergy.Settings", "AddSettings", (vec![d],))
            .unwrap();
        let error = r[0]["error"].0.as_i64().unwrap();
        (error, r[0].get("value").and_then(|v| v.0.as_str().map(str::to_owned)))
    };
    assert_eq!(add("/", "/Settings/X/Flag", Box::new(true)).0, -3, "bool");
    assert_eq!(add("/", "/Settings/X/U", Box::new(3u32)).0, -3, "u");
    assert_eq!(add("/", "/Settings/X/Y", Box::new(3u8)).0, -3, "y");
    assert_eq!(add("/", "/Settings/X/N", Box::new(3i16)).0, -3, "n");
    assert_eq!(add("/", "/Settings/X/Bad-Name", Box::new(1i32)).0, -4);
    assert_eq!(add("/", "/Settings/X/I", Box::new(1i64)).0, 0, "x is int");
    // The §5 pitfall, reproduced: paths are relative to the object called.
    assert_eq!(
        add(
            "/Settings/Devices",
            "/Settings/Devices/x/Name",
            Box::new("n".to_owned())
        ),
        (0, Some("n".into()))
    );
    assert_eq!(
        settings.paths(),
        ["/Settings/Devices/Settings/Devices/x/Name", "/Settings/X/I"]
    );
}

#[test]
fn double_stops_on_drop_and_releases_its_name() {
    let bus = PrivateBus::start().unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    let settings = SettingsDouble::start(&bus.bus()).unwrap();
    assert!(client.name_owner(SETTINGS).unwrap().is_some());
    drop(settings);
    // The daemon notices the closed socket asynchronously: allow it a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client.name_owner(SETTINGS).unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "name still owned");
        std::thread::sleep(Duration::from_millis(10));
    }
    // And it can be started again on the same bus.
    let _again = SettingsDouble::start(&bus.bus()).unwrap();
}

/// A restarted bus daemon (same socket path, new GUID): the old connections fail, a client
/// with the new address gets on, and the double restarted on it serves the settings it
/// held, as localsettings comes back with its file.
#[test]
fn a_restarted_bus_and_settings_keep_the_settings() {
    let mut bus = PrivateBus::start().unwrap();
    let mut settings = SettingsDouble::start(&bus.bus()).unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.wait_for_name(SETTINGS, Duration::from_secs(5)).unwrap();
    let a = instance("pzem_a");
    let r = client.add_settings(&[Setting::new(&a, "grid:40")]).unwrap();
    assert_eq!(r, vec![ok(&a, "grid:40")]);
    assert_eq!(client.set_value(SETTINGS, &a, &Value::from("grid:41")).unwrap(), 0);
    let (old_address, old_pid) = (bus.address().to_owned(), bus.pid());

    bus.restart().unwrap();
    assert_ne!(bus.pid(), old_pid, "a new daemon");
    assert_ne!(bus.address(), old_address, "a new GUID");
    let socket = |a: &str| a.split(',').next().unwrap_or_default().to_owned();
    assert_eq!(socket(bus.address()), socket(&old_address), "the same socket path");
    assert!(client.get_items(SETTINGS).is_err(), "the old connection is gone");

    settings.restart(&bus.bus()).unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.wait_for_name(SETTINGS, Duration::from_secs(5)).unwrap();
    // The value written before the restart, and a default that does not override it.
    let r = client.add_settings(&[Setting::new(&a, "grid:40")]).unwrap();
    assert_eq!(r, vec![ok(&a, "grid:41")]);
    assert_eq!(settings.value(&a), Some(Value::from("grid:41")));
}
