//! A Venus service: one connection, one well-known name, one [`ItemTree`] served as
//! `com.victronenergy.BusItem` objects (venus-conventions.md §1–§2).
//!
//! What is served, per node kind:
//!
//! | node | methods |
//! |---|---|
//! | leaf | `GetValue → v`, `GetText → s`, `SetValue(v) → i`, `GetDescription(s, i) → s` |
//! | intermediate | `GetValue → v(a{sv})`, `GetText → v(a{ss})`, relative keys |
//! | root `/` | as intermediate, plus `GetItems → a{sa{sv}}` with absolute keys |
//! | every node | `org.freedesktop.DBus.Introspectable.Introspect` with child `<node>`s |
//!
//! Unknown paths fail with `UnknownObject`, unknown members with `UnknownMethod`, a
//! `SetValue` whose argument is not one variant with `InvalidArgs`. `SetValue` answers 0
//! when accepted (also when unchanged), 1 for read-only paths and values that cannot take
//! the path's kind, and the owner's code when it rejects. A call sent with
//! `NO_REPLY_EXPECTED` gets no reply, whatever the outcome.

use super::conn::{Bus, Conn, error_reply, errors};
use super::error::BusError;
use super::introspect;
use super::marshal;
use super::tree::{Access, ItemId, ItemTree, NodeRef};
use super::value::Value;
use super::wait::Watchable;
use super::wire::{self, ASS, ASV, BUSITEM};
use dbus::Message;
use dbus::arg::{ArgType, Iter, IterAppend};
use dbus::channel::Watch;

/// `SetValue` reply for a read-only path or a value that cannot take the path's kind.
pub const SET_REFUSED: i32 = 1;
/// `SetValue` reply when the owner rejects without a code of its own (velib's 2).
pub const SET_REJECTED: i32 = 2;

/// The owner's verdict on a `SetValue` to a writable path.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Store the value as sent (already converted to the path's kind).
    Accept,
    /// Store this value instead (e.g. trimmed or clamped). Must have the path's kind,
    /// otherwise the write is rejected with [`SET_REJECTED`].
    AcceptAs(Value),
    /// Refuse; the caller gets this code (0 is replaced by [`SET_REJECTED`]).
    Reject(i32),
}

/// Decides on writes to [`Access::Writable`] paths, and persists them if it wants.
pub trait WriteHandler {
    /// Called for each `SetValue` to a writable path, with the value converted to the
    /// path's kind. Runs on the D-Bus thread: do not block.
    fn on_write(&mut self, path: &str, value: &Value) -> WriteOutcome;
}

impl<F: FnMut(&str, &Value) -> WriteOutcome> WriteHandler for F {
    fn on_write(&mut self, path: &str, value: &Value) -> WriteOutcome {
        self(path, value)
    }
}

/// One published Venus service.
#[derive(Debug)]
pub struct Service {
    name: String,
    conn: Conn,
    tree: ItemTree,
    /// Reused text buffer: formatting allocates only when a text outgrows it.
    scratch: String,
    /// Reused buffer the `ItemsChanged` signal is written into.
    signal: Vec<u8>,
    /// Serial number of the next `ItemsChanged`.
    next_serial: u32,
}

impl Service {
    /// Connects to `bus`, then claims `name` with `DO_NOT_QUEUE`. The tree is complete by
    /// construction, so the name appears only once every path (and `/DeviceInstance`)
    /// can be read. Fails with [`BusError::NameTaken`] when another process owns the name.
    pub fn new(bus: &Bus, name: &str, tree: ItemTree) -> Result<Service, BusError> {
        super::conn::check_bus_name(name)?;
        let mut conn = Conn::open(bus)?;
        conn.request_name(name)?;
        log::debug!(
            "{name}: claimed as {}",
            conn.unique_name().unwrap_or("(no unique name)")
        );
        Ok(Service {
            name: name.to_owned(),
            conn,
            tree,
            scratch: String::with_capacity(64),
            signal: Vec::with_capacity(1024),
            next_serial: marshal::FIRST_SIGNAL_SERIAL,
        })
    }

    /// Gives the name up and closes the connection. Unlike a plain drop, the name is free
    /// when this returns, so a new service can claim it at once (re-registration with a new
    /// device instance under the same name).
    pub fn release(mut self) -> Result<(), BusError> {
        self.conn.flush();
        self.conn.release_name(&self.name)
    }

    /// The well-known name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tree.
    pub fn tree(&self) -> &ItemTree {
        &self.tree
    }

    /// The tree, to set values in the current batch (see [`ItemTree::set`]).
    pub fn tree_mut(&mut self) -> &mut ItemTree {
        &mut self.tree
    }

    /// Shorthand for `tree_mut().set(id, value)`.
    pub fn set(&mut self, id: ItemId, value: impl Into<Value>) -> bool {
        self.tree.set(id, value)
    }

    /// Sends one `ItemsChanged` on `/` with every path changed since the last flush, and
    /// ends the batch. Sends nothing and returns `Ok(false)` when nothing changed.
    pub fn flush(&mut self) -> Result<bool, BusError> {
        if !self.tree.has_changes() {
            return Ok(false);
        }
        marshal::items_changed(
            &mut self.signal,
            self.next_serial,
            &self.tree,
            self.tree.changes().iter().copied(),
            &mut self.scratch,
        );
        self.next_serial = self.next_serial.checked_add(1).unwrap_or(marshal::FIRST_SIGNAL_SERIAL);
        self.tree.clear_changes();
        self.conn.send_marshalled(&self.signal)?;
        Ok(true)
    }

