//! Wire-level truth of a served tree, checked with the external tools `busctl` and
//! `dbus-send` against a real private dbus-daemon.

mod support;
use pzem::dbus::testkit::PrivateBus;
use support::*;

use pzem::dbus::BUSITEM;

fn call(bus: &PrivateBus, path: &str, member: &str, args: &[&str]) -> Out {
    let mut all = vec!["call", NAME, path, BUSITEM, member];
    all.extend_from_slice(args);
    busctl(bus.address(), &all)
}

#[test]
fn leaf_values_have_stable_wire_types() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let cases = [
        ("/Ac/L1/Power", "v ai 0"), // invalid marker: empty int32 array
        ("/Ac/L1/Voltage", "v d 230.14"),
        ("/DeviceInstance", "v i 40"),
        ("/ProductName", "v s \"PZEM-016\""),
        ("/AllowedRoles", "v av 2 s \"grid\" s \"acload\""),
    ];
    for (path, want) in cases {
        let o = call(&bus, path, "GetValue", &[]);
        assert!(o.ok, "{path}: {}", o.stderr);
        assert_eq!(o.stdout.trim(), want, "{path}");
    }
    for (path, want) in [
        ("/Ac/L1/Voltage", "s \"230.1 V\""),
        ("/Ac/L1/Power", "s \"---\""),
        ("/ProductId", "s \"0xffff\""),
    ] {
        assert_eq!(call(&bus, path, "GetText", &[]).stdout.trim(), want, "{path}");
    }
}

#[test]
fn nodes_answer_relative_keys_and_root_absolute_items() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);

    let ac = call(&bus, "/Ac", "GetValue", &[]).stdout;
    assert!(
        ac.starts_with("v a{sv} 3 \"L1/Power\" ai 0 \"L1/Voltage\" d 230.14 \"Power\" d 1.5"),
        "{ac}"
    );
    let ac_text = call(&bus, "/Ac", "GetText", &[]).stdout;
    assert_eq!(
        ac_text.trim(),
        "v a{ss} 3 \"L1/Power\" \"---\" \"L1/Voltage\" \"230.1 V\" \"Power\" \"1.5 W\""
    );
    let l1 = call(&bus, "/Ac/L1", "GetValue", &[]).stdout;
    assert!(l1.starts_with("v a{sv} 2 \"Power\" ai 0 \"Voltage\" d 230.14"), "{l1}");

    let root = call(&bus, "/", "GetValue", &[]).stdout;
    assert!(root.starts_with("v a{sv} 9 \"Ac/L1/Power\" ai 0"), "{root}");
    assert!(root.contains("\"DeviceInstance\" i 40"), "{root}");
    assert!(!root.contains("\"/"), "no leading slash on /: {root}");

    let items = call(&bus, "/", "GetItems", &[]).stdout;
    assert!(
        items.starts_with("a{sa{sv}} 9 \"/Ac/L1/Power\" 2 \"Value\" ai 0 \"Text\" s \"---\""),
        "{items}"
    );
    assert!(
        items.contains("\"/DeviceInstance\" 2 \"Value\" i 40 \"Text\" s \"40\""),
        "{items}"
    );
    assert!(
        items.contains("\"/AllowedRoles\" 2 \"Value\" av 2 s \"grid\" s \"acload\""),
        "{items}"
    );
}

