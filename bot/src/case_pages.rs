//! The paged case API's query language: `GET /api/v1/cases` and `GET /api/v1/cases/{id}/events`
//! take a `limit`, an opaque `cursor`, and (for cases) filters; each page answers with a `next`
//! link carrying the same filters. A query is compiled whole, every problem reported at once.

use base64::Engine as _;
use serde::Deserialize;
use vouch_playbook::case_list::{filter_key, CaseFilter, ListedField, DEFAULT_PER_PAGE, MOST_PER_PAGE};
use vouch_playbook::normalize::FieldProblem;
use vouch_playbook::{CaseId, CaseState, Timestamp};

/// Cursors are versioned, so a format change can refuse old ones by name.
const CURSOR_VERSION: &str = "v1";

/// The query of a case listing, as sent: every part text, so that a bad one is answered with
/// what is wrong with it rather than a parser's message.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct CasesQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub state: Option<String>,
    pub opened_since: Option<String>,
    pub opened_until: Option<String>,
    pub updated_since: Option<String>,
    pub updated_until: Option<String>,
    pub source: Option<String>,
    pub target: Option<String>,
    pub account: Option<String>,
    pub rule: Option<String>,
}

/// A listing asked for: which cases, from where, how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasesAsked {
    pub filter: CaseFilter,
    pub before: Option<CaseId>,
    pub limit: usize,
}

/// The query of a page of a case's audit trail.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct EventsQuery {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

fn problem(parameter: &str, message: impl Into<String>) -> FieldProblem {
    FieldProblem::new(format!("/{parameter}"), message)
}

/// A page size: 1 to [`MOST_PER_PAGE`], [`DEFAULT_PER_PAGE`] when absent.
fn limit(text: Option<&str>, problems: &mut Vec<FieldProblem>) -> usize {
    let Some(text) = text else { return DEFAULT_PER_PAGE };
    match text.parse::<usize>() {
        Ok(limit) if (1..=MOST_PER_PAGE).contains(&limit) => limit,
        _ => {
            problems.push(problem("limit", format!("limit is a whole number from 1 to {MOST_PER_PAGE}")));
            DEFAULT_PER_PAGE
        }
    }
}

/// A cursor: where the previous page stopped, as an opaque token.
pub fn encode_cursor(position: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}:{position}"))
}

fn decode_cursor(text: &str) -> Option<u64> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let position = text.strip_prefix(CURSOR_VERSION)?.strip_prefix(':')?;
    if position.is_empty() || position.len() > 20 || !position.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    position.parse().ok()
}

fn cursor(text: Option<&str>, problems: &mut Vec<FieldProblem>) -> Option<u64> {
    let text = text?;
    let position = decode_cursor(text);
    if position.is_none() {
        problems.push(problem("cursor", "cursor is not one Vouch gave out: use the `next` link of the page before"));
    }
    position
}

fn time(parameter: &str, text: Option<&str>, problems: &mut Vec<FieldProblem>) -> Option<Timestamp> {
    let text = text?;
    match Timestamp::parse(text) {
        Some(at) => Some(at),
        None => {
            problems
                .push(problem(parameter, format!("{parameter} is a time in RFC 3339, such as 2026-12-01T08:00:00Z")));
            None
        }
    }
}

/// The states `state=` names: `open` (every unfinished state), `closed`, or one state by id.
fn states(text: Option<&str>, problems: &mut Vec<FieldProblem>) -> Option<Vec<CaseState>> {
    match text? {
        "open" => Some(CaseState::ALL.iter().copied().filter(|state| !state.is_finished()).collect()),
        "closed" => Some(CaseState::ALL.iter().copied().filter(|state| state.is_finished()).collect()),
        other => match CaseState::ALL.iter().find(|state| state.id() == other) {
            Some(found) => Some(vec![*found]),
            None => {
                let ids: Vec<&str> = CaseState::ALL.iter().map(|state| state.id()).collect();
                problems.push(problem("state", format!("state is open, closed, or one of {}", ids.join(", "))));
                None
            }
        },
    }
}

