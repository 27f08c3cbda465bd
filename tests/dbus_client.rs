//! Services seen through `pzem::dbus::BusClient`, as Venus consumers see them: start-up reads,
//! batched `ItemsChanged`, one-off `PropertiesChanged`, name ownership.

mod support;
use pzem::dbus::Conn;
use pzem::dbus::testkit::PrivateBus;
use pzem::dbus::{BusClient, BusError, Event, Service, Value, Waiter, Watchable};
use std::time::{Duration, Instant};
use support::*;

/// Events that arrived before a round trip to the service: signals it sent before answering
/// are guaranteed to be in (order per sender), so "no event" can be asserted.
fn events_after_sync(client: &mut BusClient) -> Vec<Event> {
    client.get_value(NAME, "/DeviceInstance").unwrap();
    let mut events = Vec::new();
    client.poll_events(&mut events).unwrap();
    events.retain(|e| !matches!(e, Event::NameOwnerChanged { .. }));
    events
}

#[test]
fn get_items_and_single_values() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut client = BusClient::new(&bus.bus()).unwrap();
    assert_eq!(client.list_services().unwrap(), [NAME]);
    let items = client.get_items(NAME).unwrap();
    assert_eq!(items.len(), 9);
    assert_eq!(items["/DeviceInstance"], Value::Int(40));
    assert_eq!(items["/Ac/L1/Power"], Value::Invalid);
    assert_eq!(items["/Ac/L1/Voltage"], Value::Double(230.14));
    assert_eq!(
        items["/AllowedRoles"],
        Value::StrList(vec!["grid".into(), "acload".into()])
    );
    assert_eq!(client.get_value(NAME, "/ProductName").unwrap(), Value::from("PZEM-016"));
    assert_eq!(client.get_text(NAME, "/Ac/Power").unwrap(), "1.5 W");
    let e = client.get_value(NAME, "/Nope").unwrap_err();
    assert_eq!(e.dbus_name(), Some("org.freedesktop.DBus.Error.UnknownObject"));
    assert!(matches!(client.get_value("not a name", "/"), Err(BusError::BadName(_))));
    assert!(matches!(client.get_value(NAME, "no/slash"), Err(BusError::BadName(_))));
}

#[test]
fn one_items_changed_per_flush_with_only_changed_paths() {
    let bus = PrivateBus::start().unwrap();
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&["com.victronenergy.grid."]).unwrap();

    let sent = svc.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        let volts = s.tree().id("/Ac/L1/Voltage").unwrap();
        let name = s.tree().id("/ProductName").unwrap();
        s.set(power, 2.0);
        s.set(volts, 231.0);
        s.set(power, 2.5);
        s.set(name, "PZEM-016"); // unchanged
        s.flush().unwrap()
    });
    assert!(sent);
    let events = events_after_sync(&mut client);
    assert_eq!(
        events,
        [Event::ItemsChanged {
            service: NAME.into(),
            changes: vec![
                ("/Ac/Power".into(), Value::Double(2.5)),
                ("/Ac/L1/Voltage".into(), Value::Double(231.0)),
            ],
        }]
    );

    // Nothing changed: no signal at all.
    let sent = svc.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        s.set(power, 2.5);
        s.flush().unwrap()
    });
    assert!(!sent);
    assert_eq!(events_after_sync(&mut client), []);

    // Invalidation is a change like any other.
    svc.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        s.set(power, Value::Invalid);
        s.flush().unwrap()
    });
    assert_eq!(
        events_after_sync(&mut client),
        [Event::ItemsChanged {
            service: NAME.into(),
            changes: vec![("/Ac/Power".into(), Value::Invalid)],
        }]
    );
}

#[test]
fn accepted_set_value_emits_properties_changed_only() {
    let bus = PrivateBus::start().unwrap();
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&[]).unwrap();

    assert_eq!(client.set_value(NAME, "/CustomName", &" Shed ".into()).unwrap(), 0);
    assert_eq!(
        events_after_sync(&mut client),
        [Event::PropertiesChanged {
            service: NAME.into(),
            path: "/CustomName".into(),
            value: Value::from("Shed"),
        }]
    );
    // Same value again: accepted, but nothing to announce.
    assert_eq!(client.set_value(NAME, "/CustomName", &"Shed".into()).unwrap(), 0);
    // Refused writes announce nothing either.
    assert_eq!(client.set_value(NAME, "/Position", &Value::Int(9)).unwrap(), 3);
    assert_eq!(client.set_value(NAME, "/DeviceInstance", &Value::Int(9)).unwrap(), 1);
    assert_eq!(client.set_value(NAME, "/Position", &"x".into()).unwrap(), 1);
    assert_eq!(events_after_sync(&mut client), []);
    // The one-off change is not repeated in the next batch.
    assert!(!svc.with(|s| s.flush().unwrap()));
}

