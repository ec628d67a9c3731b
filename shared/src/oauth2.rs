//! OAuth2 for a tenant whose target or source accepts only it: `[oauth2]` as written
//! (`OAuth2Config`), resolved by the api (`OAuth2`), and what the api tells its worker.
//!
//! The api alone holds the client secret and the refresh token, exchanges consent codes and
//! refreshes (one refresh at a time, the new pair on disk before its access token is handed
//! out); the worker asks it for an access token (`POST /worker/oauth/token`) and never sees
//! anything else.
//!
//! ```toml
//! [oauth2]
//! grant = "authorization_code"          # or "client_credentials"
//! authorize_url = "https://focus.teamleader.eu/oauth2/authorize"
//! token_url = "https://focus.teamleader.eu/oauth2/access_token"
//! client_id = "…"
//! client_secret_env = "TEAMLEADER_SECRET"
//! redirect_uri = "https://ferry.example/oauth/callback"   # default http://127.0.0.1:<port>/oauth/callback
//! ```

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Secret;
use crate::target::{http_base_url, inline_or_env};

/// The reason code of a job that waits for a person to give consent again.
pub const OAUTH_CONSENT_REQUIRED: &str = "OAUTH_CONSENT_REQUIRED";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// A person consents once (`GET /oauth/start`); refresh tokens rotate from then on.
    AuthorizationCode,
    /// The client's own credentials fetch each access token; no person involved.
    ClientCredentials,
}

/// `[oauth2]` as written in the tenant's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    pub grant: Grant,
    /// Where a person is sent to consent (authorization code only).
    #[serde(default)]
    pub authorize_url: Option<String>,
    pub token_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<Secret<String>>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// This api's `/oauth/callback` as the provider knows it (whitelisted there).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Space-separated scopes, when the provider wants them.
    #[serde(default)]
    pub scope: Option<String>,
    /// An access token is refreshed this long before it expires.
    #[serde(default = "default_refresh_before_secs")]
    pub refresh_before_secs: u64,
}

fn default_refresh_before_secs() -> u64 {
    60
}

/// `[oauth2]` resolved: the secret read, the redirect URI known.
#[derive(Clone)]
pub struct OAuth2 {
    pub grant: Grant,
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scope: Option<String>,
    pub refresh_before_secs: u64,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OAuth2({:?}, {}, client {}, ***)",
            self.grant, self.token_url, self.client_id
        )
    }
}

impl OAuth2Config {
    /// Checks the config and resolves the secret from `env`; `port` gives the default redirect
    /// URI. Errors name the key.
    pub fn resolve(
        &self,
        port: u16,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<OAuth2, String> {
        let token_url = http_base_url(&self.token_url, "oauth2.token_url")?;
        let client_secret = inline_or_env(
            &self.client_secret,
            &self.client_secret_env,
            "oauth2.client_secret",
            &env,
        )?;
        let authorize_url = match (self.grant, &self.authorize_url) {
            (Grant::AuthorizationCode, Some(u)) => http_base_url(u, "oauth2.authorize_url")?,
            (Grant::AuthorizationCode, None) => {
                return Err("oauth2.authorize_url is required for grant authorization_code".into());
            }
            (Grant::ClientCredentials, _) => String::new(),
        };
        let redirect_uri = match &self.redirect_uri {
            Some(u) => http_base_url(u, "oauth2.redirect_uri")?,
            None => format!("http://127.0.0.1:{port}/oauth/callback"),
        };
        Ok(OAuth2 {
            grant: self.grant,
            authorize_url,
            token_url,
            client_id: self.client_id.clone(),
            client_secret,
            redirect_uri,
            scope: self.scope.clone().filter(|s| !s.trim().is_empty()),
            refresh_before_secs: self.refresh_before_secs,
        })
    }
}

/// `POST /worker/oauth/token`: an access token for the target or source. `stale` names one the
/// target refused (401): a new one is fetched unless another request already replaced it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TokenAsk {
    #[serde(default)]
    pub stale: Option<String>,
}

/// The access token to send (`Authorization: Bearer`), and when it stops being handed out.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessToken {
    pub access_token: String,
    /// Ms since the epoch after which the api refreshes it; ask again after that.
    pub refresh_at_ms: i64,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(***, refresh at {})", self.refresh_at_ms)
    }
}

/// What `/alive` says of a tenant's OAuth2 consent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OAuthStatus {
    /// No usable token: a person must consent again at `consent_url`.
    pub needs_consent: bool,
    /// Why, when consent is needed.
    #[serde(default)]
    pub reason: Option<String>,
    /// Where to give consent (authorization code only).
    #[serde(default)]
    pub consent_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authorization_code_config_resolves_with_its_defaults() {
        let cfg: OAuth2Config = toml::from_str(
            "grant = \"authorization_code\"\nauthorize_url = \"https://tl/oauth2/authorize\"\n\
             token_url = \"https://tl/oauth2/access_token\"\nclient_id = \"c\"\n\
             client_secret_env = \"TL_SECRET\"\n",
        )
        .unwrap();
        assert!(
            cfg.resolve(8001, |_| None)
                .unwrap_err()
                .contains("TL_SECRET")
        );
        let o = cfg.resolve(8001, |_| Some("s3cret".into())).unwrap();
        assert_eq!(o.redirect_uri, "http://127.0.0.1:8001/oauth/callback");
        assert_eq!(o.refresh_before_secs, 60);
        assert!(!format!("{o:?}").contains("s3cret"));
    }

    #[test]
    fn authorization_code_needs_an_authorize_url() {
        let cfg: OAuth2Config = toml::from_str(
            "grant = \"authorization_code\"\ntoken_url = \"https://tl/t\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\n",
        )
        .unwrap();
        assert!(
            cfg.resolve(1, |_| None)
                .unwrap_err()
                .contains("authorize_url")
        );
        let cc: OAuth2Config = toml::from_str(
            "grant = \"client_credentials\"\ntoken_url = \"https://tl/t\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\n",
        )
        .unwrap();
        assert!(cc.resolve(1, |_| None).is_ok());
    }
}
