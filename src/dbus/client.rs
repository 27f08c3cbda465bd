//! Reading and writing other Venus services the way Venus consumers do (§2.4, §5).
//!
//! A [`BusClient`] has its own connection. Start-up reads use blocking calls with a bounded
//! timeout (`GetItems`, falling back to `GetValue` on `/` like dbusmonitor); after
//! [`BusClient::subscribe`], [`BusClient::poll_events`] turns `ItemsChanged`, `PropertiesChanged`
//! and `NameOwnerChanged` into [`Event`]s named by *service*, using a unique-name → service
//! map kept up to date from `NameOwnerChanged` (senders are unique names, §2.3).
//!
//! ```no_run
//! # fn main() -> Result<(), pzem::dbus::BusError> {
//! use pzem::dbus::{Bus, BusClient, Event};
//! let mut client = BusClient::new(&Bus::System)?;
//! client.subscribe(&["com.victronenergy.battery."])?;
//! for service in client.list_services()? {
//!     if service.starts_with("com.victronenergy.battery.") {
//!         let items = client.get_items(&service)?;
//!         println!("{service}: {:?}", items.get("/Dc/0/Power"));
//!     }
//! }
//! let mut events = Vec::new();
//! client.poll_events(&mut events)?; // after a Waiter says the client is ready
//! for e in &events {
//!     if let Event::ItemsChanged { service, changes } = e {
//!         println!("{service}: {} changed", changes.len());
//!     }
//! }
//! # Ok(()) }
//! ```

use super::conn::{Bus, Conn, DEFAULT_TIMEOUT, error_reply, errors};
use super::error::BusError;
use super::value::Value;
use super::wait::Watchable;
use super::wire::{BUSITEM, BUSITEM_IFACE, for_each_entry};
use dbus::Message;
use dbus::arg::{ArgType, Iter, IterAppend};
use dbus::channel::Watch;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Prefix of every Venus service name.
pub const VENUS_PREFIX: &str = "com.victronenergy.";

/// A change seen on the bus, named by service.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A service's batch of changes (absolute paths).
    ItemsChanged {
        /// Well-known name of the sender.
        service: String,
        /// Path → new value, for the paths in the signal.
        changes: Vec<(String, Value)>,
    },
    /// A one-off change of one path.
    PropertiesChanged {
        /// Well-known name of the sender.
        service: String,
        /// The path that changed.
        path: String,
        /// Its new value.
        value: Value,
    },
    /// A name appeared (`old_owner` is `None`), disappeared (`new_owner` is `None`) or moved.
    NameOwnerChanged {
        /// The well-known name.
        name: String,
        /// Unique name of the previous owner.
        old_owner: Option<String>,
        /// Unique name of the new owner.
        new_owner: Option<String>,
    },
}

/// A connection for reading other services and following their changes.
#[derive(Debug)]
pub struct BusClient {
    conn: Conn,
    timeout: Duration,
    /// Unique name → well-known name, for the services that pass the filter.
    owners: HashMap<String, String>,
    /// Prefixes of the services to follow; set by `subscribe`.
    prefixes: Vec<String>,
}

/// The match rules that deliver one service's `ItemsChanged` and `PropertiesChanged`
/// (with the well-known name as `sender`, which the daemon resolves to the current owner)
/// and its `NameOwnerChanged`. Shared by [`BusClient::subscribe_service`] and
/// [`super::Follower::follow`].
pub(crate) fn service_rules(name: &str) -> [String; 3] {
    [
        format!("type='signal',sender='{name}',interface='{BUSITEM}',member='ItemsChanged'"),
        format!("type='signal',sender='{name}',interface='{BUSITEM}',member='PropertiesChanged'"),
        format!(
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',\
             member='NameOwnerChanged',arg0='{name}'"
        ),
    ]
}

/// `AddMatch` of `rule` on the bus daemon.
pub(crate) fn add_match(conn: &mut Conn, rule: &str, timeout: Duration) -> Result<(), BusError> {
    conn.call(Conn::daemon_call("AddMatch").append1(rule), timeout)
        .map(drop)
}

/// `RemoveMatch` of `rule` on the bus daemon.
pub(crate) fn remove_match(conn: &mut Conn, rule: &str, timeout: Duration) -> Result<(), BusError> {
    conn.call(Conn::daemon_call("RemoveMatch").append1(rule), timeout)
        .map(drop)
}

