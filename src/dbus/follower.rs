//! Following a few named services without ever blocking on them.
//!
//! A [`super::BusClient`] reads other services with blocking calls. That is fine for a
//! process that publishes nothing, or whose peers never call it back. A service that
//! reads a peer which also reads *it* must not block: when systemcalc scans our new
//! service (a blocking `GetItems` on us) while we wait for systemcalc's answer, both stall
//! until a timeout. A [`Follower`] therefore sends its reads (`GetItems`) as plain
//! messages and hands their answers out, like the peers' signals, as [`Followed`] events
//! from [`Follower::poll_events`]; the only blocking calls it makes go to the bus daemon
//! (match rules, name owners), which never calls anyone back.
//!
//! What it follows, and how the bus daemon is asked to deliver only that:
//! - [`Follower::follow`]: one service by name: its `ItemsChanged` and `PropertiesChanged`
//!   (match rules with the well-known name as `sender`, which the daemon resolves to the
//!   current owner) and its `NameOwnerChanged`;
//! - [`Follower::watch_namespace`]: only the comings and goings of every name in a
//!   namespace (`arg0namespace`), e.g. every `com.victronenergy.vebus.*` service.
//!
//! Signals are matched to services by the sender's unique name, kept up to date from
//! `NameOwnerChanged` (§2.3). An answer to a read that a later read of the same service
//! superseded is dropped, so a service that went away and came back is never described by
//! its previous owner's answer.
//!
//! A read that never gets an answer (a hung peer) produces no event; the caller bounds its
//! wait with a timeout of its own and reads again.

use super::client::{
    add_match, ask_owner, read_busitem_value, read_items, read_value_dict, remove_match, service_rules,
};
use super::conn::{Bus, Conn, DEFAULT_TIMEOUT, check_bus_name, error_reply, errors};
use super::error::BusError;
use super::value::Value;
use super::wait::Watchable;
use super::wire::{BUSITEM, BUSITEM_IFACE};
use dbus::Message;
use dbus::arg::ArgType;
use dbus::channel::Watch;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

/// What happened to a followed service.
#[derive(Clone, Debug, PartialEq)]
pub enum Followed {
    /// The service has an owner now: it appeared, or it was there when it was followed or
    /// its namespace listed.
    Appeared {
        /// Its well-known name.
        service: String,
    },
    /// The service has no owner any more.
    Vanished {
        /// Its well-known name.
        service: String,
    },
    /// Values of the service: all of them (`complete`: the answer to
    /// [`Follower::read_items`]; a path not in it does not exist), or those that changed
    /// (`ItemsChanged`, `PropertiesChanged`). Values of types the crate does not model are
    /// left out.
    Items {
        /// Its well-known name.
        service: String,
        /// Absolute path → value.
        items: Vec<(String, Value)>,
        /// Whether this is every item of the service.
        complete: bool,
    },
    /// A [`Follower::read_items`] got an error (the service went away meanwhile, or it
    /// answers neither `GetItems` nor `GetValue` on `/`).
    ReadFailed {
        /// Its well-known name.
        service: String,
        /// The error, for the log.
        error: String,
    },
    /// Every name of a namespace given to [`Follower::watch_namespace`] that was on the bus
    /// then has been reported with [`Followed::Appeared`].
    Listed {
        /// The namespace.
        namespace: String,
    },
}

/// Which call a read in flight is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadCall {
    GetItems,
    /// `GetValue` on `/`, for a service without `GetItems` (dbusmonitor's fallback).
    RootValue,
}

#[derive(Clone, Debug)]
struct Read {
    service: String,
    call: ReadCall,
}

/// A connection that follows named services and reads them without blocking (see the
/// module documentation).
#[derive(Debug)]
pub struct Follower {
    conn: Conn,
    timeout: Duration,
    /// Followed services.
    followed: BTreeSet<String>,
    /// Namespaces whose names' comings and goings are reported.
    namespaces: Vec<String>,
    /// Well-known name → unique name of its owner, for every name reported as there.
    owners: BTreeMap<String, String>,
    /// Reads in flight, by the serial of their call.
    reads: HashMap<u32, Read>,
    /// The serial of the latest read of each service.
    latest: HashMap<String, u32>,
    /// Events made outside [`Follower::poll_events`] (by follow and watch), handed out first.
    queued: VecDeque<Followed>,
}

