//! Quiet hours: a daily window in the user's time zone during which
//! non-urgent notifications wait instead of being sent.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

const MINUTES_PER_DAY: i64 = 24 * 60;

/// A daily window from `start_minute` to `end_minute` after local midnight;
/// a window whose end is before its start spans midnight (22:00 to 07:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl QuietHours {
    /// Builds the window from minutes after midnight; `None` when a value is
    /// out of range or the window is empty.
    pub fn from_minutes(start: i64, end: i64) -> Option<QuietHours> {
        let in_day = |minute: i64| (0..MINUTES_PER_DAY).contains(&minute);
        if !in_day(start) || !in_day(end) || start == end {
            return None;
        }
        Some(QuietHours { start_minute: u16::try_from(start).ok()?, end_minute: u16::try_from(end).ok()? })
    }

    /// Parses `HH:MM` times, e.g. `("22:00", "07:00")`.
    pub fn parse(start: &str, end: &str) -> Option<QuietHours> {
        QuietHours::from_minutes(parse_minute(start)?, parse_minute(end)?)
    }

    /// The `HH:MM` form of the start and end.
    pub fn formatted(&self) -> (String, String) {
        let format = |minute: u16| format!("{:02}:{:02}", minute / 60, minute % 60);
        (format(self.start_minute), format(self.end_minute))
    }

    fn contains(&self, minute: u16) -> bool {
        if self.start_minute < self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }

    /// How long a notification at `now` must wait for the window to end in
    /// `time_zone`, or `None` outside the window. Daylight saving changes
    /// are taken into account: the end is the next local `end_minute`.
    pub fn remaining(&self, now: DateTime<Utc>, time_zone: Tz) -> Option<Duration> {
        let local = now.with_timezone(&time_zone);
        let minute = u16::try_from(local.hour() * 60 + local.minute()).ok()?;
        if !self.contains(minute) {
            return None;
        }
        let end_time = NaiveTime::from_hms_opt(u32::from(self.end_minute / 60), u32::from(self.end_minute % 60), 0)?;
        let mut end_date = local.date_naive();
        if minute >= self.end_minute {
            end_date = end_date.checked_add_days(Days::new(1))?;
        }
        let end_local = end_date.and_time(end_time);
        // A local time skipped by a daylight saving change has no instant;
        // an hour later always exists.
        let end = time_zone
            .from_local_datetime(&end_local)
            .earliest()
            .or_else(|| time_zone.from_local_datetime(&(end_local + chrono::Duration::hours(1))).earliest())?;
        (end.with_timezone(&Utc) - now).to_std().ok()
    }
}

fn parse_minute(text: &str) -> Option<i64> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i64 = hours.parse().ok()?;
    let minutes: i64 = minutes.parse().ok()?;
    ((0..24).contains(&hours) && (0..60).contains(&minutes)).then_some(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn window_over_midnight_delays_until_end() {
        let quiet = QuietHours::parse("22:00", "07:00").unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 23:30 in Berlin in winter (UTC+1): 7.5 hours until 07:00.
        let wait = quiet.remaining(at("2026-01-10T22:30:00Z"), berlin).unwrap();
        assert_eq!(wait, Duration::from_secs(7 * 3600 + 1800));
        // 06:00 the next morning: one hour left.
        let wait = quiet.remaining(at("2026-01-11T05:00:00Z"), berlin).unwrap();
        assert_eq!(wait, Duration::from_secs(3600));
    }

    #[test]
    fn outside_window_sends_now() {
        let quiet = QuietHours::parse("22:00", "07:00").unwrap();
        assert_eq!(quiet.remaining(at("2026-01-10T12:00:00Z"), chrono_tz::UTC), None);
        assert_eq!(quiet.remaining(at("2026-01-10T07:00:00Z"), chrono_tz::UTC), None);
    }

    #[test]
    fn daytime_window_ends_same_day() {
        let quiet = QuietHours::parse("12:00", "13:30").unwrap();
        let wait = quiet.remaining(at("2026-03-02T12:15:00Z"), chrono_tz::UTC).unwrap();
        assert_eq!(wait, Duration::from_secs(75 * 60));
    }

    #[test]
    fn daylight_saving_night_is_an_hour_shorter() {
        // Clocks in Berlin go from 02:00 to 03:00 on 2026-03-29.
        let quiet = QuietHours::parse("22:00", "07:00").unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let wait = quiet.remaining(at("2026-03-28T21:00:00Z"), berlin).unwrap();
        assert_eq!(wait, Duration::from_secs(8 * 3600));
    }

    #[test]
    fn invalid_times_are_rejected() {
        for (start, end) in [("24:00", "07:00"), ("7:00", "08:00"), ("22:00", "22:00"), ("ab:cd", "07:00")] {
            assert!(QuietHours::parse(start, end).is_none(), "{start}-{end}");
        }
    }
}
