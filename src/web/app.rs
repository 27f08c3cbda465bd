//! pzem-web's answers: routes, the API's parameters and JSON, and the page's data.
//!
//! Each worker thread owns an [`App`] with its own read-only connection to the history.
//!
//! | Route | Answer |
//! |---|---|
//! | `GET /` | the page: `?view=day|month&date=YYYY-MM-DD` (default: today) |
//! | `GET /api/series` | JSON list of series |
//! | `GET /api/samples?series=ID&from=T&to=T&step=minute|hour|day[&format=csv]` | points |
//!
//! Anything else is 404; bad parameters are 400 with a message saying what is wrong.

use std::fmt::Write;
use std::path::PathBuf;

use super::http::{Request, Response};
use super::page::{self, CSP, PALETTE, PageModel, Total, View};
use super::svg::{Bars, Line};
use crate::history::csv;
use crate::history::params::{SamplesQuery, check_step, cut};
use crate::history::query::Step;
use crate::history::series::Quantity;
use crate::history::store::{Reader, SeriesInfo, StoreError};
use crate::history::time::{Date, HOUR, Offset, unix_now};

/// One worker's view of the history.
pub struct App {
    db: PathBuf,
    reader: Option<Reader>,
    offset: Offset,
    clock: fn() -> i64,
}

/// The flows of the page: name, vebus path.
const VEBUS_FLOWS: [(&str, &str); 3] = [
    ("Grid to loads", "/Energy/AcIn1ToAcOut"),
    ("Grid to battery", "/Energy/AcIn1ToInverter"),
    ("Battery to loads", "/Energy/InverterToAcOut"),
];

fn json_string(out: &mut String, s: &str) {
    crate::info::json_writer::escape_into(s, out);
}

fn json_error(status: u16, message: &str) -> Response {
    let mut body = String::from("{\"error\":");
    json_string(&mut body, message);
    body.push_str("}\n");
    Response::new(status, "application/json", body)
}

