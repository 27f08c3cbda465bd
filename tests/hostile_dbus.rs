//! Hostile D-Bus input to every service: every path of pzem-dbus (an AC and a DC meter) and
//! of pzem-energy gets SetValue with wrong types, containers, a 1 MiB string, no argument
//! and two; GetValue/GetText/GetItems with arguments; unknown methods, interfaces and
//! paths. Every call must be answered (a refusal code or a D-Bus error), read-only paths
//! must refuse every write, and both services must keep running and answering.
//! (tests/pzem_dbus.rs and tests/pzem_energy.rs check the exact codes of the common cases.)
//!
//! Every child process is killed by PID when its guard drops, also when a test fails.
#![cfg(all(feature = "serial", feature = "dbus", feature = "cli"))]

#[path = "support/rig.rs"]
mod rig;

use dbus::arg::{RefArg, Variant};
use dbus::blocking::Connection;
use rig::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PZEM_DBUS: &str = env!("CARGO_BIN_EXE_pzem-dbus");
const PZEM_ENERGY: &str = env!("CARGO_BIN_EXE_pzem-energy");
const BUSITEM: &str = "com.victronenergy.BusItem";
/// The error the client library gives when no answer came within the call's timeout.
const NO_REPLY: &str = "org.freedesktop.DBus.Error.NoReply";
const SECOND: Duration = Duration::from_secs(1);

/// Every hostile SetValue argument list, with a name.
fn hostile_values() -> Vec<(&'static str, Vec<Box<dyn RefArg>>)> {
    let huge = "x".repeat(1 << 20);
    let dict: HashMap<String, Variant<i32>> = [("a".to_string(), Variant(1))].into();
    vec![
        ("1 MiB string", vec![Box::new(Variant(huge.clone()))]),
        ("1 MiB bare string", vec![Box::new(huge)]),
        ("struct (ii)", vec![Box::new(Variant((1i32, 2i32)))]),
        ("dict a{sv}", vec![Box::new(Variant(dict))]),
        ("byte array", vec![Box::new(Variant(vec![0u8; 4096]))]),
        ("int array", vec![Box::new(Variant(vec![1i32, 2, 3]))]),
        ("nested variant", vec![Box::new(Variant(Variant(Variant(1.5f64))))]),
        ("NaN", vec![Box::new(Variant(f64::NAN))]),
        ("infinity", vec![Box::new(Variant(f64::INFINITY))]),
        ("u64 max", vec![Box::new(Variant(u64::MAX))]),
        ("i64 min", vec![Box::new(Variant(i64::MIN))]),
        ("no argument", vec![]),
        ("two variants", vec![Box::new(Variant(1i32)), Box::new(Variant(2i32))]),
        ("string list", vec![Box::new(Variant(vec!["grid".to_string(); 1000]))]),
    ]
}

/// Sends `args` as `iface.member` to `path` and waits for the answer: the reply's first
/// argument as an i32 when it is one, or the error name.
fn call(
    conn: &Connection,
    service: &str,
    path: &str,
    iface: &str,
    member: &str,
    args: &[Box<dyn RefArg>],
) -> Result<Option<i32>, String> {
    let mut msg = dbus::Message::new_method_call(service, path, iface, member).unwrap();
    {
        let mut ia = dbus::arg::IterAppend::new(&mut msg);
        for a in args {
            a.append(&mut ia);
        }
    }
    match conn.channel().send_with_reply_and_block(msg, 10 * SECOND) {
        Ok(reply) => Ok(reply.get1::<i32>()),
        Err(e) => Err(e.name().unwrap_or("?").to_owned()),
    }
}

/// Panics when the call `what` to `service` `path` went unanswered (timed out).
fn answered(r: &Result<Option<i32>, String>, service: &str, path: &str, what: &str) {
    if let Err(name) = r {
        assert_ne!(name, NO_REPLY, "{service} {path}: {what} was not answered");
    }
}

