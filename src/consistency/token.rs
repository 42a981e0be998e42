//! The consistency token: a write's WAL position, its issue time and timeline, and the signer
//! that turns it into the text clients carry and checks what they send back.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::clock::unix_ms;

/// The primary's WAL position after a write, and when it was taken.
///
/// Serializable so that it can travel with a job; see the [module docs](crate::ConsistencyToken).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsistencyToken {
    position: u64,
    issued_at_ms: u64,
    /// The primary's timeline when the token was taken; 0 when not known (a token made with
    /// [`new`](Self::new), or carried from an older release).
    #[serde(default)]
    timeline: u32,
}

impl ConsistencyToken {
    /// A token for WAL `position` (bytes since `0/0`, as `pg_wal_lsn_diff(lsn, '0/0')`),
    /// issued now.
    pub fn new(position: u64) -> ConsistencyToken {
        ConsistencyToken::at(position, SystemTime::now())
    }

    /// A token for `position`, issued at `issued_at`.
    pub fn at(position: u64, issued_at: SystemTime) -> ConsistencyToken {
        ConsistencyToken {
            position,
            issued_at_ms: unix_ms(issued_at),
            timeline: 0,
        }
    }

    /// The same token, taken on the primary's `timeline` (as `pg_walfile_name` numbers it).
    /// A token from a timeline the primary has left (a failover since) is read on the primary,
    /// never on a replica whose position merely looks high enough; the registry's tokens
    /// always carry it.
    pub fn on_timeline(mut self, timeline: u32) -> ConsistencyToken {
        self.timeline = timeline;
        self
    }

    /// The timeline the token was taken on (0: not known).
    pub fn timeline(&self) -> u32 {
        self.timeline
    }

    /// The WAL position a replica must have replayed to serve reads after this write.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// When the token was issued.
    pub fn issued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.issued_at_ms)
    }

    pub(crate) fn issued_at_ms(&self) -> u64 {
        self.issued_at_ms
    }
}

/// Why a token was ignored. Each variant is a `reason` label of
/// `rwsplit_consistency_tokens_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Longer than any token rwsplit issues.
    Oversized,
    /// Not a token: wrong version, encoding or length.
    Malformed,
    /// Not signed with the current or the previous key.
    BadSignature,
    /// Issued more than `maxPin` ago.
    Expired,
    /// Issued in the future. No longer returned: a genuine token dated further ahead than
    /// `db.consistency.clockSkew` is honoured from its arrival, and counted in
    /// `rwsplit_consistency_tokens_skewed_total`.
    FromFuture,
    /// Names a position the primary had not reached when the token was issued.
    AheadOfPrimary,
}

impl TokenRejection {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenRejection::Oversized => "oversized",
            TokenRejection::Malformed => "malformed",
            TokenRejection::BadSignature => "bad_signature",
            TokenRejection::Expired => "expired",
            TokenRejection::FromFuture => "from_future",
            TokenRejection::AheadOfPrimary => "ahead_of_primary",
        }
    }
}

impl fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenRejection {}

/// How far apart the clocks of instances sharing tokens may be, unless configured
/// (`clockSkew`): a token issued that much in the future is still accepted.
pub(crate) const DEFAULT_SKEW: Duration = Duration::from_secs(1);

/// Position, issue time and timeline, then the HMAC-SHA256 tag.
const VERSION: &str = "2.";
const PAYLOAD_LEN: usize = 20;
/// Tokens of the previous release (no timeline), still accepted while they live.
const VERSION_1: &str = "1.";
const PAYLOAD_1_LEN: usize = 16;
const TAG_LEN: usize = 32;
/// `2.` plus unpadded base64 of 52 bytes.
pub(crate) const TOKEN_LEN: usize = VERSION.len() + ((PAYLOAD_LEN + TAG_LEN) * 4).div_ceil(3);

/// Signs tokens with one key, and verifies them with that key and any number of others (a key
/// rotation in progress), allowing for instances' clocks that disagree by up to its skew.
pub(crate) struct Signer {
    current: hmac::Key,
    accepted: Vec<hmac::Key>,
    skew_ms: u64,
}

impl Signer {
    /// Signs with `current`; accepts it and every key of `accepted`.
    pub(crate) fn new(current: &[u8], accepted: &[&[u8]]) -> Signer {
        Signer {
            current: hmac::Key::new(hmac::HMAC_SHA256, current),
            accepted: accepted
                .iter()
                .map(|k| hmac::Key::new(hmac::HMAC_SHA256, k))
                .collect(),
            skew_ms: DEFAULT_SKEW.as_millis() as u64,
        }
    }

