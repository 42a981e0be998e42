//! Settings of read-your-writes consistency (the `db.consistency` block).

use std::time::Duration;

use http::HeaderName;

use super::{ConfigError, Secret};

/// How reads after a write are kept consistent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StickyMode {
    /// Exact: a client's reads go to the primary until a replica has replayed its last write
    /// (its WAL position). The default.
    Lsn,
    /// Simple: a client's reads go to the primary for a fixed window after each write.
    Window,
    /// None: reads after a write may see a replica that has not replayed it yet.
    Off,
}

/// How reads after a write are kept consistent: the mode, the signing keys of its tokens, and
/// how the tokens travel.
///
/// ```
/// use std::time::Duration;
/// use rwsplit::{Config, ConsistencyConfig};
///
/// let config = Config::new("db.internal")
///     .consistency(
///         ConsistencyConfig::lsn()
///             .signing_key("at least 32 bytes of secret, from the environment")
///             .max_pin(Duration::from_secs(5)),
///     )
///     .validate()?;
/// # let _ = config;
/// # Ok::<(), rwsplit::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConsistencyConfig {
    pub(crate) mode: StickyMode,
    pub(crate) signing_key: Option<Secret>,
    pub(crate) previous_signing_key: Option<Secret>,
    pub(crate) verification_keys: Vec<Secret>,
    pub(crate) clock_skew: Duration,
    pub(crate) window: Duration,
    pub(crate) max_pin: Option<Duration>,
    pub(crate) poll_interval: Duration,
    pub(crate) wait_for_replica: Duration,
    pub(crate) stale_reads_when_read_only: bool,
    pub(crate) share_token_queries: Option<Duration>,
    pub(crate) cookie_name: String,
    pub(crate) header_name: String,
    pub(crate) cookie_secure: bool,
    pub(crate) cookie_path: String,
}

/// The shortest signing key accepted, in bytes: HMAC-SHA256 wants at least its output size.
pub(crate) const MIN_KEY_LEN: usize = 32;

/// The fewest different bytes a key may hold: `aaaa...` is no secret, whatever its length.
const MIN_KEY_BYTES: usize = 8;

/// The largest clock difference between instances that tokens tolerate (`clockSkew`): more
/// means a clock to fix, and would let a token live that much past its `maxPin`.
const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The longest a write may wait for others to share its token query: more delays every write
/// for little.
const MAX_TOKEN_GATHER: Duration = Duration::from_millis(100);

/// The longest a read may wait for a replica to catch up (`waitForReplica`): a request
/// held longer than that is better served by the primary.
const MAX_WAIT_FOR_REPLICA: Duration = Duration::from_secs(60);

impl Default for ConsistencyConfig {
    fn default() -> Self {
        ConsistencyConfig::lsn()
    }
}

impl ConsistencyConfig {
    /// Exact read-your-writes (the default): after a write, the client's reads go to the
    /// primary until a replica has replayed the write's WAL position.
    pub fn lsn() -> Self {
        ConsistencyConfig {
            mode: StickyMode::Lsn,
            signing_key: None,
            previous_signing_key: None,
            verification_keys: Vec::new(),
            clock_skew: Duration::from_secs(1),
            window: Duration::from_secs(2),
            max_pin: None,
            poll_interval: Duration::from_millis(100),
            wait_for_replica: Duration::ZERO,
            stale_reads_when_read_only: false,
            share_token_queries: None,
            cookie_name: "rwsplit_consistency".to_owned(),
            header_name: "x-db-consistency".to_owned(),
            cookie_secure: true,
            cookie_path: "/".to_owned(),
        }
    }

    /// After a write, the client's reads go to the primary for `window`, as Rails and many
    /// frameworks do. Costs no query on writes; pins longer than needed.
    pub fn window(window: Duration) -> Self {
        ConsistencyConfig {
            mode: StickyMode::Window,
            window,
            ..ConsistencyConfig::lsn()
        }
    }

    /// No read-your-writes: no token is issued and reads after a write may miss it.
    pub fn off() -> Self {
        ConsistencyConfig {
            mode: StickyMode::Off,
            ..ConsistencyConfig::lsn()
        }
    }

    /// The key tokens are signed with; at least 32 bytes. App instances that share it honour
    /// each other's tokens. Default: none, and then each process makes a random key of its
    /// own and logs a warning, because its tokens survive neither a restart nor a trip to
    /// another instance.
    pub fn signing_key(mut self, key: impl Into<String>) -> Self {
        self.signing_key = Some(Secret(key.into()));
        self
    }

    /// A former key, still accepted (never used to sign) while clients hold its tokens: the
    /// same as adding it to [`verification_keys`](Self::verification_keys).
    pub fn previous_signing_key(mut self, key: impl Into<String>) -> Self {
        self.previous_signing_key = Some(Secret(key.into()));
        self
    }

