//! Read-your-writes as configured: the mode, the signer, and how tokens travel (a cookie for
//! browsers, a header for API clients). Cookies are read and written with the `cookie` crate,
//! as axum-extra's `CookieJar` does.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use cookie::{Cookie, SameSite};
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::token::{ConsistencyToken, Signer, TokenRejection, Verified};
use crate::clock::unix_ms;
use crate::config::{ConsistencyConfig, StickyMode};

/// Read-your-writes as configured: the mode, the signer, and how tokens travel.
pub(crate) struct Sticky {
    pub(crate) mode: StickyMode,
    /// Replaced whole when a reload changes the keys or the clock skew.
    signer: ArcSwap<Signer>,
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
        Sticky {
            mode: config.mode,
            signer: ArcSwap::from_pointee(signer(config)),
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
        self.signer.load().sign(token)
    }

    pub(crate) fn verify(&self, text: &str) -> Result<Verified, TokenRejection> {
        self.signer
            .load()
            .verify(text, unix_ms(SystemTime::now()), self.pin_limit)
    }

    /// How far apart the instances' clocks may be, in milliseconds.
    pub(crate) fn skew_ms(&self) -> u64 {
        self.signer.load().skew_ms()
    }

    /// Takes the keys and the clock skew of `config` (a reload): tokens are signed with its
    /// signing key and accepted with any of its keys from now on.
    pub(crate) fn reload_keys(&self, config: &ConsistencyConfig) {
        self.signer.store(Arc::new(signer(config)));
    }

    /// The tokens a request carries: its header when not empty, else every cookie of the
    /// token's name (a browser sends one per matching `Path`).
    pub(crate) fn carried<'a>(&'a self, headers: &'a HeaderMap) -> impl Iterator<Item = &'a str> {
        let header = headers
            .get(&self.header_name)
            .map(|value| value.to_str().unwrap_or("\u{0}"))
            .filter(|text| !text.trim().is_empty());
        let cookies = header.is_none().then(|| {
            headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|cookies| cookie_values(cookies, &self.cookie_name))
        });
        header.into_iter().chain(cookies.into_iter().flatten())
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

/// The signer `config` asks for: its signing key (a random one of this process's when it has
/// none) and every key it accepts, with its clock skew.
fn signer(config: &ConsistencyConfig) -> Signer {
    let signer = match &config.signing_key {
        Some(key) => {
            let accepted: Vec<&[u8]> = config
                .accepted_keys()
                .skip(1)
                .map(|k| k.0.as_bytes())
                .collect();
            Signer::new(key.0.as_bytes(), &accepted)
        }
        None => Signer::random(),
    };
    signer.with_skew(config.clock_skew)
}

/// The values of cookie `name` in a `Cookie` header, in order (unquoted).
pub(crate) fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    Cookie::split_parse(header)
        .filter_map(Result::ok)
        .filter(move |cookie| cookie.name_raw() == Some(name))
        .filter_map(|cookie| cookie.value_raw())
        .map(|value| value.trim_matches('"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; rwsplit_consistency=1.abc; rwsplit_consistency_x=2; b=\"q\"";
        let values = |header, name| cookie_values(header, name).collect::<Vec<_>>();
        assert_eq!(values(header, "rwsplit_consistency"), ["1.abc"]);
        assert_eq!(values(header, "b"), ["q"]);
        assert!(values(header, "missing").is_empty());
        assert!(values(";;=;x", "x").is_empty());
        assert!(values("", "x").is_empty());
        assert_eq!(values("t=1; u=2; t=3", "t"), ["1", "3"]);
    }

    #[test]
    fn a_request_carries_its_header_else_every_cookie() {
        let sticky = Sticky::new(&ConsistencyConfig::lsn(), Duration::from_secs(15));
        let carried = |pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            sticky
                .carried(&headers)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let cookies = (
            "cookie",
            "rwsplit_consistency=a; x=1; rwsplit_consistency=b",
        );
        assert_eq!(carried(&[cookies]), ["a", "b"]);
        assert_eq!(carried(&[("x-db-consistency", "h"), cookies]), ["h"]);
        // An empty header (a client that forwards what it has, nothing yet) leaves the cookies.
        assert_eq!(carried(&[("x-db-consistency", ""), cookies]), ["a", "b"]);
        assert_eq!(carried(&[("x-db-consistency", " "), cookies]), ["a", "b"]);
        assert!(carried(&[]).is_empty());
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
            for value in cookie_values(&header, &name) {
                prop_assert!(header.contains(value));
            }
        }
    }
}
