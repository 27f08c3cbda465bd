//! Calendar arithmetic and the time formats of the history API (sans-IO).
//!
//! Times are Unix seconds (`i64`). Dates are proleptic Gregorian, converted with
//! Howard Hinnant's `days_from_civil` algorithms, so no time-zone database is needed: a
//! fixed [`Offset`] from UTC stands for the owner's local time (the GX's offset when
//! pzem-web starts). Accepted inputs, see [`parse_time`]:
//!
//! - Unix seconds: `1767225600`;
//! - an ISO 8601 date: `2026-01-01` (local midnight);
//! - an ISO 8601 date-time: `2026-01-01T06:30`, `2026-01-01T06:30:15`, with an optional
//!   `Z` or `±HH:MM` / `±HHMM` offset (local time when it has none); a space may stand
//!   for the `T`.

use std::fmt;

/// Seconds in a day.
pub const DAY: i64 = 86_400;
/// Seconds in an hour.
pub const HOUR: i64 = 3_600;

/// The earliest time accepted: 1970-01-01T00:00:00Z.
pub const MIN_TIME: i64 = 0;
/// The latest time accepted: 9999-12-31T23:59:59Z.
pub const MAX_TIME: i64 = 253_402_300_799;

/// A fixed offset from UTC, in seconds east of Greenwich (within ±18 h).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offset(i32);

impl Offset {
    /// UTC.
    pub const UTC: Offset = Offset(0);

    /// An offset of `seconds` east of UTC; `None` beyond ±18 hours.
    pub fn from_seconds(seconds: i32) -> Option<Offset> {
        (seconds.abs() <= 18 * 3600).then_some(Offset(seconds))
    }

    /// Seconds east of UTC.
    pub fn seconds(self) -> i32 {
        self.0
    }

    /// Parses `Z`, `+HH:MM`, `-HH:MM`, `+HHMM` or `+HH`.
    pub fn parse(text: &str) -> Result<Offset, TimeError> {
        if text == "Z" || text == "z" {
            return Ok(Offset::UTC);
        }
        let bad = || TimeError::new(format!("'{}' is not a UTC offset (Z, +HH:MM or -HH:MM)", shorten(text)));
        if !text.is_ascii() {
            return Err(bad());
        }
        let (sign, rest) = match text.as_bytes().first() {
            Some(b'+') => (1, &text[1..]),
            Some(b'-') => (-1, &text[1..]),
            _ => return Err(bad()),
        };
        let (h, m) = match rest.len() {
            2 => (rest, "00"),
            4 => (&rest[..2], &rest[2..]),
            5 if rest.as_bytes()[2] == b':' => (&rest[..2], &rest[3..]),
            _ => return Err(bad()),
        };
        let h = digits(h).ok_or_else(bad)?;
        let m = digits(m).ok_or_else(bad)?;
        if h > 18 || m > 59 {
            return Err(bad());
        }
        Offset::from_seconds(sign * (h as i32 * 3600 + m as i32 * 60)).ok_or_else(bad)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("Z");
        }
        let sign = if self.0 < 0 { '-' } else { '+' };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", a / 3600, a % 3600 / 60)
    }
}

/// A time or date that could not be read, with a message that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeError(pub String);

impl TimeError {
    fn new(message: String) -> TimeError {
        TimeError(message)
    }
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimeError {}

/// A calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Year, 1970..=9999.
    pub year: i32,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
}