/// The unique name owning `name`, asked of the bus daemon; `None` when nobody does. The
/// name is not checked here.
pub(crate) fn ask_owner(conn: &mut Conn, name: &str, timeout: Duration) -> Result<Option<String>, BusError> {
    let msg = Conn::daemon_call("GetNameOwner").append1(name);
    match conn.call(msg, timeout) {
        Ok(reply) => reply
            .read1::<String>()
            .map(Some)
            .map_err(|e| BusError::BadReply(format!("GetNameOwner: {e}"))),
        Err(e) if e.dbus_name() == Some("org.freedesktop.DBus.Error.NameHasNoOwner") => Ok(None),
        Err(e) => Err(e),
    }
}

impl BusClient {
    /// Connects to `bus`.
    pub fn new(bus: &Bus) -> Result<BusClient, BusError> {
        Ok(BusClient {
            conn: Conn::open(bus)?,
            timeout: DEFAULT_TIMEOUT,
            owners: HashMap::new(),
            prefixes: Vec::new(),
        })
    }

    /// Sends a method call and waits (bounded) for its reply.
    pub(crate) fn call(&mut self, msg: Message) -> Result<Message, BusError> {
        self.conn.call(msg, self.timeout)
    }

    /// Bound for each blocking call (default 5 s).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Every `com.victronenergy.*` name on the bus, sorted.
    pub fn list_services(&mut self) -> Result<Vec<String>, BusError> {
        let reply = self.conn.call(Conn::daemon_call("ListNames"), self.timeout)?;
        let names: Vec<String> = reply
            .read1()
            .map_err(|e| BusError::BadReply(format!("ListNames: {e}")))?;
        let mut names: Vec<String> = names.into_iter().filter(|n| n.starts_with(VENUS_PREFIX)).collect();
        names.sort_unstable();
        Ok(names)
    }

    /// The unique name owning `name`, or `None` when nobody does.
    pub fn name_owner(&mut self, name: &str) -> Result<Option<String>, BusError> {
        super::conn::check_bus_name(name)?;
        ask_owner(&mut self.conn, name, self.timeout)
    }