    /// Keys whose tokens are accepted besides the signing key's, any number of them; never
    /// used to sign. Rotating the signing key across instances is two steps, each a reload of
    /// every instance: first add the new key here (every instance accepts it, all still sign
    /// with the old one), then make it the signing key and keep the old one here for at least
    /// `maxPin` (an instance not yet switched still accepts the new tokens, and a switched one
    /// the old tokens). Default: none. Reloads apply the keys at once.
    pub fn verification_keys<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.verification_keys = keys.into_iter().map(|k| Secret(k.into())).collect();
        self
    }

    /// How far apart the clocks of the instances that share tokens may be. A token dated up to
    /// this much ahead of this instance's clock is taken as dated; one dated further ahead is
    /// still honoured (a key holder signed it), from its arrival, and counted in
    /// `rwsplit_consistency_tokens_skewed_total` with a warning at most once a minute: a sign to
    /// fix the clocks, or to raise this. Default 1 s; at most 60 s. Reloads apply it at once.
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Longest time a token keeps a client's reads off lagging replicas, counted from the
    /// write; also the cookie's `Max-Age`. (In window mode, the window.)
    ///
    /// A token must be honoured until every replica that lacks its write is out of rotation,
    /// on every instance. A replica that stops replaying leaves rotation at the first position
    /// poll that finds its lag past `replicaLagThreshold`: at most the threshold, two idle
    /// poll intervals (1.25 s: an instance with no token in flight polls that often) and one
    /// health-check timeout after the write (17.5 s with the defaults). That is the default
    /// and the least the registry uses: a shorter `max_pin` is raised to it, with a warning.
    pub fn max_pin(mut self, max_pin: Duration) -> Self {
        self.max_pin = Some(max_pin);
        self
    }

    /// How often the registry refreshes every server's WAL position, which is what a token is
    /// compared with, while it needs them fresh: a token it issued or honoured may still be
    /// carried, a replica is past half its lag threshold or out of service, or a startup
    /// barrier is up. Otherwise it polls every 1.25 s (or this interval, if longer). Default
    /// 100 ms; one small query per server each time.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long a read with a token may wait for a replica to catch up before going to the
    /// primary. Default 0 (go to the primary at once); worth setting a little above
    /// `poll_interval` when the primary is the bottleneck.
    pub fn wait_for_replica(mut self, wait: Duration) -> Self {
        self.wait_for_replica = wait;
        self
    }

    /// While the primary is down (the service is read-only), whether a read that must see the
    /// client's recent write, and finds no replica that has replayed it, is served by a replica
    /// anyway (possibly without that write; its reason is `read_only`). Default `false`: it
    /// fails with `503` and `database_read_only`, because a client that just wrote should not
    /// be shown data without its write.
    pub fn stale_reads_when_read_only(mut self, allowed: bool) -> Self {
        self.stale_reads_when_read_only = allowed;
        self
    }

    /// Lets writes share the query that reads the primary's position for their tokens.
    /// Default: each write asks on its own, which adds one round trip to a write and no wait.
    ///
    /// With `Some(gather)`, one query runs at a time and every write that finishes while it
    /// runs shares the next one (a position read after a commit covers it); before each
    /// query starts, the writes arriving within `gather` join it too. Fewer queries on the
    /// primary, at the cost of waiting: `Some(Duration::ZERO)` shares only what overlaps
    /// (about half the queries under a steady load, and about one more query time per write),
    /// a few milliseconds of `gather` share more. `benches/RESULTS.md` has the numbers. At most
    /// 100 ms. YAML: `shareTokenQueries: 0ms` (or `2ms`); `off` is the default.
    pub fn share_token_queries(mut self, gather: Option<Duration>) -> Self {
        self.share_token_queries = gather;
        self
    }

    /// The cookie that carries the token to browsers. Default `rwsplit_consistency`.
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The response header that carries the token to API clients, which send it back as a
    /// request header of the same name. Default `x-db-consistency`.
    pub fn header_name(mut self, name: impl Into<String>) -> Self {
        self.header_name = name.into();
        self
    }

    /// Whether the cookie is marked `Secure` (sent over HTTPS only). Default `true`.
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.cookie_secure = secure;
        self
    }

    /// The cookie's `Path`. Default `/`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie_path = path.into();
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.check_keys()?;
        self.check_durations()?;
        self.check_carriers()
    }

    fn check_keys(&self) -> Result<(), ConfigError> {
        let named = [
            ("signingKey".to_owned(), &self.signing_key),
            ("previousSigningKey".to_owned(), &self.previous_signing_key),
        ];
        let listed = self
            .verification_keys
            .iter()
            .enumerate()
            .map(|(i, key)| (format!("verificationKeys[{i}]"), key));
        let keys = named
            .iter()
            .filter_map(|(key, secret)| Some((key.clone(), (*secret).as_ref()?)))
            .chain(listed);
        for (key, secret) in keys {
            let bytes = secret.0.as_bytes();
            if bytes.len() < MIN_KEY_LEN {
                return Err(invalid(
                    &key,
                    "[redacted]",
                    &format!(
                        "a signing key is at least {MIN_KEY_LEN} bytes (it has {})",
                        bytes.len()
                    ),
                ));
            }
            let mut seen = [false; 256];
            bytes.iter().for_each(|&b| seen[usize::from(b)] = true);
            if seen.iter().filter(|&&s| s).count() < MIN_KEY_BYTES {
                return Err(invalid(
                    &key,
                    "[redacted]",
                    &format!(
                        "a signing key holds at least {MIN_KEY_BYTES} different bytes: make one \
                         with `openssl rand -base64 48`"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every key tokens are accepted with, the signing key first.
    pub(crate) fn accepted_keys(&self) -> impl Iterator<Item = &Secret> {
        self.signing_key
            .iter()
            .chain(&self.previous_signing_key)
            .chain(&self.verification_keys)
    }

    fn check_durations(&self) -> Result<(), ConfigError> {
        let day = super::MAX_DURATION;
        for (key, duration, max) in [
            ("window", Some(self.window), day),
            ("clockSkew", Some(self.clock_skew), MAX_CLOCK_SKEW),
            ("maxPin", self.max_pin, day),
            ("pollInterval", Some(self.poll_interval), day),
            (
                "waitForReplica",
                Some(self.wait_for_replica),
                MAX_WAIT_FOR_REPLICA,
            ),
            (
                "shareTokenQueries",
                self.share_token_queries,
                MAX_TOKEN_GATHER,
            ),
        ] {
            super::at_most(&format!("db.consistency.{key}"), duration, max)?;
        }
        if self.mode == StickyMode::Window && self.window.is_zero() {
            return Err(invalid("window", "0", "must be more than 0"));
        }
        if self.max_pin.is_some_and(|pin| pin.is_zero()) {
            return Err(invalid("maxPin", "0", "must be more than 0"));
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err(invalid(
                "pollInterval",
                &format!("{:?}", self.poll_interval),
                "must be at least 10ms",
            ));
        }
        Ok(())
    }

    /// The header and the cookie that carry tokens.
    fn check_carriers(&self) -> Result<(), ConfigError> {
        if HeaderName::try_from(self.header_name.as_str()).is_err() {
            return Err(invalid(
                "headerName",
                &self.header_name,
                "not a valid header name",
            ));
        }
        let cookie_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if self.cookie_name.is_empty() || !self.cookie_name.chars().all(cookie_char) {
            return Err(invalid(
                "cookieName",
                &self.cookie_name,
                "not a valid cookie name",
            ));
        }
        if !self.cookie_path.starts_with('/')
            || self.cookie_path.chars().any(|c| c == ';' || c.is_control())
        {
            return Err(invalid(
                "cookiePath",
                &self.cookie_path,
                "must start with `/` and hold no `;`",
            ));
        }
        Ok(())
    }

    /// The pin limit in force: `max_pin`, raised to `detection` (the longest a replica that
    /// lacks a write can stay in rotation; see [`max_pin`](Self::max_pin)).
    pub(crate) fn pin_limit(&self, detection: Duration) -> Duration {
        match self.mode {
            StickyMode::Window => self.window,
            _ => self.max_pin.unwrap_or(detection).max(detection),
        }
    }

    /// The longest a replica that lacks a write stays in rotation after it, when positions
    /// are polled: the lag threshold, then up to two idle polls, the last one as slow as a
    /// check may be.
    pub(crate) fn detection_delay(
        &self,
        lag_threshold: Duration,
        check_timeout: Duration,
    ) -> Duration {
        lag_threshold
            .saturating_add(self.idle_poll_interval().saturating_mul(2))
            .saturating_add(check_timeout)
    }

    /// How often positions are polled while nothing needs them fresh: [`IDLE_POLL_INTERVAL`],
    /// or `pollInterval` if longer.
    pub(crate) fn idle_poll_interval(&self) -> Duration {
        self.poll_interval.max(IDLE_POLL_INTERVAL)
    }
}

/// The longest between two position polls of an instance with nothing that needs them fresh
/// (they come every 1 to 1.25 s, spread at random): about one statement a second per server
/// per instance, however many instances run.
pub(crate) const IDLE_POLL_INTERVAL: Duration = Duration::from_millis(1250);

/// A value refused at `db.consistency.<key>`.
fn invalid(key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key: format!("db.consistency.{key}"),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}
