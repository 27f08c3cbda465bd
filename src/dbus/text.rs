//! Human text of a value (`GetText`, the `Text` entries of `GetItems`/`ItemsChanged`).
//!
//! Text is only produced when a client asks for it or a signal carries it, into a caller's
//! reusable buffer; nothing is formatted per poll for paths that did not change.

use super::value::Value;
use std::fmt::Write;

/// Appends `value` with `decimals` digits after the point, exactly as
/// `format!("{value:.decimals$}")` does, without the cost of Rust's general
/// float formatting (a few thousand instructions) in the common case: the
/// value times 10^decimals is rounded to an integer and printed as digits.
/// Where that could differ (an exact tie after scaling, which only the exact
/// decimal expansion can settle; huge values; NaN and infinities) the
/// standard formatter is used.
fn push_fixed(out: &mut String, value: f64, decimals: u8) {
    const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];
    let Some(&scale) = POW10.get(usize::from(decimals)) else {
        let _ = write!(out, "{value:.*}", usize::from(decimals));
        return;
    };
    let scaled = value.abs() * scale;
    // 2^53: every integer below is exact; beyond (and NaN), leave it to std.
    let exact = scaled.is_finite() && scaled < 9_007_199_254_740_992.0;
    if !exact || (scaled - scaled.trunc()) == 0.5 {
        let _ = write!(out, "{value:.*}", usize::from(decimals));
        return;
    }
    // Rounding of a non-tie is on the right side: fl(v * 10^d) can only land on a
    // half-way point, never cross one, and that case went to std above.
    let digits = scaled.round() as u64;
    if value.is_sign_negative() {
        out.push('-');
    }
    let unit = 10u64.pow(u32::from(decimals));
    push_u64(out, digits / unit);
    if decimals > 0 {
        out.push('.');
        let frac = digits % unit;
        let mut div = unit / 10;
        while div > 0 {
            out.push(char::from(b'0' + ((frac / div) % 10) as u8));
            div /= 10;
        }
    }
}

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &buf[i..] {
        out.push(char::from(digit));
    }
}

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
                push_fixed(out, *d, *decimals);
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

    #[test]
    fn fixed_decimals_match_the_standard_formatter() {
        let mut rng = crate::sim::Rng::new(3);
        let mut out = String::new();
        let mut check = |v: f64, d: u8| {
            out.clear();
            super::push_fixed(&mut out, v, d);
            assert_eq!(out, format!("{v:.*}", usize::from(d)), "{v:e} with {d} decimals");
        };
        for v in [
            0.0,
            -0.0,
            0.05,
            0.15,
            0.25,
            2.5,
            -2.5,
            1.005,
            230.15,
            0.45,
            1e15,
            9.1e15,
            1e300,
            -1e-9,
            0.95,
            9.95,
            99.995,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            123456.789,
        ] {
            for d in 0..=7 {
                check(v, d);
            }
        }
        for _ in 0..200_000 {
            // Meter-like values: whole tenths, hundredths and milli-units scaled into Venus units.
            let raw = rng.below(10_000_000) as f64 - 5_000_000.0;
            let v = match rng.below(4) {
                0 => raw / 10.0,
                1 => raw / 100.0,
                2 => raw / 1000.0,
                _ => f64::from_bits(rng.next_u64()),
            };
            check(v, rng.below(4) as u8);
        }
    }
}
