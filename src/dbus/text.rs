//! Human text of a value (`GetText`, the `Text` entries of `GetItems`/`ItemsChanged`).
//!
//! Text is only produced when a client asks for it or a signal carries it, into a caller's
//! reusable buffer; nothing is formatted per poll for paths that did not change.

use super::value::Value;
use std::fmt::Write;

/// The text of an invalid value, as velib and veutil show it.
pub const INVALID_TEXT: &str = "---";

/// How a path's value turns into text.
#[derive(Debug, Clone, Copy, Default)]
pub enum Format {
    /// Numbers in their shortest exact form (`230.1`, `3`), strings as they are, lists
    /// joined with `", "`.
    #[default]
    Plain,
    /// A number with fixed decimals and a unit: `Number { decimals: 1, unit: "V" }` gives
    /// `230.1 V`. An empty unit gives just the number. Non-numbers are shown as `Plain`.
    Number {
        /// Digits after the decimal point (integers are shown without any).
        decimals: u8,
        /// Unit suffix, separated by a space.
        unit: &'static str,
    },
    /// An integer in hexadecimal, `0xffff` (velib's text for `/ProductId`).
    Hex,
    /// Application-defined text, e.g. an enum name. Called only for valid values.
    Custom(fn(&Value, &mut String)),
}

impl Format {
    /// Shorthand for [`Format::Number`].
    pub const fn number(decimals: u8, unit: &'static str) -> Format {
        Format::Number { decimals, unit }
    }

    /// Appends the text of `value` to `out` (`---` when invalid).
    pub fn write(&self, value: &Value, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = self.write_inner(value, out);
    }

    fn write_inner(&self, value: &Value, out: &mut String) -> std::fmt::Result {
        match (self, value) {
            (_, Value::Invalid) => out.push_str(INVALID_TEXT),
            (Format::Custom(f), v) => f(v, out),
            (Format::Number { decimals, unit }, Value::Double(d)) => {
                write!(out, "{:.*}", usize::from(*decimals), d)?;
                push_unit(out, unit);
            }
            (Format::Number { unit, .. }, Value::Int(i)) => {
                write!(out, "{i}")?;
                push_unit(out, unit);
            }
            (Format::Hex, Value::Int(i)) => write!(out, "{i:#x}")?,
            (_, Value::Double(d)) => write!(out, "{d}")?,
            (_, Value::Int(i)) => write!(out, "{i}")?,
            (_, Value::Str(s)) => out.push_str(s),
            (_, Value::StrList(list)) => {
                for (n, s) in list.iter().enumerate() {
                    if n > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(s);
                }
            }
        }
        Ok(())
    }

    /// The text of `value` as a new string (convenience; prefer [`Format::write`] on hot paths).
    pub fn text(&self, value: &Value) -> String {
        let mut s = String::new();
        self.write(value, &mut s);
        s
    }
}

fn push_unit(out: &mut String, unit: &str) {
    if !unit.is_empty() {
        out.push(' ');
        out.push_str(unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts() {
        let v = Format::number(1, "V");
        assert_eq!(v.text(&Value::Double(230.14)), "230.1 V");
        assert_eq!(v.text(&Value::Int(3)), "3 V");
        assert_eq!(v.text(&Value::Invalid), "---");
        assert_eq!(Format::number(0, "").text(&Value::Double(2.6)), "3");
        assert_eq!(Format::Plain.text(&Value::Double(0.1)), "0.1");
        assert_eq!(Format::Plain.text(&Value::Int(-4)), "-4");
        assert_eq!(Format::Plain.text(&Value::from("abc")), "abc");
        assert_eq!(
            Format::Plain.text(&Value::StrList(vec!["grid".into(), "acload".into()])),
            "grid, acload"
        );
        assert_eq!(Format::Hex.text(&Value::Int(0xFFFF)), "0xffff");
        assert_eq!(Format::Hex.text(&Value::from("x")), "x");
        assert_eq!(Format::Hex.text(&Value::Invalid), "---");
        fn role(v: &Value, out: &mut String) {
            out.push_str(if v.as_i64() == Some(0) { "AC input 1" } else { "other" });
        }
        assert_eq!(Format::Custom(role).text(&Value::Int(0)), "AC input 1");
        assert_eq!(Format::Custom(role).text(&Value::Invalid), "---");
    }

    #[test]
    fn write_appends() {
        let mut s = String::from("x=");
        Format::number(2, "kWh").write(&Value::Double(1.0), &mut s);
        assert_eq!(s, "x=1.00 kWh");
    }
}
