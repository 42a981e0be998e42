//! Read-your-writes as configured: the mode, the signer, and how tokens travel (a cookie for
//! browsers, a header for API clients). Cookies are read and written with the `cookie` crate,
//! as axum-extra's `CookieJar` does.

use std::fmt;
use std::time::{Duration, SystemTime};

use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::token::{ConsistencyToken, Signer, TokenRejection};
use crate::clock::unix_ms;
use crate::config::{ConsistencyConfig, StickyMode};

/// Read-your-writes as configured: the mode, the signer, and how tokens travel.
pub(crate) struct Sticky {
    pub(crate) mode: StickyMode,
    signer: Signer,
    /// Longest a token is honoured; also the cookie's `Max-Age`.
    pub(crate) pin_limit: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) wait_for_replica: Duration,
    cookie_name: String,
    cookie_path: String,
    cookie_secure: bool,
    pub(crate) header_name: HeaderName,
}

impl Sticky {
    /// `detection`: the least a token is honoured (see `ConsistencyConfig::max_pin`).
    pub(crate) fn new(config: &ConsistencyConfig, detection: Duration) -> Sticky {
        let signer = match &config.signing_key {
            Some(key) => Signer::new(
                key.0.as_bytes(),
                config.previous_signing_key.as_ref().map(|k| k.0.as_bytes()),
            ),
            None => Signer::random(),
        };
        Sticky {
            mode: config.mode,
            signer,
            pin_limit: config.pin_limit(detection),
            poll_interval: config.poll_interval,
            wait_for_replica: config.wait_for_replica,
            cookie_name: config.cookie_name.clone(),
            cookie_path: config.cookie_path.clone(),
            cookie_secure: config.cookie_secure,
            header_name: HeaderName::try_from(config.header_name.as_str())
                .expect("validated with the configuration"),
        }
    }

    pub(crate) fn sign(&self, token: &ConsistencyToken) -> String {
        self.signer.sign(token)
    }

    pub(crate) fn verify(&self, text: &str) -> Result<ConsistencyToken, TokenRejection> {
        self.signer
            .verify(text, unix_ms(SystemTime::now()), self.pin_limit)
    }

    /// The token a request carries: its header, else its cookie.
    pub(crate) fn find<'a>(&self, headers: &'a HeaderMap) -> Option<&'a str> {
        if let Some(value) = headers.get(&self.header_name) {
            return Some(value.to_str().unwrap_or(""));
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|cookies| cookie_value(cookies, &self.cookie_name))
    }

    /// The `Set-Cookie` value carrying `token`: `HttpOnly`, `SameSite=Lax`, `Max-Age` the pin
    /// limit (at least a second), the configured `Path` and, by default, `Secure`.
    pub(crate) fn set_cookie(&self, token: &str) -> Option<HeaderValue> {
        let limit = self.pin_limit;
        let max_age = limit.as_secs() + u64::from(limit.subsec_nanos() > 0);
        let max_age = i64::try_from(max_age.max(1)).unwrap_or(i64::MAX);
        let cookie = Cookie::build((self.cookie_name.as_str(), token))
            .max_age(cookie::time::Duration::seconds(max_age))
            .path(self.cookie_path.as_str())
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.cookie_secure)
            .build();
        HeaderValue::try_from(cookie.to_string()).ok()
    }
}

impl fmt::Debug for Sticky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sticky")
            .field("mode", &self.mode)
            .field("pin_limit", &self.pin_limit)
            .field("cookie_name", &self.cookie_name)
            .field("header_name", &self.header_name)
            .finish_non_exhaustive()
    }
}

/// The value of cookie `name` in a `Cookie` header, if present (unquoted).
pub(crate) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    Cookie::split_parse(header)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name_raw() == Some(name))
        .and_then(|cookie| cookie.value_raw())
        .map(|value| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; rwsplit_consistency=1.abc; rwsplit_consistency_x=2; b=\"q\"";
        assert_eq!(cookie_value(header, "rwsplit_consistency"), Some("1.abc"));
        assert_eq!(cookie_value(header, "b"), Some("q"));
        assert_eq!(cookie_value(header, "missing"), None);
        assert_eq!(cookie_value(";;=;x", "x"), None);
        assert_eq!(cookie_value("", "x"), None);
    }

    #[test]
    fn the_cookie_carries_the_token_with_its_attributes() {
        let config = ConsistencyConfig::lsn()
            .cookie_path("/app")
            .max_pin(Duration::from_millis(15_200));
        let sticky = Sticky::new(&config, Duration::from_secs(1));
        let value = sticky.set_cookie("2.abc").unwrap();
        let text = value.to_str().unwrap();
        let cookie = Cookie::parse(text).unwrap();
        assert_eq!(
            (cookie.name(), cookie.value()),
            ("rwsplit_consistency", "2.abc")
        );
        assert_eq!(cookie.max_age(), Some(cookie::time::Duration::seconds(16)));
        assert_eq!(cookie.path(), Some("/app"));
        assert_eq!(cookie.http_only(), Some(true));
        assert_eq!(cookie.secure(), Some(true));
        assert_eq!(cookie.same_site(), Some(SameSite::Lax));
        let insecure = Sticky::new(&config.cookie_secure(false), Duration::from_secs(1));
        let text = insecure.set_cookie("2.abc").unwrap();
        assert!(!text.to_str().unwrap().contains("Secure"), "{text:?}");
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn cookie_values_come_from_the_header(header in any::<String>(), name in "[a-z_]{0,8}") {
            if let Some(value) = cookie_value(&header, &name) {
                prop_assert!(header.contains(value));
            }
        }
    }
}
