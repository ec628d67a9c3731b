//! The auth resolver every HTTP connector and source uses: how a request proves itself to the
//! target, from the resolved `auth` of its config (none, basic, bearer, OAuth2) or the job's own
//! credentials (`job`, as the legacy OilMat client sends them). (PassagePoint's session login is
//! a protocol of its own, in its connector.)
//!
//! OAuth2 tokens come from the api (`POST /worker/oauth/token`), which alone holds the refresh
//! token and refreshes it; this side keeps the access token until the api says to ask again,
//! and asks for a new one once when the target answers 401.

use ferry_shared::job::OrderLine;
use ferry_shared::oauth2::AccessToken;
use ferry_shared::target::Auth;

use crate::client::{ApiClient, ClientError};

/// The credentials a job brings, for `Auth::Job`.
pub fn job_credentials(order: &OrderLine) -> Option<(&str, Option<&str>)> {
    let user = order.username.as_deref()?;
    Some((user, order.password.as_ref().map(|p| p.expose().as_str())))
}

/// Why a request could not be given its credentials.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// No usable OAuth2 token until a person consents again (`/oauth/start`).
    #[error("{0}")]
    ConsentRequired(String),
    /// The api or the OAuth2 provider could not answer now.
    #[error("no OAuth2 token now: {0}")]
    Unavailable(String),
}

/// OAuth2 access tokens from the api, kept until it says to ask again.
pub struct OAuthTokens {
    api: ApiClient,
    cached: tokio::sync::Mutex<Option<AccessToken>>,
}

impl OAuthTokens {
    pub fn new(api: ApiClient) -> Self {
        Self {
            api,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The token to send now.
    pub async fn token(&self) -> Result<String, AuthError> {
        self.ask(None).await
    }

    /// A token other than `refused`, which the target answered 401 to.
    pub async fn refused(&self, refused: &str) -> Result<String, AuthError> {
        self.ask(Some(refused)).await
    }

    async fn ask(&self, stale: Option<&str>) -> Result<String, AuthError> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref()
            && Some(t.access_token.as_str()) != stale
            && t.refresh_at_ms > ferry_shared::now_ms()
        {
            return Ok(t.access_token.clone());
        }
        match self.api.oauth_token(stale).await {
            Ok(t) => {
                let token = t.access_token.clone();
                *cached = Some(t);
                Ok(token)
            }
            Err(e) => {
                *cached = None;
                Err(match e {
                    ClientError::Refused { code, detail, .. }
                        if code == ferry_shared::oauth2::OAUTH_CONSENT_REQUIRED =>
                    {
                        AuthError::ConsentRequired(detail)
                    }
                    other => AuthError::Unavailable(other.to_string()),
                })
            }
        }
    }
}

/// `req` with the credentials `auth` asks for; answers the OAuth2 token it sent, if any, for
/// [`OAuthTokens::refused`] after a 401.
pub async fn apply(
    req: reqwest::RequestBuilder,
    auth: &Auth,
    job: Option<(&str, Option<&str>)>,
    oauth: Option<&OAuthTokens>,
) -> Result<(reqwest::RequestBuilder, Option<String>), AuthError> {
    Ok(match (auth, oauth) {
        (Auth::Oauth2, Some(tokens)) => {
            let token = tokens.token().await?;
            (req.bearer_auth(&token), Some(token))
        }
        (Auth::Oauth2, None) => {
            return Err(AuthError::Unavailable(
                "the tenant's [oauth2] is not set up for this connector".into(),
            ));
        }
        (other, _) => (apply_static(req, other, job), None),
    })
}

/// `req` with credentials that need no call: none, basic, bearer, the job's own.
pub fn apply_static(
    req: reqwest::RequestBuilder,
    auth: &Auth,
    job: Option<(&str, Option<&str>)>,
) -> reqwest::RequestBuilder {
    match auth {
        Auth::None | Auth::Oauth2 => req,
        Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        Auth::Bearer { token } => req.bearer_auth(token),
        Auth::Job => match job {
            Some((user, password)) => req.basic_auth(user, password),
            None => req,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(auth: &Auth, job: Option<(&str, Option<&str>)>) -> Option<String> {
        let req = apply_static(reqwest::Client::new().get("http://x/"), auth, job)
            .build()
            .unwrap();
        req.headers()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn each_kind_of_auth_sets_its_header() {
        assert_eq!(header(&Auth::None, None), None);
        assert_eq!(
            header(&Auth::Bearer { token: "t".into() }, None).as_deref(),
            Some("Bearer t")
        );
        let basic = Auth::Basic {
            username: "ferry".into(),
            password: "pw".into(),
        };
        assert_eq!(header(&basic, None).as_deref(), Some("Basic ZmVycnk6cHc="));
        assert_eq!(
            header(&Auth::Job, Some(("ferry", Some("pw")))).as_deref(),
            Some("Basic ZmVycnk6cHc=")
        );
        assert_eq!(
            header(&Auth::Job, None),
            None,
            "a job without credentials sends none"
        );
    }
}