impl Date {
    /// The date, if it exists (and lies in 1970..=9999).
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        ((1970..=9999).contains(&year) && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month))
            .then_some(Date { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn days(self) -> i64 {
        days_from_civil(self.year, self.month, self.day)
    }

    /// The date `days` days after 1970-01-01.
    pub fn from_days(days: i64) -> Date {
        let (year, month, day) = civil_from_days(days);
        Date { year, month, day }
    }

    /// The local date of Unix time `t` at `offset`.
    pub fn of(t: i64, offset: Offset) -> Date {
        Date::from_days((t + i64::from(offset.0)).div_euclid(DAY))
    }

    /// Unix time of this date's local midnight at `offset`.
    pub fn midnight(self, offset: Offset) -> i64 {
        self.days() * DAY - i64::from(offset.0)
    }

    /// The first day of this date's month.
    pub fn first_of_month(self) -> Date {
        Date { day: 1, ..self }
    }

    /// The first day of the next month (saturating at 9999-12).
    pub fn next_month(self) -> Date {
        if self.month == 12 {
            Date::new(self.year + 1, 1, 1).unwrap_or(Date { day: 1, ..self })
        } else {
            Date {
                month: self.month + 1,
                day: 1,
                ..self
            }
        }
    }

    /// The first day of the previous month (saturating at 1970-01).
    pub fn previous_month(self) -> Date {
        if self.month == 1 {
            Date::new(self.year - 1, 12, 1).unwrap_or(Date { day: 1, ..self })
        } else {
            Date {
                month: self.month - 1,
                day: 1,
                ..self
            }
        }
    }

    /// The date `n` days later (or earlier), clamped to 1970-01-01..=9999-12-31.
    pub fn add_days(self, n: i64) -> Date {
        let max = Date {
            year: 9999,
            month: 12,
            day: 31,
        }
        .days();
        Date::from_days((self.days() + n).clamp(0, max))
    }

    /// Parses `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Result<Date, TimeError> {
        let b = text.as_bytes();
        let bad = || TimeError::new(format!("'{}' is not a date (YYYY-MM-DD)", shorten(text)));
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(bad());
        }
        let y = digits(&text[..4]).ok_or_else(bad)?;
        let m = digits(&text[5..7]).ok_or_else(bad)?;
        let d = digits(&text[8..]).ok_or_else(bad)?;
        Date::new(y as i32, m, d)
            .ok_or_else(|| TimeError::new(format!("'{}' is not a date between 1970 and 9999", shorten(text))))
    }

    /// Parses `YYYY-MM` as the first day of that month.
    pub fn parse_month(text: &str) -> Result<Date, TimeError> {
        let b = text.as_bytes();
        let bad = || TimeError::new(format!("'{}' is not a month (YYYY-MM)", shorten(text)));
        if b.len() != 7 || b[4] != b'-' {
            return Err(bad());
        }
        let y = digits(&text[..4]).ok_or_else(bad)?;
        let m = digits(&text[5..]).ok_or_else(bad)?;
        Date::new(y as i32, m, 1).ok_or_else(bad)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether `year` is a leap year.
pub fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in `month` of `year`.
pub fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days from 1970-01-01 to the given civil date.
pub fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date `days` days after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

/// Reads a time of the API: Unix seconds, an ISO 8601 date (local midnight) or date-time
/// (local unless it carries `Z` or an offset). Local means `local`.
pub fn parse_time(text: &str, local: Offset) -> Result<i64, TimeError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TimeError::new("an empty time".into()));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(t) if (MIN_TIME..=MAX_TIME).contains(&t) => Ok(t),
            _ => Err(TimeError::new(format!(
                "'{}': Unix seconds must lie between {MIN_TIME} and {MAX_TIME}",
                shorten(text)
            ))),
        };
    }
    if !text.is_ascii() {
        return Err(TimeError::new(format!("'{}' is not a time", shorten(text))));
    }
    if text.len() == 10 {
        return Ok(Date::parse(text)?.midnight(local));
    }
    let bad = || {
        TimeError::new(format!(
            "'{}' is not a time: use Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][Z|±HH:MM]",
            shorten(text)
        ))
    };
    if text.len() < 16 || !matches!(text.as_bytes()[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let date = Date::parse(&text[..10])?;
    let rest = &text[11..];
    let b = rest.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return Err(bad());
    }
    let hour = digits(&rest[..2]).ok_or_else(bad)?;
    let minute = digits(&rest[3..5]).ok_or_else(bad)?;
    let (second, zone) = if b.len() >= 8 && b[5] == b':' {
        (digits(&rest[6..8]).ok_or_else(bad)?, &rest[8..])
    } else {
        (0, &rest[5..])
    };
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimeError::new(format!("'{}': no such time of day", shorten(text))));
    }
    let offset = if zone.is_empty() { local } else { Offset::parse(zone)? };
    let t = date.days() * DAY + i64::from(hour * 3600 + minute * 60 + second) - i64::from(offset.0);
    if (MIN_TIME..=MAX_TIME).contains(&t) {
        Ok(t)
    } else {
        Err(TimeError::new(format!("'{}' lies outside 1970..9999", shorten(text))))
    }
}

