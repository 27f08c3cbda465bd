//! `org.freedesktop.DBus.Introspectable` XML for the nodes of an [`ItemTree`] (sans-IO).
//!
//! Shaped like dbus-python/velib's answers (venus-conventions.md §2.1): the root lists
//! `GetValue`/`GetText`/`GetItems`/`ItemsChanged`, intermediate nodes `GetValue`/`GetText`,
//! leaves `GetValue`/`GetText`/`SetValue`/`GetDescription`/`PropertiesChanged`; every
//! node has a `<node name="…"/>` per direct child so command-line browsers can walk the tree.

use super::tree::{ItemTree, NodeRef};

const HEADER: &str = "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd\">\n<node>\n";

const INTROSPECTABLE: &str = r#"  <interface name="org.freedesktop.DBus.Introspectable">
    <method name="Introspect">
      <arg direction="out" type="s" />
    </method>
  </interface>
"#;

const ROOT: &str = r#"  <interface name="com.victronenergy.BusItem">
    <method name="GetItems">
      <arg direction="out" type="a{sa{sv}}" />
    </method>
    <method name="GetValue">
      <arg direction="out" type="v" />
    </method>
    <method name="GetText">
      <arg direction="out" type="v" />
    </method>
    <signal name="ItemsChanged">
      <arg type="a{sa{sv}}" />
    </signal>
  </interface>
"#;

const INTERMEDIATE: &str = r#"  <interface name="com.victronenergy.BusItem">
    <method name="GetValue">
      <arg direction="out" type="v" />
    </method>
    <method name="GetText">
      <arg direction="out" type="v" />
    </method>
  </interface>
"#;

const LEAF: &str = r#"  <interface name="com.victronenergy.BusItem">
    <method name="GetValue">
      <arg direction="out" type="v" />
    </method>
    <method name="GetText">
      <arg direction="out" type="s" />
    </method>
    <method name="SetValue">
      <arg direction="in" type="v" />
      <arg direction="out" type="i" />
    </method>
    <method name="GetDescription">
      <arg direction="in" type="s" />
      <arg direction="in" type="i" />
      <arg direction="out" type="s" />
    </method>
    <signal name="PropertiesChanged">
      <arg type="a{sv}" />
    </signal>
  </interface>
"#;

/// The introspection XML of one node of `tree`.
pub(super) fn xml(tree: &ItemTree, node: NodeRef) -> String {
    let mut out = String::with_capacity(2048);
    out.push_str(HEADER);
    out.push_str(INTROSPECTABLE);
    match node {
        NodeRef::Leaf(_) => out.push_str(LEAF),
        NodeRef::Node(n) => {
            out.push_str(if tree.is_root(n) { ROOT } else { INTERMEDIATE });
            for child in tree.children(n) {
                // Child names are [A-Za-z0-9_]: nothing to escape.
                out.push_str("  <node name=\"");
                out.push_str(child);
                out.push_str("\"/>\n");
            }
        }
    }
    out.push_str("</node>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dbus::text::Format;
    use crate::dbus::tree::TreeBuilder;
    use crate::dbus::value::Kind;

    #[test]
    fn nodes_and_children() {
        let mut b = TreeBuilder::new();
        b.add("/Ac/Power", Kind::Double, Format::Plain);
        b.add("/Ac/L1/Power", Kind::Double, Format::Plain);
        b.add("/Serial", Kind::Str, Format::Plain);
        let t = b.build().unwrap();
        let root = xml(&t, t.lookup("/").unwrap());
        assert!(root.contains("<method name=\"GetItems\">"));
        assert!(root.contains("<node name=\"Ac\"/>"));
        assert!(root.contains("<node name=\"Serial\"/>"));
        assert!(!root.contains("<node name=\"L1\"/>"));
        let ac = xml(&t, t.lookup("/Ac").unwrap());
        assert!(!ac.contains("GetItems"));
        assert!(ac.contains("<node name=\"L1\"/>") && ac.contains("<node name=\"Power\"/>"));
        let leaf = xml(&t, t.lookup("/Serial").unwrap());
        assert!(leaf.contains("SetValue") && leaf.contains("PropertiesChanged"));
        assert!(!leaf.contains("<node name"));
    }
}
