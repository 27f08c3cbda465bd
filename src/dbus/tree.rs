//! The path tree of one Venus service (sans-IO).
//!
//! An [`ItemTree`] is built once by a [`TreeBuilder`] and never changes shape: leaves are
//! sorted once, every intermediate node and its leaf range is computed once, so lookups are
//! binary searches and the per-poll work is [`ItemTree::set`] plus one pass over the pending
//! changes when the service flushes.
//!
//! Three kinds of node (venus-conventions.md §2): the root `/`, intermediate nodes such as
//! `/Ac` or `/Ac/L1`, and leaves such as `/Ac/L1/Power`. A path is a leaf or a node, never
//! both.

use super::text::Format;
use super::value::{Kind, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

/// Handle of a leaf, stable for the life of its tree. Resolve once with [`ItemTree::id`],
/// then set values without a path lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId(u32);

/// Handle of the root or an intermediate node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

/// Who may change a leaf through `SetValue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// `SetValue` is refused (non-zero reply).
    #[default]
    ReadOnly,
    /// `SetValue` is passed to the owner's write handler, which accepts or rejects it.
    Writable,
}

/// What a path is in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// A leaf holding a value.
    Leaf(ItemId),
    /// The root `/` or an intermediate node.
    Node(NodeId),
}

/// Why a tree could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeError {
    /// Not an absolute object path made of `[A-Za-z0-9_]` segments (or it is `/`).
    BadPath(String),
    /// The same leaf path was added twice.
    Duplicate(String),
    /// A leaf path is also the parent of other leaves.
    LeafHasChildren(String),
    /// The initial value does not fit the declared kind.
    WrongKind(String),
}

impl fmt::Display for TreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TreeError::BadPath(p) => write!(f, "bad item path '{p}': use '/Segment/...' with [A-Za-z0-9_] segments"),
            TreeError::Duplicate(p) => write!(f, "item path '{p}' added twice"),
            TreeError::LeafHasChildren(p) => {
                write!(f, "item path '{p}' is a leaf and also has items below it")
            }
            TreeError::WrongKind(p) => {
                write!(f, "initial value of '{p}' does not match its declared kind")
            }
        }
    }
}

impl std::error::Error for TreeError {}

/// One leaf as declared to a [`TreeBuilder`]; adjust it with the chained setters.
#[derive(Debug, Clone)]
pub struct ItemSpec {
    path: String,
    kind: Kind,
    value: Value,
    format: Format,
    access: Access,
}

impl ItemSpec {
    /// Sets the initial value (default: invalid).
    pub fn value(&mut self, value: impl Into<Value>) -> &mut Self {
        self.value = value.into();
        self
    }

    /// Makes the leaf writable through `SetValue` (see [`Access::Writable`]).
    pub fn writable(&mut self) -> &mut Self {
        self.access = Access::Writable;
        self
    }
}

/// Collects leaves, then builds an [`ItemTree`] in one go.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    items: Vec<ItemSpec>,
}

