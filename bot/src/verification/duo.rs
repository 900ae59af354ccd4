//! Duo's Auth API v2: `preauth` (may this user verify, with what), `auth` with `async=1` (send
//! the push, get a transaction id) and `auth_status` (where the push stands).
//!
//! Every request is signed as Duo documents it: HTTP Basic authentication with the integration
//! key as the user name and, as the password, the hex HMAC-SHA512 (keyed with the secret key)
//! of the request's canonical form: the `Date` header, the method, the host, the path and the
//! parameters, one per line. Parameters go in the query string of a GET and form-encoded in the
//! body of a POST, in the same canonical encoding that is signed.

use hmac::{Hmac, Mac};
use sha2::Sha512;
use vouch_config::DuoSettings;

use super::{
    provider_text, read_answer, Provider, PushRequest, PushSent, PushStatus, PushTransaction, PushVerifier,
    VerificationError, VerifierFuture,
};

const PROVIDER: &str = "Duo";

/// Talks to one Duo Auth API application.
pub struct DuoVerifier {
    client: reqwest::Client,
    api_url: String,
    /// The host as signed: the API URL's host (and port, when it has one).
    host: String,
    integration_key: String,
    secret_key: String,
}

impl DuoVerifier {
    pub fn new(settings: &DuoSettings, client: reqwest::Client) -> DuoVerifier {
        let host = settings
            .api_url
            .split_once("://")
            .map_or(settings.api_url.as_str(), |(_, rest)| rest)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        DuoVerifier {
            client,
            api_url: settings.api_url.clone(),
            host,
            integration_key: settings.integration_key.clone(),
            secret_key: settings.secret_key.expose().to_string(),
        }
    }

    /// One signed call; the `response` member of Duo's `{"stat": "OK", "response": …}`.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<serde_json::Value, VerificationError> {
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S -0000").to_string();
        let encoded = canonical_params(params);
        let authorization =
            authorization(&self.integration_key, &self.secret_key, &date, method.as_str(), &self.host, path, &encoded);
        let url = format!("{}{path}", self.api_url);
        let request = if method == reqwest::Method::GET {
            let url = if encoded.is_empty() { url } else { format!("{url}?{encoded}") };
            self.client.get(url)
        } else {
            self.client.request(method, url).header("Content-Type", "application/x-www-form-urlencoded").body(encoded)
        };
        let sent = request.header("Date", &date).header("Authorization", authorization).send().await;
        let (status, body) = read_answer(PROVIDER, sent).await?;
        match body["stat"].as_str() {
            Some("OK") if status == 200 => Ok(body["response"].clone()),
            Some("FAIL") => {
                let detail = body["message_detail"].as_str().map(|detail| format!(" ({detail})")).unwrap_or_default();
                Err(VerificationError::Refused {
                    provider: PROVIDER,
                    status,
                    message: provider_text(&format!(
                        "{} {}{detail}",
                        body["code"].as_u64().unwrap_or_default(),
                        body["message"].as_str().unwrap_or("no message")
                    )),
                })
            }
            _ => Err(VerificationError::Malformed {
                provider: PROVIDER,
                reason: format!("HTTP {status} without a stat of OK or FAIL"),
            }),
        }
    }

    /// Whether the user may verify with a push at all: Duo knows them, does not let them in
    /// without a second factor, and they have a device that takes pushes.
    async fn preauth(&self, username: &str) -> Result<(), VerificationError> {
        let response = self.call(reqwest::Method::POST, "/auth/v2/preauth", &[("username", username)]).await?;
        let not_allowed = |reason: String| VerificationError::UserNotAllowed {
            provider: PROVIDER,
            username: username.to_string(),
            reason: provider_text(&reason),
        };
        match response["result"].as_str() {
            Some("auth") => {
                let takes_push = response["devices"].as_array().is_some_and(|devices| {
                    devices.iter().any(|device| {
                        device["capabilities"]
                            .as_array()
                            .is_some_and(|capabilities| capabilities.iter().any(|capability| capability == "push"))
                    })
                });
                if takes_push {
                    Ok(())
                } else {
                    Err(VerificationError::NoPushDevice { provider: PROVIDER, username: username.to_string() })
                }
            }
            // Duo lets this user in without a second factor: a push would prove nothing.
            Some("allow") => Err(not_allowed("Duo lets this user in without a second factor".to_string())),
            Some("deny") | Some("enroll") => {
                Err(not_allowed(response["status_msg"].as_str().unwrap_or("denied by Duo").to_string()))
            }
            _ => Err(VerificationError::Malformed {
                provider: PROVIDER,
                reason: "preauth answered without a result of auth, allow, deny or enroll".to_string(),
            }),
        }
    }
}

impl PushVerifier for DuoVerifier {
    fn provider(&self) -> Provider {
        Provider::Duo
    }

    fn send_push<'a>(&'a self, request: &'a PushRequest) -> VerifierFuture<'a, PushSent> {
        Box::pin(async move {
            self.preauth(&request.username).await?;
            // What the phone shows beside the request, as Duo's `pushinfo` (itself form-encoded).
            let pushinfo = canonical_params(&[("from", "Vouch"), ("asked", &request.summary)]);
            let params = [
                ("username", request.username.as_str()),
                ("factor", "push"),
                ("device", "auto"),
                ("async", "1"),
                ("type", "Vouch"),
                ("pushinfo", pushinfo.as_str()),
            ];
            let response = self.call(reqwest::Method::POST, "/auth/v2/auth", &params).await?;
            let txid =
                response["txid"].as_str().filter(|txid| !txid.is_empty() && txid.len() <= 128).ok_or_else(|| {
                    VerificationError::Malformed {
                        provider: PROVIDER,
                        reason: "auth with async=1 answered without a txid".to_string(),
                    }
                })?;
            Ok(PushSent {
                transaction: PushTransaction { provider: Provider::Duo, id: txid.to_string() },
                number_to_pick: None,
            })
        })
    }