/// The name's life cycle as a consumer sees it: `GetItems` sent as soon as
/// `NameOwnerChanged` announces the name already finds `/DeviceInstance`; a second claim
/// fails with `NameTaken`; the name goes away with its connection.
#[test]
fn get_items_on_name_appearing_then_name_taken_then_name_gone() {
    let bus = PrivateBus::start().unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&[]).unwrap();
    let (mut waiter, _waker) = Waiter::new().unwrap();
    let address = bus.bus();
    let starter = std::thread::spawn(move || Running::start(&address, NAME, test_tree(), test_handler));

    // Like dbusmonitor: on NameOwnerChanged, GetItems at once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    let owner = loop {
        assert!(Instant::now() < deadline, "service never appeared");
        waiter
            .wait([&client as &dyn Watchable], Some(Duration::from_secs(1)))
            .unwrap();
        client.poll_events(&mut events).unwrap();
        if let Some(Event::NameOwnerChanged { new_owner: Some(o), .. }) = events
            .iter()
            .find(|e| matches!(e, Event::NameOwnerChanged { name, .. } if name == NAME))
        {
            break o.clone();
        }
    };
    let items = client.get_items(NAME).unwrap();
    assert_eq!(items.get("/DeviceInstance"), Some(&Value::Int(40)));
    assert_eq!(client.service_of(&owner), Some(NAME));
    let svc = starter.join().unwrap();

    // A second claim of the same name fails clearly.
    let tree = test_tree().build().unwrap();
    match Service::new(&bus.bus(), NAME, tree) {
        Err(BusError::NameTaken(n)) => assert_eq!(n, NAME),
        other => panic!("expected NameTaken, got {other:?}"),
    }

    // And it disappears with its connection.
    drop(svc);
    let deadline = Instant::now() + Duration::from_secs(10);
    events.clear();
    loop {
        assert!(Instant::now() < deadline, "service never went away");
        waiter
            .wait([&client as &dyn Watchable], Some(Duration::from_secs(1)))
            .unwrap();
        client.poll_events(&mut events).unwrap();
        if events
            .iter()
            .any(|e| matches!(e, Event::NameOwnerChanged { name, new_owner: None, .. } if name == NAME))
        {
            break;
        }
    }
    assert_eq!(client.service_of(&owner), None);
}

#[test]
fn signals_read_during_a_blocking_call_do_not_stall_the_waiter() {
    let bus = PrivateBus::start().unwrap();
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut client = BusClient::new(&bus.bus()).unwrap();
    client.subscribe(&[]).unwrap();
    let (mut waiter, _waker) = Waiter::new().unwrap();
    svc.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        s.set(power, 7.0);
        s.flush().unwrap()
    });
    // This call's reply comes after the signal, so libdbus reads the signal while waiting
    // for it; poll(2) on the socket alone would no longer report it.
    client.get_value(NAME, "/DeviceInstance").unwrap();
    assert!(client.has_backlog());
    let t = Instant::now();
    let w = waiter
        .wait([&client as &dyn Watchable], Some(Duration::from_secs(20)))
        .unwrap();
    assert!(w.bus && t.elapsed() < Duration::from_secs(5));
    let mut events = Vec::new();
    client.poll_events(&mut events).unwrap();
    assert!(matches!(&events[..], [Event::ItemsChanged { .. }]), "{events:?}");
}

