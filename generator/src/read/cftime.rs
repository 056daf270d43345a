//! CF time decoding: `<unit> since <epoch>` in every CF calendar.
//!
//! Written by hand because no maintained Rust crate covers the CF calendars
//! (360_day, noleap, all_leap, julian and the mixed Julian/Gregorian standard).
//! Each calendar maps a civil date to a day count and back; decoding is
//! `epoch_days + value * unit` in that count.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Calendar {
    /// Julian before 1582-10-15, Gregorian after (CF `standard`, `gregorian`).
    Standard,
    ProlepticGregorian,
    Julian,
    NoLeap,
    AllLeap,
    Day360,
}

impl Calendar {
    /// Parses a CF `calendar` attribute; a missing attribute means `standard`.
    pub fn parse(name: Option<&str>) -> Result<Calendar, String> {
        let name = name.map(|s| s.trim().to_ascii_lowercase());
        Ok(match name.as_deref() {
            None | Some("") | Some("standard") | Some("gregorian") => Calendar::Standard,
            Some("proleptic_gregorian") => Calendar::ProlepticGregorian,
            Some("julian") => Calendar::Julian,
            Some("noleap") | Some("365_day") => Calendar::NoLeap,
            Some("all_leap") | Some("366_day") => Calendar::AllLeap,
            Some("360_day") => Calendar::Day360,
            Some(other) => return Err(format!("unsupported CF calendar {other:?}")),
        })
    }
}

/// A civil date and time in some calendar (not necessarily a real Gregorian date:
/// 360_day has February 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CfDateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub seconds_of_day: u32,
}

impl CfDateTime {
    /// RFC 3339 in UTC. Dates that do not exist in the Gregorian calendar
    /// (30 February in 360_day) are clamped to the month's last real day, so
    /// the value stays a valid STAC datetime; ordering is preserved.
    pub fn to_rfc3339(&self) -> Result<String, String> {
        if !(0..=9999).contains(&self.year) {
            return Err(format!("year {} is outside 0000-9999", self.year));
        }
        let day = self.day.min(gregorian_month_length(self.year, self.month));
        let (h, m, s) = (self.seconds_of_day / 3600, self.seconds_of_day / 60 % 60, self.seconds_of_day % 60);
        Ok(format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", self.year, self.month, day, h, m, s))
    }
}

impl fmt::Display for CfDateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.seconds_of_day / 3600, self.seconds_of_day / 60 % 60, self.seconds_of_day % 60);
        write!(f, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", self.year, self.month, self.day, h, m, s)
    }
}

/// Parsed `units` of a CF time coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeUnits {
    seconds_per_unit: f64,
    epoch_days: i64,
    epoch_seconds: f64,
    calendar: Calendar,
}

impl TimeUnits {
    /// Parses e.g. `days since 1850-01-01 00:00:00` or `hours since 2000-1-1T06:00:00Z`.
    pub fn parse(units: &str, calendar: Calendar) -> Result<TimeUnits, String> {
        let lower = units.trim().to_ascii_lowercase();
        let (unit, rest) = lower
            .split_once(" since ")
            .ok_or_else(|| format!("time units {units:?} are not '<unit> since <date>'"))?;
        let seconds_per_unit = match unit.trim() {
            "seconds" | "second" | "secs" | "sec" | "s" => 1.0,
            "minutes" | "minute" | "mins" | "min" => 60.0,
            "hours" | "hour" | "hrs" | "hr" | "h" => 3600.0,
            "days" | "day" | "d" => 86400.0,
            other => return Err(format!("unsupported time unit {other:?} in {units:?}")),
        };
        let epoch = parse_epoch(rest.trim()).ok_or_else(|| format!("unreadable reference date in {units:?}"))?;
        let epoch_days = days_from_civil(calendar, epoch.year, epoch.month, epoch.day)?;
        Ok(TimeUnits { seconds_per_unit, epoch_days, epoch_seconds: epoch.seconds_of_day as f64, calendar })
    }

