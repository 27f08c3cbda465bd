//! The page (sans-IO): HTML with server-drawn SVG charts, from data already queried.
//!
//! No script, no external resource: the styles are inline, the charts are SVG, hover
//! values are SVG `<title>`s, the date picker is an HTML form. A Content-Security-Policy
//! header ([`CSP`]) lets the browser refuse anything else.

use std::fmt::Write;

use super::svg::{self, Bars, Line, escape, fixed};
use crate::history::time::{Date, Offset, format_clock};

/// The page's Content-Security-Policy: nothing but itself.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Day or month.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// One day: bars per hour, power lines over the day.
    Day,
    /// One month: bars per day, daily average power.
    Month,
}

/// One row of the totals table.
#[derive(Clone, Debug, PartialEq)]
pub struct Total {
    /// What it is.
    pub name: String,
    /// kWh over the period (`None`: no data).
    pub kwh: Option<f64>,
}

/// Everything the page shows.
#[derive(Clone, Debug)]
pub struct PageModel {
    /// Day or month.
    pub view: View,
    /// The day shown, or the first of the month.
    pub date: Date,
    /// Local time offset.
    pub offset: Offset,
    /// Start of the period (Unix seconds).
    pub from: i64,
    /// End of the period (exclusive).
    pub to: i64,
    /// Labels of the bar slots (hours or days).
    pub slots: Vec<String>,
    /// Energy by flow, one component per flow.
    pub flows: Vec<Bars>,
    /// Power lines.
    pub power: Vec<Line>,
    /// Totals per flow.
    pub flow_totals: Vec<Total>,
    /// Totals per energy counter.
    pub meter_totals: Vec<Total>,
    /// How many series the file holds.
    pub series_count: usize,
    /// The logging interval, seconds.
    pub interval: u32,
    /// Seconds per point of the power lines (a line breaks after two missing points).
    pub line_step: i64,
    /// Reload the page every this many seconds (the period includes now).
    pub refresh: Option<u32>,
}

/// The colours of the flows and lines, in order.
pub const PALETTE: [&str; 8] = [
    "#2563eb", "#f59e0b", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#65a30d", "#db2777",
];

const STYLE: &str = "*{box-sizing:border-box}body{font:15px/1.4 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f4f6f8;color:#1f2933}\
header{background:#10375c;color:#fff;padding:10px 14px}header h1{font-size:18px;margin:0}header p{margin:2px 0 0;font-size:13px;opacity:.8}\
main{max-width:980px;margin:0 auto;padding:10px}section{background:#fff;border-radius:8px;padding:10px 12px;margin:10px 0;box-shadow:0 1px 2px #0002}\
h2{font-size:16px;margin:2px 0 8px}form{display:flex;flex-wrap:wrap;gap:8px;align-items:center}\
input,select,button,.nav a{font:inherit;padding:6px 10px;border:1px solid #b8c2cc;border-radius:6px;background:#fff;color:#10375c;text-decoration:none}\
button{background:#10375c;color:#fff;border-color:#10375c}.nav{display:flex;gap:8px;margin-top:8px;flex-wrap:wrap}\
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;border-bottom:1px solid #e4e7eb;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:13px;margin:4px 0}.legend i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}\
.chart{display:block;height:auto}.chart text{font-size:11px;fill:#52606d}.chart .xl{text-anchor:middle}.chart .yl{text-anchor:end}\
.chart .grid{stroke:#e4e7eb}.chart .axis{stroke:#7b8794}.chart .line{fill:none;stroke-width:1.6}.empty{color:#7b8794;font-style:italic}\
.totals{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:10px}.scroll{overflow-x:auto}@media(max-width:640px){.chart{min-width:600px}main{padding:4px}section{padding:8px}}";

