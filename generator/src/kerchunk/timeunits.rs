//! CF time units as far as combining needs them: re-expressing values given
//! in `<unit> since <epoch A>` as `<unit'> since <epoch B>` in one calendar.
//! (`read::cftime` decodes to dates but does not expose epochs; this module
//! only needs day numbers of two epochs, so it keeps its own small table.)

use anyhow::{anyhow, bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Calendar {
    Standard,
    ProlepticGregorian,
    Julian,
    NoLeap,
    AllLeap,
    Day360,
}

impl Calendar {
    pub(crate) fn parse(name: Option<&str>) -> Result<Calendar> {
        Ok(match name.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("standard") | Some("gregorian") => Calendar::Standard,
            Some("proleptic_gregorian") => Calendar::ProlepticGregorian,
            Some("julian") => Calendar::Julian,
            Some("noleap") | Some("365_day") => Calendar::NoLeap,
            Some("all_leap") | Some("366_day") => Calendar::AllLeap,
            Some("360_day") => Calendar::Day360,
            Some(other) => bail!("unsupported CF calendar {other:?}"),
        })
    }
}

/// `<unit> since <epoch>`: seconds per unit and the epoch in seconds from a
/// calendar-specific day 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Units {
    seconds_per_unit: f64,
    epoch_seconds: f64,
}

impl Units {
    pub(crate) fn parse(units: &str, calendar: Calendar) -> Result<Units> {
        let lower = units.trim().to_ascii_lowercase();
        let (unit, epoch) = lower.split_once(" since ").ok_or_else(|| anyhow!("time units {units:?} are not '<unit> since <date>'"))?;
        let seconds_per_unit = match unit.trim() {
            "seconds" | "second" | "secs" | "sec" | "s" => 1.0,
            "minutes" | "minute" | "mins" | "min" => 60.0,
            "hours" | "hour" | "hrs" | "hr" | "h" => 3600.0,
            "days" | "day" | "d" => 86400.0,
            other => bail!("time unit {other:?} in {units:?} has no fixed length"),
        };
        let (y, m, d, secs) = parse_epoch(epoch.trim()).ok_or_else(|| anyhow!("unreadable reference date in {units:?}"))?;
        let days = day_number(calendar, y, m, d).ok_or_else(|| anyhow!("invalid reference date in {units:?}"))?;
        Ok(Units { seconds_per_unit, epoch_seconds: days as f64 * 86400.0 + secs })
    }

    /// `value` (in self) expressed in `target`.
    pub(crate) fn convert(&self, value: f64, target: &Units) -> f64 {
        if self == target {
            return value;
        }
        let shift = self.epoch_seconds - target.epoch_seconds;
        if self.seconds_per_unit == target.seconds_per_unit {
            // Same unit: shift by a whole number of units when possible (exact).
            value + shift / target.seconds_per_unit
        } else {
            (value * self.seconds_per_unit + shift) / target.seconds_per_unit
        }
    }
}

/// "1850-1-1", "1850-01-01 00:00:00", "1949-12-01T00:00:00Z", "... UTC".
fn parse_epoch(text: &str) -> Option<(i64, u32, u32, f64)> {
    let text = text.trim_end_matches(" utc").trim_end_matches('z');
    let (date, time) = match text.split_once(['t', ' ']) {
        Some((d, t)) => (d, t.trim()),
        None => (text, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    let mut seconds = 0.0;
    let time = time.split_whitespace().next().unwrap_or("");
    if !time.is_empty() {
        let mut hms = time.split(':');
        let h: f64 = hms.next()?.parse().ok()?;
        let mi: f64 = hms.next().unwrap_or("0").parse().ok()?;
        let s: f64 = hms.next().unwrap_or("0").parse().ok()?;
        seconds = h * 3600.0 + mi * 60.0 + s;
    }
    Some((y, m, d, seconds))
}

const CUMULATIVE_NOLEAP: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
const CUMULATIVE_LEAP: [i64; 12] = [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335];

fn jdn_gregorian(y: i64, m: i64, d: i64) -> i64 {
    let a = (14 - m) / 12;
    let (y, m) = (y + 4800 - a, m + 12 * a - 3);
    d + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) - 32045
}

fn jdn_julian(y: i64, m: i64, d: i64) -> i64 {
    let a = (14 - m) / 12;
    let (y, m) = (y + 4800 - a, m + 12 * a - 3);
    d + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - 32083
}

/// A day count that is consistent within one calendar.
fn day_number(cal: Calendar, y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let (mi, di) = (m as i64, d as i64);
    Some(match cal {
        Calendar::ProlepticGregorian => jdn_gregorian(y, mi, di),
        Calendar::Julian => jdn_julian(y, mi, di),
        Calendar::Standard if (y, m, d) >= (1582, 10, 15) => jdn_gregorian(y, mi, di),
        Calendar::Standard => jdn_julian(y, mi, di),
        Calendar::NoLeap => y * 365 + CUMULATIVE_NOLEAP[m as usize - 1] + di - 1,
        Calendar::AllLeap => y * 366 + CUMULATIVE_LEAP[m as usize - 1] + di - 1,
        Calendar::Day360 => y * 360 + (mi - 1) * 30 + di - 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_epochs() {
        let std = Calendar::Standard;
        let a = Units::parse("days since 1860-01-01 00:00:00", std).unwrap();
        let b = Units::parse("days since 1850-1-1", std).unwrap();
        // 1850..1860 has 3 leap years (1852, 1856; 1860 starts after): 3652 days.
        assert_eq!(a.convert(15.5, &b), 3652.0 + 15.5);
        let h = Units::parse("hours since 1850-01-01T00:00:00Z", std).unwrap();
        assert_eq!(b.convert(1.0, &h), 24.0);
        let d360 = Units::parse("days since 1851-01-01", Calendar::Day360).unwrap();
        let d360b = Units::parse("days since 1850-01-01", Calendar::Day360).unwrap();
        assert_eq!(d360.convert(0.0, &d360b), 360.0);
        assert!(Units::parse("months since 1850-01-01", std).is_err());
    }
}