    /// Decodes one coordinate value to a date in the calendar, to the nearest second.
    pub fn decode(&self, value: f64) -> Result<CfDateTime, String> {
        if !value.is_finite() {
            return Err(format!("time value {value} is not finite"));
        }
        let total = (self.epoch_seconds + value * self.seconds_per_unit).round();
        let days = (total / 86400.0).floor();
        let seconds_of_day = (total - days * 86400.0) as u32;
        let days = self.epoch_days + days as i64;
        let (year, month, day) = civil_from_days(self.calendar, days);
        Ok(CfDateTime { year, month, day, seconds_of_day })
    }
}

fn parse_epoch(text: &str) -> Option<CfDateTime> {
    // Accepts "1850-01-01", "1850-1-1 00:00:00", "2000-01-01T06:00:00Z", "1850-01-01 00:00:00.0 UTC".
    let text = text.trim_end_matches(" utc").trim_end_matches('z');
    let (date, time) = match text.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, t.trim()),
        None => (text, ""),
    };
    let mut parts = date.splitn(3, '-');
    let (y, m, d) = match date.strip_prefix('-') {
        Some(_) => return None,
        None => (parts.next()?, parts.next()?, parts.next()?),
    };
    let (year, month, day) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let time = time.split_whitespace().next().unwrap_or("").trim_end_matches(['z', 'Z']);
    let mut seconds = 0.0;
    if !time.is_empty() {
        let mut hms = time.split(':');
        let h: f64 = hms.next()?.parse().ok()?;
        let mi: f64 = hms.next().unwrap_or("0").parse().ok()?;
        let s: f64 = hms.next().unwrap_or("0").parse().ok()?;
        seconds = h * 3600.0 + mi * 60.0 + s;
    }
    Some(CfDateTime { year, month, day, seconds_of_day: seconds.round() as u32 })
}

const CUMULATIVE_NOLEAP: [i64; 13] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334, 365];
const CUMULATIVE_LEAP: [i64; 13] = [0, 31, 60, 91, 121, 152, 182, 213, 244, 274, 305, 335, 366];

fn gregorian_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn gregorian_month_length(year: i64, month: u32) -> u32 {
    let table = if gregorian_leap(year) { &CUMULATIVE_LEAP } else { &CUMULATIVE_NOLEAP };
    (table[month as usize] - table[month as usize - 1]) as u32
}

/// Julian Day Number of a proleptic Gregorian date.
fn jdn_gregorian(y: i64, m: u32, d: u32) -> i64 {
    let a = (14 - m as i64) / 12;
    let y = y + 4800 - a;
    let m = m as i64 + 12 * a - 3;
    d as i64 + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) - 32045
}

/// Julian Day Number of a proleptic Julian date.
fn jdn_julian(y: i64, m: u32, d: u32) -> i64 {
    let a = (14 - m as i64) / 12;
    let y = y + 4800 - a;
    let m = m as i64 + 12 * a - 3;
    d as i64 + (153 * m + 2) / 5 + 365 * y + y.div_euclid(4) - 32083
}

