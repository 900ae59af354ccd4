//! Button and modal ids. A `custom_id` names the case and the action, nothing more: it is
//! parsed strictly on every click and never trusted as authority (the engine decides who may do
//! what). Discord caps it at 100 characters.

use std::fmt;

use vouch_playbook::engine::{ConfirmVerdict, Side};

use crate::advance_vouches::AdvanceChange;
use vouch_playbook::{AnswerId, CaseId, QuestionId};

/// The format version; ids of another version are refused.
const VERSION: &str = "v1";
pub const MAX_LENGTH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Answer {
        question: QuestionId,
        answer: AnswerId,
    },
    AskOwner,
    Escalate,
    /// Opens the justification form; the form's submission closes the case.
    Close,
    Confirm(ConfirmVerdict),
    /// Isolate one end (or, for a critical system another member asked to isolate, approve).
    Isolate(Side),
    Release(Side),
    /// On-call acknowledges the page.
    Acknowledge,
    /// Opens the form that proposes a standing approval from a case closed as expected.
    ExpectAgain,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonId {
    pub case_id: CaseId,
    pub action: Action,
}

impl fmt::Display for ButtonId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let case = self.case_id.number();
        match &self.action {
            Action::Answer { question, answer } => write!(formatter, "{VERSION}:{case}:a:{question}:{answer}"),
            Action::AskOwner => write!(formatter, "{VERSION}:{case}:ask"),
            Action::Escalate => write!(formatter, "{VERSION}:{case}:esc"),
            Action::Close => write!(formatter, "{VERSION}:{case}:close"),
            Action::Confirm(verdict) => {
                let verdict = match verdict {
                    ConfirmVerdict::Expected => "exp",
                    ConfirmVerdict::NotExpected => "unexp",
                    ConfirmVerdict::NotMe => "notme",
                };
                write!(formatter, "{VERSION}:{case}:c:{verdict}")
            }
            Action::Isolate(side) => write!(formatter, "{VERSION}:{case}:iso:{}", side_code(*side)),
            Action::Release(side) => write!(formatter, "{VERSION}:{case}:rel:{}", side_code(*side)),
            Action::Acknowledge => write!(formatter, "{VERSION}:{case}:ack"),
            Action::ExpectAgain => write!(formatter, "{VERSION}:{case}:again"),
        }
    }
}

fn side_code(side: Side) -> &'static str {
    match side {
        Side::Source => "src",
        Side::Target => "dst",
    }
}

impl ButtonId {
    pub fn new(case_id: CaseId, action: Action) -> ButtonId {
        ButtonId { case_id, action }
    }

    /// Parses an id from a click. Anything malformed, of another version, or too long is
    /// refused with a reason.
    pub fn parse(text: &str) -> Result<ButtonId, String> {
        if text.len() > MAX_LENGTH {
            return Err("the button id is too long".to_string());
        }
        let parts: Vec<&str> = text.split(':').collect();
        let (version, case, rest) = match parts.as_slice() {
            [version, case, rest @ ..] if !rest.is_empty() => (*version, *case, rest),
            _ => return Err("the button id is malformed".to_string()),
        };
        if version != VERSION {
            return Err(format!("the button id has version `{version}`, not {VERSION}"));
        }
        let digits_only = !case.is_empty() && case.len() <= 19 && case.bytes().all(|byte| byte.is_ascii_digit());
        let case_id = case
            .parse::<u64>()
            .ok()
            .filter(|_| digits_only)
            .and_then(CaseId::new)
            .ok_or_else(|| "the button id names no case".to_string())?;
        let action = match rest {
            ["a", question, answer] => {
                Action::Answer { question: QuestionId::parse(question)?, answer: AnswerId::parse(answer)? }
            }
            ["ask"] => Action::AskOwner,
            ["esc"] => Action::Escalate,
            ["close"] => Action::Close,
            ["c", "exp"] => Action::Confirm(ConfirmVerdict::Expected),
            ["c", "unexp"] => Action::Confirm(ConfirmVerdict::NotExpected),
            ["c", "notme"] => Action::Confirm(ConfirmVerdict::NotMe),
            ["iso", "src"] => Action::Isolate(Side::Source),
            ["iso", "dst"] => Action::Isolate(Side::Target),
            ["rel", "src"] => Action::Release(Side::Source),
            ["rel", "dst"] => Action::Release(Side::Target),
            ["ack"] => Action::Acknowledge,
            ["again"] => Action::ExpectAgain,
            _ => return Err("the button id names no action Vouch knows".to_string()),
        };
        Ok(ButtonId { case_id, action })
    }
}

/// A button on the `/approvals` list: second or revoke one vouch given in advance
/// (`v1:A-12:second`, `v1:D-3:revoke`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchButton {
    /// `A-<n>` or `D-<n>`, checked as such.
    pub vouch: String,
    pub change: AdvanceChange,
}

impl fmt::Display for VouchButton {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let change = match self.change {
            AdvanceChange::Second => "second",
            AdvanceChange::Revoke => "revoke",
        };
        write!(formatter, "{VERSION}:{}:{change}", self.vouch)
    }
}