impl TreeBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a read-only leaf of `kind`, initially invalid.
    pub fn add(&mut self, path: impl Into<String>, kind: Kind, format: Format) -> &mut ItemSpec {
        self.items.push(ItemSpec {
            path: path.into(),
            kind,
            value: Value::Invalid,
            format,
            access: Access::ReadOnly,
        });
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// Validates the paths, sorts the leaves and computes the nodes.
    pub fn build(self) -> Result<ItemTree, TreeError> {
        let mut leaves = Vec::with_capacity(self.items.len());
        for spec in self.items {
            if !valid_leaf_path(&spec.path) {
                return Err(TreeError::BadPath(spec.path));
            }
            let value = match spec.value.coerce(spec.kind) {
                Some(v) => v,
                None => return Err(TreeError::WrongKind(spec.path)),
            };
            let mut path_z = spec.path;
            path_z.push('\0');
            leaves.push(Leaf {
                path_z: path_z.into_boxed_str(),
                kind: spec.kind,
                value,
                format: spec.format,
                access: spec.access,
                pending: false,
            });
        }
        leaves.sort_by(|a, b| a.path().cmp(b.path()));
        if let Some(w) = leaves.windows(2).find(|w| w[0].path() == w[1].path()) {
            return Err(TreeError::Duplicate(w[0].path().to_owned()));
        }

        // Every proper prefix of a leaf is a node; collect each node's direct children.
        let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        children.insert("/", Vec::new());
        for leaf in &leaves {
            let path = leaf.path();
            let mut parent_end = 0; // the root, "/"
            for (i, _) in path.match_indices('/').skip(1) {
                let parent = if parent_end == 0 { "/" } else { &path[..parent_end] };
                let kids = children.entry(parent).or_default();
                let child = &path[parent_end + 1..i];
                // Leaves are sorted, so the leaves below one child are consecutive: comparing
                // with the last child pushed is all the deduplication needed.
                if kids.last() != Some(&child) {
                    kids.push(child);
                }
                children.entry(&path[..i]).or_default();
                parent_end = i;
            }
            let parent = if parent_end == 0 { "/" } else { &path[..parent_end] };
            children.entry(parent).or_default().push(&path[parent_end + 1..]);
        }
        for leaf in &leaves {
            if children.contains_key(leaf.path()) {
                return Err(TreeError::LeafHasChildren(leaf.path().to_owned()));
            }
        }

        let nodes = children
            .iter()
            .map(|(&path, kids)| {
                let prefix_len = if path == "/" { 1 } else { path.len() + 1 };
                let start = leaves.partition_point(|l| l.path() < path);
                let count = leaves[start..].iter().take_while(|l| is_below(l.path(), path)).count();
                Node {
                    path: path.into(),
                    prefix_len,
                    leaves: start as u32..(start + count) as u32,
                    children: kids.iter().map(|&k| k.into()).collect(),
                }
            })
            .collect();
        Ok(ItemTree {
            leaves,
            nodes,
            pending: Vec::new(),
        })
    }
}

/// True when `path` lies strictly below `node` (`/` is above everything).
fn is_below(path: &str, node: &str) -> bool {
    node == "/" || (path.len() > node.len() && path.starts_with(node) && path.as_bytes()[node.len()] == b'/')
}

