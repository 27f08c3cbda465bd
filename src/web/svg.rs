//! Charts drawn as SVG text on the server (sans-IO): stacked bars and lines.
//!
//! The charts scale with their container (`viewBox`, `width="100%"`), so they fit a phone;
//! every bar and point carries a `<title>`, which browsers show on hover, so no script is
//! needed. Missing values are drawn as nothing: a bar slot stays empty and a line breaks.

use std::fmt::Write;

/// Width of the drawing in user units.
const W: f64 = 720.0;
/// Left margin (y labels).
const ML: f64 = 52.0;
/// Right margin.
const MR: f64 = 8.0;
/// Top margin.
const MT: f64 = 10.0;
/// Bottom margin (x labels).
const MB: f64 = 24.0;

/// One stacked component of a bar chart: a value per slot.
#[derive(Clone, Debug)]
pub struct Bars {
    /// Legend and hover name.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// One value per slot; `None` = no data.
    pub values: Vec<Option<f64>>,
}

/// One line of a line chart.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend and hover name.
    pub name: String,
    /// CSS colour.
    pub color: &'static str,
    /// (time, value) in time order.
    pub points: Vec<(i64, f64)>,
}

/// Escapes text for HTML and SVG content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number with `decimals` decimals, without a negative zero.
pub fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.starts_with('-') && s[1..].chars().all(|c| c == '0' || c == '.') {
        s[1..].to_owned()
    } else {
        s
    }
}

/// Tick positions covering `[lo, hi]`: 1, 2, 2.5 or 5 × 10ⁿ apart, at most about 6.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo.min(0.0), lo.max(0.0) + 1.0)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() * step;
    let mut out = Vec::new();
    let mut v = first;
    while v < hi + step * 0.999 && out.len() < 20 {
        out.push(v);
        v += step;
    }
    out
}

/// The decimals that show every tick `step` apart exactly (0.25 → 2, 0.0002 → 4).
fn decimals_for(step: f64) -> usize {
    (0..=6)
        .find(|&d| {
            let scaled = step * 10f64.powi(d as i32);
            (scaled - scaled.round()).abs() < 1e-6 * scaled.abs().max(1.0)
        })
        .unwrap_or(6)
}

struct Frame {
    h: f64,
    lo: f64,
    hi: f64,
}

impl Frame {
    fn y(&self, v: f64) -> f64 {
        MT + (self.hi - v) / (self.hi - self.lo) * (self.h - MT - MB)
    }
}

fn open(out: &mut String, h: f64, label: &str) {
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {h}" width="100%" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(label)
    );
}

fn y_axis(out: &mut String, frame: &Frame, ticks: &[f64], unit: &str) {
    let d = decimals_for(ticks.get(1).map_or(1.0, |b| b - ticks[0]));
    for &t in ticks {
        let y = frame.y(t);
        let _ = write!(
            out,
            r#"<line class="grid" x1="{ML}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="yl" x="{}" y="{:.1}">{}</text>"#,
            W - MR,
            ML - 4.0,
            y + 4.0,
            fixed(t, d)
        );
    }
    let _ = write!(
        out,
        r#"<text class="unit" x="4" y="{}">{}</text>"#,
        MT + 8.0,
        escape(unit)
    );
}

