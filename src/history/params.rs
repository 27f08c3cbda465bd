//! The parameters of a samples query, shared by `/api/samples` and `pzem-logger export`
//! (sans-IO).

use super::query::Step;
use super::time::{DAY, Offset, parse_time};

/// At most 40 characters of a user's text, for a message.
pub fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The parameters of `/api/samples`.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplesQuery {
    /// Series id.
    pub series: i64,
    /// Range start.
    pub from: i64,
    /// Range end (exclusive).
    pub to: i64,
    /// Step.
    pub step: Step,
    /// CSV instead of JSON.
    pub csv: bool,
}

impl SamplesQuery {
    /// Reads and checks the parameters (sans-IO); the error says what is wrong.
    pub fn parse(query: &[(String, String)], offset: Offset) -> Result<SamplesQuery, String> {
        let (mut series, mut from, mut to, mut step, mut format) = (None, None, None, None, None);
        for (k, v) in query {
            let slot = match k.as_str() {
                "series" => &mut series,
                "from" => &mut from,
                "to" => &mut to,
                "step" => &mut step,
                "format" => &mut format,
                other => {
                    return Err(format!(
                        "unknown parameter '{}' (series, from, to, step, format)",
                        cut(other)
                    ));
                }
            };
            if slot.replace(v.as_str()).is_some() {
                return Err(format!("parameter '{k}' is given twice"));
            }
        }
        let series = series
            .ok_or("series=ID is missing")?
            .parse::<i64>()
            .map_err(|_| "series must be a series id (see /api/series)".to_owned())?;
        let from = parse_time(from.ok_or("from=T is missing")?, offset).map_err(|e| format!("from: {e}"))?;
        let to = parse_time(to.ok_or("to=T is missing")?, offset).map_err(|e| format!("to: {e}"))?;
        let step = match step {
            None => Step::Minute,
            Some(s) => Step::parse(s).ok_or_else(|| format!("step must be minute, hour or day, not '{}'", cut(s)))?,
        };
        let csv = match format {
            None | Some("json") => false,
            Some("csv") => true,
            Some(f) => return Err(format!("format must be json or csv, not '{}'", cut(f))),
        };
        if to <= from {
            return Err("to must be after from".into());
        }
        if to - from > step.max_range() {
            return Err(format!(
                "range too large for step {step}: at most {} days",
                step.max_range() / DAY
            ));
        }
        Ok(SamplesQuery {
            series,
            from,
            to,
            step,
            csv,
        })
    }
}

/// Whether a history logged every `interval` seconds can answer `step`: minute steps need
/// an interval of 60 s or less. The error says what to use instead.
pub fn check_step(step: Step, interval: u32) -> Result<(), String> {
    if step == Step::Minute && interval > 60 {
        return Err(format!(
            "step minute is finer than the logging interval ({interval} s): use hour or day"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn samples_parameters() {
        let ok = SamplesQuery::parse(
            &q(&[
                ("series", "3"),
                ("from", "2026-01-01"),
                ("to", "2026-01-02"),
                ("step", "hour"),
                ("format", "csv"),
            ]),
            Offset::UTC,
        )
        .unwrap();
        assert_eq!(
            (ok.series, ok.to - ok.from, ok.step, ok.csv),
            (3, DAY, Step::Hour, true)
        );
        let err = |pairs: &[(&str, &str)]| SamplesQuery::parse(&q(pairs), Offset::UTC).unwrap_err();
        assert!(err(&[("from", "1"), ("to", "2")]).contains("series"));
        assert!(err(&[("series", "x"), ("from", "1"), ("to", "2")]).contains("series id"));
        assert!(err(&[("series", "1"), ("from", "2026-02-30"), ("to", "2")]).contains("from:"));
        assert!(err(&[("series", "1"), ("from", "2"), ("to", "1")]).contains("after"));
        assert!(err(&[("series", "1"), ("from", "0"), ("to", "253402300799")]).contains("range too large"));
        assert!(err(&[("series", "1"), ("from", "0"), ("to", "86400"), ("step", "week")]).contains("step"));
        assert!(err(&[("series", "1"), ("series", "2")]).contains("twice"));
        assert!(err(&[("series", "1"), ("x", "2")]).contains("unknown parameter"));
    }

    #[test]
    fn minute_steps_need_an_interval_of_a_minute_or_less() {
        assert_eq!(check_step(Step::Minute, 60), Ok(()));
        assert_eq!(check_step(Step::Hour, 300), Ok(()));
        assert_eq!(
            check_step(Step::Minute, 300).unwrap_err(),
            "step minute is finer than the logging interval (300 s): use hour or day"
        );
    }
}