    /// Waits until `name` has an owner, polling every 50 ms, for at most `timeout`
    /// (velib's SettingsDevice does the same for localsettings).
    pub fn wait_for_name(&mut self, name: &str, timeout: Duration) -> Result<(), BusError> {
        let start = Instant::now();
        loop {
            if self.name_owner(name)?.is_some() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(BusError::Timeout(format!(
                    "{name} did not appear on the bus within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn busitem_call(&mut self, service: &str, path: &str, member: &str) -> Result<Message, BusError> {
        // Message::new_method_call panics on invalid names (From<&str>): validate first.
        let dest = dbus::strings::BusName::new(service).map_err(|_| BusError::BadName(service.to_owned()))?;
        let path = dbus::Path::new(path).map_err(|_| BusError::BadName(path.to_owned()))?;
        Ok(Message::method_call(
            &dest,
            &path,
            &BUSITEM_IFACE,
            &dbus::strings::Member::from(member),
        ))
    }

    /// Every path of `service` with its value: `GetItems` on `/`, or `GetValue` on `/`
    /// when the service has no `GetItems`. Values of unsupported types are left out.
    pub fn get_items(&mut self, service: &str) -> Result<BTreeMap<String, Value>, BusError> {
        let msg = self.busitem_call(service, "/", "GetItems")?;
        match self.conn.call(msg, self.timeout) {
            Ok(reply) => {
                let mut items = BTreeMap::new();
                read_items(&mut reply.iter_init(), |path, value| {
                    items.insert(path.to_owned(), value);
                })
                .ok_or_else(|| BusError::BadReply(format!("GetItems of {service}")))?;
                Ok(items)
            }
            Err(e) if e.dbus_name() == Some(errors::UNKNOWN_METHOD) => {
                let msg = self.busitem_call(service, "/", "GetValue")?;
                let reply = self.conn.call(msg, self.timeout)?;
                let mut it = reply.iter_init();
                let mut inner = it
                    .recurse(ArgType::Variant)
                    .ok_or_else(|| BusError::BadReply(format!("GetValue on / of {service}")))?;
                let mut items = BTreeMap::new();
                read_value_dict(&mut inner, |key, value| {
                    items.insert(format!("/{key}"), value);
                })
                .ok_or_else(|| BusError::BadReply(format!("GetValue on / of {service}")))?;
                Ok(items)
            }
            Err(e) => Err(e),
        }
    }

    /// `GetValue` of one path.
    pub fn get_value(&mut self, service: &str, path: &str) -> Result<Value, BusError> {
        let msg = self.busitem_call(service, path, "GetValue")?;
        let reply = self.conn.call(msg, self.timeout)?;
        Value::read_variant(&mut reply.iter_init())
            .map_err(|e| BusError::BadReply(format!("GetValue {service} {path}: {e}")))
    }

    /// `GetText` of one path.
    pub fn get_text(&mut self, service: &str, path: &str) -> Result<String, BusError> {
        let msg = self.busitem_call(service, path, "GetText")?;
        let reply = self.conn.call(msg, self.timeout)?;
        reply
            .read1::<String>()
            .map_err(|e| BusError::BadReply(format!("GetText {service} {path}: {e}")))
    }

    /// `SetValue` of one path; returns the service's code (0 = accepted).
    pub fn set_value(&mut self, service: &str, path: &str, value: &Value) -> Result<i32, BusError> {
        let mut msg = self.busitem_call(service, path, "SetValue")?;
        value.append_variant(&mut IterAppend::new(&mut msg));
        let reply = self.conn.call(msg, self.timeout)?;
        reply
            .read1::<i32>()
            .map_err(|e| BusError::BadReply(format!("SetValue {service} {path}: {e}")))
    }

    /// Follows the services whose names start with one of `prefixes` (all Venus services
    /// when empty): adds the signal matches, then maps the current owners. Later signals
    /// come out of [`BusClient::poll_events`].
    pub fn subscribe(&mut self, prefixes: &[&str]) -> Result<(), BusError> {
        self.prefixes = prefixes.iter().map(|p| (*p).to_owned()).collect();
        let rules = [
            format!("type='signal',interface='{BUSITEM}',member='ItemsChanged'"),
            format!("type='signal',interface='{BUSITEM}',member='PropertiesChanged'"),
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0namespace='com.victronenergy'".to_owned(),
        ];
        for rule in &rules {
            add_match(&mut self.conn, rule, self.timeout)?;
        }
        for name in self.list_services()? {
            if self.follows(&name)
                && let Some(owner) = self.name_owner(&name)?
            {
                self.owners.insert(owner, name);
            }
        }
        Ok(())
    }

    /// Follows exactly one service, with match rules that name it as the sender, so the
    /// bus daemon delivers only its signals. [`BusClient::subscribe`] matches on prefixes in
    /// this process: every `ItemsChanged` of every service (the caller's own included)
    /// reaches the connection and is decoded before it is dropped, which costs a service
    /// that publishes many changes more than its own publishing does.
    pub fn subscribe_service(&mut self, name: &str) -> Result<(), BusError> {
        super::conn::check_bus_name(name)?;
        self.prefixes = vec![name.to_owned()];
        for rule in service_rules(name) {
            add_match(&mut self.conn, &rule, self.timeout)?;
        }
        if let Some(owner) = self.name_owner(name)? {
            self.owners.insert(owner, name.to_owned());
        }
        Ok(())
    }

    fn follows(&self, name: &str) -> bool {
        name.starts_with(VENUS_PREFIX)
            && (self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p)))
    }

    /// The followed service owned by a unique name.
    pub fn service_of(&self, unique_name: &str) -> Option<&str> {
        self.owners.get(unique_name).map(String::as_str)
    }

    /// Appends every event that has arrived to `out`, without blocking; returns how many.
    /// Signals from services that are not followed are dropped before decoding.
    pub fn poll_events(&mut self, out: &mut Vec<Event>) -> Result<usize, BusError> {
        let before = out.len();
        while let Some(msg) = self.conn.next_message()? {
            match msg.msg_type() {
                dbus::MessageType::Signal => self.on_signal(&msg, out),
                dbus::MessageType::MethodCall => {
                    let reply = dbus::channel::default_reply(&msg)
                        .or_else(|| error_reply(&msg, errors::UNKNOWN_OBJECT, "this connection serves nothing"));
                    if let Some(reply) = reply {
                        self.conn.send(reply)?;
                    }
                }
                _ => {}
            }
        }
        Ok(out.len() - before)
    }

    fn on_signal(&mut self, msg: &Message, out: &mut Vec<Event>) {
        let (Some(member), Some(sender)) = (msg.member(), msg.sender()) else {
            return;
        };
        match (msg.interface().as_deref(), &*member) {
            (Some("org.freedesktop.DBus"), "NameOwnerChanged") => {
                let Ok((name, old, new)) = msg.read3::<String, String, String>() else {
                    return;
                };
                if !self.follows(&name) {
                    return;
                }
                if !old.is_empty() && self.owners.get(&old) == Some(&name) {
                    self.owners.remove(&old);
                }
                if !new.is_empty() {
                    self.owners.insert(new.clone(), name.clone());
                }
                let some = |s: String| (!s.is_empty()).then_some(s);
                out.push(Event::NameOwnerChanged {
                    name,
                    old_owner: some(old),
                    new_owner: some(new),
                });
            }
            (Some(BUSITEM), "ItemsChanged") => {
                let Some(service) = self.owners.get(&*sender) else {
                    return;
                };
                let mut changes = Vec::new();
                if read_items(&mut msg.iter_init(), |p, v| changes.push((p.to_owned(), v))).is_some() {
                    out.push(Event::ItemsChanged {
                        service: service.clone(),
                        changes,
                    });
                }
            }
            (Some(BUSITEM), "PropertiesChanged") => {
                let (Some(service), Some(path)) = (self.owners.get(&*sender), msg.path()) else {
                    return;
                };
                if let Some(Some(value)) = read_busitem_value(&mut msg.iter_init()) {
                    out.push(Event::PropertiesChanged {
                        service: service.clone(),
                        path: path.to_string(),
                        value,
                    });
                }
            }
            _ => {}
        }
    }
}

impl Watchable for BusClient {
    fn watch(&self) -> Watch {
        self.conn.watch()
    }

    fn has_backlog(&self) -> bool {
        self.conn.has_backlog()
    }
}

/// Reads `a{sv}` and calls `f(key, value)` for each entry whose value is supported.
/// `None` when the argument is not a dict with string keys.
pub(crate) fn read_value_dict<'a>(it: &mut Iter<'a>, mut f: impl FnMut(&'a str, Value)) -> Option<()> {
    for_each_entry(it, |key, v| {
        match Value::read_variant(v) {
            Ok(v) => f(key, v),
            Err(err) => log::debug!("{key}: {err}, skipped"),
        }
        Some(())
    })
}

/// Reads the `a{sv}` properties of one BusItem (`Value`, `Text`…) and decodes only `Value`:
/// `Some(None)` when there is none or its type is unsupported, `None` when the argument is
/// not a dict with string keys.
pub(crate) fn read_busitem_value(it: &mut Iter) -> Option<Option<Value>> {
    let mut value = None;
    for_each_entry(it, |key, v| {
        if key == "Value" {
            value = Value::read_variant(v)
                .map_err(|err| log::debug!("Value: {err}, skipped"))
                .ok();
        }
        Some(())
    })?;
    Some(value)
}

/// Reads `a{sa{sv}}` (`GetItems`, `ItemsChanged`) and calls `f(path, value)` for each
/// entry with a supported `Value`.
pub(crate) fn read_items<'a>(it: &mut Iter<'a>, mut f: impl FnMut(&'a str, Value)) -> Option<()> {
    for_each_entry(it, |path, props| {
        if let Some(v) = read_busitem_value(props)? {
            f(path, v);
        }
        Some(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::localsettings::{Setting, SettingResult, append_settings, read_setting_results};
    use crate::dbus::wire::{ASV, ENTRY_SV, append_entry};

    #[test]
    fn settings_request_round_trip() {
        let mut m = Message::new_method_call("a.b", "/", "a.b", "M").unwrap();
        let mut s = Setting::new("/Settings/Devices/x/Position", 0);
        s.min = Some(Value::Int(0));
        s.max = Some(Value::Int(2));
        s.silent = true;
        append_settings(
            &mut IterAppend::new(&mut m),
            &[s, Setting::new("/Settings/A", "grid:40")],
        );
        assert_eq!(m.iter_init().signature().to_string(), "aa{sv}");
        let mut arr = m.iter_init().recurse(ArgType::Array).unwrap();
        let mut first = Vec::new();
        read_value_dict(&mut arr, |k, v| first.push((k.to_owned(), v))).unwrap();
        assert_eq!(
            first,
            [
                ("path".to_owned(), Value::from("/Settings/Devices/x/Position")),
                ("default".to_owned(), Value::Int(0)),
                ("min".to_owned(), Value::Int(0)),
                ("max".to_owned(), Value::Int(2)),
                ("silent".to_owned(), Value::Int(1)),
            ]
        );
    }

    #[test]
    fn items_keep_only_supported_values() {
        use crate::dbus::wire::ENTRY_SASV;
        let mut m = Message::new_method_call("a.b", "/", "a.b", "M").unwrap();
        IterAppend::new(&mut m).append_array(&ENTRY_SASV, |a| {
            let item = |a: &mut IterAppend, path: &str, value: Option<(i32, bool)>| {
                a.append_dict_entry(|e| {
                    e.append(path);
                    e.append_array(&ENTRY_SV, |d| {
                        d.append_dict_entry(|p| {
                            p.append("Text");
                            // Not a Value type: only Value is decoded, so this does not matter.
                            p.append(dbus::arg::Variant((1u8, 2u8)));
                        });
                        if let Some((v, supported)) = value {
                            d.append_dict_entry(|p| {
                                p.append("Value");
                                if supported {
                                    p.append(dbus::arg::Variant(v));
                                } else {
                                    p.append(dbus::arg::Variant((v, v)));
                                }
                            });
                        }
                    });
                });
            };
            item(a, "/A", Some((7, true)));
            item(a, "/NoValue", None);
            item(a, "/Struct", Some((8, false)));
        });
        let mut items = Vec::new();
        read_items(&mut m.iter_init(), |p, v| items.push((p.to_owned(), v))).unwrap();
        assert_eq!(items, [("/A".to_owned(), Value::Int(7))]);
        // a{sv} where a{sa{sv}} belongs: the entries' values are not dicts.
        let mut dict = Message::new_method_call("a.b", "/", "a.b", "M").unwrap();
        IterAppend::new(&mut dict).append_array(&ENTRY_SV, |d| {
            d.append_dict_entry(|e| {
                e.append("/A");
                Value::Int(1).append_variant(e);
            })
        });
        assert!(read_items(&mut dict.iter_init(), |_, _| ()).is_none());
        let three = Message::new_method_call("a.b", "/", "a.b", "M").unwrap().append1(3i32);
        assert!(read_items(&mut three.iter_init(), |_, _| ()).is_none());
    }

    #[test]
    fn setting_results_parse_and_reject_garbage() {
        /// An `AddSettings` reply body: one dict per result, with the given entries.
        fn reply(results: &[&[(&str, Value)]]) -> Message {
            let mut m = Message::new_method_call("a.b", "/", "a.b", "M").unwrap();
            IterAppend::new(&mut m).append_array(&ASV, |a| {
                for entries in results {
                    a.append_array(&ENTRY_SV, |d| {
                        for (key, value) in *entries {
                            append_entry(d, key, value);
                        }
                    });
                }
            });
            m
        }
        let parse = |m: &Message| read_setting_results(&mut m.iter_init());

        let m = reply(&[
            &[
                ("error", Value::Int(0)),
                ("path", "/Settings/A".into()),
                ("value", Value::Int(1)),
            ],
            &[("path", "/Settings/B".into()), ("error", Value::Int(-3))],
        ]);
        assert_eq!(m.iter_init().signature().to_string(), "aa{sv}");
        assert_eq!(
            parse(&m).unwrap(),
            [
                SettingResult {
                    path: "/Settings/A".into(),
                    error: 0,
                    value: Some(Value::Int(1)),
                },
                SettingResult {
                    path: "/Settings/B".into(),
                    error: -3,
                    value: None,
                },
            ]
        );
        assert_eq!(parse(&reply(&[])).unwrap(), []);

        // A result without an error code is not a success.
        let no_error = reply(&[&[("path", "/Settings/A".into()), ("value", Value::Int(1))]]);
        let e = parse(&no_error).unwrap_err();
        assert!(e.contains("'error'"), "{e}");
        let text_error = reply(&[&[("error", "0".into()), ("path", "/Settings/A".into())]]);
        assert!(parse(&text_error).unwrap_err().contains("'error'"));
        let no_path = reply(&[&[("error", Value::Int(0)), ("value", Value::Int(1))]]);
        assert!(parse(&no_path).unwrap_err().contains("'path'"));
        // The second result is broken: the whole answer is.
        let m = reply(&[&[("error", Value::Int(0)), ("path", "/Settings/A".into())], &[]]);
        assert!(parse(&m).is_err());

        let m = Message::new_method_call("a.b", "/", "a.b", "M").unwrap().append1(3i32);
        assert!(parse(&m).is_err());
        let m = Message::new_method_call("a.b", "/", "a.b", "M")
            .unwrap()
            .append1(vec![1i32, 2]);
        assert!(parse(&m).is_err());
    }
}