    /// Answers every call that has arrived, without blocking. Writes go to `handler`.
    /// Returns how many messages were handled; `Err(Disconnected)` when the bus is gone.
    pub fn process(&mut self, handler: &mut dyn WriteHandler) -> Result<usize, BusError> {
        let mut handled = 0;
        while let Some(msg) = self.conn.next_message()? {
            handled += 1;
            if msg.msg_type() != dbus::MessageType::MethodCall {
                continue; // NameAcquired and other signals addressed to us
            }
            if let Some(reply) = self.handle_call(&msg, handler) {
                self.conn.send(reply)?;
            }
        }
        if handled > 0 {
            self.conn.flush();
        }
        Ok(handled)
    }

    fn handle_call(&mut self, msg: &Message, handler: &mut dyn WriteHandler) -> Option<Message> {
        let member = msg.member()?;
        let path = msg.path()?;
        let node = self.tree.lookup(&path);
        match msg.interface().as_deref() {
            None | Some(BUSITEM) => {}
            Some("org.freedesktop.DBus.Introspectable") => {
                return match (node, &*member) {
                    (None, _) => unknown_object(msg, &path),
                    (Some(node), "Introspect") => Some(msg.return_with_args((introspect::xml(&self.tree, node),))),
                    _ => unknown_method(msg, &member),
                };
            }
            Some("org.freedesktop.DBus.Peer") => return dbus::channel::default_reply(msg),
            Some(other) => {
                return error_reply(
                    msg,
                    errors::UNKNOWN_INTERFACE,
                    &format!("no interface {other} on {path}"),
                );
            }
        }
        let Some(node) = node else {
            return unknown_object(msg, &path);
        };
        let mut reply = msg.method_return();
        let mut ia = IterAppend::new(&mut reply);
        match (node, &*member) {
            (NodeRef::Leaf(id), "GetValue") => self.tree.value(id).append_variant(&mut ia),
            (NodeRef::Leaf(id), "GetText") => {
                ia.append(wire::text_z(&self.tree, id, &mut self.scratch));
            }
            (NodeRef::Leaf(id), "SetValue") => return self.set_value(msg, id, handler),
            (NodeRef::Leaf(_), "GetDescription") => ia.append(""),
            (NodeRef::Node(n), "GetValue") => ia.append_variant(&ASV, |v| {
                wire::append_value_dict(v, &self.tree, n);
            }),
            (NodeRef::Node(n), "GetText") => {
                let (tree, scratch) = (&self.tree, &mut self.scratch);
                ia.append_variant(&ASS, |v| wire::append_text_dict(v, tree, n, scratch));
            }
            (NodeRef::Node(n), "GetItems") if self.tree.is_root(n) => {
                wire::append_items(&mut ia, &self.tree, self.tree.ids(), &mut self.scratch);
            }
            _ => return unknown_method(msg, &member),
        }
        (!msg.get_no_reply()).then_some(reply)
    }

    /// `SetValue`: `InvalidArgs` unless the body is exactly one variant, else the code of
    /// [`Service::write_code`]. Either answer is sent only when the caller expects a reply.
    fn set_value(&mut self, msg: &Message, id: ItemId, handler: &mut dyn WriteHandler) -> Option<Message> {
        let Some(arg) = sole_variant(msg) else {
            return error_reply(msg, errors::INVALID_ARGS, "SetValue takes one variant");
        };
        let code = self.write_code(id, arg, handler);
        (!msg.get_no_reply()).then(|| msg.return_with_args((code,)))
    }

    /// Decides a write of the variant at `arg` to leaf `id`, stores it when accepted
    /// (announced with `PropertiesChanged` when it changed), and returns the reply code.
    fn write_code(&mut self, id: ItemId, mut arg: Iter, handler: &mut dyn WriteHandler) -> i32 {
        if self.tree.access(id) == Access::ReadOnly {
            return SET_REFUSED;
        }
        let kind = self.tree.kind(id);
        let Some(value) = Value::read_variant(&mut arg).ok().and_then(|v| v.coerce(kind)) else {
            return SET_REFUSED;
        };
        let value = match handler.on_write(self.tree.path(id), &value) {
            WriteOutcome::Accept => value,
            WriteOutcome::AcceptAs(other) => match other.coerce(kind) {
                Some(v) => v,
                None => return SET_REJECTED,
            },
            WriteOutcome::Reject(code) => return nonzero(code),
        };
        if self.tree.replace(id, value) {
            // A one-off change: announced on its own path (§2.3).
            let signal = wire::properties_changed(&self.tree, id, &mut self.scratch);
            if self.conn.send(signal).is_err() {
                log::warn!("{}: PropertiesChanged not sent", self.name);
            }
        }
        0
    }
}

/// The argument iterator at the body's only argument when that is a variant.
fn sole_variant(msg: &Message) -> Option<Iter<'_>> {
    let mut first = msg.iter_init();
    let mut rest = first;
    (first.arg_type() == ArgType::Variant && !rest.next()).then_some(first)
}

fn nonzero(code: i32) -> i32 {
    if code == 0 { SET_REJECTED } else { code }
}

fn unknown_object(msg: &Message, path: &str) -> Option<Message> {
    error_reply(msg, errors::UNKNOWN_OBJECT, &format!("no object at {path}"))
}

fn unknown_method(msg: &Message, member: &str) -> Option<Message> {
    error_reply(msg, errors::UNKNOWN_METHOD, &format!("no method {member} here"))
}

impl Watchable for Service {
    fn watch(&self) -> Watch {
        self.conn.watch()
    }

    fn has_backlog(&self) -> bool {
        self.conn.has_backlog()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reject_code_is_never_zero() {
        assert_eq!(super::nonzero(0), super::SET_REJECTED);
        assert_eq!(super::nonzero(-1), -1);
    }
}