    fn push_status<'a>(&'a self, transaction: &'a PushTransaction) -> VerifierFuture<'a, PushStatus> {
        Box::pin(async move {
            let response =
                self.call(reqwest::Method::GET, "/auth/v2/auth_status", &[("txid", transaction.id.as_str())]).await?;
            let status = response["status"].as_str().unwrap_or_default();
            match (response["result"].as_str(), status) {
                (Some("waiting"), _) => Ok(PushStatus::Waiting),
                (Some("allow"), _) => Ok(PushStatus::Approved),
                (Some("deny"), "fraud") => Ok(PushStatus::Fraud),
                (Some("deny"), "timeout") => Ok(PushStatus::TimedOut),
                (Some("deny"), _) => Ok(PushStatus::Denied),
                _ => Err(VerificationError::Malformed {
                    provider: PROVIDER,
                    reason: "auth_status answered without a result of waiting, allow or deny".to_string(),
                }),
            }
        })
    }
}

/// Percent-encodes as Duo's canonical form does: RFC 3986's unreserved characters stay, every
/// other byte of the UTF-8 text becomes `%XX` in upper case (a space is `%20`).
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The parameters in canonical form: each key and value percent-encoded, sorted by key then
/// value, joined as `key=value` with `&`.
pub fn canonical_params(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> =
        params.iter().map(|(key, value)| (percent_encode(key), percent_encode(value))).collect();
    encoded.sort();
    encoded.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join("&")
}

/// The `Authorization` header of a request whose parameters are already in canonical form.
pub fn authorization(
    integration_key: &str,
    secret_key: &str,
    date: &str,
    method: &str,
    host: &str,
    path: &str,
    canonical_params: &str,
) -> String {
    use base64::Engine;
    let canonical = [date, &method.to_ascii_uppercase(), &host.to_ascii_lowercase(), path, canonical_params].join("\n");
    let mut mac = Hmac::<Sha512>::new_from_slice(secret_key.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(canonical.as_bytes());
    let signature = hex_lower(&mac.finalize().into_bytes());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{integration_key}:{signature}")))
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values Duo publishes with its client libraries to check a signer against
    /// (duo_client_python's tests): a host in mixed case, a method in mixed case, and four
    /// parameters whose keys and values are all non-ASCII.
    const PUBLISHED_PARAMS: [(&str, &str); 4] = [
        (
            "\u{469a}\u{287b}\u{35d0}\u{8ef3}\u{6727}\u{502a}\u{0810}\u{d091}\u{c8}\u{c170}",
            "\u{0f45}\u{1a76}\u{341a}\u{654c}\u{c23f}\u{9b09}\u{abe2}\u{8343}\u{1b27}\u{60d0}",
        ),
        (
            "\u{7449}\u{7e4b}\u{ccfb}\u{59ff}\u{fe5f}\u{83b7}\u{adcc}\u{900c}\u{cfd1}\u{7813}",
            "\u{8db7}\u{5022}\u{92d3}\u{42ef}\u{207d}\u{8730}\u{acfe}\u{5617}\u{0946}\u{4e30}",
        ),
        (
            "\u{7470}\u{9314}\u{901c}\u{9eae}\u{40d8}\u{4201}\u{82d8}\u{8c70}\u{1d31}\u{a042}",
            "\u{17d9}\u{0ba8}\u{9358}\u{aadf}\u{a42a}\u{48be}\u{fb96}\u{6fe9}\u{b7ff}\u{32f3}",
        ),
        (
            "\u{c2c5}\u{2c1d}\u{2620}\u{3617}\u{96b3}F\u{8605}\u{20e8}\u{ac21}\u{5934}",
            "\u{fba9}\u{41aa}\u{bd83}\u{840b}\u{2615}\u{3e6e}\u{652d}\u{a8b5}\u{d56b}U",
        ),
    ];

    #[test]
    fn a_request_is_signed_as_duo_publishes() {
        use base64::Engine;
        let header = authorization(
            "test_ikey",
            "gtdfxv9YgVBYcF6dl2Eq17KUQJN2PLM2ODVTkvoT",
            "Fri, 07 Dec 2012 17:18:00 -0000",
            "PoSt",
            "foO.BAr52.cOm",
            "/Foo/BaR2/qux",
            &canonical_params(&PUBLISHED_PARAMS),
        );
        let credentials = base64::engine::general_purpose::STANDARD
            .decode(header.strip_prefix("Basic ").expect("basic"))
            .expect("base64");
        assert_eq!(
            String::from_utf8(credentials).expect("text"),
            "test_ikey:0508065035a03b2a1de2f453e629e791d180329e157f65df6b3e0f08299d4321\
             e1c5c7a7c7ee6b9e5fc80d1fb6fbf3ad5eb7c44dd3b3985a02c37aca53ec3698"
        );
    }

    #[test]
    fn parameters_are_encoded_and_ordered_as_duo_publishes() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[], ""),
            (&[("realname", "First Last")], "realname=First%20Last"),
            (&[("username", "root"), ("realname", "First Last")], "realname=First%20Last&username=root"),
            (&[("foo_bar", "2"), ("foo", "1")], "foo=1&foo_bar=2"),
            (
                &[("punctuation", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"), ("whitespace", "\t\n\x0b\x0c\r ")],
                "punctuation=%21%22%23%24%25%26%27%28%29%2A%2B%2C-.%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%5E_%60%7B%7C%7D~\
                 &whitespace=%09%0A%0B%0C%0D%20",
            ),
        ];
        for (params, expected) in cases {
            assert_eq!(canonical_params(params), expected);
        }
    }
}