fn gregorian_from_jdn(j: i64) -> (i64, u32, u32) {
    let a = j + 32044;
    let b = (4 * a + 3).div_euclid(146097);
    let c = a - 146097 * b / 4;
    let d = (4 * c + 3) / 1461;
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = 100 * b + d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

fn julian_from_jdn(j: i64) -> (i64, u32, u32) {
    let c = j + 32082;
    let d = (4 * c + 3).div_euclid(1461);
    let e = c - 1461 * d / 4;
    let m = (5 * e + 2) / 153;
    let day = e - (153 * m + 2) / 5 + 1;
    let month = m + 3 - 12 * (m / 10);
    let year = d - 4800 + m / 10;
    (year, month as u32, day as u32)
}

/// First Julian Day of the Gregorian reform (1582-10-15).
const REFORM_JDN: i64 = 2_299_161;

fn days_from_civil(cal: Calendar, y: i64, m: u32, d: u32) -> Result<i64, String> {
    if !(1..=12).contains(&m) || d == 0 || d > 31 {
        return Err(format!("invalid date {y:04}-{m:02}-{d:02}"));
    }
    Ok(match cal {
        Calendar::ProlepticGregorian => jdn_gregorian(y, m, d),
        Calendar::Julian => jdn_julian(y, m, d),
        Calendar::Standard => {
            if (y, m, d) >= (1582, 10, 15) {
                jdn_gregorian(y, m, d)
            } else {
                jdn_julian(y, m, d)
            }
        }
        Calendar::NoLeap => y * 365 + CUMULATIVE_NOLEAP[m as usize - 1] + d as i64 - 1,
        Calendar::AllLeap => y * 366 + CUMULATIVE_LEAP[m as usize - 1] + d as i64 - 1,
        Calendar::Day360 => y * 360 + (m as i64 - 1) * 30 + d as i64 - 1,
    })
}

fn civil_from_days(cal: Calendar, days: i64) -> (i64, u32, u32) {
    let fixed = |days: i64, len: i64, table: &[i64; 13]| {
        let year = days.div_euclid(len);
        let doy = days.rem_euclid(len);
        let month = (1..=12).find(|&mo| doy < table[mo]).unwrap_or(12);
        (year, month as u32, (doy - table[month - 1] + 1) as u32)
    };
    match cal {
        Calendar::ProlepticGregorian => gregorian_from_jdn(days),
        Calendar::Julian => julian_from_jdn(days),
        Calendar::Standard if days >= REFORM_JDN => gregorian_from_jdn(days),
        Calendar::Standard => julian_from_jdn(days),
        Calendar::NoLeap => fixed(days, 365, &CUMULATIVE_NOLEAP),
        Calendar::AllLeap => fixed(days, 366, &CUMULATIVE_LEAP),
        Calendar::Day360 => {
            let year = days.div_euclid(360);
            let doy = days.rem_euclid(360);
            (year, (doy / 30 + 1) as u32, (doy % 30 + 1) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(units: &str, cal: &str, v: f64) -> String {
        let cal = Calendar::parse(Some(cal)).unwrap();
        TimeUnits::parse(units, cal).unwrap().decode(v).unwrap().to_string()
    }

    #[test]
    fn calendars_decode_like_cftime() {
        // Expected values computed with cftime.num2date.
        assert_eq!(decode("days since 1850-01-01", "360_day", 56715.0), "2007-07-16T00:00:00");
        assert_eq!(decode("days since 1850-01-01", "noleap", 59.0), "1850-03-01T00:00:00");
        assert_eq!(decode("days since 1850-01-01", "proleptic_gregorian", 0.5), "1850-01-01T12:00:00");
        assert_eq!(decode("days since 2000-01-01", "all_leap", 59.0), "2000-02-29T00:00:00");
        assert_eq!(decode("hours since 1900-02-28 00:00:00", "julian", 24.0), "1900-02-29T00:00:00");
        assert_eq!(decode("hours since 1900-02-28 00:00:00", "proleptic_gregorian", 24.0), "1900-03-01T00:00:00");
        // The standard calendar jumps from 1582-10-04 to 1582-10-15.
        assert_eq!(decode("days since 1582-10-04", "standard", 1.0), "1582-10-15T00:00:00");
        assert_eq!(decode("days since 1850-01-01 00:00:00", "gregorian", -1.0), "1849-12-31T00:00:00");
        assert_eq!(decode("seconds since 1970-01-01T00:00:00Z", "standard", 86399.0), "1970-01-01T23:59:59");
    }

    #[test]
    fn round_trips_every_day_of_a_century() {
        for cal in ["standard", "proleptic_gregorian", "julian", "noleap", "all_leap", "360_day"] {
            let c = Calendar::parse(Some(cal)).unwrap();
            let start = days_from_civil(c, 1550, 1, 1).unwrap();
            for d in start..start + 36600 {
                let (y, m, dd) = civil_from_days(c, d);
                assert_eq!(days_from_civil(c, y, m, dd).unwrap(), d, "{cal} {y}-{m}-{dd}");
            }
        }
    }

    #[test]
    fn day_360_february_30_is_clamped_for_rfc3339() {
        let t = CfDateTime { year: 2001, month: 2, day: 30, seconds_of_day: 0 };
        assert_eq!(t.to_rfc3339().unwrap(), "2001-02-28T00:00:00Z");
    }

    #[test]
    fn rejects_unknown_units_and_calendars() {
        assert!(TimeUnits::parse("fortnights since 1850-01-01", Calendar::Standard).is_err());
        assert!(TimeUnits::parse("days", Calendar::Standard).is_err());
        assert!(Calendar::parse(Some("martian")).is_err());
    }
}
