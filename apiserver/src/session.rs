//! Sessions of the web console: a short-lived token of the user's, kept by the browser in a
//! `Secure; HttpOnly; SameSite=Strict` cookie, so that no script of the page (nor any URL)
//! ever holds it. A request authenticated by the cookie must come from the console's own
//! origin, and one that changes something must also carry [`CSRF_HEADER`], which another
//! site's form or image cannot send. One-time login codes let `dora console` open a logged-in
//! page without putting a token in a URL.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use crate::{ApiError, TokenClaims};

/// The cookie that holds a console session's token.
pub(crate) const COOKIE: &str = "dora_session";
/// How long a console session lasts; then the page asks for a token again.
pub(crate) const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// The header every cookie-authenticated request that changes something must carry.
pub(crate) const CSRF_HEADER: &str = "x-dora-console";
/// How long a login code of `dora console` may be redeemed.
pub(crate) const CODE_LIFETIME: Duration = Duration::from_secs(60);
/// Most login codes waiting at once; more are refused until some are redeemed or expire.
const MAX_CODES: usize = 10_000;

/// The session token of the request's cookie, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Refuses a cookie-authenticated request that did not come from the console: one from
/// another origin, or one that changes something without [`CSRF_HEADER`].
pub(crate) fn check_origin(request: &Parts) -> Result<(), ApiError> {
    let refused = |message: &str| ApiError::new(StatusCode::FORBIDDEN, "CrossSite", message);
    if !same_origin(request) {
        return Err(refused(
            "the console's session cookie is only good on the console's own pages",
        ));
    }
    let safe = matches!(request.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !request.headers.contains_key(CSRF_HEADER) {
        return Err(refused(
            "a request made with the console's session cookie must carry the X-Dora-Console header",
        ));
    }
    Ok(())
}

/// Whether the request's `Origin`, if it has one, is this server's own (`https://` and the
/// host the request was sent to).
pub(crate) fn same_origin(request: &Parts) -> bool {
    let Some(origin) = request.headers.get(header::ORIGIN) else {
        return true;
    };
    let host = request
        .uri
        .authority()
        .map(|authority| authority.as_str())
        .or_else(|| request.headers.get(header::HOST)?.to_str().ok());
    host.is_some_and(|host| origin.to_str().ok() == Some(&format!("https://{host}")))
}

/// `Set-Cookie` for a new session holding `token`; an error for a token that no header can
/// carry.
pub(crate) fn set_cookie(token: &str) -> Result<HeaderValue, ApiError> {
    let cookie = format!(
        "{COOKIE}={token}; Max-Age={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        LIFETIME.as_secs()
    );
    HeaderValue::from_str(&cookie).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal",
            "the session token cannot be set as a cookie",
        )
    })
}

/// `Set-Cookie` that ends the session in the browser.
pub(crate) fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("dora_session=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict")
}

/// Who a login code logs in, as the token that asked for it said.
#[derive(Debug, Clone)]
pub(crate) struct Login {
    pub user: String,
    pub claims: TokenClaims,
}

/// Login codes of this API server, each good once within [`CODE_LIFETIME`]. They live in
/// memory: a code is redeemed at the server that made it, the one `dora console` asked.
#[derive(Default)]
pub(crate) struct LoginCodes {
    codes: Mutex<HashMap<String, (Login, Instant)>>,
}

impl LoginCodes {
    /// A new code for `login`.
    pub fn create(&self, login: Login) -> Result<String, ApiError> {
        let now = Instant::now();
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.retain(|_, (_, made)| now.duration_since(*made) < CODE_LIFETIME);
        if codes.len() >= MAX_CODES {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RateLimited",
                "too many console login codes wait to be used; retry in a minute",
            ));
        }
        let code = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        codes.insert(code.clone(), (login, now));
        Ok(code)
    }

    /// The login of `code`, which can then not be used again; `None` when it is unknown,
    /// used or expired.
    pub fn redeem(&self, code: &str) -> Option<Login> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let (login, made) = codes.remove(code)?;
        (made.elapsed() < CODE_LIFETIME).then_some(login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder()
            .method(method)
            .uri("/v1/apply")
            .header(header::HOST, "dora.example:7443");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; dora_session=abc.def; x=1"),
        );
        assert_eq!(cookie(&headers), Some("abc.def"));
        headers.insert(header::COOKIE, HeaderValue::from_static("dora_session="));
        assert_eq!(cookie(&headers), None);
    }

    #[test]
    fn cross_site_and_headerless_writes_are_refused() {
        let own = ("origin", "https://dora.example:7443");
        assert!(check_origin(&parts(Method::GET, &[own])).is_ok());
        assert!(check_origin(&parts(Method::GET, &[])).is_ok());
        assert!(check_origin(&parts(Method::POST, &[own, (CSRF_HEADER, "1")])).is_ok());
        assert!(check_origin(&parts(Method::POST, &[own])).is_err());
        let other = ("origin", "https://evil.example");
        assert!(check_origin(&parts(Method::GET, &[other])).is_err());
        assert!(check_origin(&parts(Method::POST, &[other, (CSRF_HEADER, "1")])).is_err());
    }

    #[test]
    fn a_code_logs_in_once() {
        let codes = LoginCodes::default();
        let login = Login {
            user: "ana".into(),
            claims: TokenClaims::default(),
        };
        let code = codes.create(login).unwrap();
        assert_eq!(codes.redeem(&code).unwrap().user, "ana");
        assert!(codes.redeem(&code).is_none());
        assert!(codes.redeem("guessed").is_none());
    }
}
