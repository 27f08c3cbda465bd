//! `pzem::dbus::Follower` on a private dbus-daemon: services followed by name and read
//! without blocking, namespaces watched, signals filtered by the daemon.

mod support;
use pzem::dbus::testkit::PrivateBus;
use pzem::dbus::{Conn, Followed, Follower, Value, Waiter, Watchable};
use std::time::{Duration, Instant};
use support::*;

const OTHER: &str = "com.victronenergy.grid.pzem_other";

/// Pumps the follower until `done` holds over everything seen so far, or panics after 5 s.
fn until(f: &mut Follower, seen: &mut Vec<Followed>, what: &str, done: impl Fn(&[Followed]) -> bool) {
    let (mut waiter, _waker) = Waiter::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        f.poll_events(seen).unwrap();
        if done(seen) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out waiting for {what}; seen {seen:#?}");
        waiter
            .wait([&*f as &dyn Watchable], Some(left.min(Duration::from_millis(100))))
            .unwrap();
    }
}

fn appeared(name: &str) -> Followed {
    Followed::Appeared { service: name.into() }
}

fn items_of<'a>(seen: &'a [Followed], name: &str, complete: bool) -> Vec<&'a [(String, Value)]> {
    seen.iter()
        .filter_map(|e| match e {
            Followed::Items {
                service,
                items,
                complete: c,
            } if service == name && *c == complete => Some(items.as_slice()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_followed_service_is_read_and_its_changes_come_as_items() {
    let bus = PrivateBus::start().unwrap();
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let other = Running::start(&bus.bus(), OTHER, test_tree(), test_handler);
    let mut f = Follower::new(&bus.bus()).unwrap();
    f.follow(NAME).unwrap();
    f.follow(NAME).unwrap(); // again: nothing new
    assert!(f.follows(NAME) && !f.follows(OTHER));
    assert!(f.has_backlog(), "the appearance is queued");
    let mut seen = Vec::new();
    f.poll_events(&mut seen).unwrap();
    assert_eq!(seen, [appeared(NAME)]);

    f.read_items(NAME).unwrap();
    assert_eq!(f.reads_in_flight(), 1);
    until(&mut f, &mut seen, "the GetItems answer", |s| {
        !items_of(s, NAME, true).is_empty()
    });
    assert_eq!(f.reads_in_flight(), 0);
    let all = items_of(&seen, NAME, true)[0];
    assert_eq!(all.len(), 9);
    assert!(all.contains(&("/DeviceInstance".to_string(), Value::Int(40))));
    assert!(all.contains(&("/Ac/L1/Power".to_string(), Value::Invalid)));

    // A batch from the followed service, and one from a service not followed.
    other.with(|s| {
        let p = s.tree().id("/Ac/Power").unwrap();
        s.set(p, 99.0);
        s.flush().unwrap();
    });
    svc.with(|s| {
        let p = s.tree().id("/Ac/Power").unwrap();
        s.set(p, 7.0);
        s.flush().unwrap();
    });
    until(&mut f, &mut seen, "the ItemsChanged", |s| {
        !items_of(s, NAME, false).is_empty()
    });
    assert_eq!(
        items_of(&seen, NAME, false),
        [&[("/Ac/Power".to_string(), Value::Double(7.0))][..]]
    );
    assert!(
        seen.iter()
            .all(|e| !matches!(e, Followed::Items { service, .. } if service == OTHER)),
        "the daemon filters by sender"
    );

    // A one-off change (an accepted SetValue) comes as PropertiesChanged.
    let mut client = pzem::dbus::BusClient::new(&bus.bus()).unwrap();
    assert_eq!(client.set_value(NAME, "/CustomName", &Value::from("  x ")).unwrap(), 0);
    until(&mut f, &mut seen, "the PropertiesChanged", |s| {
        items_of(s, NAME, false).len() == 2
    });
    assert_eq!(
        items_of(&seen, NAME, false)[1],
        [("/CustomName".to_string(), Value::from("x"))]
    );

    // Gone, and its read fails.
    drop(svc);
    until(&mut f, &mut seen, "the disappearance", |s| {
        s.contains(&Followed::Vanished { service: NAME.into() })
    });
    f.read_items(NAME).unwrap();
    until(&mut f, &mut seen, "the failed read", |s| {
        s.iter()
            .any(|e| matches!(e, Followed::ReadFailed { service, .. } if service == NAME))
    });

    // Unfollowed: its return is not reported.
    f.unfollow(NAME).unwrap();
    f.unfollow(NAME).unwrap();
    let before = seen.len();
    let _back = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    f.follow(OTHER).unwrap();
    until(&mut f, &mut seen, "OTHER's appearance", |s| {
        s.contains(&appeared(OTHER))
    });
    assert!(!seen[before..].contains(&appeared(NAME)), "{:?}", &seen[before..]);
}

#[test]
fn a_service_that_appears_later_is_reported() {
    let bus = PrivateBus::start().unwrap();
    let mut f = Follower::new(&bus.bus()).unwrap();
    f.follow(NAME).unwrap();
    let mut seen = Vec::new();
    f.poll_events(&mut seen).unwrap();
    assert!(seen.is_empty());
    let svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    until(&mut f, &mut seen, "the appearance", |s| s.contains(&appeared(NAME)));
    // A second read supersedes the first: one answer.
    f.read_items(NAME).unwrap();
    f.read_items(NAME).unwrap();
    until(&mut f, &mut seen, "an answer", |s| !items_of(s, NAME, true).is_empty());
    svc.with(|_| ()); // a round trip: the superseded answer has arrived too, if it was sent
    f.poll_events(&mut seen).unwrap();
    assert_eq!(items_of(&seen, NAME, true).len(), 1, "{seen:?}");
    assert_eq!(seen.iter().filter(|e| **e == appeared(NAME)).count(), 1);
}

#[test]
fn a_namespace_is_listed_then_watched() {
    let bus = PrivateBus::start().unwrap();
    let a = "com.victronenergy.vebus.ttyS4";
    let b = "com.victronenergy.vebus.ttyUSB0";
    let _a = Running::start(&bus.bus(), a, test_tree(), test_handler);
    let _grid = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut f = Follower::new(&bus.bus()).unwrap();
    f.watch_namespace("com.victronenergy.vebus").unwrap();
    let mut seen = Vec::new();
    f.poll_events(&mut seen).unwrap();
    assert_eq!(
        seen,
        [
            appeared(a),
            Followed::Listed {
                namespace: "com.victronenergy.vebus".into()
            }
        ]
    );
    let svc_b = Running::start(&bus.bus(), b, test_tree(), test_handler);
    until(&mut f, &mut seen, "b's appearance", |s| s.contains(&appeared(b)));
    // Watched, not followed: its changes are not delivered.
    svc_b.with(|s| {
        let p = s.tree().id("/Ac/Power").unwrap();
        s.set(p, 1.0);
        s.flush().unwrap();
    });
    drop(svc_b);
    until(&mut f, &mut seen, "b's disappearance", |s| {
        s.contains(&Followed::Vanished { service: b.into() })
    });
    assert!(!seen.iter().any(|e| matches!(e, Followed::Items { .. })), "{seen:?}");
    assert!(!seen.contains(&appeared(NAME)));
    // Following a watched name that is there reports it again: following is what counts.
    seen.clear();
    f.follow(a).unwrap();
    f.poll_events(&mut seen).unwrap();
    assert_eq!(seen, [appeared(a)]);
}

#[test]
fn a_service_without_get_items_is_read_with_get_value_on_root() {
    let bus = PrivateBus::start().unwrap();
    let name = "com.victronenergy.battery.old";
    let mut conn = Conn::open(&bus.bus()).unwrap();
    conn.request_name(name).unwrap();
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
                        "History/DischargedEnergy",
                        dbus::arg::Variant(Box::new(12.5f64) as Box<dyn dbus::arg::RefArg>),
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
    let mut f = Follower::new(&bus.bus()).unwrap();
    f.follow(name).unwrap();
    f.read_items(name).unwrap();
    let mut seen = Vec::new();
    until(&mut f, &mut seen, "the answer", |s| !items_of(s, name, true).is_empty());
    assert_eq!(
        items_of(&seen, name, true)[0],
        [("/History/DischargedEnergy".to_string(), Value::Double(12.5))]
    );
    server.join().unwrap();
}

#[test]
fn reading_never_blocks_on_a_peer() {
    // A peer that never answers: the read returns at once and yields no event.
    let bus = PrivateBus::start().unwrap();
    let name = "com.victronenergy.system";
    let mut conn = Conn::open(&bus.bus()).unwrap();
    conn.request_name(name).unwrap();
    let mut f = Follower::new(&bus.bus()).unwrap();
    f.follow(name).unwrap();
    let t = Instant::now();
    f.read_items(name).unwrap();
    assert!(t.elapsed() < Duration::from_millis(500));
    let mut seen = Vec::new();
    f.poll_events(&mut seen).unwrap();
    assert_eq!(seen, [appeared(name)]);
    assert_eq!(f.reads_in_flight(), 1);
    drop(conn);
}
