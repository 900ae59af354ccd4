//! Okta Verify push through Okta's management API (the Factors API): find the user by login,
//! find their active Okta Verify `push` factor, issue the challenge
//! (`POST /api/v1/users/{userId}/factors/{factorId}/verify`, answered 201 with a poll link), and
//! read the transaction (`GET …/transactions/{transactionId}`).
//!
//! Requests carry `Authorization: SSWS <API token>`. With number matching on, the challenge asks
//! for Okta's number matching push and the number the person must pick is shown to them by Vouch.
//! The poll link an answer carries is only followed when it is this organisation's own link for
//! this user and factor; the transaction is polled at a URL Vouch builds itself.

use serde_json::json;
use vouch_config::OktaSettings;

use super::duo::percent_encode;
use super::{
    provider_text, read_answer, Provider, PushRequest, PushSent, PushStatus, PushTransaction, PushVerifier,
    VerificationError, VerifierFuture,
};

const PROVIDER: &str = "Okta";
/// Okta requires a user agent on push verification (it is shown to the person).
const USER_AGENT: &str = concat!("Vouch/", env!("CARGO_PKG_VERSION"));
/// Okta's ids are short and alphanumeric; anything else in a transaction is refused.
const MOST_ID_CHARS: usize = 64;

/// Talks to one Okta organisation.
pub struct OktaVerifier {
    client: reqwest::Client,
    org_url: String,
    api_token: String,
    number_matching: bool,
}

/// The ids a push transaction is polled by: `user/factor/transaction`.
struct TransactionIds<'a> {
    user: &'a str,
    factor: &'a str,
    transaction: &'a str,
}

impl<'a> TransactionIds<'a> {
    fn parse(id: &'a str) -> Option<TransactionIds<'a>> {
        let mut parts = id.split('/');
        let ids = TransactionIds { user: parts.next()?, factor: parts.next()?, transaction: parts.next()? };
        (parts.next().is_none() && [ids.user, ids.factor, ids.transaction].into_iter().all(is_okta_id)).then_some(ids)
    }
}

fn is_okta_id(id: &str) -> bool {
    // Starting with a letter or digit also keeps `.` and `..` out of the paths built from ids.
    id.bytes().next().is_some_and(|first| first.is_ascii_alphanumeric())
        && id.len() <= MOST_ID_CHARS
        && id.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'))
}

impl OktaVerifier {
    pub fn new(settings: &OktaSettings, client: reqwest::Client) -> OktaVerifier {
        OktaVerifier {
            client,
            org_url: settings.org_url.clone(),
            api_token: settings.api_token.expose().to_string(),
            number_matching: settings.number_matching,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.org_url))
            .header("Authorization", format!("SSWS {}", self.api_token))
            .header("Accept", "application/json")
    }

    /// The body of a successful answer, or Okta's error (`errorCode`, `errorSummary`) as a refusal.
    async fn answer(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
        expected: &[u16],
    ) -> Result<(u16, serde_json::Value), VerificationError> {
        let (status, body) = read_answer(PROVIDER, sent).await?;
        if expected.contains(&status) {
            return Ok((status, body));
        }
        Err(VerificationError::Refused {
            provider: PROVIDER,
            status,
            message: provider_text(&format!(
                "{} {}",
                body["errorCode"].as_str().unwrap_or("no error code"),
                body["errorSummary"].as_str().unwrap_or("no summary")
            )),
        })
    }

    /// The user's id, if Okta knows the login and the user is active.
    async fn user_id(&self, username: &str) -> Result<String, VerificationError> {
        let sent =
            self.request(reqwest::Method::GET, &format!("/api/v1/users/{}", percent_encode(username))).send().await;
        let (_, user) = match self.answer(sent, &[200]).await {
            Err(VerificationError::Refused { status: 404, .. }) => {
                return Err(VerificationError::UserNotAllowed {
                    provider: PROVIDER,
                    username: username.to_string(),
                    reason: "Okta does not know this login".to_string(),
                })
            }
            other => other?,
        };
        let id = user["id"].as_str().filter(|id| is_okta_id(id)).ok_or_else(|| VerificationError::Malformed {
            provider: PROVIDER,
            reason: "the user has no usable id".to_string(),
        })?;
        if user["status"].as_str() != Some("ACTIVE") {
            return Err(VerificationError::UserNotAllowed {
                provider: PROVIDER,
                username: username.to_string(),
                reason: provider_text(&format!("the user is {}", user["status"].as_str().unwrap_or("not active"))),
            });
        }
        Ok(id.to_string())
    }

