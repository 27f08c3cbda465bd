//! The Venus value model and its D-Bus wire form.
//!
//! Venus paths carry a small set of types (venus-conventions.md §2.2). [`Value`] models them,
//! including the *invalid* marker, and converts to and from D-Bus variants:
//!
//! | [`Value`] | sent as (inside `v`) | read from |
//! |---|---|---|
//! | `Invalid` | `ai`, length 0 | any empty array |
//! | `Double` | `d` | `d` |
//! | `Int` | `i`, or `x` when it does not fit (as velib does) | `i x u n q y b` (`t` when it fits) |
//! | `Str` | `s` | `s`, `o`, `g` |
//! | `StrList` | `av` of `s` (like velib's `/AllowedRoles`) | `av` of `s`, `as` |
//!
//! Each published path keeps one [`Kind`]; [`Value::coerce`] maps an incoming value onto it.

use dbus::Signature;
use dbus::arg::{ArgType, Iter, IterAppend};

/// One Venus value: what a path holds, or what another service sent.
#[derive(Debug, Clone, Default)]
pub enum Value {
    /// Not available right now (the `ai` empty-array marker; text `---`).
    #[default]
    Invalid,
    /// A float (`d`): powers, voltages, currents, energies.
    Double(f64),
    /// An integer: counts and enums. Sent as `i`, or `x` outside the `i32` range.
    Int(i64),
    /// A string (`s`).
    Str(String),
    /// A list of strings, sent as `av` of `s` (e.g. `/AllowedRoles`).
    StrList(Vec<String>),
}

/// The type a path publishes; stable for the life of the path (§2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// [`Value::Double`].
    Double,
    /// [`Value::Int`].
    Int,
    /// [`Value::Str`].
    Str,
    /// [`Value::StrList`].
    StrList,
}

/// An incoming D-Bus value that has no [`Value`] form (struct, dict, non-empty int array…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The D-Bus signature that was found.
    pub signature: String,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unsupported D-Bus value type '{}'", self.signature)
    }
}

impl std::error::Error for Unsupported {}

impl Unsupported {
    /// Describes the argument at `iter` (empty signature past the last argument;
    /// `Iter::signature` would panic there).
    fn at(iter: &mut Iter) -> Unsupported {
        let signature = if iter.arg_type() == ArgType::Invalid {
            String::new()
        } else {
            iter.signature().to_string()
        };
        Unsupported { signature }
    }
}

