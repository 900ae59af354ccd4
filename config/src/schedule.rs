//! Timers and the on-call rotation: cron expressions compiled once, evaluated against the time
//! Vouch is given (never a clock of their own). Times are UTC.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use vouch_playbook::{PersonId, Timestamp};

/// A cron expression (`sec min hour day-of-month month day-of-week [year]`), kept with its text.
#[derive(Clone)]
pub struct CronSchedule {
    text: String,
    schedule: cron::Schedule,
}

impl std::fmt::Debug for CronSchedule {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "CronSchedule({:?})", self.text)
    }
}

fn to_datetime(at: Timestamp) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(at.unix_millis()).single().unwrap_or_default()
}

fn from_datetime(at: DateTime<Utc>) -> Timestamp {
    Timestamp::from_unix_millis(at.timestamp_millis())
}

impl CronSchedule {
    pub fn parse(text: &str) -> Result<CronSchedule, String> {
        cron::Schedule::from_str(text)
            .map(|schedule| CronSchedule { text: text.to_string(), schedule })
            .map_err(|error| format!("`{text}` is not a cron expression (sec min hour day month weekday): {error}"))
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether `at` falls in the schedule (to the second): for business hours such as
    /// `* * 8-17 * * Mon-Fri`.
    pub fn includes(&self, at: Timestamp) -> bool {
        self.schedule.includes(to_datetime(at))
    }

    /// The first occurrence strictly after `at`.
    pub fn next_after(&self, at: Timestamp) -> Option<Timestamp> {
        self.schedule.after(&to_datetime(at)).next().map(from_datetime)
    }

    /// How many occurrences lie in `(from, to]`, counting at most `limit`.
    pub fn occurrences_between(&self, from: Timestamp, to: Timestamp, limit: usize) -> usize {
        let end = to_datetime(to);
        self.schedule.after(&to_datetime(from)).take_while(|occurrence| *occurrence <= end).take(limit).count()
    }
}

#[derive(Debug, Clone)]
pub struct TimerSettings {
    /// How often deadlines are checked when nothing else wakes the timer.
    pub check_every: Duration,
    /// When people (other than on-call) may be chased; always, when absent.
    pub business_hours: Option<CronSchedule>,
    /// When the digest of open cases is posted; never, when absent.
    pub digest: Option<CronSchedule>,
}

impl Default for TimerSettings {
    fn default() -> TimerSettings {
        TimerSettings { check_every: Duration::from_secs(30), business_hours: None, digest: None }
    }
}

#[derive(Debug, Clone)]
pub struct Override {
    pub person: PersonId,
    pub from: Timestamp,
    pub until: Timestamp,
}

/// Who is on call: people take turns, handing over at each occurrence of `handoff` after
/// `start`; an override puts someone else on call for a while.
#[derive(Debug, Clone)]
pub struct OnCallRotation {
    pub people: Vec<PersonId>,
    pub handoff: CronSchedule,
    pub start: Timestamp,
    pub overrides: Vec<Override>,
}

/// Handoffs counted at most this many: a rotation handing over every minute for years would
/// otherwise cost a long walk; past it the turn order simply keeps its last position.
const HANDOFF_COUNT_LIMIT: usize = 1_000_000;

impl OnCallRotation {
    /// The primary and the secondary on call at `at`.
    pub fn on_call(&self, at: Timestamp) -> (Option<PersonId>, Option<PersonId>) {
        if self.people.is_empty() {
            return (None, None);
        }
        let turns =
            if at <= self.start { 0 } else { self.handoff.occurrences_between(self.start, at, HANDOFF_COUNT_LIMIT) };
        let primary = self.people[turns % self.people.len()].clone();
        let secondary = (self.people.len() > 1).then(|| self.people[(turns + 1) % self.people.len()].clone());
        match self.overrides.iter().rev().find(|cover| cover.from <= at && at < cover.until) {
            Some(cover) if cover.person != primary => (Some(cover.person.clone()), Some(primary)),
            _ => (Some(primary), secondary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).expect("time")
    }

    fn id(text: &str) -> PersonId {
        PersonId::parse(text).expect("id")
    }

    #[test]
    fn the_rotation_hands_over_at_each_occurrence_and_overrides_win() {
        let rotation = OnCallRotation {
            people: vec![id("sam"), id("dana"), id("lee")],
            handoff: CronSchedule::parse("0 0 9 * * Mon").expect("cron"),
            start: at("2026-11-02T09:00:00Z"),
            overrides: vec![Override {
                person: id("lee"),
                from: at("2026-12-24T00:00:00Z"),
                until: at("2026-12-25T00:00:00Z"),
            }],
        };
        let cases = [
            ("2026-11-02T10:00:00Z", "sam", Some("dana")),
            ("2026-11-09T08:59:59Z", "sam", Some("dana")),
            ("2026-11-09T09:00:00Z", "dana", Some("lee")),
            ("2026-11-16T12:00:00Z", "lee", Some("sam")),
            ("2026-11-23T12:00:00Z", "sam", Some("dana")),
            // Dana's week (from 12-21); Lee covers Christmas Eve, and Dana backs Lee up.
            ("2026-12-23T12:00:00Z", "dana", Some("lee")),
            ("2026-12-24T12:00:00Z", "lee", Some("dana")),
            ("2026-12-25T12:00:00Z", "dana", Some("lee")),
        ];
        for (when, primary, secondary) in cases {
            let (got_primary, got_secondary) = rotation.on_call(at(when));
            assert_eq!(got_primary.map(|person| person.to_string()).as_deref(), Some(primary), "{when}");
            assert_eq!(got_secondary.map(|person| person.to_string()).as_deref(), secondary, "{when}");
        }
    }

    #[test]
    fn business_hours_include_and_exclude() {
        let hours = CronSchedule::parse("* * 8-17 * * Mon-Fri").expect("cron");
        assert!(hours.includes(at("2026-11-30T09:30:00Z")), "Monday morning");
        assert!(!hours.includes(at("2026-11-30T19:30:00Z")), "Monday evening");
        assert!(!hours.includes(at("2026-11-28T10:00:00Z")), "Saturday");
        assert!(CronSchedule::parse("every day at nine").is_err());
        let digest = CronSchedule::parse("0 0 8 * * *").expect("cron");
        assert_eq!(digest.next_after(at("2026-11-28T09:00:00Z")), Some(at("2026-11-29T08:00:00Z")));
    }
}