    /// The user's active Okta Verify push factor.
    async fn push_factor(&self, user_id: &str, username: &str) -> Result<String, VerificationError> {
        let sent = self.request(reqwest::Method::GET, &format!("/api/v1/users/{user_id}/factors")).send().await;
        let (_, factors) = self.answer(sent, &[200]).await?;
        let factors = factors.as_array().ok_or_else(|| VerificationError::Malformed {
            provider: PROVIDER,
            reason: "the factors are not a list".to_string(),
        })?;
        factors
            .iter()
            .find(|factor| {
                factor["factorType"] == "push" && factor["provider"] == "OKTA" && factor["status"] == "ACTIVE"
            })
            .and_then(|factor| factor["id"].as_str())
            .filter(|id| is_okta_id(id))
            .map(str::to_string)
            .ok_or_else(|| VerificationError::NoPushDevice { provider: PROVIDER, username: username.to_string() })
    }
}

impl PushVerifier for OktaVerifier {
    fn provider(&self) -> Provider {
        Provider::Okta
    }

    fn send_push<'a>(&'a self, request: &'a PushRequest) -> VerifierFuture<'a, PushSent> {
        Box::pin(async move {
            let user = self.user_id(&request.username).await?;
            let factor = self.push_factor(&user, &request.username).await?;
            let mut challenge = self
                .request(reqwest::Method::POST, &format!("/api/v1/users/{user}/factors/{factor}/verify"))
                .header("User-Agent", USER_AGENT);
            if self.number_matching {
                challenge = challenge.json(&json!({"useNumberMatchingChallenge": true}));
            }
            let (_, answer) = self.answer(challenge.send().await, &[201]).await?;
            let malformed =
                |reason: &str| VerificationError::Malformed { provider: PROVIDER, reason: reason.to_string() };
            if answer["factorResult"] != "WAITING" {
                return Err(malformed("the challenge was not answered WAITING"));
            }
            let poll = answer["_links"]["poll"]["href"].as_str().ok_or_else(|| malformed("no poll link"))?;
            let own_prefix = format!("{}/api/v1/users/{user}/factors/{factor}/transactions/", self.org_url);
            let transaction = poll
                .strip_prefix(&own_prefix)
                .filter(|transaction| is_okta_id(transaction))
                .ok_or_else(|| malformed("the poll link is not this organisation's link for this factor"))?;
            let number_to_pick = if self.number_matching {
                let number = answer["_embedded"]["challenge"]["correctAnswer"]
                    .as_u64()
                    .filter(|number| *number < 1000)
                    .ok_or_else(|| malformed("a number matching challenge came without its number"))?;
                Some(number as u32)
            } else {
                None
            };
            Ok(PushSent {
                transaction: PushTransaction { provider: Provider::Okta, id: format!("{user}/{factor}/{transaction}") },
                number_to_pick,
            })
        })
    }

    fn push_status<'a>(&'a self, transaction: &'a PushTransaction) -> VerifierFuture<'a, PushStatus> {
        Box::pin(async move {
            let ids = TransactionIds::parse(&transaction.id).ok_or_else(|| VerificationError::Malformed {
                provider: PROVIDER,
                reason: "the stored transaction is not user/factor/transaction ids".to_string(),
            })?;
            let path = format!("/api/v1/users/{}/factors/{}/transactions/{}", ids.user, ids.factor, ids.transaction);
            let (_, answer) = self.answer(self.request(reqwest::Method::GET, &path).send().await, &[200]).await?;
            match answer["factorResult"].as_str() {
                Some("WAITING") => Ok(PushStatus::Waiting),
                Some("SUCCESS") => Ok(PushStatus::Approved),
                Some("REJECTED") => Ok(PushStatus::Denied),
                Some("TIMEOUT") | Some("TIME_WINDOW_EXCEEDED") | Some("CANCELLED") => Ok(PushStatus::TimedOut),
                Some(other) => Err(VerificationError::Refused {
                    provider: PROVIDER,
                    status: 200,
                    message: provider_text(&format!("the push ended {other}")),
                }),
                None => Err(VerificationError::Malformed {
                    provider: PROVIDER,
                    reason: "the transaction has no factorResult".to_string(),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_plain_ids_make_a_transaction() {
        assert!(
            TransactionIds::parse("00u15s1KDETTQMQYABRL/opfh52xcuft3J4uZc0g3/v2mst.GldKV5VxTrifyeZmWSQguA").is_some()
        );
        for bad in ["", "a/b", "a/b/c/d", "a/../c", "a/./c", "a/b/c?x=1", "a/b/https:", "a//c", "a/.b/c"] {
            assert!(TransactionIds::parse(bad).is_none(), "{bad}");
        }
    }
}