/// Attacks every path of `service`; returns the number of calls made. Panics when a
/// read-only path takes a write or a call goes unanswered.
fn attack(rig: &mut Rig, service: &str) -> usize {
    let items = rig.monitor.client.get_items(service).unwrap();
    let conn = Connection::new_address(rig.bus.address()).unwrap();
    let mut calls = 0;
    let mut paths: Vec<String> = items.keys().cloned().collect();
    paths.extend(["/", "/Nope", "/Ac", &"/x".repeat(1000)].iter().map(|s| s.to_string()));
    for path in &paths {
        let known = items.contains_key(path);
        for (what, args) in hostile_values() {
            let r = call(&conn, service, path, BUSITEM, "SetValue", &args);
            calls += 1;
            // Refused: a non-zero code, or a D-Bus error. Only a writable path's well-typed
            // write may be taken, and none of these is well typed for a writable path. A
            // reply without an i32 and a timeout (NoReply) are failures too.
            match &r {
                Ok(Some(code)) => assert_ne!(*code, 0, "{service} {path}: SetValue({what}) was accepted"),
                Ok(None) => panic!("{service} {path}: SetValue({what}) answered without an i32 code"),
                Err(name) => assert_ne!(name, NO_REPLY, "{service} {path}: SetValue({what}) was not answered"),
            }
            if !known {
                assert!(
                    r.is_err(),
                    "{service} {path} (no such path): SetValue({what}) gave {r:?}"
                );
            }
        }
        let junk: Vec<Box<dyn RefArg>> = vec![Box::new("x".repeat(1 << 16)), Box::new(7i32)];
        for member in ["GetValue", "GetText", "GetItems", "GetMin", "NoSuchMethod"] {
            let r = call(&conn, service, path, BUSITEM, member, &junk);
            answered(&r, service, path, member);
            calls += 1;
        }
        let r = call(
            &conn,
            service,
            path,
            "org.example.Nope",
            "SetValue",
            &[Box::new(Variant(1i32))],
        );
        answered(&r, service, path, "org.example.Nope.SetValue");
        let r = call(
            &conn,
            service,
            path,
            "org.freedesktop.DBus.Introspectable",
            "Introspect",
            &junk,
        );
        answered(&r, service, path, "Introspect");
        calls += 2;
    }
    calls
}

#[test]
fn malformed_calls_to_every_path_of_every_service_are_refused() {
    let sim = three_meter_pty(41);
    let tty = sim.path().unwrap().to_owned();
    let mut rig = Rig::new(true);
    let args = rig.args(&["-d", &tty], &THREE_METERS, &[]);
    let mut dbus_p = rig.start(PZEM_DBUS, "pzem-dbus", &args);
    let services = three_meter_services(&tty);
    for s in &services {
        rig.monitor.wait_connected(s, 10 * SECOND);
    }
    let mut energy_p = rig.start_energy(PZEM_ENERGY, &services[0], &services[1], &[]);
    let t0 = Instant::now();
    let mut calls = 0;
    for s in services.iter().map(String::as_str).chain([ENERGY_OWN]) {
        calls += attack(&mut rig, s);
        rig.monitor.pump_for(Duration::from_millis(100));
    }
    // Both still running, answering, and the meters still published.
    assert_eq!(dbus_p.try_exit(), None, "{}", dbus_p.log_text());
    assert_eq!(energy_p.try_exit(), None, "{}", energy_p.log_text());
    for s in services.iter().map(String::as_str).chain([ENERGY_OWN]) {
        let items = rig.monitor.client.get_items(s).unwrap();
        assert!(!items.is_empty(), "{s} answers GetItems");
    }
    for s in &services {
        rig.monitor.wait_connected(s, 5 * SECOND);
    }
    for p in [&dbus_p, &energy_p] {
        assert!(!p.log_text().contains("panicked"), "{}", p.log_text());
    }
    println!(
        "hostile D-Bus: {calls} malformed calls to 4 services in {:.1} s, all refused, both services running",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(dbus_p.terminate(), Some(0));
    assert_eq!(energy_p.terminate(), Some(0));
}
