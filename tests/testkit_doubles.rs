//! The testkit's device doubles behave as venus-conventions.md describes the devices: a
//! battery monitor announcing changes with `ItemsChanged` only (veutil), a real Multi's
//! vebus service, the system service; and the systemcalc selection helper on the bus.

use pzem::dbus::testkit::systemcalc::{auto_battery_service, the_multi, vebus_devices};
use pzem::dbus::testkit::{DeviceDouble, MULTI_INSTANCE, MULTI_MK2_CONNECTION, PrivateBus, SYSTEM_SERVICE};
use pzem::dbus::{BusClient, Event, Value, Waiter, Watchable};
use std::time::{Duration, Instant};

const BATTERY: &str = "com.victronenergy.battery.ttyO2";
const MULTI: &str = "com.victronenergy.vebus.ttyS4";

#[test]
fn the_battery_monitor_announces_with_items_changed_only() {
    let bus = PrivateBus::start().unwrap();
    let battery = DeviceDouble::battery(&bus.bus(), BATTERY, 512, 12.34).unwrap();
    assert_eq!(battery.name(), BATTERY);
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&["com.victronenergy.battery."]).unwrap();
    let items = client.get_items(BATTERY).unwrap();
    assert_eq!(items["/History/DischargedEnergy"], Value::Double(12.34));
    assert_eq!(items["/History/ChargedEnergy"], Value::Double(0.0));
    assert_eq!(items["/DeviceInstance"], Value::Int(512));
    assert_eq!(items["/Dc/0/Temperature"], Value::Invalid);
    assert_eq!(
        client.get_text(BATTERY, "/History/DischargedEnergy").unwrap(),
        "12.34 kWh"
    );
    battery
        .set(&[
            ("/History/DischargedEnergy", Value::Double(12.35)),
            ("/Dc/0/Current", Value::Double(-10.0)),
        ])
        .unwrap();
    assert!(battery.set(&[("/Nope", Value::Int(1))]).is_err());
    assert_eq!(battery.value("/History/DischargedEnergy"), Some(Value::Double(12.35)));
    // Read-only, as the device's own paths are.
    assert_ne!(
        client
            .set_value(BATTERY, "/History/DischargedEnergy", &Value::Double(0.0))
            .unwrap(),
        0
    );
    let (mut waiter, _w) = Waiter::new().unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while events.is_empty() && Instant::now() < deadline {
        waiter
            .wait([&client as &dyn Watchable], Some(Duration::from_millis(100)))
            .unwrap();
        client.poll_events(&mut events).unwrap();
    }
    let [Event::ItemsChanged { service, changes }] = &events[..] else {
        panic!("one ItemsChanged expected: {events:?}");
    };
    assert_eq!(service, BATTERY);
    assert_eq!(changes.len(), 2);
    drop(battery);
    assert!(!client.list_services().unwrap().contains(&BATTERY.to_string()));
}

#[test]
fn systemcalc_keeps_the_onboard_multi() {
    let bus = PrivateBus::start().unwrap();
    let _multi = DeviceDouble::multi(&bus.bus(), MULTI, MULTI_INSTANCE, MULTI_MK2_CONNECTION).unwrap();
    let system = DeviceDouble::system(&bus.bus(), None).unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    let items = client.get_items(MULTI).unwrap();
    assert_eq!(items["/Interfaces/Mk2/Connection"], Value::from("/dev/ttyS4"));
    assert!(
        !items.keys().any(|p| p.starts_with("/Energy/")),
        "an older Multi has no counters"
    );
    assert_eq!(
        client.get_value(SYSTEM_SERVICE, "/Dc/Battery/BatteryService").unwrap(),
        Value::Invalid
    );
    system
        .set(&[("/Dc/Battery/BatteryService", Value::from(BATTERY))])
        .unwrap();
    assert_eq!(
        client.get_value(SYSTEM_SERVICE, "/Dc/Battery/BatteryService").unwrap(),
        Value::from(BATTERY)
    );

    // A second vebus service below the real one, on a ttyUSB-style connection.
    let _low = DeviceDouble::multi(&bus.bus(), "com.victronenergy.vebus.fake", 0, "/dev/ttyUSB-fake").unwrap();
    let devices = vebus_devices(&mut client).unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(the_multi(&devices).unwrap().service, MULTI);
    assert_eq!(
        auto_battery_service(&devices).unwrap().service,
        "com.victronenergy.vebus.fake"
    );
}