/// `YYYY-MM-DDTHH:MM:SS±HH:MM` (or `Z`) of Unix time `t` at `offset`.
pub fn format_time(t: i64, offset: Offset) -> String {
    let local = t + i64::from(offset.0);
    let date = Date::from_days(local.div_euclid(DAY));
    let s = local.rem_euclid(DAY);
    format!("{date}T{:02}:{:02}:{:02}{offset}", s / 3600, s % 3600 / 60, s % 60)
}

/// `HH:MM` of Unix time `t` at `offset`.
pub fn format_clock(t: i64, offset: Offset) -> String {
    let s = (t + i64::from(offset.0)).rem_euclid(DAY);
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// Unix seconds now (the system clock).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The machine's offset from UTC now (`localtime_r`'s `tm_gmtoff`; UTC when unknown).
#[cfg(unix)]
pub fn local_offset() -> Offset {
    let now: libc::time_t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as libc::time_t);
    // SAFETY: localtime_r writes into the zeroed struct we own; both pointers are valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&now, &mut tm).is_null() };
    if !ok {
        return Offset::UTC;
    }
    i32::try_from(tm.tm_gmtoff)
        .ok()
        .and_then(Offset::from_seconds)
        .unwrap_or(Offset::UTC)
}

/// The value of an all-digit ASCII field.
fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 9 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The text, cut to 40 characters for an error message.
fn shorten(text: &str) -> String {
    if text.chars().count() <= 40 {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(40).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in (-1000..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn parses_the_api_forms() {
        let utc = Offset::UTC;
        let plus2 = Offset::from_seconds(7200).unwrap();
        assert_eq!(parse_time("1767225600", utc), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01", utc), Ok(1_767_225_600));
        assert_eq!(parse_time("2026-01-01", plus2), Ok(1_767_225_600 - 7200));
        assert_eq!(parse_time("2026-01-01T06:30", utc), Ok(1_767_225_600 + 6 * 3600 + 1800));
        assert_eq!(parse_time("2026-01-01 06:30:15Z", plus2), Ok(1_767_225_600 + 23_415));
        assert_eq!(parse_time("2026-01-01T06:30:15+02:00", utc), Ok(1_767_225_600 + 16_215));
        assert_eq!(
            parse_time("2026-01-01T06:30-0130", utc),
            Ok(1_767_225_600 + 23_400 + 5400)
        );
        assert_eq!(parse_time("2024-02-29", utc), Ok(1_709_164_800));
    }

    #[test]
    fn refuses_what_is_not_a_time() {
        let utc = Offset::UTC;
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-29",
            "2026-02-30T00:00",
            "2026-01-01T24:00",
            "2026-01-01T12:60",
            "2026-01-01T12:00:61",
            "2026-01-01T12:00+25:00",
            "2026-01-01T12:00+02:0",
            "2026-1-1",
            "99999999999999999999999",
            "253402300800",
            "1969-12-31",
            "-5",
            "2026-01-01X12:00",
            "２０２６-01-01",
            "2026-01-01T12:00:00.5",
        ] {
            assert!(parse_time(bad, utc).is_err(), "{bad:?} was accepted");
        }
        let long = "9".repeat(5000) + "x";
        let e = parse_time(&long, utc).unwrap_err();
        assert!(e.0.len() < 200, "the message quotes a shortened input");
    }

    #[test]
    fn formats_and_month_steps() {
        let plus2 = Offset::from_seconds(7200).unwrap();
        assert_eq!(format_time(1_767_225_600, Offset::UTC), "2026-01-01T00:00:00Z");
        assert_eq!(format_time(1_767_225_600, plus2), "2026-01-01T02:00:00+02:00");
        assert_eq!(format_clock(1_767_225_600 + 3661, Offset::UTC), "01:01");
        let d = Date::parse("2026-12-15").unwrap();
        assert_eq!(d.next_month().to_string(), "2027-01-01");
        assert_eq!(d.previous_month().to_string(), "2026-11-01");
        assert_eq!(Date::parse_month("2026-02").unwrap().to_string(), "2026-02-01");
        assert_eq!(Date::of(1_767_225_600 - 1, plus2).to_string(), "2026-01-01");
        assert_eq!(Offset::parse("-05:30").unwrap().to_string(), "-05:30");
        assert!(Offset::parse("+19:00").is_err());
        assert!(Offset::parse("+1é1").is_err() && Offset::parse("+é:00").is_err());
    }
}
