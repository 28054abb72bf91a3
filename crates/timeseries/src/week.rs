//! Weeks: the time-series chunk. A sample belongs to the ISO week (Monday 00:00 UTC
//! to the next Monday) holding its timestamp; a week's data lives in the week's own
//! key range, so retention drops whole weeks and a query reads only the weeks it
//! covers.

use chrono::{DateTime, Datelike};

/// Milliseconds in a week.
pub const WEEK_MS: i64 = 7 * DAY_MS;
const DAY_MS: i64 = 86_400_000;

/// A week, numbered from the week of 1970-01-01 (week 0: Monday 1969-12-29 to Monday
/// 1970-01-05); negative before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Week(pub i64);

impl Week {
    /// The week holding `ms` (milliseconds since the Unix epoch, UTC).
    pub fn of(ms: i64) -> Week {
        // 1970-01-01 was a Thursday: three days after its week's Monday.
        Week((ms.div_euclid(DAY_MS) + 3).div_euclid(7))
    }

    /// Its first millisecond (a Monday, 00:00 UTC).
    pub fn start_ms(self) -> i64 {
        (self.0 * 7 - 3) * DAY_MS
    }

    /// The first millisecond after it.
    pub fn end_ms(self) -> i64 {
        self.start_ms() + WEEK_MS
    }

    /// The next week.
    pub fn next(self) -> Week {
        Week(self.0 + 1)
    }

    /// The weeks `[from_ms, to_ms]` touches, in order.
    pub fn covering(from_ms: i64, to_ms: i64) -> impl Iterator<Item = Week> {
        let (first, last) = (Week::of(from_ms), Week::of(to_ms));
        (first.0..=last.0).map(Week)
    }

    /// Its ISO 8601 name, `YYYY-Www` (the ISO week-year, which around New Year is not
    /// the calendar year).
    pub fn iso(self) -> String {
        match DateTime::from_timestamp_millis(self.start_ms()) {
            Some(t) => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            None => format!("week {}", self.0),
        }
    }

    /// A key prefix that sorts as the weeks do (the sign bit flipped, big-endian).
    pub fn key(self) -> [u8; 8] {
        ((self.0 as u64) ^ (1 << 63)).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(date: &str) -> i64 {
        DateTime::parse_from_rfc3339(date)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn weeks_run_monday_to_monday_and_are_named_as_iso_does() {
        let w = Week::of(ms("2026-12-03T10:00:00Z")); // a Thursday
        assert_eq!(w.start_ms(), ms("2026-11-30T00:00:00Z"));
        assert_eq!(w.end_ms(), ms("2026-12-07T00:00:00Z"));
        assert_eq!(w.iso(), "2026-W49");
        assert_eq!(Week::of(w.end_ms() - 1), w);
        assert_eq!(Week::of(w.end_ms()), w.next());
        // Around New Year the ISO year is not the calendar year.
        assert_eq!(Week::of(ms("2027-01-01T12:00:00Z")).iso(), "2026-W53");
        assert_eq!(Week::of(ms("2024-12-30T00:00:00Z")).iso(), "2025-W01");
        assert_eq!(Week::of(0), Week(0));
        assert_eq!(Week(0).iso(), "1970-W01");
        assert_eq!(
            Week::of(-1),
            Week(0),
            "1969-12-31 is in the week of 1970-01-01"
        );
        assert_eq!(
            Week::covering(ms("2026-11-29T23:00:00Z"), ms("2026-12-07T00:00:00Z")).count(),
            3
        );
    }

    proptest! {
        #[test]
        fn a_timestamp_falls_in_its_week_and_keys_sort_as_weeks(
            t in -(1i64 << 50)..(1i64 << 50),
            u in -(1i64 << 50)..(1i64 << 50),
        ) {
            let w = Week::of(t);
            prop_assert!(w.start_ms() <= t && t < w.end_ms());
            prop_assert_eq!(Week::of(u).cmp(&w), Week::of(u).key().cmp(&w.key()));
        }
    }
}
