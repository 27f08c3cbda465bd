//! A `com.victronenergy.settings` double that behaves like localsettings where drivers
//! depend on it (venus-conventions.md §5):
//!
//! - `AddSettings(aa{sv}) → aa{sv}` on any object, with paths relative to that object (the
//!   §5 pitfall: on `/` give full `/Settings/...` paths). The type comes from the default's
//!   D-Bus type: `i`/`x` → int, `d` → float, `s` → string; anything else (bool, `u`, `y`,
//!   `n`…) is refused with -3. Paths outside `/Settings/` are refused with -9, malformed
//!   ones with -4. An existing setting keeps its value. Each result has `error`, `path`
//!   and, when 0, `value`.
//! - `…/ClassAndVrmInstance` values `class:n` move to the next free `n` for that class,
//!   when added and when written with `SetValue`.
//! - Per setting: `GetValue`, `GetText`, `SetValue` (0, or -1 for a value of another type
//!   or out of `[min, max]`), `GetDefault`, `GetMin`, `GetMax`, and `PropertiesChanged`
//!   `{Value, Text}` on every change.
//! - `GetItems` on `/` with `Value`, `Text`, `Default`, `Min`, `Max` per setting.
//!
//! Not modelled: `AddSetting`/`AddSilentSetting` (old form), `RemoveSettings`, group nodes,
//! persistence to XML (but [`SettingsDouble::restart`] serves the same settings again on a
//! restarted bus, as localsettings comes back with its file).

use crate::dbus::conn::{Conn, error_reply, errors};
use crate::dbus::localsettings::{SETTINGS_IFACE, SETTINGS_SERVICE as SERVICE};
use crate::dbus::value::{Kind, Value};
use crate::dbus::wait::{Waiter, Waker, Watchable};
use crate::dbus::wire::{
    ASV, BUSITEM, BUSITEM_IFACE, ENTRY_SASV, ENTRY_SV, PROPERTIES_CHANGED, append_entry, for_each_entry,
};
use crate::dbus::{Bus, BusError};
use dbus::Message;
use dbus::arg::{ArgType, Iter, IterAppend};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// localsettings' `AddSettings` error codes (§5).
const ERR_TYPE: i32 = -3;
const ERR_PATH: i32 = -4;
const ERR_RANGE: i32 = -7;
const ERR_NOT_SETTINGS: i32 = -9;

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    value: Value,
    default: Value,
    min: Option<Value>,
    max: Option<Value>,
}

type Store = BTreeMap<String, Entry>;