/// Stacked bars, one slot per label. Negative values are not drawn (energy per step is
/// never negative).
pub fn stacked_bars(title: &str, labels: &[String], bars: &[Bars], unit: &str, height: f64) -> String {
    let slots = labels.len().max(1);
    let totals: Vec<f64> = (0..slots)
        .map(|i| {
            bars.iter()
                .filter_map(|b| b.values.get(i).copied().flatten())
                .filter(|v| *v > 0.0)
                .sum()
        })
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let ticks = ticks(0.0, max);
    let frame = Frame {
        h: height,
        lo: 0.0,
        hi: ticks.last().copied().unwrap_or(1.0),
    };
    let mut out = String::with_capacity(4096 + slots * bars.len() * 120);
    open(&mut out, height, title);
    y_axis(&mut out, &frame, &ticks, unit);
    let slot_w = (W - ML - MR) / slots as f64;
    let bar_w = (slot_w * 0.78).max(1.0);
    let label_every = (slots / 12).max(1);
    for (i, label) in labels.iter().enumerate() {
        let x = ML + slot_w * i as f64 + (slot_w - bar_w) / 2.0;
        let mut base = 0.0;
        for b in bars {
            let Some(v) = b.values.get(i).copied().flatten() else {
                continue;
            };
            if v <= 0.0 {
                continue;
            }
            let (y0, y1) = (frame.y(base), frame.y(base + v));
            base += v;
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y1:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"><title>{} {}: {} {}</title></rect>"#,
                (y0 - y1).max(0.3),
                b.color,
                escape(label),
                escape(&b.name),
                fixed(v, 3),
                escape(unit)
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                out,
                r#"<text class="xl" x="{:.1}" y="{}">{}</text>"#,
                ML + slot_w * (i as f64 + 0.5),
                height - 6.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        out,
        r#"<line class="axis" x1="{ML}" x2="{}" y1="{:.1}" y2="{:.1}"/></svg>"#,
        W - MR,
        frame.y(0.0),
        frame.y(0.0)
    );
    out
}

/// Lines over `[from, to)`; a line breaks where consecutive points are more than `gap`
/// seconds apart. `x_label` names a tick time; ticks fall every `tick` seconds from `from`.
#[allow(clippy::too_many_arguments)]
pub fn lines(
    title: &str,
    from: i64,
    to: i64,
    gap: i64,
    tick: i64,
    x_label: &dyn Fn(i64) -> String,
    lines: &[Line],
    unit: &str,
    height: f64,
) -> String {
    let span = (to - from).max(1) as f64;
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for l in lines {
        for &(_, v) in &l.points {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let ticks = ticks(lo, hi);
    let frame = Frame {
        h: height,
        lo: ticks.first().copied().unwrap_or(0.0),
        hi: ticks.last().copied().unwrap_or(1.0),
    };
    let x = |t: i64| ML + (t - from) as f64 / span * (W - ML - MR);
    let mut out = String::with_capacity(4096 + lines.iter().map(|l| l.points.len() * 16).sum::<usize>());
    open(&mut out, height, title);
    y_axis(&mut out, &frame, &ticks, unit);
    let mut t = from;
    while t < to && tick > 0 {
        let _ = write!(
            out,
            r#"<line class="grid" x1="{0:.1}" x2="{0:.1}" y1="{MT}" y2="{1:.1}"/><text class="xl" x="{0:.1}" y="{2}">{3}</text>"#,
            x(t),
            height - MB,
            height - 6.0,
            escape(&x_label(t))
        );
        t += tick;
    }
    if frame.lo < 0.0 {
        let _ = write!(
            out,
            r#"<line class="axis" x1="{ML}" x2="{}" y1="{1:.1}" y2="{1:.1}"/>"#,
            W - MR,
            frame.y(0.0)
        );
    }
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        let _ = write!(out, r#"<path class="line" stroke="{}" d=""#, l.color);
        let mut prev: Option<i64> = None;
        for &(t, v) in &l.points {
            let cmd = if prev.is_some_and(|p| t - p <= gap) { 'L' } else { 'M' };
            let _ = write!(out, "{cmd}{:.1} {:.1}", x(t), frame.y(v));
            prev = Some(t);
        }
        let _ = write!(out, r#""><title>{}</title></path>"#, escape(&l.name));
        // Isolated points (a line piece of one point) as dots, so they are not lost.
        for (i, &(t, v)) in l.points.iter().enumerate() {
            let before = i > 0 && t - l.points[i - 1].0 <= gap;
            let after = l.points.get(i + 1).is_some_and(|n| n.0 - t <= gap);
            if !before && !after {
                let _ = write!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}"/>"#,
                    x(t),
                    frame.y(v),
                    l.color
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 9.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!((decimals_for(2.0), decimals_for(0.25), decimals_for(0.0002)), (0, 2, 4));
        assert_eq!(ticks(0.0, 0.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        let t = ticks(-420.0, 2600.0);
        assert!(t[0] <= -420.0 && *t.last().unwrap() >= 2600.0 && t.len() <= 9, "{t:?}");
    }

    #[test]
    fn bars_stack_and_skip_missing() {
        let labels: Vec<String> = (0..3).map(|h| format!("{h:02}:00")).collect();
        let svg = stacked_bars(
            "flows",
            &labels,
            &[
                Bars {
                    name: "Grid <to> loads".into(),
                    color: "#1f77b4",
                    values: vec![Some(1.0), None, Some(0.5)],
                },
                Bars {
                    name: "DC".into(),
                    color: "#2ca02c",
                    values: vec![Some(0.25), None, None],
                },
            ],
            "kWh",
            200.0,
        );
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("Grid &lt;to&gt; loads: 1.000 kWh"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn lines_break_at_gaps() {
        let pts = vec![(0, 1.0), (300, 2.0), (1200, 3.0), (1500, -1.0), (3000, 5.0)];
        let svg = lines(
            "power",
            0,
            3600,
            300,
            1800,
            &|t| format!("{t}"),
            &[Line {
                name: "grid".into(),
                color: "#000",
                points: pts,
            }],
            "W",
            200.0,
        );
        let d = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(d.matches('M').count(), 3, "{d}");
        assert_eq!(d.matches('L').count(), 2, "{d}");
        assert_eq!(svg.matches("<circle").count(), 1);
        assert_eq!(fixed(-0.0001, 2), "0.00");
    }
}
