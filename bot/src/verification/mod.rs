//! Out-of-band verification of answers: a push to the person's phone, through Duo or Okta
//! Verify, that they approve before their answer counts.
//!
//! [`PushVerifier`] is the one interface; [`duo`] and [`okta`] implement it against the vendors'
//! documented APIs. A provider's answers are hostile input like any other: anything but a clear
//! approval of the push Vouch sent (an error, a malformed body, a 5xx, a slow answer) is never
//! read as "verified".

pub mod cool_down;
pub mod duo;
pub mod okta;
pub mod worker;

pub use cool_down::PushCoolDown;
pub use worker::{PushAsked, PushSubject, PushToSend, PushWorker};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vouch_config::{PushProviderSettings, VerificationSettings};

/// Largest provider answer read; a longer one is malformed.
const MOST_ANSWER_BYTES: usize = 64 * 1024;

/// Which provider verified an answer, as the card and the audit log name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Duo,
    Okta,
}

impl Provider {
    /// How the card says it: "Expected — verified with Duo Push".
    pub fn label(self) -> &'static str {
        match self {
            Provider::Duo => "Duo Push",
            Provider::Okta => "Okta Verify",
        }
    }
}

/// A push to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    /// The provider's user name for the person (their directory id through the configured
    /// template).
    pub username: String,
    /// What the person is asked to approve, shown on their phone where the provider allows.
    pub summary: String,
}

/// A push that was sent: what to poll, kept durably so a restart resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushTransaction {
    pub provider: Provider,
    /// The provider's transaction: Duo's `txid`; for Okta `user/factor/transaction` ids.
    pub id: String,
}

/// A push sent, and the number the person must pick on their phone when the provider asks for
/// number matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSent {
    pub transaction: PushTransaction,
    pub number_to_pick: Option<u32>,
}

/// Where a push stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushStatus {
    /// Sent; the person has not answered yet.
    Waiting,
    Approved,
    Denied,
    /// The person said the push was not theirs: someone else is acting as them.
    Fraud,
    TimedOut,
}

/// Why a push could not be sent or read. None of these is ever "verified".
#[derive(Debug, thiserror::Error)]
pub enum VerificationError {
    #[error("{provider} could not be reached: {reason}")]
    Unreachable { provider: &'static str, reason: String },
    #[error("{provider} refused the request ({status}): {message}")]
    Refused { provider: &'static str, status: u16, message: String },
    #[error("{provider} answered something that is not what its API documents: {reason}")]
    Malformed { provider: &'static str, reason: String },
    #[error("{provider} has no push-capable device or factor enrolled for {username}")]
    NoPushDevice { provider: &'static str, username: String },
    #[error("{provider} does not let {username} verify: {reason}")]
    UserNotAllowed { provider: &'static str, username: String, reason: String },
    #[error("the CA file {path} is not usable: {reason}")]
    CaFile { path: String, reason: String },
}

/// A boxed future, so verifiers can be used behind `dyn`.
pub type VerifierFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VerificationError>> + Send + 'a>>;

/// A push provider: sends a push to a person and reads where it stands.
pub trait PushVerifier: Send + Sync {
    fn provider(&self) -> Provider;

    /// Sends a push to the person named; answers at once with the transaction to poll.
    fn send_push<'a>(&'a self, request: &'a PushRequest) -> VerifierFuture<'a, PushSent>;

    /// Where a push sent earlier (perhaps before a restart) stands now.
    fn push_status<'a>(&'a self, transaction: &'a PushTransaction) -> VerifierFuture<'a, PushStatus>;
}

/// The verifier the settings name.
pub fn from_settings(settings: &VerificationSettings) -> Result<Box<dyn PushVerifier>, VerificationError> {
    let client = http_client(settings.request_timeout, settings.ca_file())?;
    Ok(match &settings.provider {
        PushProviderSettings::Duo(duo) => Box::new(duo::DuoVerifier::new(duo, client)),
        PushProviderSettings::Okta(okta) => Box::new(okta::OktaVerifier::new(okta, client)),
    })
}

/// An HTTP client for a provider: its own CA when configured, no redirects (a provider's answer
/// is read where it was asked), each call bounded by `timeout` (past it, the push is "not
/// verified" and the person may try again).
fn http_client(timeout: Duration, ca_file: Option<&std::path::Path>) -> Result<reqwest::Client, VerificationError> {
    let mut builder = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none());
    if let Some(path) = ca_file {
        let ca_error = |reason: String| VerificationError::CaFile { path: path.display().to_string(), reason };
        let pem = std::fs::read(path).map_err(|error| ca_error(error.to_string()))?;
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).map_err(|error| ca_error(error.to_string()))?);
    }
    builder.build().map_err(|error| VerificationError::CaFile { path: String::new(), reason: error.to_string() })
}

/// A provider's answer: its status and body, read up to [`MOST_ANSWER_BYTES`].
async fn read_answer(
    provider: &'static str,
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<(u16, serde_json::Value), VerificationError> {
    let mut response =
        sent.map_err(|error| VerificationError::Unreachable { provider, reason: error.without_url().to_string() })?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| VerificationError::Unreachable { provider, reason: error.without_url().to_string() })?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MOST_ANSWER_BYTES {
            return Err(VerificationError::Malformed { provider, reason: "the answer is too long".to_string() });
        }
    }
    let value = serde_json::from_slice(&body).map_err(|_| VerificationError::Malformed {
        provider,
        reason: format!("the answer (HTTP {status}) is not JSON"),
    })?;
    Ok((status, value))
}

/// A provider's text, capped and stripped of anything that is not printable, before it reaches
/// a log line or a chat message.
fn provider_text(text: &str) -> String {
    vouch_playbook::model::cap(&text.chars().filter(|c| !c.is_control()).collect::<String>(), 200)
}