#[test]
fn get_items_falls_back_to_get_value_on_root() {
    // A minimal old-style service that only answers GetValue on "/".
    let bus = PrivateBus::start().unwrap();
    let mut conn = Conn::open(&bus.bus()).unwrap();
    conn.request_name("com.victronenergy.battery.old").unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut answered = 0;
        while answered < 2 && Instant::now() < deadline {
            let Some(m) = conn.next_message().unwrap() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            if m.msg_type() != dbus::MessageType::MethodCall {
                continue;
            }
            let reply = match (&*m.path().unwrap(), &*m.member().unwrap()) {
                ("/", "GetValue") => {
                    let mut d = std::collections::HashMap::new();
                    d.insert(
                        "Soc",
                        dbus::arg::Variant(Box::new(55.5f64) as Box<dyn dbus::arg::RefArg>),
                    );
                    d.insert(
                        "DeviceInstance",
                        dbus::arg::Variant(Box::new(512i32) as Box<dyn dbus::arg::RefArg>),
                    );
                    m.return_with_args((dbus::arg::Variant(d),))
                }
                _ => m.error(&"org.freedesktop.DBus.Error.UnknownMethod".into(), c"no"),
            };
            conn.send(reply).unwrap();
            conn.flush();
            answered += 1;
        }
    });
    let mut client = BusClient::new(&bus.bus()).unwrap();
    let items = client.get_items("com.victronenergy.battery.old").unwrap();
    assert_eq!(items.get("/Soc"), Some(&Value::Double(55.5)));
    assert_eq!(items.get("/DeviceInstance"), Some(&Value::Int(512)));
    server.join().unwrap();
}

#[test]
fn wait_for_name_is_bounded() {
    let bus = PrivateBus::start().unwrap();
    let mut client = BusClient::new(&bus.bus()).unwrap();
    let t = Instant::now();
    let e = client
        .wait_for_name("com.victronenergy.settings", Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(e, BusError::Timeout(_)), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    client.wait_for_name(NAME, Duration::from_secs(5)).unwrap();
}

#[test]
fn subscribe_service_filters_in_the_daemon() {
    const OTHER: &str = "com.victronenergy.grid.pzem_other";
    let bus = PrivateBus::start().unwrap();
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let other = Running::start(&bus.bus(), OTHER, test_tree(), test_handler);
    let mut exact = BusClient::new(&bus.bus()).unwrap();
    exact.subscribe_service(NAME).unwrap();
    let mut by_prefix = BusClient::new(&bus.bus()).unwrap();
    by_prefix.subscribe(&[NAME]).unwrap();
    let (mut waiter, _waker) = Waiter::new().unwrap();
    // Drain what every new connection gets (NameAcquired).
    for client in [&mut exact, &mut by_prefix] {
        client.get_value(OTHER, "/DeviceInstance").unwrap();
        client.poll_events(&mut Vec::new()).unwrap();
    }

    assert!(other.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        s.set(power, 3.0);
        s.flush().unwrap()
    }));
    // A reply from OTHER comes after its signal: once it is in, the signal would be too.
    for client in [&mut exact, &mut by_prefix] {
        client.get_value(OTHER, "/DeviceInstance").unwrap();
    }
    let idle = |w: &mut Waiter, c: &BusClient| w.wait([c as &dyn Watchable], Some(Duration::ZERO)).unwrap();
    assert!(
        idle(&mut waiter, &exact).timed_out(),
        "OTHER's signal reached the connection"
    );
    assert!(
        !idle(&mut waiter, &by_prefix).timed_out(),
        "prefix matching receives everything"
    );
    let mut events = Vec::new();
    by_prefix.poll_events(&mut events).unwrap();
    assert_eq!(events, [], "…and drops it in the process");

    // The followed service's signals arrive, named by service.
    assert!(svc.with(|s| {
        let power = s.tree().id("/Ac/Power").unwrap();
        s.set(power, 4.0);
        s.flush().unwrap()
    }));
    assert_eq!(
        events_after_sync(&mut exact),
        [Event::ItemsChanged {
            service: NAME.into(),
            changes: vec![("/Ac/Power".into(), Value::Double(4.0))],
        }]
    );
    assert_eq!(exact.set_value(NAME, "/CustomName", &"Shed".into()).unwrap(), 0);
    assert_eq!(
        events_after_sync(&mut exact),
        [Event::PropertiesChanged {
            service: NAME.into(),
            path: "/CustomName".into(),
            value: Value::from("Shed"),
        }]
    );
    assert!(matches!(
        exact.subscribe_service("not a name"),
        Err(BusError::BadName(_))
    ));
}