fn legend(out: &mut String, items: impl Iterator<Item = (String, &'static str)>) {
    out.push_str(r#"<div class="legend">"#);
    for (name, color) in items {
        let _ = write!(
            out,
            r#"<span><i style="background:{color}"></i>{}</span>"#,
            escape(&name)
        );
    }
    out.push_str("</div>");
}

fn totals_table(out: &mut String, title: &str, rows: &[Total]) {
    let _ = write!(
        out,
        "<div><table><tr><th>{}</th><th class=\"n\">kWh</th></tr>",
        escape(title)
    );
    for r in rows {
        let v = r.kwh.map_or_else(|| "–".to_owned(), |v| fixed(v, 2));
        let _ = write!(out, r#"<tr><td>{}</td><td class="n">{v}</td></tr>"#, escape(&r.name));
    }
    out.push_str("</table></div>");
}

/// The whole page.
pub fn render(m: &PageModel) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let (title, period, prev, next) = match m.view {
        View::Day => (
            format!("{}", m.date),
            "day",
            m.date.add_days(-1).to_string(),
            m.date.add_days(1).to_string(),
        ),
        View::Month => (
            format!("{:04}-{:02}", m.date.year, m.date.month),
            "month",
            m.date.previous_month().to_string(),
            m.date.next_month().to_string(),
        ),
    };
    let refresh = m.refresh.map_or(String::new(), |s| {
        format!(r#"<meta http-equiv="refresh" content="{s}">"#)
    });
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>Energy {title}</title>{refresh}<link rel="icon" href="data:,"><style>{STYLE}</style></head><body>"#
    );
    let _ = write!(
        out,
        "<header><h1>Energy history</h1><p>{} series, one sample every {} s · times in UTC{}</p></header><main>",
        m.series_count,
        m.interval,
        if m.offset == Offset::UTC {
            String::new()
        } else {
            m.offset.to_string()
        }
    );
    // The picker.
    let day_sel = if m.view == View::Day { " selected" } else { "" };
    let month_sel = if m.view == View::Month { " selected" } else { "" };
    let _ = write!(
        out,
        r#"<section><form method="get" action="/"><label>Date <input type="date" name="date" value="{}" min="1970-01-01" max="9999-12-31" required></label><select name="view" aria-label="view"><option value="day"{day_sel}>Day</option><option value="month"{month_sel}>Month</option></select><button type="submit">Show</button></form><div class="nav"><a href="/?view={period}&amp;date={prev}">&larr; Previous {period}</a><a href="/?view={period}&amp;date={next}">Next {period} &rarr;</a><a href="/?view={period}">Today</a></div></section>"#,
        m.date
    );
    // Totals.
    let _ = write!(out, r#"<section><h2>Totals for {title}</h2><div class="totals">"#);
    totals_table(&mut out, "Energy by flow", &m.flow_totals);
    totals_table(&mut out, "Meters and counters", &m.meter_totals);
    out.push_str("</div></section>");
    // Energy bars.
    let per = if m.view == View::Day { "hour" } else { "day" };
    let _ = write!(out, r#"<section id="flows"><h2>Energy by flow per {per}</h2>"#);
    if m.flows.iter().all(|b| b.values.iter().all(Option::is_none)) {
        out.push_str(r#"<p class="empty">No energy recorded in this period.</p>"#);
    }
    legend(&mut out, m.flows.iter().map(|b| (b.name.clone(), b.color)));
    out.push_str(r#"<div class="scroll">"#);
    out.push_str(&svg::stacked_bars(
        &format!("Energy by flow per {per}, {title}"),
        &m.slots,
        &m.flows,
        "kWh",
        260.0,
    ));
    out.push_str("</div></section>");
    // Power lines.
    let (heading, tick, gap) = match m.view {
        View::Day => ("Power over the day".to_owned(), 3 * 3600, 2 * m.line_step),
        View::Month => ("Average power per day".to_owned(), 7 * 86_400, 86_400),
    };
    let _ = write!(out, r#"<section id="power"><h2>{heading}</h2>"#);
    if m.power.iter().all(|l| l.points.is_empty()) {
        out.push_str(r#"<p class="empty">No power recorded in this period.</p>"#);
    }
    legend(&mut out, m.power.iter().map(|l| (l.name.clone(), l.color)));
    let offset = m.offset;
    let label = move |t: i64| -> String {
        match m.view {
            View::Day => format_clock(t, offset),
            View::Month => {
                let d = Date::of(t, offset);
                format!("{:02}-{:02}", d.month, d.day)
            }
        }
    };
    out.push_str(r#"<div class="scroll">"#);
    out.push_str(&svg::lines(
        &heading, m.from, m.to, gap, tick, &label, &m.power, "W", 280.0,
    ));
    out.push_str("</div></section>");
    out.push_str(
        r#"<section><p>Data: <a href="/api/series">/api/series</a> · samples as JSON or CSV from <code>/api/samples?series=ID&amp;from=…&amp;to=…&amp;step=minute|hour|day[&amp;format=csv]</code>.</p></section></main></body></html>"#,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_with_and_without_data() {
        let date = Date::parse("2026-01-01").unwrap();
        let mut m = PageModel {
            view: View::Day,
            date,
            offset: Offset::UTC,
            from: date.midnight(Offset::UTC),
            to: date.midnight(Offset::UTC) + 86_400,
            slots: (0..24).map(|h| format!("{h:02}")).collect(),
            flows: vec![Bars {
                name: "Grid to loads".into(),
                color: PALETTE[0],
                values: vec![Some(0.5); 24],
            }],
            power: vec![Line {
                name: "grid <x>".into(),
                color: PALETTE[1],
                points: vec![(date.midnight(Offset::UTC), 100.0)],
            }],
            flow_totals: vec![Total {
                name: "Grid to loads".into(),
                kwh: Some(12.0),
            }],
            meter_totals: vec![],
            series_count: 1,
            interval: 60,
            line_step: 300,
            refresh: Some(60),
        };
        let html = render(&m);
        assert!(html.contains("<svg") && html.contains("12.00") && html.contains("grid &lt;x&gt;"));
        assert!(html.contains("date=2025-12-31") && html.contains("date=2026-01-02"));
        assert!(!html.contains("<script"));
        assert!(html.contains(r#"http-equiv="refresh" content="60""#));
        m.flows[0].values = vec![None; 24];
        m.view = View::Month;
        let html = render(&m);
        assert!(html.contains("No energy recorded"));
        assert!(html.contains("date=2026-02-01"));
    }
}