impl CasesQuery {
    /// The listing this query asks for, or every problem with it.
    pub fn compile(&self) -> Result<CasesAsked, Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let limit = limit(self.limit.as_deref(), &mut problems);
        let before = cursor(self.cursor.as_deref(), &mut problems).and_then(CaseId::new);
        let mut filter = CaseFilter {
            states: states(self.state.as_deref(), &mut problems),
            opened_from: time("opened_since", self.opened_since.as_deref(), &mut problems),
            opened_until: time("opened_until", self.opened_until.as_deref(), &mut problems),
            updated_from: time("updated_since", self.updated_since.as_deref(), &mut problems),
            updated_until: time("updated_until", self.updated_until.as_deref(), &mut problems),
            fields: Vec::new(),
        };
        let fields = [
            ("account", ListedField::Account, &self.account),
            ("source", ListedField::Source, &self.source),
            ("target", ListedField::Target, &self.target),
            ("rule", ListedField::Rule, &self.rule),
        ];
        for (parameter, field, value) in fields {
            let Some(value) = value else { continue };
            let key = filter_key(field, value);
            if key.is_empty() || key.len() > 256 {
                problems.push(problem(parameter, format!("{parameter} is 1 to 256 characters")));
                continue;
            }
            filter.fields.push((field, key));
        }
        if problems.is_empty() {
            Ok(CasesAsked { filter, before, limit })
        } else {
            Err(problems)
        }
    }

    /// The link to the page after this one: the same query, the cursor moved on.
    pub fn next_link(&self, position: u64) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        let parts = [
            ("limit", &self.limit),
            ("state", &self.state),
            ("opened_since", &self.opened_since),
            ("opened_until", &self.opened_until),
            ("updated_since", &self.updated_since),
            ("updated_until", &self.updated_until),
            ("source", &self.source),
            ("target", &self.target),
            ("account", &self.account),
            ("rule", &self.rule),
        ];
        for (name, value) in parts {
            if let Some(value) = value {
                pairs.append_pair(name, value);
            }
        }
        pairs.append_pair("cursor", &encode_cursor(position));
        format!("/api/v1/cases?{}", pairs.finish())
    }
}

impl EventsQuery {
    /// (the audit sequence to start after, how many), or every problem with the query.
    pub fn compile(&self) -> Result<(Option<u64>, usize), Vec<FieldProblem>> {
        let mut problems = Vec::new();
        let limit = limit(self.limit.as_deref(), &mut problems);
        let after = cursor(self.cursor.as_deref(), &mut problems);
        if problems.is_empty() {
            Ok((after, limit))
        } else {
            Err(problems)
        }
    }

    pub fn next_link(&self, case_id: CaseId, position: u64) -> String {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        if let Some(limit) = &self.limit {
            pairs.append_pair("limit", limit);
        }
        pairs.append_pair("cursor", &encode_cursor(position));
        format!("/api/v1/cases/{case_id}/events?{}", pairs.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> CasesQuery {
        let text = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        serde_urlencoded::from_str(&text).expect("a query")
    }

    #[test]
    fn a_query_compiles_to_a_filter_or_says_every_problem() {
        let asked = query(&[("state", "open"), ("target", "SRV-DB-01.corp"), ("limit", "5")]).compile().expect("valid");
        assert_eq!(asked.limit, 5);
        assert_eq!(asked.filter.fields, vec![(ListedField::Target, "srv-db-01".to_string())]);
        assert_eq!(asked.filter.finished(), Some(false));
        assert_eq!(query(&[]).compile().expect("valid").limit, DEFAULT_PER_PAGE);

        let problems = query(&[
            ("limit", "1001"),
            ("cursor", "bm90LWEtY3Vyc29y"),
            ("state", "shut"),
            ("opened_since", "yesterday"),
        ])
        .compile()
        .expect_err("invalid");
        let pointers: Vec<&str> = problems.iter().map(|problem| problem.pointer.as_str()).collect();
        assert_eq!(pointers, ["/limit", "/cursor", "/state", "/opened_since"]);
        for bad in ["0", "-1", "ten", ""] {
            assert!(query(&[("limit", bad)]).compile().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_link_keeps_the_filters_and_its_cursor_reads_back() {
        let asked = query(&[("state", "closed"), ("account", "CORP\\alice"), ("limit", "2")]);
        let link = asked.next_link(42);
        let query_text = link.strip_prefix("/api/v1/cases?").expect("a cases link");
        let again: CasesQuery = serde_urlencoded::from_str(query_text).expect("parses");
        let compiled = again.compile().expect("valid");
        assert_eq!(compiled.before, CaseId::new(42));
        assert_eq!(compiled.filter, asked.compile().expect("valid").filter);
        for forged in ["djE6", "djE6LTE", "djI6NA", "%%%"] {
            assert_eq!(decode_cursor(forged), None, "{forged}");
        }
    }
}