/// A running settings double; stops (and releases its name) when dropped.
#[derive(Debug)]
pub struct SettingsDouble {
    store: Arc<Mutex<Store>>,
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl SettingsDouble {
    /// Connects to `bus`, claims `com.victronenergy.settings` and serves it from a thread.
    /// Returns once the name is owned.
    pub fn start(bus: &Bus) -> Result<SettingsDouble, BusError> {
        let store = Arc::new(Mutex::new(Store::new()));
        let (stop, waker, thread) = serve_on(bus, &store)?;
        Ok(SettingsDouble {
            store,
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops serving and serves the same settings again on `bus` (e.g. a restarted bus
    /// daemon), as localsettings comes back with what its XML file holds. Returns once
    /// the name is owned again; on an error nothing is served, and the settings are kept
    /// for another try.
    pub fn restart(&mut self, bus: &Bus) -> Result<(), BusError> {
        self.stop_serving();
        let (stop, waker, thread) = serve_on(bus, &self.store)?;
        self.stop = stop;
        self.waker = waker;
        self.thread = Some(thread);
        Ok(())
    }

    fn stop_serving(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// The stored value of a setting (full path), as a test would check persistence.
    pub fn value(&self, path: &str) -> Option<Value> {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.get(path).map(|e| e.value.clone())
    }

    /// Every setting path, sorted.
    pub fn paths(&self) -> Vec<String> {
        let store = self.store.lock().unwrap_or_else(PoisonError::into_inner);
        store.keys().cloned().collect()
    }
}

impl Drop for SettingsDouble {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

/// Connects to `bus`, claims the name and serves `store` from a new thread until the flag
/// returned is set (and the waker woken) or the bus goes.
fn serve_on(bus: &Bus, store: &Arc<Mutex<Store>>) -> Result<(Arc<AtomicBool>, Waker, JoinHandle<()>), BusError> {
    let mut conn = Conn::open(bus)?;
    conn.request_name(SERVICE)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (mut waiter, waker) = Waiter::new()?;
    let thread = {
        let (store, stop) = (Arc::clone(store), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("settings-double".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    let sources = [&conn as &dyn Watchable];
                    if waiter.wait(sources, Some(Duration::from_secs(1))).is_err() {
                        break;
                    }
                    if serve(&mut conn, &store).is_err() {
                        break; // bus gone
                    }
                }
            })?
    };
    Ok((stop, waker, thread))
}

/// Answers everything that has arrived.
fn serve(conn: &mut Conn, store: &Mutex<Store>) -> Result<(), BusError> {
    let mut sent = false;
    while let Some(msg) = conn.next_message()? {
        if msg.msg_type() != dbus::MessageType::MethodCall {
            continue;
        }
        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        handle(&msg, &mut store, &mut out);
        drop(store);
        for m in out {
            conn.send(m)?;
            sent = true;
        }
    }
    if sent {
        conn.flush();
    }
    Ok(())
}

/// One call: pushes the reply (and any signals) to `out`.
fn handle(msg: &Message, store: &mut Store, out: &mut Vec<Message>) {
    let (Some(path), Some(member)) = (msg.path(), msg.member()) else {
        return;
    };
    let (path, member) = (&*path, &*member);
    let reply = match (msg.interface().as_deref(), member) {
        (Some(SETTINGS_IFACE) | None, "AddSettings") => add_settings(msg, path, store, out),
        (Some(BUSITEM) | None, "GetItems") if path == "/" => {
            let mut r = msg.method_return();
            IterAppend::new(&mut r).append_array(&ENTRY_SASV, |a| {
                for (p, e) in store.iter() {
                    a.append_dict_entry(|d| {
                        d.append(p.as_str());
                        append_props(d, e, true);
                    });
                }
            });
            Some(r)
        }
        (Some(BUSITEM) | None, _) => match store.get(path) {
            None => error_reply(msg, errors::UNKNOWN_OBJECT, &format!("no setting {path}")),
            Some(_) => busitem(msg, path, member, store, out),
        },
        _ => error_reply(msg, errors::UNKNOWN_METHOD, &format!("no method {member}")),
    };
    if let Some(r) = reply
        && !msg.get_no_reply()
    {
        out.push(r);
    }
}

fn busitem(msg: &Message, path: &str, member: &str, store: &mut Store, out: &mut Vec<Message>) -> Option<Message> {
    let e = store.get(path)?;
    let variant = |v: &Value| {
        let mut r = msg.method_return();
        v.append_variant(&mut IterAppend::new(&mut r));
        Some(r)
    };
    match member {
        "GetValue" => variant(&e.value),
        "GetDefault" => variant(&e.default),
        "GetMin" => variant(e.min.as_ref().unwrap_or(&Value::Int(0))),
        "GetMax" => variant(e.max.as_ref().unwrap_or(&Value::Int(0))),
        "GetText" => Some(msg.return_with_args((text(&e.value),))),
        "SetValue" => {
            let mut args = msg.iter_init();
            if args.arg_type() != ArgType::Variant {
                return error_reply(msg, errors::INVALID_ARGS, "SetValue takes one variant");
            }
            let code = match Value::read_variant(&mut args) {
                Ok(v) => set(store, path, v, out),
                Err(_) => -1,
            };
            Some(msg.return_with_args((code,)))
        }
        _ => error_reply(msg, errors::UNKNOWN_METHOD, &format!("no method {member}")),
    }
}

/// `SetValue` on a setting: 0 or -1.
fn set(store: &mut Store, path: &str, value: Value, out: &mut Vec<Message>) -> i32 {
    let Some(e) = store.get(path) else { return -1 };
    let Some(mut value) = value.coerce(e.kind).filter(|v| !v.is_invalid()) else {
        return -1;
    };
    if !in_range(&value, e.min.as_ref(), e.max.as_ref()) {
        return -1;
    }
    if is_instance_path(path) {
        value = allocate_instance(store, path, value);
    }
    let Some(e) = store.get_mut(path) else {
        return -1;
    };
    if e.value != value {
        e.value = value;
        out.extend(properties_changed(path, e));
    }
    0
}

fn add_settings(msg: &Message, object: &str, store: &mut Store, out: &mut Vec<Message>) -> Option<Message> {
    let mut args = msg.iter_init();
    let Some(mut list) = args.recurse(ArgType::Array) else {
        return error_reply(msg, errors::INVALID_ARGS, "AddSettings takes aa{sv}");
    };
    let mut results = Vec::new();
    while list.arg_type() == ArgType::Array {
        results.push(add_one(&mut list, object, store, out));
        list.next();
    }
    let mut r = msg.method_return();
    IterAppend::new(&mut r).append_array(&ASV, |a| {
        for (path, error, value) in &results {
            a.append_array(&ENTRY_SV, |d| {
                append_entry(d, "error", &Value::Int((*error).into()));
                append_entry(d, "path", &Value::Str(path.clone()));
                if let Some(v) = value {
                    append_entry(d, "value", v);
                }
            });
        }
    });
    Some(r)
}

/// One `AddSettings` entry → (path, error, value).
fn add_one(dict: &mut Iter, object: &str, store: &mut Store, out: &mut Vec<Message>) -> (String, i32, Option<Value>) {
    let mut path = None;
    let mut default = Err(ERR_TYPE);
    let (mut min, mut max) = (None, None);
    // A malformed dict ends the reading; whatever is missing then is refused below.
    let _ = for_each_entry(dict, |key, e| {
        match key {
            "path" => path = Value::read_variant(e).ok(),
            "default" => default = typed_default(e),
            "min" => min = Value::read_variant(e).ok(),
            "max" => max = Value::read_variant(e).ok(),
            _ => {}
        }
        Some(())
    });
    let Some(Value::Str(relative)) = path else {
        return (String::new(), ERR_PATH, None);
    };
    // Relative to the called object, even with a leading slash (§5).
    let full = match object {
        "/" => format!("/{}", relative.trim_start_matches('/')),
        _ => format!("{object}/{}", relative.trim_start_matches('/')),
    };
    if !full.starts_with("/Settings/") {
        return (relative, ERR_NOT_SETTINGS, None);
    }
    let bad_segment = |s: &str| s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if full.split('/').skip(1).any(bad_segment) {
        return (relative, ERR_PATH, None);
    }
    let default = match default {
        Ok(d) => d,
        Err(code) => return (relative, code, None),
    };
    if let Some(existing) = store.get(&full) {
        return (relative, 0, Some(existing.value.clone()));
    }
    let kind = default.kind().unwrap_or(Kind::Int);
    let (min, max) = (min.and_then(|m| m.coerce(kind)), max.and_then(|m| m.coerce(kind)));
    // localsettings: min = max = 0 means no limits.
    let (min, max) = if min == max && min.as_ref().and_then(Value::as_f64) == Some(0.0) {
        (None, None)
    } else {
        (min, max)
    };
    if !in_range(&default, min.as_ref(), max.as_ref()) {
        return (relative, ERR_RANGE, None);
    }
    let value = if is_instance_path(&full) {
        allocate_instance(store, &full, default.clone())
    } else {
        default.clone()
    };
    let e = Entry {
        kind,
        value: value.clone(),
        default,
        min,
        max,
    };
    out.extend(properties_changed(&full, &e));
    store.insert(full, e);
    (relative, 0, Some(value))
}

/// The default's type from its D-Bus type: only `i`, `x`, `d`, `s` are accepted (§5).
fn typed_default(e: &mut Iter) -> Result<Value, i32> {
    let mut inner = e.recurse(ArgType::Variant).ok_or(ERR_TYPE)?;
    match inner.arg_type() {
        ArgType::Int32 | ArgType::Int64 | ArgType::Double | ArgType::String => {
            Value::read_plain(&mut inner).map_err(|_| ERR_TYPE)
        }
        _ => Err(ERR_TYPE),
    }
}

fn in_range(v: &Value, min: Option<&Value>, max: Option<&Value>) -> bool {
    let Some(x) = v.as_f64() else { return true };
    min.and_then(Value::as_f64).is_none_or(|m| x >= m) && max.and_then(Value::as_f64).is_none_or(|m| x <= m)
}

fn is_instance_path(path: &str) -> bool {
    path.ends_with("/ClassAndVrmInstance")
}

/// `class:n` → `class:m` with the smallest free `m >= n` among the other
/// `ClassAndVrmInstance` settings. Other values are returned unchanged.
fn allocate_instance(store: &Store, path: &str, value: Value) -> Value {
    let Some((class, n)) = value.as_str().and_then(parse_instance) else {
        return value;
    };
    let taken = |m: i64| {
        store.iter().any(|(p, e)| {
            p != path && is_instance_path(p) && e.value.as_str().and_then(parse_instance) == Some((class, m))
        })
    };
    let mut m = n;
    while taken(m) {
        m += 1;
    }
    Value::Str(format!("{class}:{m}"))
}

fn parse_instance(s: &str) -> Option<(&str, i64)> {
    let (class, n) = s.split_once(':')?;
    Some((class, n.parse().ok()?))
}

fn text(v: &Value) -> String {
    crate::dbus::Format::Plain.text(v)
}

/// `{Value, Text}` (+ `Default`, `Min`, `Max` for `GetItems`).
fn append_props(ia: &mut IterAppend, e: &Entry, limits: bool) {
    ia.append_array(&ENTRY_SV, |d| {
        append_entry(d, "Value", &e.value);
        append_entry(d, "Text", &Value::Str(text(&e.value)));
        if limits {
            append_entry(d, "Default", &e.default);
            append_entry(d, "Min", e.min.as_ref().unwrap_or(&Value::Int(0)));
            append_entry(d, "Max", e.max.as_ref().unwrap_or(&Value::Int(0)));
        }
    });
}

/// `PropertiesChanged` on the setting's path (`None` for a path that is not an object path;
/// `add_one` refuses those).
fn properties_changed(path: &str, e: &Entry) -> Option<Message> {
    let path = dbus::Path::new(path).ok()?;
    let mut m = Message::signal(&path, &BUSITEM_IFACE, &PROPERTIES_CHANGED);
    append_props(&mut IterAppend::new(&mut m), e, false);
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(paths: &[(&str, &str)]) -> Store {
        paths
            .iter()
            .map(|(p, v)| {
                (
                    (*p).to_owned(),
                    Entry {
                        kind: Kind::Str,
                        value: Value::from(*v),
                        default: Value::from(*v),
                        min: None,
                        max: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn instance_allocation() {
        let s = store_with(&[
            ("/Settings/Devices/a/ClassAndVrmInstance", "grid:40"),
            ("/Settings/Devices/b/ClassAndVrmInstance", "grid:41"),
            ("/Settings/Devices/c/ClassAndVrmInstance", "acload:40"),
            ("/Settings/Devices/d/Other", "grid:42"),
        ]);
        let alloc = |p: &str, v: &str| allocate_instance(&s, p, Value::from(v));
        assert_eq!(
            alloc("/Settings/Devices/x/ClassAndVrmInstance", "grid:40"),
            Value::from("grid:42")
        );
        assert_eq!(
            alloc("/Settings/Devices/x/ClassAndVrmInstance", "pvinverter:40"),
            Value::from("pvinverter:40")
        );
        // A setting does not collide with itself.
        assert_eq!(
            alloc("/Settings/Devices/b/ClassAndVrmInstance", "grid:40"),
            Value::from("grid:41")
        );
        assert_eq!(
            alloc("/Settings/Devices/c/ClassAndVrmInstance", "grid:40"),
            Value::from("grid:42")
        );
        assert_eq!(
            alloc("/Settings/Devices/x/ClassAndVrmInstance", "garbage"),
            Value::from("garbage")
        );
    }

    #[test]
    fn ranges() {
        assert!(in_range(&Value::Int(1), Some(&Value::Int(0)), Some(&Value::Int(2))));
        assert!(!in_range(&Value::Int(3), Some(&Value::Int(0)), Some(&Value::Int(2))));
        assert!(in_range(&Value::from("x"), Some(&Value::Int(0)), None));
    }
}
