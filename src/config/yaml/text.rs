//! How one scalar of the `db:` block becomes a value: [`Text<T>`] takes the text as written
//! (never YAML's guess at a type), expands its placeholders, then types it with [`FromText`].

use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use sqlx::postgres::PgSslMode;

use super::context::{Failure, expand_scalar, fail};
use crate::config::duration::parse_duration;
use crate::config::{
    GroupFallback, LoadBalancing, MAX_WEIGHT, Promotion, Records, ReplicaReadOnly, Roles, Secret,
    StickyMode,
};

/// A setting read from the text of its scalar: placeholders expanded, then typed by `T`.
pub(super) struct Text<T>(pub(super) T);

/// A type a setting's text becomes.
pub(super) trait FromText: Sized {
    /// What the value must be, for errors.
    const EXPECTED: &'static str;
    /// Whether the text is a secret, never to be shown.
    const SECRET: bool = false;
    fn from_text(text: &str) -> Result<Self, String>;
}

impl<'de, T: FromText> Deserialize<'de> for Text<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = d.deserialize_str(Scalar::<T>(PhantomData))?;
        let text = expand_scalar(&raw).map_err(fail::<T, D::Error>)?;
        T::from_text(&text).map(Text).map_err(|reason| {
            fail::<T, D::Error>(Failure::Invalid {
                value: text,
                reason,
            })
        })
    }
}

/// Takes a scalar as the text written. Anything else is refused with the value shown.
struct Scalar<T>(PhantomData<T>);

impl<'de, T: FromText> Visitor<'de> for Scalar<T> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTED)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

impl FromText for String {
    const EXPECTED: &'static str = "a string";

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl FromText for Secret {
    const EXPECTED: &'static str = "a string";
    const SECRET: bool = true;

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(Secret(text.to_owned()))
    }
}

/// A whole number from `min` to `max`.
fn whole<T: std::str::FromStr + fmt::Display + PartialOrd>(
    text: &str,
    min: T,
    max: T,
) -> Result<T, String> {
    text.trim()
        .parse()
        .ok()
        .filter(|n| *n >= min && *n <= max)
        .ok_or_else(|| format!("must be a whole number from {min} to {max}"))
}

impl FromText for u16 {
    const EXPECTED: &'static str = "a port, 1 to 65535";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 1, u16::MAX)
    }
}

impl FromText for u32 {
    const EXPECTED: &'static str = "a whole number";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, u32::MAX)
    }
}

impl FromText for u64 {
    const EXPECTED: &'static str = "a whole number";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, i64::MAX as u64)
    }
}

impl FromText for usize {
    const EXPECTED: &'static str = "a whole number";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, u32::MAX).map(|n| n as usize)
    }
}

/// `readReplicas[].weight`.
pub(super) struct Weight(pub(super) u32);

impl FromText for Weight {
    const EXPECTED: &'static str = "a weight";

    fn from_text(text: &str) -> Result<Self, String> {
        whole(text, 0, MAX_WEIGHT).map(Weight)
    }
}

/// `readReplicaShare`: a percentage, `50` or `"50%"`.
pub(super) struct Percent(pub(super) u8);

impl FromText for Percent {
    const EXPECTED: &'static str = "a percentage, 0 to 100";

    fn from_text(text: &str) -> Result<Self, String> {
        let number = text.trim().trim_end_matches('%').trim_end();
        match number.parse::<u8>() {
            Ok(n) if n <= 100 => Ok(Percent(n)),
            _ => Err("must be a whole percentage from 0 to 100".to_owned()),
        }
    }
}

impl FromText for bool {
    const EXPECTED: &'static str = "true or false";

    fn from_text(text: &str) -> Result<Self, String> {
        // YAML 1.1's spellings too, as the parsers our users came from read them.
        match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(true),
            "false" | "no" | "off" => Ok(false),
            _ => Err("must be true or false".to_owned()),
        }
    }
}

impl FromText for Duration {
    const EXPECTED: &'static str = "a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text).map_err(|reason| {
            format!(
                "{reason}; a duration is whole seconds (10) or a string such as \"500ms\", \
                 \"10s\", \"2m\""
            )
        })
    }
}

/// `shareTokenQueries`: `off`, or how long a token query gathers writes (`0ms` and up).
pub(super) struct Sharing(pub(super) Option<Duration>);