impl Follower {
    /// Connects to `bus`.
    pub fn new(bus: &Bus) -> Result<Follower, BusError> {
        Ok(Follower {
            conn: Conn::open(bus)?,
            timeout: DEFAULT_TIMEOUT,
            followed: BTreeSet::new(),
            namespaces: Vec::new(),
            owners: BTreeMap::new(),
            reads: HashMap::new(),
            latest: HashMap::new(),
            queued: VecDeque::new(),
        })
    }

    fn add_match(&mut self, rule: &str) -> Result<(), BusError> {
        add_match(&mut self.conn, rule, self.timeout)
    }

    fn remove_match(&mut self, rule: &str) -> Result<(), BusError> {
        remove_match(&mut self.conn, rule, self.timeout)
    }

    /// The unique name owning `name`, asked of the bus daemon.
    fn ask_owner(&mut self, name: &str) -> Result<Option<String>, BusError> {
        ask_owner(&mut self.conn, name, self.timeout)
    }

    /// Records `name` as owned by `owner` and queues `Appeared`, unless that was known.
    fn note_owner(&mut self, name: &str, owner: String) {
        if self.owners.get(name) != Some(&owner) {
            self.owners.insert(name.to_owned(), owner);
            self.queued.push_back(Followed::Appeared {
                service: name.to_owned(),
            });
        }
    }

    /// Follows `service`: its signals from now on, and a [`Followed::Appeared`] first if it
    /// is on the bus. Following it again changes nothing.
    pub fn follow(&mut self, service: &str) -> Result<(), BusError> {
        check_bus_name(service)?;
        if self.followed.contains(service) {
            return Ok(());
        }
        for rule in service_rules(service) {
            self.add_match(&rule)?;
        }
        self.followed.insert(service.to_owned());
        if let Some(owner) = self.ask_owner(service)? {
            // Reported even when a watched namespace reported it before: following is
            // what the caller acts on.
            self.owners.insert(service.to_owned(), owner);
            self.queued.push_back(Followed::Appeared {
                service: service.to_owned(),
            });
        }
        Ok(())
    }

    /// Stops following `service` (its signals are no longer delivered; a read in flight is
    /// forgotten). Nothing happens if it was not followed.
    pub fn unfollow(&mut self, service: &str) -> Result<(), BusError> {
        if !self.followed.remove(service) {
            return Ok(());
        }
        for rule in service_rules(service) {
            self.remove_match(&rule)?;
        }
        if let Some(serial) = self.latest.remove(service) {
            self.reads.remove(&serial);
        }
        if !self.in_namespace(service) {
            self.owners.remove(service);
        }
        Ok(())
    }

    /// Whether `service` is followed.
    pub fn follows(&self, service: &str) -> bool {
        self.followed.contains(service)
    }

    /// Reports the comings and goings of every name in `namespace` (a name `namespace` or
    /// `namespace.*`): [`Followed::Appeared`] for each one on the bus now, then
    /// [`Followed::Listed`], then as they come and go. Their signals are not delivered
    /// unless they are also followed.
    pub fn watch_namespace(&mut self, namespace: &str) -> Result<(), BusError> {
        check_bus_name(namespace)?;
        self.add_match(&format!(
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',\
             member='NameOwnerChanged',arg0namespace='{namespace}'"
        ))?;
        self.namespaces.push(namespace.to_owned());
        let reply = self.conn.call(Conn::daemon_call("ListNames"), self.timeout)?;
        let mut names: Vec<String> = reply
            .read1()
            .map_err(|e| BusError::BadReply(format!("ListNames: {e}")))?;
        names.retain(|n| in_namespace(namespace, n));
        names.sort_unstable();
        for name in names {
            if let Some(owner) = self.ask_owner(&name)? {
                self.note_owner(&name, owner);
            }
        }
        self.queued.push_back(Followed::Listed {
            namespace: namespace.to_owned(),
        });
        Ok(())
    }

