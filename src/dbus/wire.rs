//! BusItem message bodies built straight from an [`ItemTree`] (sans-IO: messages are built,
//! not sent).
//!
//! Also the small pieces shared by the client and the test double: appending one
//! `{key: variant}` entry, and walking a dict's entries.
//!
//! Keys are appended from the tree's NUL-terminated paths and texts from one reusable
//! buffer, so building a signal allocates nothing on the Rust side beyond what libdbus
//! needs for the message itself.

use super::tree::{ItemId, ItemTree, NodeId};
use super::value::{Value, sig};
use dbus::arg::{ArgType, Iter, IterAppend};
use dbus::strings::{Interface, Member};
use dbus::{Message, Path, Signature};

/// The Venus BusItem interface name.
pub const BUSITEM: &str = "com.victronenergy.BusItem";

macro_rules! consts {
    ($($name:ident: $ty:ident = $s:literal;)*) => {$(
        // SAFETY: each literal is a valid name of its type, NUL-terminated (exercised by the
        // unit tests, which build messages with every one of them).
        pub(crate) const $name: $ty<'static> = unsafe { $ty::from_slice_unchecked($s) };
    )*};
}

consts! {
    ROOT_PATH: Path = "/\0";
    BUSITEM_IFACE: Interface = "com.victronenergy.BusItem\0";
    PROPERTIES_CHANGED: Member = "PropertiesChanged\0";
    ENTRY_SV: Signature = "{sv}\0";
    ENTRY_SS: Signature = "{ss}\0";
    ENTRY_SASV: Signature = "{sa{sv}}\0";
    ASV: Signature = "a{sv}\0";
    ASS: Signature = "a{ss}\0";
}

const KEY_VALUE: &str = "Value\0";
const KEY_TEXT: &str = "Text\0";

/// Appends `a{sv}`: every leaf below `node` by relative key (`GetValue` on a node).
pub(super) fn append_value_dict(ia: &mut IterAppend, tree: &ItemTree, node: NodeId) {
    ia.append_array(&ENTRY_SV, |a| {
        for (key, id) in tree.below_z(node) {
            a.append_dict_entry(|e| {
                e.append(key);
                tree.value(id).append_variant(e);
            });
        }
    });
}

/// Appends `a{ss}`: every leaf below `node` by relative key, as text (`GetText` on a node).
pub(super) fn append_text_dict(ia: &mut IterAppend, tree: &ItemTree, node: NodeId, scratch: &mut String) {
    ia.append_array(&ENTRY_SS, |a| {
        for (key, id) in tree.below_z(node) {
            a.append_dict_entry(|e| {
                e.append(key);
                e.append(text_z(tree, id, scratch));
            });
        }
    });
}

/// Appends `a{sa{sv}}`: the given leaves by absolute key, each with `Value` and `Text`
/// (`GetItems`, `ItemsChanged`).
pub(super) fn append_items(
    ia: &mut IterAppend,
    tree: &ItemTree,
    ids: impl Iterator<Item = ItemId>,
    scratch: &mut String,
) {
    ia.append_array(&ENTRY_SASV, |a| {
        for id in ids {
            a.append_dict_entry(|e| {
                e.append(tree.path_z(id));
                append_value_and_text(e, tree, id, scratch);
            });
        }
    });
}

/// Appends `a{sv}` with `Value` and `Text` of one leaf (`PropertiesChanged`, `GetItems`).
pub(super) fn append_value_and_text(ia: &mut IterAppend, tree: &ItemTree, id: ItemId, scratch: &mut String) {
    ia.append_array(&ENTRY_SV, |d| {
        d.append_dict_entry(|e| {
            e.append(KEY_VALUE);
            tree.value(id).append_variant(e);
        });
        d.append_dict_entry(|e| {
            e.append(KEY_TEXT);
            e.append_variant(&sig::S, |v| v.append(text_z(tree, id, scratch)));
        });
    });
}

/// The `PropertiesChanged` signal of one leaf, on the leaf's own path.
pub(super) fn properties_changed(tree: &ItemTree, id: ItemId, scratch: &mut String) -> Message {
    // Tree paths are validated object paths; from_slice re-checks without copying.
    let path = Path::from_slice(tree.path_z(id)).unwrap_or(ROOT_PATH);
    let mut msg = Message::signal(&path, &BUSITEM_IFACE, &PROPERTIES_CHANGED);
    append_value_and_text(&mut IterAppend::new(&mut msg), tree, id, scratch);
    msg
}

/// Appends one dict entry `{key: variant}` to the `a{sv}` being built in `dict`.
pub(crate) fn append_entry(dict: &mut IterAppend, key: &str, value: &Value) {
    dict.append_dict_entry(|e| {
        e.append(key);
        value.append_variant(e);
    });
}

/// Calls `f(key, value)` for each entry of the dict with string keys (`a{s…}`) at `it`,
/// `value` being an iterator at the entry's value. `None` when the argument is not such a
/// dict, or as soon as `f` returns `None`.
pub(crate) fn for_each_entry<'a>(
    it: &mut Iter<'a>,
    mut f: impl FnMut(&'a str, &mut Iter<'a>) -> Option<()>,
) -> Option<()> {
    let mut entries = it.recurse(ArgType::Array)?;
    loop {
        match entries.arg_type() {
            ArgType::Invalid => return Some(()),
            ArgType::DictEntry => {
                let mut e = entries.recurse(ArgType::DictEntry)?;
                let key: &'a str = e.get()?;
                e.next();
                f(key, &mut e)?;
            }
            _ => return None,
        }
        entries.next();
    }
}

