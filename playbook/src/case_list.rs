//! Listing cases: what a listed case shows ([`CaseSummary`]), what a listing asks for
//! ([`CaseFilter`]), and the keys a case is found by. Pages run newest first, by case number
//! (cases are numbered in the order they open). The store keeps a summary and these keys per
//! case so that a page costs what it holds, not what the history holds.

use serde::{Deserialize, Serialize};

use crate::engine::{Case, CaseState};
use crate::ids::CaseId;
use crate::model::{short_hostname, System};
use crate::time::Timestamp;

/// The most cases one page may hold, and how many it holds unless asked.
pub const MOST_PER_PAGE: usize = 1_000;
pub const DEFAULT_PER_PAGE: usize = 100;

/// A case as a listing shows it: small, and enough to choose which to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: CaseId,
    pub state: CaseState,
    pub opened_at: Timestamp,
    pub updated_at: Timestamp,
    pub alert_count: u64,
    /// How the card names each end and the account.
    pub source: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The detection rule's id, else its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// An answer on the case waits on its giver's push.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_push: bool,
}

impl CaseSummary {
    pub fn of(case: &Case) -> CaseSummary {
        let alert = case.alert();
        CaseSummary {
            id: case.id,
            state: case.state,
            opened_at: case.opened_at,
            updated_at: case.updated_at,
            alert_count: case.alert_count,
            source: alert.source.label(),
            target: alert.target.label(),
            account: alert.initiating_account().map(ToString::to_string),
            rule: alert.rule.as_ref().and_then(|rule| rule.id.clone().or_else(|| rule.name.clone())),
            awaiting_push: case.pending_verification.is_some(),
        }
    }

    /// The keys this case is found by: one per field a listing filters on, in the form a filter's
    /// value is compared in.
    pub fn keys(case: &Case) -> Vec<(ListedField, String)> {
        let alert = case.alert();
        let mut keys =
            vec![(ListedField::Source, system_key(&alert.source)), (ListedField::Target, system_key(&alert.target))];
        if let Some(account) = alert.initiating_account() {
            keys.push((ListedField::Account, account.key()));
        }
        if let Some(rule) = &alert.rule {
            for value in [&rule.id, &rule.name].into_iter().flatten() {
                keys.push((ListedField::Rule, value.to_lowercase()));
            }
        }
        keys
    }
}

/// A field a listing can pick cases by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ListedField {
    Source,
    Target,
    Account,
    Rule,
}

impl ListedField {
    /// A stable one-byte tag, for index keys.
    pub fn tag(self) -> u8 {
        match self {
            ListedField::Source => b's',
            ListedField::Target => b't',
            ListedField::Account => b'a',
            ListedField::Rule => b'r',
        }
    }
}

/// A system as it is looked up: its short hostname, else its first address, else `?`.
fn system_key(system: &System) -> String {
    system.short_hostname().or_else(|| system.ips.first().map(ToString::to_string)).unwrap_or_else(|| "?".to_string())
}

/// The form a filter's value is compared in, for each field (`WS-17.corp.example` finds `ws-17`;
/// `CORP\alice` finds `alice`).
pub fn filter_key(field: ListedField, value: &str) -> String {
    let value = value.trim();
    match field {
        ListedField::Source | ListedField::Target => match value.parse::<std::net::IpAddr>() {
            Ok(address) => address.to_string(),
            Err(_) => short_hostname(value),
        },
        ListedField::Account => {
            crate::model::Account::parse(value).map_or_else(|| value.to_lowercase(), |account| account.key())
        }
        ListedField::Rule => value.to_lowercase(),
    }
}

/// Whether `states` are all finished (`Some(true)`) or all unfinished (`Some(false)`); `None`
/// when they mix, or there are none.
pub fn finished_alike(states: &[CaseState]) -> Option<bool> {
    let finished = states.first()?.is_finished();
    states.iter().all(|state| state.is_finished() == finished).then_some(finished)
}

/// Which cases a listing is of. Every part given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaseFilter {
    /// Any of these states (`None`: any).
    pub states: Option<Vec<CaseState>>,
    pub opened_from: Option<Timestamp>,
    pub opened_until: Option<Timestamp>,
    pub updated_from: Option<Timestamp>,
    pub updated_until: Option<Timestamp>,
    /// Field keys ([`filter_key`]) the case must be found by.
    pub fields: Vec<(ListedField, String)>,
}

