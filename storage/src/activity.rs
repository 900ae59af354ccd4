//! What a repeated alert changes on a case (its count and times), stored apart from the case
//! under `v/` so that a repeat rewrites a few bytes rather than the case.
//!
//! It is rewritten with every repeat and read with every listed case, so it is laid out in
//! binary, small enough for sled to keep inside the tree node (values of up to 22 bytes are held
//! inline there, larger ones in an allocation of their own): a layout byte, the count, the last
//! alert's time and how much later the case last changed. Stores written before hold it as
//! JSON, which still reads.

use serde::{Deserialize, Serialize};
use vouch_playbook::case_list::CaseSummary;
use vouch_playbook::{Case, Timestamp};

use crate::codec::decode;
use crate::varint::{push_varint, read_varint, unzigzag, zigzag};
use crate::{Result, StorageError};

/// The first byte of an activity in binary (distinct from every codec layout and a trail run's).
const BINARY_ACTIVITY: u8 = 7;

/// What repeated alerts changed on a case since it was last written whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaseActivity {
    pub(crate) alert_count: u64,
    pub(crate) last_alert_at: Timestamp,
    pub(crate) updated_at: Timestamp,
}

impl CaseActivity {
    pub(crate) fn of(case: &Case) -> CaseActivity {
        CaseActivity { alert_count: case.alert_count, last_alert_at: case.last_alert_at, updated_at: case.updated_at }
    }

    pub(crate) fn overlay(self, case: &mut Case) {
        case.alert_count = case.alert_count.max(self.alert_count);
        case.last_alert_at = case.last_alert_at.max(self.last_alert_at);
        case.updated_at = case.updated_at.max(self.updated_at);
    }

    /// The same over a case's listing summary, which shows the count and the last change.
    pub(crate) fn overlay_summary(self, summary: &mut CaseSummary) {
        summary.alert_count = summary.alert_count.max(self.alert_count);
        summary.updated_at = summary.updated_at.max(self.updated_at);
    }

    /// The activity as stored: 9 to 15 bytes for any time of this century.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.push(BINARY_ACTIVITY);
        push_varint(&mut bytes, self.alert_count);
        push_varint(&mut bytes, zigzag(self.last_alert_at.unix_millis()));
        push_varint(&mut bytes, zigzag(self.updated_at.millis_since(self.last_alert_at)));
        bytes
    }

    /// An activity as stored, in binary or (stores written before) as JSON.
    pub(crate) fn decode(bytes: &[u8]) -> Result<CaseActivity> {
        let Some((&BINARY_ACTIVITY, mut body)) = bytes.split_first() else {
            return decode(bytes, "case activity");
        };
        let corrupt = |reason: String| StorageError::Corrupt { key: "case activity".to_string(), reason };
        let mut next = |what: &str| read_varint(&mut body).map_err(|error| corrupt(format!("its {what}: {error:?}")));
        let alert_count = next("alert count")?;
        let last_alert_at = Timestamp::from_unix_millis(unzigzag(next("last alert's time")?));
        let updated_at = last_alert_at.plus_millis(unzigzag(next("last change's time")?));
        if !body.is_empty() {
            return Err(corrupt(format!("{} bytes after its last field", body.len())));
        }
        Ok(CaseActivity { alert_count, last_alert_at, updated_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::encode;

    #[test]
    fn an_activity_reads_back_as_written_in_binary_or_as_json_and_fits_inside_a_tree_node() {
        let activities = [
            CaseActivity {
                alert_count: 10_000,
                last_alert_at: Timestamp::from_unix_millis(1_764_720_000_123),
                updated_at: Timestamp::from_unix_millis(1_764_720_000_456),
            },
            // A case changed last before its last alert came (a clock's step back) still reads.
            CaseActivity {
                alert_count: 1,
                last_alert_at: Timestamp::from_unix_millis(4_102_444_800_000),
                updated_at: Timestamp::from_unix_millis(0),
            },
        ];
        for activity in activities {
            let stored = activity.encode();
            assert!(stored.len() <= 22, "{} bytes: sled keeps values of up to 22 bytes inline", stored.len());
            assert_eq!(CaseActivity::decode(&stored).expect("binary"), activity);
            assert_eq!(CaseActivity::decode(&encode(&activity)).expect("json"), activity);
            // Cut short or with bytes to spare, it is damage, named as such.
            for damaged in [&stored[..stored.len() - 1], &[stored.as_slice(), &[0]].concat()] {
                assert!(matches!(CaseActivity::decode(damaged), Err(StorageError::Corrupt { .. })));
            }
        }
    }
}
