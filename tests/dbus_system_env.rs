//! `Bus::System` honours `DBUS_SYSTEM_BUS_ADDRESS`, so the unchanged driver can be pointed at
//! a private daemon (venus-conventions.md §1, §10). Alone in its test binary because it
//! changes the process environment.

use pzem::dbus::testkit::PrivateBus;
use pzem::dbus::{Bus, BusClient, Format, Kind, Service, TreeBuilder};

#[test]
fn system_bus_follows_the_environment() {
    let bus = PrivateBus::start().unwrap();
    // SAFETY: the only test in this binary; no other thread reads the environment now.
    unsafe { std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", bus.address()) };
    let mut tree = TreeBuilder::new();
    tree.add("/DeviceInstance", Kind::Int, Format::Plain).value(7);
    let _service = Service::new(&Bus::System, "com.victronenergy.grid.env", tree.build().unwrap()).unwrap();
    // Seen on the private bus through an explicit address.
    let mut client = BusClient::new(&bus.bus()).unwrap();
    assert_eq!(client.list_services().unwrap(), ["com.victronenergy.grid.env"]);
    // Bus::from_flag: no flag means the system bus.
    assert_eq!(Bus::from_flag(None), Bus::System);
    let mut system = BusClient::new(&Bus::from_flag(None)).unwrap();
    assert!(system.name_owner("com.victronenergy.grid.env").unwrap().is_some());
}
