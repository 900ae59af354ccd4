//! Which answers must be verified out of band (a push the person approves on their phone)
//! before they count.
//!
//! An *Expected* click turns an alert into "fine", and it comes from a chat account: the kind of
//! account an intruder moving laterally may already hold. So the answers that clear a movement
//! on a system that matters are verified; everything else counts as clicked. Binding a chat
//! account to a person, a standing approval and activity declared in advance are always verified:
//! each one vouches for more than one alert.

use serde::{Deserialize, Serialize};

use crate::facts::Criticality;

/// An answer whose weight may call for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightyAnswer {
    /// A confirmer (or the SOC on their behalf) says the movement was expected.
    Expected,
    /// The person asked says the movement was not theirs to vouch for.
    NotMe,
    /// The SOC closes the case as expected.
    CloseAsExpected,
    /// Binding a chat account to a person in the directory.
    Link,
    /// A standing approval: the same movement expected for days to come.
    StandingApproval,
    /// Activity declared in advance.
    DeclaredActivity,
}

impl WeightyAnswer {
    pub const ALL: [WeightyAnswer; 6] = [
        WeightyAnswer::Expected,
        WeightyAnswer::NotMe,
        WeightyAnswer::CloseAsExpected,
        WeightyAnswer::Link,
        WeightyAnswer::StandingApproval,
        WeightyAnswer::DeclaredActivity,
    ];

    pub fn id(self) -> &'static str {
        match self {
            WeightyAnswer::Expected => "expected",
            WeightyAnswer::NotMe => "not_me",
            WeightyAnswer::CloseAsExpected => "close_as_expected",
            WeightyAnswer::Link => "link",
            WeightyAnswer::StandingApproval => "standing_approval",
            WeightyAnswer::DeclaredActivity => "declared_activity",
        }
    }

    pub fn from_id(id: &str) -> Option<WeightyAnswer> {
        WeightyAnswer::ALL.into_iter().find(|answer| answer.id() == id)
    }

    /// Answers that vouch for more than the alert in front of the person are verified whatever
    /// the policy says.
    pub fn always_verified(self) -> bool {
        matches!(self, WeightyAnswer::Link | WeightyAnswer::StandingApproval | WeightyAnswer::DeclaredActivity)
    }
}

/// In which capacity someone answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnsweredAs {
    /// The person asked to vouch (the target's owner, the user's manager, the user).
    Confirmer,
    /// A member of the SOC.
    Soc,
}

impl AnsweredAs {
    pub fn id(self) -> &'static str {
        match self {
            AnsweredAs::Confirmer => "confirmer",
            AnsweredAs::Soc => "soc",
        }
    }

    pub fn from_id(id: &str) -> Option<AnsweredAs> {
        [AnsweredAs::Confirmer, AnsweredAs::Soc].into_iter().find(|role| role.id() == id)
    }
}

/// A deployment's verification: which answers need a push, and how long a push may wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifying {
    pub policy: VerificationPolicy,
    /// How long after it is asked for a push counts as timed out.
    pub push_lifetime_millis: i64,
    /// Only chat accounts bound to their person by an approved push may confirm.
    pub require_linked: bool,
    /// How many days a new standing approval only marks the cases it would have closed.
    pub approval_monitor_days: u32,
}

/// One rule: these answers, given in this capacity, on a system at least this critical, by
/// someone holding one of these directory roles (none listed: anyone), are verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRule {
    pub answers: Vec<WeightyAnswer>,
    pub answered_as: AnsweredAs,
    pub from_criticality: Criticality,
    pub roles: Vec<String>,
}

/// The answers a deployment verifies. Without a `[verification]` section nothing is verified
/// (and nothing that needs it, such as standing approvals, is offered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationPolicy {
    pub rules: Vec<VerificationRule>,
}

impl Default for VerificationPolicy {
    /// A confirmer's *Expected* and *Not me* on high and critical systems; the SOC's *Close as
    /// expected* on critical ones.
    fn default() -> VerificationPolicy {
        VerificationPolicy {
            rules: vec![
                VerificationRule {
                    answers: vec![WeightyAnswer::Expected, WeightyAnswer::NotMe],
                    answered_as: AnsweredAs::Confirmer,
                    from_criticality: Criticality::High,
                    roles: Vec::new(),
                },
                VerificationRule {
                    answers: vec![WeightyAnswer::CloseAsExpected],
                    answered_as: AnsweredAs::Soc,
                    from_criticality: Criticality::Critical,
                    roles: Vec::new(),
                },
            ],
        }
    }
}