    fn in_namespace(&self, name: &str) -> bool {
        self.namespaces.iter().any(|ns| in_namespace(ns, name))
    }

    /// Asks `service` for all its items (`GetItems` on `/`, falling back to `GetValue` on
    /// `/` like dbusmonitor) without waiting: the answer comes as [`Followed::Items`] with
    /// `complete`, or [`Followed::ReadFailed`]. An earlier read of the same service still in
    /// flight is superseded: its answer is dropped.
    pub fn read_items(&mut self, service: &str) -> Result<(), BusError> {
        self.send_read(service, ReadCall::GetItems)
    }

    fn send_read(&mut self, service: &str, call: ReadCall) -> Result<(), BusError> {
        let dest = dbus::strings::BusName::new(service).map_err(|_| BusError::BadName(service.to_owned()))?;
        let member = match call {
            ReadCall::GetItems => "GetItems",
            ReadCall::RootValue => "GetValue",
        };
        let msg = Message::method_call(
            &dest,
            &dbus::Path::from("/"),
            &BUSITEM_IFACE,
            &dbus::strings::Member::from(member),
        );
        let serial = self.conn.send_call(msg)?;
        self.conn.flush();
        if let Some(old) = self.latest.insert(service.to_owned(), serial) {
            self.reads.remove(&old);
        }
        self.reads.insert(
            serial,
            Read {
                service: service.to_owned(),
                call,
            },
        );
        Ok(())
    }

    /// Reads in flight (sent, not answered yet).
    pub fn reads_in_flight(&self) -> usize {
        self.reads.len()
    }

    /// Appends every event that has arrived to `out`, without blocking; returns how many.
    /// `Err` means the bus connection is gone.
    pub fn poll_events(&mut self, out: &mut Vec<Followed>) -> Result<usize, BusError> {
        let before = out.len();
        out.extend(self.queued.drain(..));
        while let Some(mut msg) = self.conn.next_message()? {
            match msg.msg_type() {
                dbus::MessageType::Signal => self.on_signal(&msg, out),
                dbus::MessageType::MethodReturn | dbus::MessageType::Error => self.on_reply(&mut msg, out)?,
                dbus::MessageType::MethodCall => {
                    let reply = dbus::channel::default_reply(&msg)
                        .or_else(|| error_reply(&msg, errors::UNKNOWN_OBJECT, "this connection serves nothing"));
                    if let Some(reply) = reply {
                        self.conn.send(reply)?;
                    }
                }
            }
        }
        self.conn.flush();
        Ok(out.len() - before)
    }

    fn on_reply(&mut self, msg: &mut Message, out: &mut Vec<Followed>) -> Result<(), BusError> {
        let Some(serial) = msg.get_reply_serial() else {
            return Ok(());
        };
        let Some(read) = self.reads.remove(&serial) else {
            return Ok(()); // superseded, unfollowed, or not a read
        };
        if self.latest.get(&read.service) == Some(&serial) {
            self.latest.remove(&read.service);
        }
        let service = read.service;
        let error = match msg.as_result() {
            Ok(_) => None,
            Err(e) => Some((e.name().unwrap_or("").to_owned(), e.message().unwrap_or("").to_owned())),
        };
        match (error, read.call) {
            (Some((name, _)), ReadCall::GetItems) if name == errors::UNKNOWN_METHOD => {
                self.send_read(&service, ReadCall::RootValue)?;
            }
            (Some((name, text)), _) => out.push(Followed::ReadFailed {
                service,
                error: format!("{name}: {text}"),
            }),
            (None, ReadCall::GetItems) => {
                let mut items = Vec::new();
                match read_items(&mut msg.iter_init(), |p, v| items.push((p.to_owned(), v))) {
                    Some(()) => out.push(Followed::Items {
                        service,
                        items,
                        complete: true,
                    }),
                    None => out.push(Followed::ReadFailed {
                        service,
                        error: "GetItems answered something other than a{sa{sv}}".to_owned(),
                    }),
                }
            }
            (None, ReadCall::RootValue) => {
                let mut items = Vec::new();
                let parsed = msg
                    .iter_init()
                    .recurse(ArgType::Variant)
                    .and_then(|mut inner| read_value_dict(&mut inner, |k, v| items.push((format!("/{k}"), v))));
                match parsed {
                    Some(()) => out.push(Followed::Items {
                        service,
                        items,
                        complete: true,
                    }),
                    None => out.push(Followed::ReadFailed {
                        service,
                        error: "GetValue on / answered something other than a{sv}".to_owned(),
                    }),
                }
            }
        }
        Ok(())
    }