impl FromText for Sharing {
    const EXPECTED: &'static str = "off or a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "off" | "false" | "no" => Ok(Sharing(None)),
            _ => Duration::from_text(text)
                .map(|d| Sharing(Some(d)))
                .map_err(|reason| format!("`off`, or {reason}")),
        }
    }
}

/// A duration where `0` means "no limit".
pub(super) struct Limit(pub(super) Option<Duration>);

impl FromText for Limit {
    const EXPECTED: &'static str = "a duration";

    fn from_text(text: &str) -> Result<Self, String> {
        Duration::from_text(text).map(|d| Limit((!d.is_zero()).then_some(d)))
    }
}

pub(super) struct SslMode(pub(super) PgSslMode);

impl FromText for SslMode {
    const EXPECTED: &'static str = "a TLS mode";

    fn from_text(text: &str) -> Result<Self, String> {
        text.trim().parse().map(SslMode).map_err(|_| {
            "must be one of disable, allow, prefer, require, verify-ca, verify-full".to_owned()
        })
    }
}

impl FromText for StickyMode {
    const EXPECTED: &'static str = "lsn, window or off";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "lsn" => Ok(StickyMode::Lsn),
            "window" => Ok(StickyMode::Window),
            "off" => Ok(StickyMode::Off),
            _ => Err("must be one of lsn, window, off".to_owned()),
        }
    }
}

impl FromText for Roles {
    const EXPECTED: &'static str = "observed or configured";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "observed" | "auto" => Ok(Roles::Observed),
            "configured" | "fixed" => Ok(Roles::Configured),
            _ => {
                Err("must be observed (follow promotions) or configured (the host only)".to_owned())
            }
        }
    }
}

impl FromText for Records {
    const EXPECTED: &'static str = "A or SRV";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "A" | "a" | "AAAA" | "aaaa" => Ok(Records::Address),
            "SRV" | "srv" => Ok(Records::Service),
            _ => Err("must be A (addresses, at the source's port) or SRV (with ports)".to_owned()),
        }
    }
}

impl FromText for SocketAddr {
    const EXPECTED: &'static str = "an IP address, with a port or not (53)";

    fn from_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        (text.parse::<SocketAddr>())
            .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
            .map_err(|_| "must be an IP address, with a port or not: 127.0.0.1:8600".to_owned())
    }
}

impl FromText for GroupFallback {
    const EXPECTED: &'static str = "replicas, primary, none or a group's name";

    fn from_text(text: &str) -> Result<Self, String> {
        Ok(GroupFallback::parse(text))
    }
}

impl FromText for LoadBalancing {
    const EXPECTED: &'static str = "roundRobin, leastOutstanding or peakEwma";

    fn from_text(text: &str) -> Result<Self, String> {
        LoadBalancing::parse(text).ok_or_else(|| {
            "must be roundRobin (by weight), leastOutstanding (fewest reads in progress) or \
             peakEwma (lowest recent latency of two)"
                .to_owned()
        })
    }
}

impl FromText for Promotion {
    const EXPECTED: &'static str = "confirmed or fenced";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "confirmed" => Ok(Promotion::Confirmed),
            "fenced" => Ok(Promotion::Fenced),
            _ => Err(
                "must be confirmed (writes move once the primary stops being one) or \
                      fenced (at once on a higher timeline; the HA manager fences the old primary)"
                    .to_owned(),
            ),
        }
    }
}

impl FromText for ReplicaReadOnly {
    const EXPECTED: &'static str = "auto, startupOption, sessionSet, transaction or standby";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(ReplicaReadOnly::Auto),
            "startupOption" => Ok(ReplicaReadOnly::StartupOption),
            "sessionSet" => Ok(ReplicaReadOnly::SessionSet),
            "transaction" => Ok(ReplicaReadOnly::Transaction),
            "standby" => Ok(ReplicaReadOnly::Standby),
            _ => Err(
                "must be one of auto, startupOption, sessionSet, transaction, standby".to_owned(),
            ),
        }
    }
}

/// `db.driver`: accepted for the block our users already have; PostgreSQL is the only one.
pub(super) struct Driver;

impl FromText for Driver {
    const EXPECTED: &'static str = "postgresql";

    fn from_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "postgresql" | "postgres" => Ok(Driver),
            _ => Err("rwsplit speaks to PostgreSQL: must be postgresql or postgres".to_owned()),
        }
    }
}
