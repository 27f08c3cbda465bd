//! The `ItemsChanged` signal written straight into D-Bus wire format.
//!
//! Building the signal with libdbus's iterators costs about 5,000
//! instructions per changed path (a container opened, checked and closed
//! for every key, variant and dict); a meter poll changes up to ten paths
//! and this was most of pzem-dbus's work per poll. Here the message is
//! written into a reused buffer in one pass (little-endian, the alignment
//! rules of the D-Bus specification, the wire types of
//! [`Value::append_variant`]) and written to the connection's socket in one
//! `send(2)` ([`super::Conn::send_marshalled`]). Its tests parse the bytes
//! with libdbus (`dbus_message_demarshal`, which validates every field)
//! and compare them with the message libdbus's iterators build; the bus
//! daemon validates every message it receives as well.

use super::tree::{ItemId, ItemTree};
use super::value::Value;

/// Serial numbers of the signals written here start at this value, far
/// above the ones libdbus gives the connection's own messages (from 1), so
/// the two never meet.
pub const FIRST_SIGNAL_SERIAL: u32 = 0x8000_0000;

const SIGNAL: u8 = 4;
const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_SIGNATURE: u8 = 8;

/// Appends little-endian D-Bus data to a buffer that starts at a message's
/// first byte (alignment is counted from there).
struct Writer<'a> {
    buf: &'a mut Vec<u8>,
}