#[test]
fn errors_have_the_right_names() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let a = bus.address();
    let err = |path: &str, method: &str, args: &[&str]| {
        let o = dbus_send(a, path, method, args);
        assert!(!o.ok, "{path} {method} should fail");
        o.stderr
    };
    let e = err("/Ac", "com.victronenergy.BusItem.GetItems", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.UnknownMethod"), "{e}");
    let e = err("/Nope", "com.victronenergy.BusItem.GetValue", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.UnknownObject"), "{e}");
    let e = err("/Ac/L", "com.victronenergy.BusItem.GetValue", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.UnknownObject"), "{e}");
    let e = err("/Nope", "org.freedesktop.DBus.Introspectable.Introspect", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.UnknownObject"), "{e}");
    let e = err("/Position", "com.victronenergy.BusItem.SetValue", &["int32:1"]);
    assert!(e.contains("org.freedesktop.DBus.Error.InvalidArgs"), "{e}");
    let e = err("/Position", "com.victronenergy.BusItem.SetValue", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.InvalidArgs"), "{e}");
    let e = err(
        "/Position",
        "com.victronenergy.BusItem.SetValue",
        &["variant:int32:1", "int32:2"],
    );
    assert!(e.contains("org.freedesktop.DBus.Error.InvalidArgs"), "{e}");
    let e = err("/Position", "com.example.Nope.GetValue", &[]);
    assert!(e.contains("org.freedesktop.DBus.Error.UnknownInterface"), "{e}");
    // Still serving after all of that.
    assert!(call(&bus, "/DeviceInstance", "GetValue", &[]).ok);
}

#[test]
fn set_value_codes() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let set = |path: &str, arg: &str| {
        let o = dbus_send(bus.address(), path, "com.victronenergy.BusItem.SetValue", &[arg]);
        assert!(o.ok, "{}", o.stderr);
        o.stdout.lines().last().unwrap_or_default().trim().to_owned()
    };
    assert_eq!(set("/DeviceInstance", "variant:int32:41"), "int32 1", "read-only");
    assert_eq!(set("/Position", "variant:int32:2"), "int32 0", "accepted");
    assert_eq!(set("/Position", "variant:double:1"), "int32 0", "whole double coerced");
    assert_eq!(set("/Position", "variant:int32:7"), "int32 3", "owner's code");
    assert_eq!(set("/Position", "variant:string:2"), "int32 1", "wrong kind");
    assert_eq!(set("/Position", "variant:double:1.5"), "int32 1", "not a whole number");
    assert_eq!(set("/CustomName", "variant:string:  Shed  "), "int32 0");
    assert_eq!(
        call(&bus, "/CustomName", "GetValue", &[]).stdout.trim(),
        "v s \"Shed\"",
        "normalised"
    );
    assert_eq!(call(&bus, "/Position", "GetValue", &[]).stdout.trim(), "v i 1");
}

#[test]
fn introspection_lists_children_on_every_node() {
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let xml = |path: &str| {
        let o = dbus_send(
            bus.address(),
            path,
            "org.freedesktop.DBus.Introspectable.Introspect",
            &[],
        );
        assert!(o.ok, "{path}: {}", o.stderr);
        o.stdout
    };
    let root = xml("/");
    for child in ["Ac", "AllowedRoles", "CustomName", "DeviceInstance", "Position"] {
        assert!(root.contains(&format!("<node name=\"{child}\"/>")), "{child} in {root}");
    }
    assert!(root.contains("GetItems") && !root.contains("<node name=\"L1\"/>"));
    let ac = xml("/Ac");
    assert!(ac.contains("<node name=\"L1\"/>") && ac.contains("<node name=\"Power\"/>"));
    assert!(!ac.contains("GetItems"));
    assert!(xml("/Ac/L1/Power").contains("<method name=\"SetValue\">"));

    // busctl walks the whole tree through introspection alone.
    let tree = busctl(bus.address(), &["tree", NAME]);
    assert!(tree.ok, "{}", tree.stderr);
    for path in ["/Ac/L1/Power", "/Ac/L1/Voltage", "/Ac/Power", "/DeviceInstance"] {
        assert!(tree.stdout.contains(path), "{path} in {}", tree.stdout);
    }
}

#[test]
fn private_bus_is_gone_after_drop() {
    let bus = PrivateBus::start().unwrap();
    let pid = bus.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(bus);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "daemon {pid} still running"
    );
}

/// `SetValue` sent with NO_REPLY_EXPECTED (as `dbus-send` without `--print-reply` does):
/// whatever the verdict, the caller gets no reply, and the write still takes effect.
#[test]
fn set_value_without_reply_expected_gets_none() {
    use dbus::Message;
    use dbus::arg::Variant;
    use pzem::dbus::{Conn, DEFAULT_TIMEOUT};
    let bus = PrivateBus::start().unwrap();
    let _svc = Running::start(&bus.bus(), NAME, test_tree(), test_handler);
    let mut caller = Conn::open(&bus.bus()).unwrap();
    let set = |path: &str, value: i32| {
        let mut m = Message::new_method_call(NAME, path, BUSITEM, "SetValue")
            .unwrap()
            .append1(Variant(value));
        m.set_no_reply(true);
        m
    };
    let get_position = |caller: &mut Conn| {
        let m = Message::new_method_call(NAME, "/Position", BUSITEM, "GetValue").unwrap();
        caller
            .call(m, DEFAULT_TIMEOUT)
            .unwrap()
            .read1::<Variant<i32>>()
            .unwrap()
            .0
    };
    caller.send(set("/Position", 7)).unwrap(); // rejected by the owner (code 3)
    caller.send(set("/DeviceInstance", 41)).unwrap(); // read-only (code 1)
    caller.send(set("/Position", 2)).unwrap(); // accepted (code 0)
    // The service answers in order, so a reply to any of the three would arrive before the
    // reply to this call, and would be left in the backlog by `call`.
    assert_eq!(get_position(&mut caller), 2, "the accepted write took effect");
    let mut unexpected = Vec::new();
    while let Some(m) = caller.next_message().unwrap() {
        if m.msg_type() != dbus::MessageType::Signal {
            unexpected.push(format!("{m:?}"));
        }
    }
    assert!(unexpected.is_empty(), "replies nobody asked for: {unexpected:?}");
    // Still serving, and still replying to callers that want a reply.
    let o = dbus_send(
        bus.address(),
        "/Position",
        "com.victronenergy.BusItem.SetValue",
        &["variant:int32:9"],
    );
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(o.stdout.lines().last().unwrap_or_default().trim(), "int32 3");
    assert_eq!(get_position(&mut caller), 2);
}