/// Whether `text` is a vouch id: `A-` or `D-` and a number from 1, without leading zeros.
fn is_vouch_id(text: &str) -> bool {
    let Some(number) = text.strip_prefix("A-").or_else(|| text.strip_prefix("D-")) else { return false };
    !number.is_empty()
        && number.len() <= 19
        && !number.starts_with('0')
        && number.bytes().all(|byte| byte.is_ascii_digit())
        && number.parse::<u64>().is_ok()
}

/// Any component or form id Vouch issues: one on a case, one on a vouch given in advance, or
/// the next page of `/cases` (`v1:cases:<n>`: the cases numbered below n).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ComponentId {
    Case(ButtonId),
    Vouch(VouchButton),
    CasesBefore(CaseId),
}

impl fmt::Display for ComponentId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComponentId::Case(id) => id.fmt(formatter),
            ComponentId::Vouch(id) => id.fmt(formatter),
            ComponentId::CasesBefore(before) => write!(formatter, "{VERSION}:cases:{}", before.number()),
        }
    }
}

impl ComponentId {
    /// Parses an id from a click or a form, as strictly as [`ButtonId::parse`].
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        if text.len() > MAX_LENGTH {
            return Err("the button id is too long".to_string());
        }
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            [VERSION, vouch, change] if is_vouch_id(vouch) => {
                let change = match *change {
                    "second" => AdvanceChange::Second,
                    "revoke" => AdvanceChange::Revoke,
                    _ => return Err("the button id names no action Vouch knows".to_string()),
                };
                Ok(ComponentId::Vouch(VouchButton { vouch: vouch.to_string(), change }))
            }
            [VERSION, "cases", before] => {
                let digits_only = !before.is_empty()
                    && before.len() <= 19
                    && !before.starts_with('0')
                    && before.bytes().all(|byte| byte.is_ascii_digit());
                let before = before.parse::<u64>().ok().filter(|_| digits_only).and_then(CaseId::new);
                before.map(ComponentId::CasesBefore).ok_or_else(|| "the button id names no case".to_string())
            }
            _ => ButtonId::parse(text).map(ComponentId::Case),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<&str, &str>) {
        match (ComponentId::parse(text), expected) {
            (Ok(id), Ok(round_trip)) => assert_eq!(id.to_string(), round_trip, "{text}"),
            (Err(reason), Err(fragment)) => assert!(reason.contains(fragment), "{text}: {reason}"),
            (got, expected) => panic!("{text}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn ids_round_trip_and_bad_ids_are_refused() {
        check("v1:42:a:account-usage:fits", Ok("v1:42:a:account-usage:fits"));
        check("v1:42:ask", Ok("v1:42:ask"));
        check("v1:42:esc", Ok("v1:42:esc"));
        check("v1:42:close", Ok("v1:42:close"));
        check("v1:7:c:exp", Ok("v1:7:c:exp"));
        check("v1:7:c:unexp", Ok("v1:7:c:unexp"));
        check("v1:7:c:notme", Ok("v1:7:c:notme"));
        check("v1:7:iso:dst", Ok("v1:7:iso:dst"));
        check("v1:7:rel:src", Ok("v1:7:rel:src"));
        check("v1:7:ack", Ok("v1:7:ack"));
        check("v1:7:again", Ok("v1:7:again"));
        check("v1:A-12:second", Ok("v1:A-12:second"));
        check("v1:D-3:revoke", Ok("v1:D-3:revoke"));
        check("v1:cases:120", Ok("v1:cases:120"));
        check("v1:cases:0", Err("no case"));
        check("v1:cases:012", Err("no case"));
        check("v1:cases:", Err("no case"));
        check("v1:A-12:launch", Err("no action"));
        check("v1:A-012:revoke", Err("no case"));
        check("v1:B-1:revoke", Err("no case"));
        check("v1:A-:revoke", Err("no case"));
        check("v1:A-99999999999999999999:revoke", Err("no case"));
        check("v2:42:ask", Err("version"));
        check("v1:0:ask", Err("no case"));
        check("v1:-1:ask", Err("no case"));
        check("v1:+1:ask", Err("no case"));
        check("v1:99999999999999999999:ask", Err("no case"));
        check("v1:42", Err("malformed"));
        check("v1:42:launch", Err("no action"));
        check("v1:42:a:Account Usage:fits", Err("not a valid question id"));
        check("v1:42:c:maybe", Err("no action"));
        check(&format!("v1:42:a:{}:x", "q".repeat(120)), Err("too long"));
        check("", Err("malformed"));
    }

    #[test]
    fn the_longest_ids_fit_discords_limit() {
        // Question and answer ids are at most 32 characters (the playbook loader checks).
        let id = ButtonId::new(
            CaseId::new(u64::MAX).expect("id"),
            Action::Answer {
                question: QuestionId::parse(&"q".repeat(32)).expect("id"),
                answer: AnswerId::parse(&"a".repeat(32)).expect("id"),
            },
        );
        assert!(id.to_string().len() <= MAX_LENGTH, "{} is {} long", id, id.to_string().len());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::ComponentId;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Any text is either refused or parsed into an id that prints back to itself.
        #[test]
        fn parsing_never_panics_and_round_trips(text in "(v1|v2|)(:[a-zAD0-9\\-+]{0,22}){0,5}|\\PC{0,120}") {
            if let Ok(id) = ComponentId::parse(&text) {
                prop_assert_eq!(id.to_string(), text);
            }
        }
    }
}