// The writer's steps are a few instructions each: inlined even in size-optimised
// builds, they cost a fraction of a call each.
impl Writer<'_> {
    #[inline(always)]
    fn pad(&mut self, align: usize) {
        let n = self.buf.len().next_multiple_of(align) - self.buf.len();
        self.buf.extend_from_slice(&[0u8; 8][..n]);
    }

    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    #[inline(always)]
    fn string(&mut self, s: &str) {
        // Lengths beyond u32 cannot occur: texts and paths are short.
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    #[inline(always)]
    fn signature(&mut self, s: &str) {
        self.buf.push(s.len() as u8);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    /// Starts an array whose elements align to `align`; returns what
    /// [`Writer::end_array`] needs.
    #[inline(always)]
    fn begin_array(&mut self, align: usize) -> (usize, usize) {
        self.u32(0);
        let len_at = self.buf.len() - 4;
        self.pad(align);
        (len_at, self.buf.len())
    }

    #[inline(always)]
    fn end_array(&mut self, (len_at, start): (usize, usize)) {
        let len = (self.buf.len() - start) as u32;
        self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// A header field: `(code, variant)` struct holding a string-like value.
    fn field(&mut self, code: u8, sig: &str, text: &str) {
        self.pad(8);
        self.buf.push(code);
        self.signature(sig);
        if sig == "g" {
            self.signature(text);
        } else {
            self.string(text);
        }
    }

    /// A value in a variant, with [`Value::append_variant`]'s wire types.
    fn variant(&mut self, value: &Value) {
        match value {
            Value::Invalid => {
                self.signature("ai");
                let a = self.begin_array(4);
                self.end_array(a);
            }
            Value::Double(d) => {
                self.signature("d");
                self.pad(8);
                self.buf.extend_from_slice(&d.to_le_bytes());
            }
            Value::Int(i) => match i32::try_from(*i) {
                Ok(i) => {
                    self.signature("i");
                    self.pad(4);
                    self.buf.extend_from_slice(&i.to_le_bytes());
                }
                Err(_) => {
                    self.signature("x");
                    self.pad(8);
                    self.buf.extend_from_slice(&i.to_le_bytes());
                }
            },
            Value::Str(s) => {
                self.signature("s");
                self.string(s);
            }
            Value::StrList(list) => {
                self.signature("av");
                let a = self.begin_array(1);
                for s in list {
                    self.signature("s");
                    self.string(s);
                }
                self.end_array(a);
            }
        }
    }
}

/// The fixed header of `ItemsChanged` (body length and serial left 0), padded
/// to the body: written once per thread and copied after.
fn write_header(w: &mut Writer<'_>) {
    thread_local! {
        static HEADER: Vec<u8> = {
            let mut buf = Vec::with_capacity(128);
            let mut h = Writer { buf: &mut buf };
            h.buf.extend_from_slice(&[b'l', SIGNAL, 0, 1]);
            h.u32(0); // body length, patched by the caller
            h.u32(0); // serial, patched by the caller
            let fields = h.begin_array(8);
            h.field(FIELD_PATH, "o", "/");
            h.field(FIELD_INTERFACE, "s", super::wire::BUSITEM);
            h.field(FIELD_MEMBER, "s", "ItemsChanged");
            h.field(FIELD_SIGNATURE, "g", "a{sa{sv}}");
            h.end_array(fields);
            h.pad(8);
            buf
        };
    }
    HEADER.with(|h| w.buf.extend_from_slice(h));
}

/// Writes into `buf` (cleared first) the complete `ItemsChanged` signal on
/// `/` for `ids` of `tree` (absolute keys, each with `Value` and `Text`),
/// with serial number `serial` (not 0). `text` is scratch space for the
/// texts. No sender: the bus daemon adds it.
pub fn items_changed(
    buf: &mut Vec<u8>,
    serial: u32,
    tree: &ItemTree,
    ids: impl Iterator<Item = ItemId>,
    text: &mut String,
) {
    buf.clear();
    let mut w = Writer { buf };
    write_header(&mut w);
    w.buf[8..12].copy_from_slice(&serial.to_le_bytes());
    let body = w.buf.len();
    let items = w.begin_array(8);
    for id in ids {
        w.pad(8);
        let path = tree.path_z(id);
        w.string(&path[..path.len() - 1]);
        let entry = w.begin_array(8);
        w.pad(8);
        w.string("Value");
        w.variant(tree.value(id));
        w.pad(8);
        w.string("Text");
        w.signature("s");
        text.clear();
        tree.write_text(id, text);
        w.string(text);
        w.end_array(entry);
    }
    w.end_array(items);
    let body_len = (w.buf.len() - body) as u32;
    w.buf[4..8].copy_from_slice(&body_len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::text::Format;
    use crate::dbus::tree::TreeBuilder;
    use crate::dbus::value::Kind;
    use dbus::Message;
    use dbus::arg::RefArg;

    fn tree() -> ItemTree {
        let mut b = TreeBuilder::new();
        b.add("/Ac/Power", Kind::Double, Format::number(1, "W")).value(-1234.56);
        b.add("/Ac/L1/Voltage", Kind::Double, Format::number(1, "V"));
        b.add("/DeviceInstance", Kind::Int, Format::Plain).value(40);
        b.add("/Big", Kind::Int, Format::Plain).value(1i64 << 40);
        b.add("/CustomName", Kind::Str, Format::Plain).value("Shed ✓");
        b.add("/AllowedRoles", Kind::StrList, Format::Plain)
            .value(vec!["grid".to_owned(), "acload".to_owned()]);
        b.add("/Empty", Kind::StrList, Format::Plain)
            .value(Vec::<String>::new());
        b.build().unwrap()
    }

    /// The body of a message as text, type by type (`RefArg` debug form).
    fn body(m: &Message) -> String {
        format!("{:?}", m.get_items().iter().map(|a| a.box_clone()).collect::<Vec<_>>())
    }

    #[test]
    fn the_written_signal_is_the_one_libdbus_builds() {
        let t = tree();
        let mut buf = Vec::new();
        let mut text = String::new();
        for n in 0..=t.len() {
            let ids: Vec<ItemId> = t.ids().take(n).collect();
            items_changed(&mut buf, FIRST_SIGNAL_SERIAL + 7, &t, ids.iter().copied(), &mut text);
            let ours = Message::demarshal(&buf).expect("libdbus accepts it");
            let mut theirs = Message::signal(
                &super::super::wire::ROOT_PATH,
                &super::super::wire::BUSITEM_IFACE,
                &dbus::strings::Member::from("ItemsChanged"),
            );
            super::super::wire::append_items(
                &mut dbus::arg::IterAppend::new(&mut theirs),
                &t,
                ids.iter().copied(),
                &mut text,
            );
            assert_eq!(ours.msg_type(), dbus::MessageType::Signal);
            assert_eq!(ours.get_serial(), Some(FIRST_SIGNAL_SERIAL + 7));
            assert_eq!(ours.path().as_deref(), Some("/"));
            assert_eq!(ours.interface().as_deref(), Some("com.victronenergy.BusItem"));
            assert_eq!(ours.member().as_deref(), Some("ItemsChanged"));
            assert_eq!(ours.iter_init().signature(), theirs.iter_init().signature());
            assert_eq!(body(&ours), body(&theirs), "{n} items");
        }
    }
}
