//! Instants as data. The core never reads a clock: callers pass `now` in.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC. Serialized as RFC 3339 text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const fn from_unix_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2020-09-22T18:53:32.339Z`) and the space-separated form event
    /// shippers use (`2020-09-22 18:53:31.668`, taken as UTC).
    pub fn parse(text: &str) -> Option<Timestamp> {
        let text = text.trim();
        if let Ok(parsed) = OffsetDateTime::parse(text, &Rfc3339) {
            return Timestamp::from_datetime(parsed);
        }
        let with_t = text.replacen(' ', "T", 1);
        let with_zone = if with_t.ends_with('Z') { with_t } else { format!("{with_t}Z") };
        OffsetDateTime::parse(&with_zone, &Rfc3339).ok().and_then(Timestamp::from_datetime)
    }

    fn from_datetime(datetime: OffsetDateTime) -> Option<Timestamp> {
        i64::try_from(datetime.unix_timestamp_nanos() / 1_000_000).ok().map(Timestamp)
    }

    /// Accepts epoch seconds or milliseconds, telling them apart by magnitude.
    pub fn from_epoch_number(number: f64) -> Option<Timestamp> {
        if !number.is_finite() || number < 0.0 {
            return None;
        }
        let millis = if number < 100_000_000_000.0 { number * 1000.0 } else { number };
        (millis < 32_503_680_000_000.0).then_some(Timestamp(millis as i64))
    }

    pub fn plus_minutes(self, minutes: u32) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::from(minutes) * 60_000))
    }

    pub fn plus_millis(self, millis: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(millis))
    }

    /// Milliseconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .ok()
            .and_then(|datetime| datetime.format(&Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 time")))
    }
}
