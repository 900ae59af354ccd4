//! Chat accounts bound to people: a chat account counts as a person in the directory once that
//! person approved a push asking to bind it. What a link request's end decides is here; the bot
//! carries it out.

use serde::{Deserialize, Serialize};

use crate::engine::{PushOutcome, PushRecord};
use crate::ids::{PersonId, Snowflake};
use crate::time::Timestamp;

/// A chat account bound to a person by a push that person approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityLink {
    pub discord_id: Snowflake,
    pub person: PersonId,
    pub linked_at: Timestamp,
    /// The push that bound them.
    pub verified: PushRecord,
}

/// A link asked for from a chat account, waiting on the named person's push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLink {
    pub discord_id: Snowflake,
    pub person: PersonId,
    pub requested_at: Timestamp,
    /// Past this, the request counts as timed out.
    pub expires_at: Timestamp,
    /// The push, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushRecord>,
}

/// What the end of a link request's push decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDecision {
    /// Bind the account to the person, ending the links this one takes the place of: the
    /// account's link to someone else, and the person's link to another account (a second
    /// account takes over an identity only with the person's own approval, as now).
    Bind { link: IdentityLink, replacing: Vec<IdentityLink> },
    /// Nothing is bound; `concern` when the person refused the push (someone asked to act as
    /// them and they said no), which the SOC is told of.
    NotBound { reason: String, concern: bool },
}

/// Decides what a link request's push ending with `outcome` does, given the links in force.
pub fn link_decision(
    pending: &PendingLink,
    outcome: &PushOutcome,
    links: &[IdentityLink],
    now: Timestamp,
) -> LinkDecision {
    let not_bound = |reason: String, concern: bool| LinkDecision::NotBound { reason, concern };
    match outcome {
        PushOutcome::Approved => {
            let verified = pending.push.clone().unwrap_or_else(PushRecord::unrecorded);
            let replacing = links
                .iter()
                .filter(|link| link.discord_id == pending.discord_id || link.person == pending.person)
                .filter(|link| !(link.discord_id == pending.discord_id && link.person == pending.person))
                .cloned()
                .collect();
            LinkDecision::Bind {
                link: IdentityLink {
                    discord_id: pending.discord_id,
                    person: pending.person.clone(),
                    linked_at: now,
                    verified,
                },
                replacing,
            }
        }
        PushOutcome::Denied => not_bound(format!("{} denied the push", pending.person), true),
        PushOutcome::Fraud => not_bound(format!("{} reported the push as not theirs", pending.person), true),
        PushOutcome::TimedOut => not_bound(format!("{} did not approve the push in time", pending.person), false),
        PushOutcome::Failed { reason } => not_bound(format!("the push could not be verified ({reason})"), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> Snowflake {
        Snowflake::parse(text).expect("snowflake")
    }

    fn person(text: &str) -> PersonId {
        PersonId::parse(text).expect("person")
    }

    fn push() -> PushRecord {
        PushRecord { provider: "Duo Push".to_string(), transaction: "tx".to_string(), number_to_pick: None }
    }

    fn link(discord: &str, who: &str) -> IdentityLink {
        IdentityLink {
            discord_id: id(discord),
            person: person(who),
            linked_at: Timestamp::from_unix_millis(0),
            verified: push(),
        }
    }

    #[test]
    fn only_an_approved_push_binds_and_a_takeover_ends_the_old_links() {
        let now = Timestamp::from_unix_millis(1_000);
        let pending = PendingLink {
            discord_id: id("222"),
            person: person("bob"),
            requested_at: now,
            expires_at: now,
            push: Some(push()),
        };
        // bob was linked to account 111; account 222 was linked to carol; 333 is someone else's.
        let links = [link("111", "bob"), link("222", "carol"), link("333", "dana")];
        match link_decision(&pending, &PushOutcome::Approved, &links, now) {
            LinkDecision::Bind { link, replacing } => {
                assert_eq!((link.discord_id, link.person.as_str()), (id("222"), "bob"));
                assert_eq!(link.verified, push());
                let replaced: Vec<&str> = replacing.iter().map(|link| link.person.as_str()).collect();
                assert_eq!(replaced, ["bob", "carol"]);
            }
            other => panic!("not bound: {other:?}"),
        }
        // Linking the same account to the same person again replaces nothing.
        let again = link_decision(&pending, &PushOutcome::Approved, &[link("222", "bob")], now);
        assert!(matches!(again, LinkDecision::Bind { replacing, .. } if replacing.is_empty()));
        for (outcome, concern) in [
            (PushOutcome::Denied, true),
            (PushOutcome::Fraud, true),
            (PushOutcome::TimedOut, false),
            (PushOutcome::Failed { reason: "503".to_string() }, false),
        ] {
            assert!(
                matches!(link_decision(&pending, &outcome, &links, now), LinkDecision::NotBound { concern: said, .. } if said == concern),
                "{outcome:?}"
            );
        }
    }
}