/// `/A/b_1/C`: absolute, non-empty `[A-Za-z0-9_]` segments, not `/` itself.
fn valid_leaf_path(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

#[derive(Debug)]
struct Leaf {
    /// The path followed by a NUL, so it can be appended to messages without a copy.
    path_z: Box<str>,
    kind: Kind,
    value: Value,
    format: Format,
    access: Access,
    pending: bool,
}

impl Leaf {
    fn path(&self) -> &str {
        &self.path_z[..self.path_z.len() - 1]
    }
}

#[derive(Debug)]
struct Node {
    path: Box<str>,
    /// Length of `path` plus its trailing slash: relative keys start there.
    prefix_len: usize,
    /// The leaves below this node (contiguous, since leaves are sorted).
    leaves: Range<u32>,
    /// Names of the direct children, sorted.
    children: Vec<Box<str>>,
}

/// The complete, fixed set of paths of one service, with values and pending changes.
#[derive(Debug)]
pub struct ItemTree {
    leaves: Vec<Leaf>,
    nodes: Vec<Node>,
    pending: Vec<ItemId>,
}

impl ItemTree {
    /// What `path` is: a leaf, a node, or `None` when unknown.
    pub fn lookup(&self, path: &str) -> Option<NodeRef> {
        if let Some(id) = self.id(path) {
            return Some(NodeRef::Leaf(id));
        }
        self.nodes
            .binary_search_by(|n| (*n.path).cmp(path))
            .ok()
            .map(|i| NodeRef::Node(NodeId(i as u32)))
    }

    /// The id of the leaf at `path`.
    pub fn id(&self, path: &str) -> Option<ItemId> {
        self.leaves
            .binary_search_by(|l| l.path().cmp(path))
            .ok()
            .map(|i| ItemId(i as u32))
    }

    /// The root node `/`.
    pub fn root(&self) -> NodeId {
        // "/" sorts before every other node path.
        NodeId(0)
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// True when the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// Every leaf, in path order.
    pub fn ids(&self) -> impl ExactSizeIterator<Item = ItemId> + '_ {
        (0..self.leaves.len() as u32).map(ItemId)
    }

    fn leaf(&self, id: ItemId) -> &Leaf {
        &self.leaves[id.0 as usize]
    }

    /// The absolute path of a leaf.
    pub fn path(&self, id: ItemId) -> &str {
        self.leaf(id).path()
    }

    /// The absolute path followed by a NUL (appends to D-Bus messages without a copy).
    pub(crate) fn path_z(&self, id: ItemId) -> &str {
        &self.leaf(id).path_z
    }

    /// The current value of a leaf.
    pub fn value(&self, id: ItemId) -> &Value {
        &self.leaf(id).value
    }

    /// The declared kind of a leaf.
    pub fn kind(&self, id: ItemId) -> Kind {
        self.leaf(id).kind
    }

    /// Whether a leaf accepts `SetValue`.
    pub fn access(&self, id: ItemId) -> Access {
        self.leaf(id).access
    }

    /// Appends the text of a leaf's value to `out`.
    pub fn write_text(&self, id: ItemId, out: &mut String) {
        let leaf = self.leaf(id);
        leaf.format.write(&leaf.value, out);
    }

    /// Sets a leaf in the current batch. The value is first converted to the leaf's kind
    /// ([`Value::coerce`]). Returns true when the stored value changed; the leaf is then
    /// pending until [`ItemTree::clear_changes`]. A value of another kind is not stored
    /// (returns false, logged as a warning), so a path's type never drifts.
    pub fn set(&mut self, id: ItemId, value: impl Into<Value>) -> bool {
        if !self.store(id, value.into()) {
            return false;
        }
        let leaf = &mut self.leaves[id.0 as usize];
        if !leaf.pending {
            leaf.pending = true;
            self.pending.push(id);
        }
        true
    }

    /// [`ItemTree::set`] by path; `Err` when the path is not a leaf of this tree.
    pub fn set_path(&mut self, path: &str, value: impl Into<Value>) -> Result<bool, UnknownPath> {
        match self.id(path) {
            Some(id) => Ok(self.set(id, value)),
            None => Err(UnknownPath(path.to_owned())),
        }
    }

    /// Stores a value outside the batch (no pending change): for one-off changes announced
    /// on their own, such as an accepted `SetValue`. Returns true when it changed.
    pub(crate) fn store(&mut self, id: ItemId, value: Value) -> bool {
        let leaf = &self.leaves[id.0 as usize];
        let Some(value) = value.coerce(leaf.kind) else {
            log::warn!(
                "{}: value of the wrong kind ignored (path is {:?})",
                leaf.path(),
                leaf.kind
            );
            return false;
        };
        self.replace(id, value)
    }

    /// [`ItemTree::store`] for a value already of the leaf's kind (or invalid), without
    /// converting it again. Returns true when it changed.
    pub(crate) fn replace(&mut self, id: ItemId, value: Value) -> bool {
        let leaf = &mut self.leaves[id.0 as usize];
        debug_assert!(value.kind().is_none_or(|k| k == leaf.kind), "{}", leaf.path());
        if leaf.value == value {
            return false;
        }
        leaf.value = value;
        true
    }

    /// True when some leaf changed since the last [`ItemTree::clear_changes`].
    pub fn has_changes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The leaves changed in this batch, in the order they first changed.
    pub fn changes(&self) -> &[ItemId] {
        &self.pending
    }

    /// Ends the batch: nothing is pending afterwards.
    pub fn clear_changes(&mut self) {
        for id in self.pending.drain(..) {
            self.leaves[id.0 as usize].pending = false;
        }
    }

    /// True for the root node.
    pub fn is_root(&self, node: NodeId) -> bool {
        node.0 == 0
    }

    /// Every leaf below `node` with its key relative to the node (no leading slash,
    /// e.g. `L1/Power` below `/Ac`), in path order. Only the tests read keys without the NUL.
    #[cfg(test)]
    pub(crate) fn below(&self, node: NodeId) -> impl ExactSizeIterator<Item = (&str, ItemId)> + '_ {
        self.below_z(node).map(|(key, id)| (&key[..key.len() - 1], id))
    }

    /// Every leaf below `node` with its key relative to the node, NUL-terminated for
    /// appending to messages (`L1/Power\0` below `/Ac`), in path order.
    pub(crate) fn below_z(&self, node: NodeId) -> impl ExactSizeIterator<Item = (&str, ItemId)> + '_ {
        let n = &self.nodes[node.0 as usize];
        n.leaves
            .clone()
            .map(move |i| (&self.leaves[i as usize].path_z[n.prefix_len..], ItemId(i)))
    }

    /// Names of the direct children of `node` (leaves and nodes), sorted.
    pub fn children(&self, node: NodeId) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.nodes[node.0 as usize].children.iter().map(|c| &**c)
    }
}