    /// The same signer, allowing for clocks `skew` apart.
    pub(crate) fn with_skew(mut self, skew: Duration) -> Signer {
        self.skew_ms = u64::try_from(skew.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// How far apart the instances' clocks may be, in milliseconds.
    pub(crate) fn skew_ms(&self) -> u64 {
        self.skew_ms
    }

    /// A signer with a random key of its own, for one process.
    pub(crate) fn random() -> Signer {
        use ring::rand::SecureRandom;
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the operating system's random source works");
        Signer::new(&key, &[])
    }

    pub(crate) fn sign(&self, token: &ConsistencyToken) -> String {
        let mut bytes = [0u8; PAYLOAD_LEN + TAG_LEN];
        bytes[..8].copy_from_slice(&token.position.to_be_bytes());
        bytes[8..16].copy_from_slice(&token.issued_at_ms.to_be_bytes());
        bytes[16..20].copy_from_slice(&token.timeline.to_be_bytes());
        let tag = hmac::sign(&self.current, &bytes[..PAYLOAD_LEN]);
        bytes[PAYLOAD_LEN..].copy_from_slice(tag.as_ref());
        let mut out = String::with_capacity(TOKEN_LEN);
        out.push_str(VERSION);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut out);
        out
    }

    /// Checks the signature and the token's age at `now_ms`; what the primary had reached is
    /// the registry's to check.
    pub(crate) fn verify(
        &self,
        text: &str,
        now_ms: u64,
        max_pin: Duration,
    ) -> Result<Verified, TokenRejection> {
        if text.len() > TOKEN_LEN {
            return Err(TokenRejection::Oversized);
        }
        let (encoded, payload_len) =
            match (text.strip_prefix(VERSION), text.strip_prefix(VERSION_1)) {
                (Some(encoded), _) => (encoded, PAYLOAD_LEN),
                (None, Some(encoded)) => (encoded, PAYLOAD_1_LEN),
                (None, None) => return Err(TokenRejection::Malformed),
            };
        let mut buffer = [0u8; PAYLOAD_LEN + TAG_LEN];
        let bytes = &mut buffer[..payload_len + TAG_LEN];
        match URL_SAFE_NO_PAD.decode_slice(encoded, &mut *bytes) {
            Ok(n) if n == bytes.len() => {}
            _ => return Err(TokenRejection::Malformed),
        }
        let (payload, tag) = bytes.split_at(payload_len);
        let signed = std::iter::once(&self.current)
            .chain(&self.accepted)
            .any(|key| hmac::verify(key, payload, tag).is_ok());
        if !signed {
            return Err(TokenRejection::BadSignature);
        }
        let token = ConsistencyToken {
            position: u64::from_be_bytes(payload[..8].try_into().expect("8 bytes")),
            issued_at_ms: u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes")),
            timeline: payload
                .get(16..20)
                .map_or(0, |t| u32::from_be_bytes(t.try_into().expect("4 bytes"))),
        };
        let mut token = token;
        let ahead_ms = token.issued_at_ms.saturating_sub(now_ms);
        if ahead_ms > self.skew_ms {
            // A key holder signed it, so its write is real: honour it as if issued now (its
            // pin still ends within `max_pin`), and let the caller say the clocks disagree.
            token.issued_at_ms = now_ms;
        }
        let max_pin_ms = u64::try_from(max_pin.as_millis()).unwrap_or(u64::MAX);
        if now_ms > token.issued_at_ms.saturating_add(max_pin_ms) {
            return Err(TokenRejection::Expired);
        }
        Ok(Verified {
            token,
            ahead_ms: if ahead_ms > self.skew_ms { ahead_ms } else { 0 },
        })
    }
}

/// A token that passed [`Signer::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Verified {
    pub(crate) token: ConsistencyToken,
    /// How far ahead of this clock it was dated, when beyond the allowed skew (0 otherwise):
    /// such a token counts from its arrival instead.
    pub(crate) ahead_ms: u64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("accepted_keys", &self.accepted.len())
            .field("skew_ms", &self.skew_ms)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIN: Duration = Duration::from_secs(10);
    const SKEW_MS: u64 = 1_000;

    fn signer() -> Signer {
        Signer::new(b"current key of enough length....", &[])
    }