    /// The followed service that `sender` (a unique name) owns.
    fn followed_service_of(&self, sender: &str) -> Option<&str> {
        self.followed
            .iter()
            .find(|name| self.owners.get(*name).is_some_and(|o| o == sender))
            .map(String::as_str)
    }

    fn on_signal(&mut self, msg: &Message, out: &mut Vec<Followed>) {
        let (Some(member), Some(sender)) = (msg.member(), msg.sender()) else {
            return;
        };
        match (msg.interface().as_deref(), &*member) {
            (Some("org.freedesktop.DBus"), "NameOwnerChanged") => {
                let Ok((name, _old, new)) = msg.read3::<String, String, String>() else {
                    return;
                };
                if !self.followed.contains(&name) && !self.in_namespace(&name) {
                    return;
                }
                let known = self.owners.get(&name).cloned();
                if known.is_some() && known.as_deref() != Some(new.as_str()) {
                    self.owners.remove(&name);
                    out.push(Followed::Vanished { service: name.clone() });
                    // Answers from the owner that left describe nothing now.
                    if let Some(serial) = self.latest.remove(&name) {
                        self.reads.remove(&serial);
                    }
                }
                if !new.is_empty() && known.as_deref() != Some(new.as_str()) {
                    self.owners.insert(name.clone(), new);
                    out.push(Followed::Appeared { service: name });
                }
            }
            (Some(BUSITEM), "ItemsChanged") => {
                let Some(service) = self.followed_service_of(&sender).map(str::to_owned) else {
                    return;
                };
                let mut items = Vec::new();
                if read_items(&mut msg.iter_init(), |p, v| items.push((p.to_owned(), v))).is_some() {
                    out.push(Followed::Items {
                        service,
                        items,
                        complete: false,
                    });
                }
            }
            (Some(BUSITEM), "PropertiesChanged") => {
                let (Some(service), Some(path)) = (self.followed_service_of(&sender).map(str::to_owned), msg.path())
                else {
                    return;
                };
                if let Some(Some(value)) = read_busitem_value(&mut msg.iter_init()) {
                    out.push(Followed::Items {
                        service,
                        items: vec![(path.to_string(), value)],
                        complete: false,
                    });
                }
            }
            _ => {}
        }
    }
}

/// Whether `name` is `namespace` or below it (`namespace.` + more).
fn in_namespace(namespace: &str, name: &str) -> bool {
    name.strip_prefix(namespace)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

impl Watchable for Follower {
    fn watch(&self) -> Watch {
        self.conn.watch()
    }

    fn has_backlog(&self) -> bool {
        !self.queued.is_empty() || self.conn.has_backlog()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn namespaces_are_whole_name_elements() {
        let ns = "com.victronenergy.vebus";
        assert!(super::in_namespace(ns, "com.victronenergy.vebus.ttyS4"));
        assert!(super::in_namespace(ns, "com.victronenergy.vebus"));
        assert!(!super::in_namespace(ns, "com.victronenergy.vebusx.a"));
        assert!(!super::in_namespace(ns, "com.victronenergy.system"));
    }
}
