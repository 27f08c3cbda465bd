//! CSV text of a series' points (sans-IO): `pzem-logger export` and the API's
//! `format=csv`.
//!
//! One header line, then one line per point: Unix seconds, the time in ISO 8601 at the
//! given offset, and the value (W for power averages, kWh for energy per step), e.g.
//!
//! ```text
//! unix_seconds,time,kWh
//! 1767225600,2026-01-01T00:00:00Z,0.412
//! ```
//!
//! A step without data has no line.

use super::time::{Offset, format_time};
use std::fmt::Write;

/// The CSV text of `points` in `unit`.
pub fn write(points: &[(i64, f64)], unit: &str, offset: Offset) -> String {
    let mut out = String::with_capacity(24 + points.len() * 40);
    let _ = writeln!(out, "unix_seconds,time,{unit}");
    for (t, v) in points {
        let _ = writeln!(out, "{t},{},{}", format_time(*t, offset), number(*v));
    }
    out
}

/// A value as text: up to 6 decimals, trailing zeros removed (no exponent form).
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "null".into();
    }
    let mut s = format!("{v:.6}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" { "0".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let text = write(&[(1_767_225_600, 0.412), (1_767_229_200, 12.0)], "kWh", Offset::UTC);
        assert_eq!(
            text,
            "unix_seconds,time,kWh\n1767225600,2026-01-01T00:00:00Z,0.412\n1767229200,2026-01-01T01:00:00Z,12\n"
        );
        assert_eq!(write(&[], "W", Offset::UTC), "unix_seconds,time,W\n");
        assert_eq!(number(-0.0000001), "0");
        assert_eq!(number(1e12), "1000000000000");
    }
}
