//! A small JSON value and writer, so the library needs no serde.
//!
//! Numbers are kept as text: readings are fixed-point register values and
//! are written with exactly their resolution (230.1, not 230.09999…).

use std::fmt::Write as _;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonValue {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, already in JSON syntax (build it with [`JsonValue::int`] or
    /// [`JsonValue::fixed`], which only produce valid numbers).
    Number(String),
    /// A string (escaped when written).
    String(String),
    /// An array.
    Array(Vec<JsonValue>),
    /// An object; keys keep their order.
    Object(Vec<(String, JsonValue)>),
}

impl JsonValue {
    /// An integer.
    pub fn int(n: impl Into<i128>) -> JsonValue {
        JsonValue::Number(n.into().to_string())
    }

    /// The fixed-point number `raw / 10^places`, written exactly, e.g.
    /// `fixed(2301, 1)` is `230.1`.
    pub fn fixed(raw: u64, places: u8) -> JsonValue {
        JsonValue::Number(fixed(raw, places))
    }

    /// A string.
    pub fn string(s: impl Into<String>) -> JsonValue {
        JsonValue::String(s.into())
    }

    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(pairs: impl IntoIterator<Item = (K, JsonValue)>) -> JsonValue {
        JsonValue::Object(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The document as indented text, ending with a newline.
    pub fn to_pretty(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out.push('\n');
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        match self {
            JsonValue::Null => out.push_str("null"),
            JsonValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            JsonValue::Number(n) => out.push_str(n),
            JsonValue::String(s) => escape_into(s, out),
            JsonValue::Array(items) if items.is_empty() => out.push_str("[]"),
            JsonValue::Object(pairs) if pairs.is_empty() => out.push_str("{}"),
            JsonValue::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    separator(out, i, depth + 1);
                    item.write(out, depth + 1);
                }
                newline(out, depth);
                out.push(']');
            }
            JsonValue::Object(pairs) => {
                out.push('{');
                for (i, (key, value)) in pairs.iter().enumerate() {
                    separator(out, i, depth + 1);
                    escape_into(key, out);
                    out.push_str(": ");
                    value.write(out, depth + 1);
                }
                newline(out, depth);
                out.push('}');
            }
        }
    }
}

fn separator(out: &mut String, index: usize, depth: usize) {
    if index > 0 {
        out.push(',');
    }
    newline(out, depth);
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// `raw / 10^places` as exact decimal text: `fixed(12345, 3)` is `12.345`,
/// `fixed(5, 2)` is `0.05`.
pub fn fixed(raw: u64, places: u8) -> String {
    let digits = raw.to_string();
    let places = usize::from(places);
    if places == 0 {
        return digits;
    }
    let padded = if digits.len() <= places {
        format!("{}{digits}", "0".repeat(places + 1 - digits.len()))
    } else {
        digits
    };
    let (whole, frac) = padded.split_at(padded.len() - places);
    format!("{whole}.{frac}")
}

/// Write `s` as a quoted JSON string.
pub fn escape_into(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || c == '\u{7F}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_text() {
        assert_eq!(fixed(2301, 1), "230.1");
        assert_eq!(fixed(12_345, 3), "12.345");
        assert_eq!(fixed(5, 2), "0.05");
        assert_eq!(fixed(0, 3), "0.000");
        assert_eq!(fixed(100, 2), "1.00");
        assert_eq!(fixed(7, 0), "7");
        assert_eq!(fixed(u64::MAX, 3), "18446744073709551.615");
    }

    #[test]
    fn escaping() {
        let mut out = String::new();
        escape_into("a\"b\\c\nd\u{1}e\u{7f}é\u{2028}", &mut out);
        assert_eq!(out, r#""a\"b\\c\nd\u0001e\u007fé\u2028""#);
    }

    #[test]
    fn nested_document() {
        let v = JsonValue::object([
            ("n", JsonValue::int(-3)),
            ("x", JsonValue::fixed(2301, 1)),
            ("list", JsonValue::Array(vec![JsonValue::Bool(true), JsonValue::Null])),
            ("empty", JsonValue::Array(vec![])),
            ("obj", JsonValue::object([("s", JsonValue::string("hi"))])),
            ("none", JsonValue::Object(vec![])),
        ]);
        assert_eq!(
            v.to_pretty(),
            "{\n  \"n\": -3,\n  \"x\": 230.1,\n  \"list\": [\n    true,\n    null\n  ],\n  \"empty\": [],\n  \
             \"obj\": {\n    \"s\": \"hi\"\n  },\n  \"none\": {}\n}\n"
        );
    }
}