/// The leaf's text in `scratch`, NUL-terminated for a copy-free append.
pub(crate) fn text_z<'s>(tree: &ItemTree, id: ItemId, scratch: &'s mut String) -> &'s str {
    scratch.clear();
    tree.write_text(id, scratch);
    // A NUL inside the text would end the D-Bus string early; strings from D-Bus never
    // contain one, and application strings should not.
    scratch.push('\0');
    scratch.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::text::Format;
    use crate::dbus::tree::{NodeRef, TreeBuilder};
    use crate::dbus::value::{Kind, Value};
    use dbus::arg::{ArgType, Iter};
    use std::collections::BTreeMap;

    fn tree() -> ItemTree {
        let mut b = TreeBuilder::new();
        b.add("/Ac/Power", Kind::Double, Format::number(1, "W")).value(230.24);
        b.add("/Ac/L1/Power", Kind::Double, Format::number(1, "W"));
        b.add("/DeviceInstance", Kind::Int, Format::Plain).value(40);
        b.build().unwrap()
    }

    fn body() -> Message {
        Message::new_method_call("a.b", "/", "a.b", "M").unwrap()
    }

    fn read_sv(it: &mut Iter) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut arr = it.recurse(ArgType::Array).unwrap();
        while arr.arg_type() == ArgType::DictEntry {
            let mut e = arr.recurse(ArgType::DictEntry).unwrap();
            let k: String = e.get().unwrap();
            e.next();
            out.insert(k, Value::read_variant(&mut e).unwrap());
            arr.next();
        }
        out
    }

    #[test]
    fn static_names_are_valid() {
        for sig in [&ASV, &ASS] {
            assert!(Signature::new(sig.to_string()).is_ok(), "{sig}");
        }
        assert!(Path::new(ROOT_PATH.to_string()).is_ok());
        assert!(Interface::new(BUSITEM_IFACE.to_string()).is_ok());
        assert!(Member::new(PROPERTIES_CHANGED.to_string()).is_ok());
        assert_eq!(&*BUSITEM_IFACE, BUSITEM);
    }

    #[test]
    fn value_dict_has_relative_keys() {
        let t = tree();
        let mut m = body();
        append_value_dict(&mut IterAppend::new(&mut m), &t, t.root());
        assert_eq!(m.iter_init().signature().to_string(), "a{sv}");
        let d = read_sv(&mut m.iter_init());
        assert_eq!(d.len(), 3);
        assert_eq!(d["Ac/Power"], Value::Double(230.24));
        assert_eq!(d["Ac/L1/Power"], Value::Invalid);
        assert_eq!(d["DeviceInstance"], Value::Int(40));
    }

    #[test]
    fn text_dict() {
        let t = tree();
        let Some(NodeRef::Node(ac)) = t.lookup("/Ac") else {
            panic!()
        };
        let mut m = body();
        append_text_dict(&mut IterAppend::new(&mut m), &t, ac, &mut String::new());
        let d: std::collections::HashMap<String, String> = m.read1().unwrap();
        assert_eq!(d["Power"], "230.2 W");
        assert_eq!(d["L1/Power"], "---");
    }

    #[test]
    fn items_changed_only_pending_with_absolute_keys() {
        let mut t = tree();
        let id = t.id("/Ac/L1/Power").unwrap();
        t.set(id, 1.0);
        let mut buf = Vec::new();
        let changes = t.changes().iter().copied();
        super::super::marshal::items_changed(&mut buf, 0x8000_0000, &t, changes, &mut String::new());
        let m = Message::demarshal(&buf).unwrap();
        assert_eq!(&*m.path().unwrap(), "/");
        assert_eq!(&*m.member().unwrap(), "ItemsChanged");
        let mut it = m.iter_init();
        assert_eq!(it.signature().to_string(), "a{sa{sv}}");
        let mut arr = it.recurse(ArgType::Array).unwrap();
        let mut e = arr.recurse(ArgType::DictEntry).unwrap();
        assert_eq!(e.get::<&str>(), Some("/Ac/L1/Power"));
        e.next();
        let inner = read_sv(&mut e);
        assert_eq!(inner["Value"], Value::Double(1.0));
        assert_eq!(inner["Text"], Value::from("1.0 W"));
        assert!(!arr.next());
    }

    #[test]
    fn properties_changed_on_leaf_path() {
        let t = tree();
        let id = t.id("/DeviceInstance").unwrap();
        let m = properties_changed(&t, id, &mut String::new());
        assert_eq!(&*m.path().unwrap(), "/DeviceInstance");
        assert_eq!(&*m.interface().unwrap(), BUSITEM);
        let d = read_sv(&mut m.iter_init());
        assert_eq!(d["Value"], Value::Int(40));
        assert_eq!(d["Text"], Value::from("40"));
    }
}