impl VerificationPolicy {
    /// Whether `answer`, given as `answered_as` about a system of `criticality` by someone with
    /// the directory `roles`, must be verified before it counts. A system whose criticality is
    /// not known is taken as critical: not knowing is never a reason to trust more.
    pub fn requires(
        &self,
        answer: WeightyAnswer,
        answered_as: AnsweredAs,
        criticality: Option<Criticality>,
        roles: &[String],
    ) -> bool {
        if answer.always_verified() {
            return true;
        }
        let criticality = criticality.unwrap_or(Criticality::Critical);
        self.rules.iter().any(|rule| {
            rule.answered_as == answered_as
                && rule.answers.contains(&answer)
                && criticality >= rule.from_criticality
                && (rule.roles.is_empty() || rule.roles.iter().any(|role| roles.contains(role)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_policy_verifies_what_clears_a_movement_on_a_system_that_matters() {
        let policy = VerificationPolicy::default();
        let nobody: &[String] = &[];
        let cases = [
            (WeightyAnswer::Expected, AnsweredAs::Confirmer, Some(Criticality::High), true),
            (WeightyAnswer::Expected, AnsweredAs::Confirmer, Some(Criticality::Critical), true),
            (WeightyAnswer::Expected, AnsweredAs::Confirmer, Some(Criticality::Medium), false),
            (WeightyAnswer::NotMe, AnsweredAs::Confirmer, Some(Criticality::High), true),
            (WeightyAnswer::NotMe, AnsweredAs::Confirmer, Some(Criticality::Low), false),
            // Unknown criticality is taken as critical.
            (WeightyAnswer::Expected, AnsweredAs::Confirmer, None, true),
            (WeightyAnswer::CloseAsExpected, AnsweredAs::Soc, Some(Criticality::Critical), true),
            (WeightyAnswer::CloseAsExpected, AnsweredAs::Soc, Some(Criticality::High), false),
            // The SOC's own Expected is not in the default rules.
            (WeightyAnswer::Expected, AnsweredAs::Soc, Some(Criticality::Critical), false),
            // What vouches for more than one alert is always verified.
            (WeightyAnswer::StandingApproval, AnsweredAs::Soc, Some(Criticality::Low), true),
            (WeightyAnswer::Link, AnsweredAs::Confirmer, Some(Criticality::Low), true),
            (WeightyAnswer::DeclaredActivity, AnsweredAs::Confirmer, Some(Criticality::Low), true),
        ];
        for (answer, answered_as, criticality, expected) in cases {
            assert_eq!(
                policy.requires(answer, answered_as, criticality, nobody),
                expected,
                "{answer:?} as {answered_as:?} on {criticality:?}"
            );
        }
    }

    #[test]
    fn a_rule_limited_to_roles_applies_only_to_people_holding_one() {
        let policy = VerificationPolicy {
            rules: vec![VerificationRule {
                answers: vec![WeightyAnswer::Expected],
                answered_as: AnsweredAs::Confirmer,
                from_criticality: Criticality::Low,
                roles: vec!["contractor".to_string()],
            }],
        };
        let contractor = ["contractor".to_string()];
        let employee = ["developer".to_string()];
        assert!(policy.requires(WeightyAnswer::Expected, AnsweredAs::Confirmer, Some(Criticality::Low), &contractor));
        assert!(!policy.requires(WeightyAnswer::Expected, AnsweredAs::Confirmer, Some(Criticality::Low), &employee));
        assert!(!policy.requires(WeightyAnswer::NotMe, AnsweredAs::Confirmer, Some(Criticality::Low), &contractor));
    }

    #[test]
    fn answer_and_capacity_ids_read_back() {
        for answer in WeightyAnswer::ALL {
            assert_eq!(WeightyAnswer::from_id(answer.id()), Some(answer));
        }
        for role in [AnsweredAs::Confirmer, AnsweredAs::Soc] {
            assert_eq!(AnsweredAs::from_id(role.id()), Some(role));
        }
        assert_eq!(WeightyAnswer::from_id("yes"), None);
    }
}
