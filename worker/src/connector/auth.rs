//! The auth resolver every HTTP connector uses: how a request proves itself to the target,
//! from the resolved `auth` of its config (none, basic, bearer) or the job's own credentials
//! (`job`, as the legacy OilMat client sends them). OAuth2 joins here, keeping its token pair in
//! connector state. (PassagePoint's session login is a protocol of its own, in its connector.)

use ferry_shared::job::OrderLine;
use ferry_shared::target::Auth;

/// The credentials a job brings, for `Auth::Job`.
pub fn job_credentials(order: &OrderLine) -> Option<(&str, Option<&str>)> {
    let user = order.username.as_deref()?;
    Some((user, order.password.as_ref().map(|p| p.expose().as_str())))
}

/// `req` with the credentials `auth` asks for.
pub fn apply(
    req: reqwest::RequestBuilder,
    auth: &Auth,
    job: Option<(&str, Option<&str>)>,
) -> reqwest::RequestBuilder {
    match auth {
        Auth::None => req,
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
        let req = apply(reqwest::Client::new().get("http://x/"), auth, job)
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