impl CaseFilter {
    /// Whether only unfinished cases (or only finished ones) can match: a listing of open cases
    /// never reads the closed ones.
    pub fn finished(&self) -> Option<bool> {
        finished_alike(self.states.as_ref()?)
    }

    /// Whether a case, as summarized, is one of those asked for (the field keys are checked by
    /// the index the listing reads, or by [`CaseFilter::has_keys`]).
    pub fn admits(&self, summary: &CaseSummary) -> bool {
        let within = |at: Timestamp, from: Option<Timestamp>, until: Option<Timestamp>| {
            from.is_none_or(|from| at >= from) && until.is_none_or(|until| at < until)
        };
        self.states.as_ref().is_none_or(|states| states.contains(&summary.state))
            && within(summary.opened_at, self.opened_from, self.opened_until)
            && within(summary.updated_at, self.updated_from, self.updated_until)
    }

    /// Whether a case's keys include every field key asked for.
    pub fn has_keys(&self, keys: &[(ListedField, String)]) -> bool {
        self.fields.iter().all(|wanted| keys.contains(wanted))
    }

    /// Whether a listing read newest first may stop at a case opened at `opened_at`: every case
    /// after it opened earlier still. Cases are numbered as the intake takes them, their opening
    /// time read moments before, so numbers and times agree to within moments; the margin keeps
    /// a case whose time came a little out of order.
    pub fn past_the_oldest(&self, opened_at: Timestamp) -> bool {
        const MARGIN_MILLIS: i64 = 10 * 60 * 1000;
        self.opened_from.is_some_and(|from| opened_at.plus_millis(MARGIN_MILLIS) < from)
    }
}

/// A page of cases, newest first, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasePage {
    pub cases: Vec<CaseSummary>,
    pub next_before: Option<CaseId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_are_compared_as_the_index_keeps_them() {
        assert_eq!(filter_key(ListedField::Source, " WS-17.corp.example "), "ws-17");
        assert_eq!(filter_key(ListedField::Target, "10.0.5.1"), "10.0.5.1");
        assert_eq!(filter_key(ListedField::Account, "CORP\\Alice"), "alice");
        assert_eq!(filter_key(ListedField::Rule, "Lateral RDP"), "lateral rdp");
    }

    #[test]
    fn a_filter_of_open_states_never_reads_closed_cases() {
        let open = CaseFilter { states: Some(vec![CaseState::Open, CaseState::Escalated]), ..CaseFilter::default() };
        assert_eq!(open.finished(), Some(false));
        let closed = CaseFilter { states: Some(vec![CaseState::ClosedExpected]), ..CaseFilter::default() };
        assert_eq!(closed.finished(), Some(true));
        let mixed =
            CaseFilter { states: Some(vec![CaseState::Open, CaseState::ClosedExpected]), ..CaseFilter::default() };
        assert_eq!(mixed.finished(), None);
        assert_eq!(CaseFilter::default().finished(), None);
    }

    #[test]
    fn time_ranges_include_their_start_and_exclude_their_end() {
        let at = Timestamp::from_unix_millis(1_000_000);
        let summary = CaseSummary {
            id: CaseId::new(1).expect("id"),
            state: CaseState::Open,
            opened_at: at,
            updated_at: at.plus_millis(5),
            alert_count: 1,
            source: "WS-17".to_string(),
            target: "SRV".to_string(),
            account: None,
            rule: None,
            awaiting_push: false,
        };
        let filter = |from: i64, until: i64| CaseFilter {
            opened_from: Some(at.plus_millis(from)),
            opened_until: Some(at.plus_millis(until)),
            ..CaseFilter::default()
        };
        assert!(filter(0, 1).admits(&summary));
        assert!(!filter(1, 2).admits(&summary));
        assert!(!filter(-1, 0).admits(&summary));
        let updated = CaseFilter { updated_from: Some(at.plus_millis(6)), ..CaseFilter::default() };
        assert!(!updated.admits(&summary));
        assert!(filter(0, 1).past_the_oldest(at.plus_millis(-11 * 60 * 1000)));
        assert!(!filter(0, 1).past_the_oldest(at.plus_millis(-60 * 1000)), "within the margin");
    }
}