fn json_opt(v: Option<i64>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

/// A short name of a service: its class and suffix (`grid pzem_ttyUSB0_1`).
pub fn short_name(service: &str) -> String {
    let rest = service.strip_prefix("com.victronenergy.").unwrap_or(service);
    match rest.split_once('.') {
        Some((class, suffix)) => format!("{class} {suffix}"),
        None => rest.to_owned(),
    }
}

fn class_of(service: &str) -> &str {
    service
        .strip_prefix("com.victronenergy.")
        .and_then(|r| r.split('.').next())
        .unwrap_or("")
}

impl App {
    /// An app reading `db`, with local time at `offset`. The file is opened on the first
    /// request (and again after an error), so pzem-web can start before pzem-logger.
    pub fn new(db: PathBuf, offset: Offset) -> App {
        App {
            db,
            reader: None,
            offset,
            clock: unix_now,
        }
    }

    /// The same with another clock (tests).
    pub fn with_clock(mut self, clock: fn() -> i64) -> App {
        self.clock = clock;
        self
    }

    fn reader(&mut self) -> Result<&Reader, StoreError> {
        if self.reader.is_none() {
            self.reader = Some(Reader::open(&self.db)?);
        }
        Ok(self.reader.as_ref().expect("set just above"))
    }

    /// Answers one request.
    pub fn handle(&mut self, req: &Request) -> Response {
        let result = match req.path.as_str() {
            "/" => self.page(req),
            "/api/series" => self.series(req),
            "/api/samples" => self.samples(req),
            _ => return Response::text(404, "not found: the page is / and the API /api/series and /api/samples"),
        };
        match result {
            Ok(r) => r,
            Err(e) => {
                // A failed query may come from a file replaced under us: reopen next time.
                self.reader = None;
                let status = match e {
                    StoreError::Missing(_) => 503,
                    _ => 500,
                };
                log::warn!("{}: {e}", req.path);
                if req.path.starts_with("/api/") {
                    json_error(status, &e.to_string())
                } else {
                    Response::text(status, format!("the history cannot be read: {e}"))
                }
            }
        }
    }

    fn series(&mut self, req: &Request) -> Result<Response, StoreError> {
        if let Some((k, _)) = req.query.first() {
            return Ok(json_error(
                400,
                &format!("unknown parameter '{k}': /api/series takes none"),
            ));
        }
        let list = self.reader()?.series()?;
        let mut body = String::from("[");
        for (i, s) in list.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let _ = write!(body, "\n{{\"id\":{},\"service\":", s.id);
            json_string(&mut body, &s.service);
            body.push_str(",\"path\":");
            json_string(&mut body, &s.path);
            let _ = write!(
                body,
                ",\"unit\":\"{}\",\"first\":{},\"last\":{}}}",
                s.quantity.unit(),
                json_opt(s.first),
                json_opt(s.last)
            );
        }
        body.push_str("\n]\n");
        Ok(Response::new(200, "application/json", body))
    }

    fn samples(&mut self, req: &Request) -> Result<Response, StoreError> {
        let params = match SamplesQuery::parse(&req.query, self.offset) {
            Ok(p) => p,
            Err(e) => return Ok(json_error(400, &e)),
        };
        let offset = self.offset;
        let reader = self.reader()?;
        if let Err(e) = check_step(params.step, reader.interval()) {
            return Ok(json_error(400, &e));
        }
        let Some(series) = reader.series_by_id(params.series)? else {
            return Ok(json_error(404, &format!("no series {}", params.series)));
        };
        let points = reader.points(&series, params.step, offset, params.from, params.to)?;
        let unit = series.quantity.unit();
        if params.csv {
            return Ok(Response::new(
                200,
                "text/csv; charset=utf-8",
                csv::write(&points, unit, offset),
            ));
        }
        let mut body = String::with_capacity(64 + points.len() * 24);
        let _ = write!(
            body,
            "{{\"series\":{},\"step\":\"{}\",\"unit\":\"{unit}\",\"points\":[",
            series.id, params.step
        );
        for (i, (t, v)) in points.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let _ = write!(body, "[{t},{}]", csv::number(*v));
        }
        body.push_str("]}\n");
        Ok(Response::new(200, "application/json", body))
    }

    fn page(&mut self, req: &Request) -> Result<Response, StoreError> {
        let mut view = View::Day;
        let mut date = None;
        for (k, v) in &req.query {
            match k.as_str() {
                "view" => {
                    view = match v.as_str() {
                        "day" => View::Day,
                        "month" => View::Month,
                        _ => {
                            return Ok(Response::text(
                                400,
                                format!("view must be day or month, not '{}'", cut(v)),
                            ));
                        }
                    }
                }
                "date" => match if v.len() == 7 {
                    Date::parse_month(v)
                } else {
                    Date::parse(v)
                } {
                    Ok(d) => date = Some(d),
                    Err(e) => return Ok(Response::text(400, e.0)),
                },
                _ => {}
            }
        }
        let offset = self.offset;
        let today = Date::of((self.clock)(), offset);
        let date = date.unwrap_or(today);
        let model = self.page_model(view, date)?;
        Ok(Response::new(200, "text/html; charset=utf-8", page::render(&model))
            .with_header("Content-Security-Policy", CSP))
    }

    /// The page's data for a day or a month.
    pub fn page_model(&mut self, view: View, date: Date) -> Result<PageModel, StoreError> {
        let offset = self.offset;
        let (date, from, to, step) = match view {
            View::Day => (
                date,
                date.midnight(offset),
                date.add_days(1).midnight(offset),
                Step::Hour,
            ),
            View::Month => {
                let first = date.first_of_month();
                (
                    first,
                    first.midnight(offset),
                    first.next_month().midnight(offset),
                    Step::Day,
                )
            }
        };
        let reader = self.reader()?;
        let interval = reader.interval();
        let all = reader.series()?;
        // Only the series with data in the period matter.
        let in_range = |s: &&SeriesInfo| s.first.is_some_and(|f| f < to) && s.last.is_some_and(|l| l + HOUR > from);
        let slots: Vec<i64> = {
            let mut v = Vec::new();
            let mut t = from;
            while t < to {
                v.push(t);
                t = match step {
                    Step::Day => Date::of(t, offset).add_days(1).midnight(offset),
                    _ => t + HOUR,
                };
            }
            v
        };
        let slot_of = |t: i64| slots.iter().position(|s| *s == t);
        let labels: Vec<String> = slots
            .iter()
            .map(|t| match step {
                Step::Day => format!("{}", Date::of(*t, offset).day),
                _ => crate::history::time::format_clock(*t, offset)[..2].to_owned(),
            })
            .collect();
        let mut flows: Vec<Bars> = Vec::new();
        let mut flow_totals = Vec::new();
        let mut add_flow = |name: &str, series: Vec<&SeriesInfo>| -> Result<(), StoreError> {
            let mut values: Vec<Option<f64>> = vec![None; slots.len()];
            for s in series {
                for (t, v) in reader.points(s, step, offset, from, to)? {
                    if let Some(i) = slot_of(t) {
                        *values[i].get_or_insert(0.0) += v;
                    }
                }
            }
            let any = values.iter().any(Option::is_some);
            flow_totals.push(Total {
                name: name.to_owned(),
                kwh: any.then(|| values.iter().flatten().sum()),
            });
            let color = PALETTE[flows.len() % PALETTE.len()];
            flows.push(Bars {
                name: name.to_owned(),
                color,
                values,
            });
            Ok(())
        };
        for (name, path) in VEBUS_FLOWS {
            let series = all
                .iter()
                .filter(in_range)
                .filter(|s| class_of(&s.service) == "vebus" && s.path == path)
                .collect();
            add_flow(name, series)?;
        }
        let dc: Vec<&SeriesInfo> = all
            .iter()
            .filter(in_range)
            .filter(|s| {
                matches!(class_of(&s.service), "dcsource" | "alternator" | "dcgenset") && s.path == "/History/EnergyOut"
            })
            .collect();
        add_flow("DC sources", dc)?;

        // Totals per counter.
        let mut meter_totals = Vec::new();
        for s in all.iter().filter(in_range).filter(|s| s.quantity == Quantity::Energy) {
            let points = reader.points(s, step, offset, from, to)?;
            meter_totals.push(Total {
                name: format!("{} {}", short_name(&s.service), s.path),
                kwh: (!points.is_empty()).then(|| points.iter().map(|p| p.1).sum()),
            });
        }
        // Power lines: 5-minute averages over a day (shorter with a short interval, for
        // demos and tests), daily averages over a month.
        let line_seconds = (interval * 5).min(300).max(interval);
        let line_step = match view {
            View::Day => Step::Seconds(line_seconds),
            View::Month => Step::Day,
        };
        let mut power = Vec::new();
        for s in all.iter().filter(in_range).filter(|s| s.quantity == Quantity::Power) {
            let points = reader.points(s, line_step, offset, from, to)?;
            power.push(Line {
                name: short_name(&s.service),
                color: PALETTE[power.len() % PALETTE.len()],
                points,
            });
        }
        Ok(PageModel {
            view,
            date,
            offset,
            from,
            to,
            slots: labels,
            flows,
            power,
            flow_totals,
            meter_totals,
            series_count: all.len(),
            interval,
            line_step: i64::from(line_seconds),
            refresh: (from..to).contains(&(self.clock)()).then(|| interval.clamp(10, 60)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            short_name("com.victronenergy.grid.pzem_ttyUSB0_1"),
            "grid pzem_ttyUSB0_1"
        );
        assert_eq!(class_of("com.victronenergy.vebus.pzem_energy"), "vebus");
        let mut s = String::new();
        json_string(&mut s, "a\"b\\\n");
        assert_eq!(s, r#""a\"b\\\n""#);
    }
}