/// A path that is not a leaf of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPath(pub String);

impl fmt::Display for UnknownPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no item '{}' in this service", self.0)
    }
}

impl std::error::Error for UnknownPath {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ItemTree {
        let mut b = TreeBuilder::new();
        b.add("/Ac/Power", Kind::Double, Format::number(1, "W"));
        b.add("/Ac/L1/Power", Kind::Double, Format::number(1, "W")).value(12.5);
        b.add("/Ac/L1/Voltage", Kind::Double, Format::number(1, "V"));
        b.add("/DeviceInstance", Kind::Int, Format::Plain).value(40);
        b.add("/CustomName", Kind::Str, Format::Plain).value("x").writable();
        b.add("/AllowedRoles", Kind::StrList, Format::Plain)
            .value(vec!["grid".to_owned()]);
        b.add("/Ac2/X", Kind::Int, Format::Plain);
        b.build().unwrap()
    }

    #[test]
    fn lookup_kinds() {
        let t = sample();
        assert!(matches!(t.lookup("/"), Some(NodeRef::Node(n)) if t.is_root(n)));
        assert!(matches!(t.lookup("/Ac"), Some(NodeRef::Node(n)) if !t.is_root(n)));
        assert!(matches!(t.lookup("/Ac/L1"), Some(NodeRef::Node(_))));
        assert!(matches!(t.lookup("/Ac/L1/Power"), Some(NodeRef::Leaf(_))));
        assert_eq!(t.lookup("/Ac/L2"), None);
        assert_eq!(t.lookup("/Ac/"), None);
        assert_eq!(t.lookup(""), None);
        assert_eq!(t.lookup("/Ac/L1/Power/X"), None);
    }

    #[test]
    fn relative_keys_below_nodes() {
        let t = sample();
        let Some(NodeRef::Node(ac)) = t.lookup("/Ac") else {
            panic!()
        };
        let keys: Vec<&str> = t.below(ac).map(|(k, _)| k).collect();
        // "/Ac2/X" is not below "/Ac".
        assert_eq!(keys, ["L1/Power", "L1/Voltage", "Power"]);
        let root_keys: Vec<&str> = t.below(t.root()).map(|(k, _)| k).collect();
        assert_eq!(
            root_keys,
            [
                "Ac/L1/Power",
                "Ac/L1/Voltage",
                "Ac/Power",
                "Ac2/X",
                "AllowedRoles",
                "CustomName",
                "DeviceInstance"
            ]
        );
        assert!(t.below_z(ac).all(|(k, _)| k.ends_with('\0')));
    }