    fn token(position: u64, issued_at_ms: u64) -> ConsistencyToken {
        ConsistencyToken {
            position,
            issued_at_ms,
            timeline: 3,
        }
    }

    #[test]
    fn tokens_of_the_previous_release_still_verify_without_a_timeline() {
        // A version-1 token: position and issue time, signed, no timeline.
        let mut bytes = [0u8; PAYLOAD_1_LEN + TAG_LEN];
        bytes[..8].copy_from_slice(&42u64.to_be_bytes());
        bytes[8..16].copy_from_slice(&1_000u64.to_be_bytes());
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"current key of enough length....");
        let tag = hmac::sign(&key, &bytes[..PAYLOAD_1_LEN]);
        bytes[PAYLOAD_1_LEN..].copy_from_slice(tag.as_ref());
        let text = format!("{VERSION_1}{}", URL_SAFE_NO_PAD.encode(bytes));
        let token = signer().verify(&text, 1_000, PIN).map(|v| v.token).unwrap();
        assert_eq!((token.position(), token.timeline()), (42, 0));
        // A version-2 token carries its timeline.
        let text = signer().sign(&token.on_timeline(7));
        assert_eq!(
            signer()
                .verify(&text, 1_000, PIN)
                .map(|v| v.token)
                .unwrap()
                .timeline(),
            7
        );
    }

    #[test]
    fn signed_tokens_round_trip_and_have_a_fixed_length() {
        let t = token(0x16_B374_D848, 1_700_000_000_000);
        let text = signer().sign(&t);
        assert_eq!(text.len(), TOKEN_LEN);
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
        assert_eq!(
            signer()
                .verify(&text, t.issued_at_ms + 5, PIN)
                .map(|v| v.token),
            Ok(t)
        );
    }

    #[test]
    fn garbage_truncated_and_oversized_tokens_are_rejected() {
        let text = signer().sign(&token(1, 1000));
        let now = 1000;
        let cases = [
            ("", TokenRejection::Malformed),
            ("garbage", TokenRejection::Malformed),
            ("1.", TokenRejection::Malformed),
            ("2.AAAA", TokenRejection::Malformed),
            (&text[..text.len() - 1], TokenRejection::Malformed),
            (
                "1.!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!",
                TokenRejection::Malformed,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                signer().verify(input, now, PIN).map(|v| v.token),
                Err(expected),
                "{input:?}"
            );
        }
        let long = format!("{text}A");
        assert_eq!(
            signer().verify(&long, now, PIN).map(|v| v.token),
            Err(TokenRejection::Oversized)
        );
        let huge = "A".repeat(100_000);
        assert_eq!(
            signer().verify(&huge, now, PIN).map(|v| v.token),
            Err(TokenRejection::Oversized)
        );
    }

    #[test]
    fn tampering_or_another_key_breaks_the_signature() {
        let text = signer().sign(&token(5, 1000));
        let mut tampered = text.clone().into_bytes();
        tampered[4] = if tampered[4] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            signer().verify(&tampered, 1000, PIN).map(|v| v.token),
            Err(TokenRejection::BadSignature)
        );
        let other = Signer::new(b"another key entirely, also long.", &[]).sign(&token(5, 1000));
        assert_eq!(
            signer().verify(&other, 1000, PIN).map(|v| v.token),
            Err(TokenRejection::BadSignature)
        );
        assert!(
            Signer::random()
                .verify(&text, 1000, PIN)
                .map(|v| v.token)
                .is_err()
        );
    }

    #[test]
    fn the_previous_key_still_verifies_during_rotation() {
        let old = Signer::new(b"the old key, still honoured......", &[]);
        let text = old.sign(&token(9, 1000));
        let rotated = Signer::new(
            b"current key of enough length....",
            &[b"the old key, still honoured......"],
        );
        assert_eq!(
            rotated.verify(&text, 1000, PIN).map(|v| v.token),
            Ok(token(9, 1000))
        );
        // New tokens are signed with the new key.
        assert!(
            old.verify(&rotated.sign(&token(9, 1000)), 1000, PIN)
                .map(|v| v.token)
                .is_err()
        );
    }

    #[test]
    fn tokens_expire_after_max_pin_and_are_honoured_when_dated_beyond_the_skew() {
        let text = signer().sign(&token(1, 100_000));
        assert!(
            signer()
                .verify(&text, 100_000 + 10_000, PIN)
                .map(|v| v.token)
                .is_ok()
        );
        assert_eq!(
            signer()
                .verify(&text, 100_000 + 10_001, PIN)
                .map(|v| v.token),
            Err(TokenRejection::Expired)
        );
        // Dated within the skew: taken as is.
        let within = signer().verify(&text, 100_000 - SKEW_MS, PIN).unwrap();
        assert_eq!((within.token, within.ahead_ms), (token(1, 100_000), 0));
        // Dated beyond it (an instance whose clock runs ahead): still genuine, so honoured,
        // but counted from its arrival, and how far ahead it was is said.
        let now = 100_000 - SKEW_MS - 500;
        let beyond = signer().verify(&text, now, PIN).unwrap();
        assert_eq!(
            (beyond.token, beyond.ahead_ms),
            (token(1, now), SKEW_MS + 500)
        );
        // Once the clock has caught up with its date, it is counted from that date: its pin
        // never lasts past the date plus `maxPin` however far ahead it was signed.
        assert!(signer().verify(&text, now + 10_001, PIN).is_ok());
        assert_eq!(
            signer()
                .verify(&text, 100_000 + 10_001, PIN)
                .map(|v| v.token),
            Err(TokenRejection::Expired)
        );
        // A wider skew takes it as is.
        let wide = signer().with_skew(Duration::from_secs(2));
        assert_eq!(wide.verify(&text, now, PIN).unwrap().ahead_ms, 0);
    }

    #[test]
    fn signer_debug_shows_no_key() {
        let debug = format!(
            "{:?}",
            Signer::new(b"secret-key-material-here........", &[])
        );
        assert!(!debug.contains("secret"), "{debug}");
    }
}