impl PartialEq for Value {
    /// Equality as change detection needs it: doubles compare by value, and also by bit
    /// pattern so that a repeated NaN counts as unchanged.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Invalid, Value::Invalid) => true,
            (Value::Double(a), Value::Double(b)) => a == b || a.to_bits() == b.to_bits(),
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::StrList(a), Value::StrList(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// The kind of a valid value; `None` for [`Value::Invalid`].
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Value::Invalid => None,
            Value::Double(_) => Some(Kind::Double),
            Value::Int(_) => Some(Kind::Int),
            Value::Str(_) => Some(Kind::Str),
            Value::StrList(_) => Some(Kind::StrList),
        }
    }

    /// True for [`Value::Invalid`].
    pub fn is_invalid(&self) -> bool {
        matches!(self, Value::Invalid)
    }

    /// The number as `f64` (from `Double` or `Int`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Double(d) => Some(d),
            Value::Int(i) => Some(i as f64),
            _ => None,
        }
    }

    /// The number as `i64`: an `Int`, or a `Double` holding a whole number in range.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::Double(d) if d.fract() == 0.0 && d >= i64::MIN as f64 && d < i64::MAX as f64 => Some(d as i64),
            _ => None,
        }
    }

    /// The string of a `Str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to `kind` where that loses nothing: `Int` ↔ `Double` (whole numbers only),
    /// same kind unchanged, `Invalid` stays `Invalid`. `None` when it cannot be converted.
    pub fn coerce(self, kind: Kind) -> Option<Value> {
        match (self, kind) {
            (Value::Invalid, _) => Some(Value::Invalid),
            (Value::Int(i), Kind::Double) => Some(Value::Double(i as f64)),
            (v @ Value::Double(_), Kind::Int) => v.as_i64().map(Value::Int),
            (v, k) if v.kind() == Some(k) => Some(v),
            _ => None,
        }
    }

    /// Appends this value wrapped in a variant (`v`), with the stable wire types of the module
    /// table. Never allocates for `Invalid`, `Double` and `Int`.
    pub fn append_variant(&self, ia: &mut IterAppend) {
        match self {
            Value::Invalid => ia.append_variant(&sig::AI, |v| {
                v.append_array(&sig::I, |_| {});
            }),
            Value::Double(d) => ia.append_variant(&sig::D, |v| v.append(*d)),
            Value::Int(i) => match i32::try_from(*i) {
                Ok(i) => ia.append_variant(&sig::I, |v| v.append(i)),
                Err(_) => ia.append_variant(&sig::X, |v| v.append(*i)),
            },
            Value::Str(s) => ia.append_variant(&sig::S, |v| v.append(s.as_str())),
            Value::StrList(list) => ia.append_variant(&sig::AV, |v| {
                v.append_array(&sig::V, |a| {
                    for s in list {
                        a.append_variant(&sig::S, |e| e.append(s.as_str()));
                    }
                });
            }),
        }
    }

    /// Reads the variant (`v`) the iterator points at. Nested variants are unwrapped.
    pub fn read_variant(iter: &mut Iter) -> Result<Value, Unsupported> {
        match iter.recurse(ArgType::Variant) {
            Some(mut inner) => Value::read_plain(&mut inner),
            None => Err(Unsupported::at(iter)),
        }
    }

    /// Reads the bare value the iterator points at (a variant is unwrapped first).
    pub fn read_plain(iter: &mut Iter) -> Result<Value, Unsupported> {
        let value = match iter.arg_type() {
            ArgType::Variant => return Value::read_variant(iter),
            ArgType::Double => iter.get::<f64>().map(Value::Double),
            ArgType::Int32 => iter.get::<i32>().map(|i| Value::Int(i.into())),
            ArgType::Int64 => iter.get::<i64>().map(Value::Int),
            ArgType::UInt32 => iter.get::<u32>().map(|i| Value::Int(i.into())),
            ArgType::Int16 => iter.get::<i16>().map(|i| Value::Int(i.into())),
            ArgType::UInt16 => iter.get::<u16>().map(|i| Value::Int(i.into())),
            ArgType::Byte => iter.get::<u8>().map(|i| Value::Int(i.into())),
            ArgType::Boolean => iter.get::<bool>().map(|b| Value::Int(b.into())),
            ArgType::UInt64 => iter.get::<u64>().and_then(|u| i64::try_from(u).ok()).map(Value::Int),
            ArgType::String => iter.get::<&str>().map(|s| Value::Str(s.to_owned())),
            ArgType::ObjectPath => iter.get::<dbus::Path>().map(|p| Value::Str(p.to_string())),
            ArgType::Signature => iter.get::<Signature>().map(|s| Value::Str(s.to_string())),
            ArgType::Array => read_array(iter),
            _ => None,
        };
        value.ok_or_else(|| Unsupported::at(iter))
    }
}

/// An array: empty → `Invalid`; strings (bare or in variants) → `StrList`; else `None`.
fn read_array(iter: &mut Iter) -> Option<Value> {
    let mut items = iter.recurse(ArgType::Array)?;
    let mut list = Vec::new();
    loop {
        match items.arg_type() {
            ArgType::Invalid => break,
            ArgType::String => list.push(items.get::<&str>()?.to_owned()),
            ArgType::Variant => {
                let mut inner = items.recurse(ArgType::Variant)?;
                if inner.arg_type() != ArgType::String {
                    return None;
                }
                list.push(inner.get::<&str>()?.to_owned());
            }
            // An empty array of any element type is the invalid marker; the loop breaks on
            // the first element otherwise.
            _ => return None,
        }
        items.next();
    }
    Some(if list.is_empty() {
        Value::Invalid
    } else {
        Value::StrList(list)
    })
}

/// Static, NUL-terminated signatures: appending with them allocates nothing.
pub(crate) mod sig {
    use dbus::Signature;

    macro_rules! sigs {
        ($($name:ident = $s:literal;)*) => {$(
            // SAFETY: each literal is a valid single complete D-Bus type ending in NUL
            // (checked by the `signatures_are_valid` unit test).
            pub(crate) const $name: Signature<'static> =
                unsafe { Signature::from_slice_unchecked($s) };
        )*};
    }
    sigs! {
        AI = "ai\0";
        I = "i\0";
        X = "x\0";
        D = "d\0";
        S = "s\0";
        V = "v\0";
        AV = "av\0";
    }

    #[cfg(test)]
    pub(crate) const ALL: [&str; 7] = ["ai\0", "i\0", "x\0", "d\0", "s\0", "v\0", "av\0"];
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}

impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::StrList(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    /// `None` is [`Value::Invalid`].
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Invalid, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus::Message;

    fn roundtrip_msg(v: &Value) -> Message {
        let mut m = Message::new_signal("/", "a.b", "C").unwrap();
        v.append_variant(&mut IterAppend::new(&mut m));
        m
    }

    fn variant_signature(m: &Message) -> String {
        let mut it = m.iter_init();
        let inner = it.recurse(ArgType::Variant).unwrap();
        let mut inner = inner;
        inner.signature().to_string()
    }

    #[test]
    fn signatures_are_valid() {
        for s in sig::ALL {
            assert!(Signature::from_slice(s).is_ok(), "{s:?}");
        }
    }

    #[test]
    fn wire_types_are_stable() {
        let cases = [
            (Value::Invalid, "ai"),
            (Value::Double(1.5), "d"),
            (Value::Int(7), "i"),
            (Value::Int(1 << 40), "x"),
            (Value::from("x"), "s"),
            (Value::StrList(vec!["grid".into(), "acload".into()]), "av"),
            (Value::StrList(vec![]), "av"),
        ];
        for (v, want) in cases {
            let m = roundtrip_msg(&v);
            assert_eq!(variant_signature(&m), want, "{v:?}");
            let back = Value::read_variant(&mut m.iter_init()).unwrap();
            // An empty list reads back as invalid: consumers treat every empty array so.
            let want_back = match v {
                Value::StrList(ref l) if l.is_empty() => Value::Invalid,
                ref v => v.clone(),
            };
            assert_eq!(back, want_back);
        }
    }

    #[test]
    fn invalid_marker_is_empty_int32_array() {
        let m = roundtrip_msg(&Value::Invalid);
        let mut it = m.iter_init();
        let mut var = it.recurse(ArgType::Variant).unwrap();
        let arr: Vec<i32> = var.get().unwrap();
        assert!(arr.is_empty());
    }

    #[test]
    fn reads_every_integer_type_and_empty_arrays() {
        let m = Message::new_signal("/", "a.b", "C")
            .unwrap()
            .append3(
                dbus::arg::Variant(3u8),
                dbus::arg::Variant(true),
                dbus::arg::Variant(70000u32),
            )
            .append3(
                dbus::arg::Variant(-2i16),
                dbus::arg::Variant(Vec::<String>::new()),
                dbus::arg::Variant(vec!["a".to_owned(), "b".to_owned()]),
            )
            .append2(
                dbus::arg::Variant(dbus::arg::Variant(2.5f64)),
                dbus::arg::Variant(u64::MAX),
            );
        let mut it = m.iter_init();
        let mut got = Vec::new();
        loop {
            got.push(Value::read_variant(&mut it));
            if !it.next() {
                break;
            }
        }
        assert_eq!(got[0], Ok(Value::Int(3)));
        assert_eq!(got[1], Ok(Value::Int(1)));
        assert_eq!(got[2], Ok(Value::Int(70000)));
        assert_eq!(got[3], Ok(Value::Int(-2)));
        assert_eq!(got[4], Ok(Value::Invalid));
        assert_eq!(got[5], Ok(Value::StrList(vec!["a".into(), "b".into()])));
        assert_eq!(got[6], Ok(Value::Double(2.5)));
        assert!(got[7].is_err());
    }

    #[test]
    fn unsupported_types_are_errors_not_panics() {
        let m = Message::new_signal("/", "a.b", "C").unwrap().append3(
            dbus::arg::Variant(vec![1i32, 2]),
            dbus::arg::Variant((1i32, "x")),
            "not a variant",
        );
        let mut it = m.iter_init();
        assert_eq!(Value::read_variant(&mut it).unwrap_err().signature, "ai".to_owned());
        it.next();
        assert!(Value::read_variant(&mut it).is_err());
        it.next();
        assert!(Value::read_variant(&mut it).is_err());
        it.next();
        assert!(Value::read_variant(&mut it).is_err()); // past the end
    }

    #[test]
    fn coercion_keeps_types_stable() {
        assert_eq!(Value::Int(2).coerce(Kind::Double), Some(Value::Double(2.0)));
        assert_eq!(Value::Double(2.0).coerce(Kind::Int), Some(Value::Int(2)));
        assert_eq!(Value::Double(2.5).coerce(Kind::Int), None);
        assert_eq!(Value::Double(f64::NAN).coerce(Kind::Int), None);
        assert_eq!(Value::Double(1e300).coerce(Kind::Int), None);
        assert_eq!(Value::from("a").coerce(Kind::Int), None);
        assert_eq!(Value::Int(1).coerce(Kind::Str), None);
        assert_eq!(Value::Invalid.coerce(Kind::Str), Some(Value::Invalid));
        assert_eq!(Value::from("a").coerce(Kind::Str), Some(Value::from("a")));
    }

    #[test]
    fn nan_equals_itself_for_change_detection() {
        assert_eq!(Value::Double(f64::NAN), Value::Double(f64::NAN));
        assert_eq!(Value::Double(0.0), Value::Double(-0.0));
        assert_ne!(Value::Double(1.0), Value::Int(1));
        assert_eq!(Value::from(None::<f64>), Value::Invalid);
    }
}