    #[test]
    fn children_for_introspection() {
        let t = sample();
        let kids: Vec<&str> = t.children(t.root()).collect();
        assert_eq!(kids, ["Ac", "Ac2", "AllowedRoles", "CustomName", "DeviceInstance"]);
        let Some(NodeRef::Node(ac)) = t.lookup("/Ac") else {
            panic!()
        };
        assert_eq!(t.children(ac).collect::<Vec<_>>(), ["L1", "Power"]);
        let Some(NodeRef::Node(l1)) = t.lookup("/Ac/L1") else {
            panic!()
        };
        assert_eq!(t.children(l1).collect::<Vec<_>>(), ["Power", "Voltage"]);
    }

    #[test]
    fn changes_are_batched_and_deduplicated() {
        let mut t = sample();
        let p = t.id("/Ac/Power").unwrap();
        let v = t.id("/Ac/L1/Voltage").unwrap();
        assert!(!t.has_changes());
        assert!(t.set(p, 100.0));
        assert!(!t.set(p, 100.0), "unchanged value is not a change");
        assert!(t.set(v, 230.0));
        assert!(t.set(p, 101.0));
        assert_eq!(t.changes(), [p, v]);
        t.clear_changes();
        assert!(!t.has_changes());
        assert!(!t.set(p, 101.0));
        assert!(t.set(p, Value::Invalid));
        assert_eq!(t.changes(), [p]);
    }

    #[test]
    fn kinds_stay_stable() {
        let mut t = sample();
        let di = t.id("/DeviceInstance").unwrap();
        assert!(t.set(di, 41.0), "whole double is coerced to int");
        assert_eq!(t.value(di), &Value::Int(41));
        assert!(!t.set(di, "41"));
        assert!(!t.set(di, 41.5));
        assert_eq!(t.value(di), &Value::Int(41));
        assert_eq!(t.set_path("/Nope", 1), Err(UnknownPath("/Nope".into())));
    }

    #[test]
    fn text_of_leaves() {
        let t = sample();
        let mut s = String::new();
        t.write_text(t.id("/Ac/L1/Power").unwrap(), &mut s);
        s.push('|');
        t.write_text(t.id("/Ac/Power").unwrap(), &mut s);
        assert_eq!(s, "12.5 W|---");
    }

    #[test]
    fn build_errors() {
        let bad = |p: &str| {
            let mut b = TreeBuilder::new();
            b.add(p, Kind::Int, Format::Plain);
            b.build().unwrap_err()
        };
        for p in ["", "/", "Ac", "/Ac/", "//Ac", "/Ac-x", "/Ac/ L1", "/Ä"] {
            assert_eq!(bad(p), TreeError::BadPath(p.into()), "{p:?}");
        }
        let mut b = TreeBuilder::new();
        b.add("/A", Kind::Int, Format::Plain);
        b.add("/A", Kind::Int, Format::Plain);
        assert_eq!(b.build().unwrap_err(), TreeError::Duplicate("/A".into()));
        let mut b = TreeBuilder::new();
        b.add("/A", Kind::Int, Format::Plain);
        b.add("/A/B", Kind::Int, Format::Plain);
        assert_eq!(b.build().unwrap_err(), TreeError::LeafHasChildren("/A".into()));
        let mut b = TreeBuilder::new();
        b.add("/A", Kind::Int, Format::Plain).value("x");
        assert_eq!(b.build().unwrap_err(), TreeError::WrongKind("/A".into()));
    }

    #[test]
    fn empty_tree_has_a_root() {
        let t = TreeBuilder::new().build().unwrap();
        assert!(t.is_empty());
        assert_eq!(t.lookup("/"), Some(NodeRef::Node(t.root())));
        assert_eq!(t.below(t.root()).len(), 0);
        assert_eq!(t.children(t.root()).len(), 0);
    }
}