/// Property tests: arbitrary input never panics and never verifies; what we sign always does.
/// `PROPTEST_CASES=100000 cargo test --lib props` runs them longer.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    const PIN: Duration = Duration::from_secs(10);

    fn signer() -> Signer {
        Signer::new(b"current key of enough length....", &[])
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_verifies(text in any::<String>(), now in any::<u64>()) {
            prop_assert!(signer().verify(&text, now, PIN).map(|v| v.token).is_err());
        }

        #[test]
        fn token_shaped_text_never_verifies(
            text in "2\\.[A-Za-z0-9_-]{70}",
            old in "1\\.[A-Za-z0-9_-]{64}",
            now in any::<u64>(),
        ) {
            prop_assert_eq!(text.len(), TOKEN_LEN);
            // The last character's spare bits decide between a bad signature and bad base64.
            let verdict = signer().verify(&text, now, PIN).map(|v| v.token);
            prop_assert!(
                matches!(verdict, Err(TokenRejection::BadSignature | TokenRejection::Malformed)),
                "{verdict:?}"
            );
            prop_assert_eq!(signer().verify(&old, now, PIN).map(|v| v.token), Err(TokenRejection::BadSignature));
        }

        #[test]
        fn random_payloads_of_the_right_size_never_verify(bytes in any::<[u8; 52]>()) {
            let text = format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(bytes));
            prop_assert_eq!(
                signer().verify(&text, 1_000, PIN).map(|v| v.token),
                Err(TokenRejection::BadSignature)
            );
        }

        #[test]
        fn signed_tokens_verify_within_their_pin(
            position in any::<u64>(),
            issued_at_ms in 0u64..u64::MAX / 2,
            age_ms in 0u64..=10_000,
        ) {
            let token = ConsistencyToken { position, issued_at_ms, timeline: 2 };
            let text = signer().sign(&token);
            prop_assert_eq!(text.len(), TOKEN_LEN);
            prop_assert_eq!(signer().verify(&text, issued_at_ms + age_ms, PIN).map(|v| v.token), Ok(token));
        }

        #[test]
        fn any_changed_character_breaks_a_token(
            position in any::<u64>(),
            index in 0usize..TOKEN_LEN,
            replacement in "[A-Za-z0-9_.!-]",
        ) {
            let text = signer().sign(&ConsistencyToken { position, issued_at_ms: 5_000, timeline: 1 });
            let mut changed = text.clone();
            changed.replace_range(index..=index, &replacement);
            prop_assume!(changed != text);
            // 52 bytes take 70 base64 characters; the last one's spare bits must be zero, so
            // changing it breaks the token too.
            prop_assert!(signer().verify(&changed, 5_000, PIN).map(|v| v.token).is_err());
        }

    }
}
