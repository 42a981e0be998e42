//! The registry's side of read-your-writes: the primary's position as a token after a write,
//! tokens signed and checked, the position a request's reads must see, and the replicas' replay
//! positions asked when a read with a token finds none known to have its write.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use super::routing::same_timeline;
use super::{Registry, Shared};
use crate::clock::unix_ms;
use crate::config::{Config, StickyMode};
use crate::consistency::{ConsistencyToken, Rounds, Sticky, TokenRejection};
use crate::error::Error;
use crate::health::capabilities::{self, PositionFor};
use crate::health::check::walfile_timeline;
use crate::health::{Capabilities, Capability, settled_position};
use crate::route::Tickets;

/// A replica's replay position, asked when a read with a token finds no replica known to have
/// its write. Marked so that `pg_stat_statements` counts it apart.
const ASK_REPLAY: &str = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8 \
     /* rwsplit replay position */";

/// A token's position when the primary's could not be read: more than any replica has, so
/// its client reads from the primary until the token expires.
pub(crate) const PINNED: u64 = u64::MAX;

/// What read-your-writes keeps in a registry.
#[derive(Debug)]
pub(crate) struct Tokens {
    sticky: Sticky,
    /// `consistency.staleReadsWhenReadOnly`, fixed at start with the rest of `db.consistency`.
    stale_reads: bool,
    /// When the primary's position (`primary.position()`) was last sampled, in Unix ms.
    sampled_ms: AtomicU64,
    /// Replay positions asked of the replicas in rotation, for reads with a token.
    replay_rounds: Rounds<()>,
    /// The primary's position for tokens, when writes share its query.
    token_rounds: Rounds<ConsistencyToken>,
    counters: TokenCounters,
    /// A gradual rollout's draws (a counter of their own, so that they do not skip the
    /// schedule's tickets).
    draws: Tickets,
    /// When a token dated beyond the clock skew was last logged, in Unix ms.
    skew_said_ms: AtomicU64,
    /// Until when (Unix ms) a token this instance issued or honoured may still be carried:
    /// while one may, replica positions are polled at `pollInterval`.
    in_flight_until_ms: AtomicU64,
}

impl Tokens {
    pub(super) fn new(config: &Config) -> Tokens {
        Tokens {
            sticky: Sticky::new(&config.consistency, config.detection_delay()),
            stale_reads: config.consistency.stale_reads_when_read_only,
            sampled_ms: AtomicU64::new(0),
            replay_rounds: Rounds::default(),
            token_rounds: Rounds::default(),
            counters: TokenCounters::default(),
            draws: Tickets::default(),
            skew_said_ms: AtomicU64::new(0),
            in_flight_until_ms: AtomicU64::new(0),
        }
    }

    /// A genuine token came dated `ahead_ms` ahead of this clock, beyond the skew allowed:
    /// counted, and logged at most once a minute.
    fn clocks_disagree(&self, ahead_ms: u64) {
        crate::metrics::token_skewed();
        let now = crate::clock::unix_ms(std::time::SystemTime::now());
        let said = self.skew_said_ms.load(Ordering::Relaxed);
        if now.saturating_sub(said) >= 60_000
            && self
                .skew_said_ms
                .compare_exchange(said, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                ahead_ms,
                skew_ms = self.sticky.skew_ms(),
                "a consistency token is dated {ahead_ms} ms ahead of this instance's clock, \
                 beyond db.consistency.clockSkew: it is honoured from its arrival; synchronise \
                 the instances' clocks (NTP), or raise clockSkew"
            );
        }
    }

    pub(crate) fn sticky(&self) -> &Sticky {
        &self.sticky
    }

    pub(super) fn stale_reads(&self) -> bool {
        self.stale_reads
    }

    /// The next draw of a gradual rollout.
    pub(super) fn draw(&self) -> usize {
        self.draws.next()
    }

    /// Notes a token issued or honoured at `issued_at_ms`: it may be carried until its pin ends.
    fn in_flight(&self, issued_at_ms: u64) {
        let pin = u64::try_from(self.sticky.pin_limit.as_millis()).unwrap_or(u64::MAX);
        let until = issued_at_ms.saturating_add(pin);
        // Most calls find it already that late: a load, not a write, on the request path.
        if self.in_flight_until_ms.load(Ordering::Relaxed) < until {
            self.in_flight_until_ms.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Whether a token this instance issued or honoured may still be carried at `now_ms`.
    pub(super) fn any_in_flight(&self, now_ms: u64) -> bool {
        self.in_flight_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Forgets when the primary was last sampled (the primary moved).
    pub(super) fn forget_samples(&self) {
        self.sampled_ms.store(0, Ordering::Release);
    }
}

impl Registry {
    /// The primary's current WAL position as a token, for code outside HTTP that wrote and
    /// hands the work on (for example to a job, which then uses [`read_after`](Self::read_after)).
    pub async fn consistency_token(&self) -> Result<ConsistencyToken, Error> {
        let shared = &self.shared;
        // By default each write asks on its own: sharing (`shareTokenQueries`) saves queries
        // but makes writes wait for the query in flight.
        let sharing = shared.config().consistency.share_token_queries;
        let token = match sharing {
            None => shared.primary_position().await?,
            Some(gather) => {
                shared
                    .tokens
                    .token_rounds
                    .join(gather, || shared.primary_position())
                    .await?
            }
        };
        shared.observe_primary(token.position(), token.issued_at_ms());
        Ok(token)
    }

    /// Signs `token` for a client, as the layer does after a write.
    pub fn sign_token(&self, token: &ConsistencyToken) -> String {
        self.shared.tokens.sticky.sign(token)
    }

    /// Checks a token from a client: the signature (current or previous key), its age, and
    /// that the primary had reached its position when it was issued. Rejections are counted in
    /// `rwsplit_consistency_tokens_rejected_total`.
    pub fn verify_token(&self, text: &str) -> Result<ConsistencyToken, TokenRejection> {
        let verified = self.check_token(text);
        if let Err(reason) = verified {
            crate::metrics::token_rejected(reason.as_str());
        }
        verified
    }

    /// [`verify_token`](Self::verify_token) without counting rejections.
    fn check_token(&self, text: &str) -> Result<ConsistencyToken, TokenRejection> {
        let shared = &self.shared;
        let tokens = &shared.tokens;
        tokens.sticky.verify(text).and_then(|verified| {
            if verified.ahead_ms > 0 {
                tokens.clocks_disagree(verified.ahead_ms);
            }
            let token = verified.token;
            // A genuine token names a position the primary had reached when it was issued; if
            // a sample taken later (beyond clock skew) is still behind it, it is not genuine.
            // Positions compare within one timeline only.
            let sampled = tokens.sampled_ms.load(Ordering::Acquire);
            let primary = shared.primary();
            // A pinned token names no position (only a key holder can make one).
            let ahead = token.position() != PINNED
                && token.position() > primary.position()
                && same_timeline(token.timeline(), primary.timeline())
                && sampled > token.issued_at_ms().saturating_add(tokens.sticky.skew_ms());
            if ahead && tokens.sticky.mode == StickyMode::Lsn {
                Err(TokenRejection::AheadOfPrimary)
            } else {
                Ok(token)
            }
        })
    }

    /// The position a request's reads must see, from the tokens in `headers` (0 when there
    /// is none, none is valid, or consistency is off; `u64::MAX` inside a time window). Of
    /// several valid tokens (cookies of two paths), the newest counts; rejections are counted
    /// only when none is valid.
    pub(crate) fn required_position(&self, headers: &http::HeaderMap) -> u64 {
        let sticky = &self.shared.tokens.sticky;
        if sticky.mode == StickyMode::Off {
            return 0;
        }
        let mut newest: Option<ConsistencyToken> = None;
        let mut rejected = None;
        for text in sticky.carried(headers) {
            match self.check_token(text) {
                Ok(token) => {
                    if newest.is_none_or(|n| token.issued_at_ms() > n.issued_at_ms()) {
                        newest = Some(token);
                    }
                }
                Err(reason) => {
                    rejected.get_or_insert(reason);
                }
            }
        }
        match (newest, rejected) {
            (Some(token), _) => {
                self.shared.tokens.counters.honoured();
                self.shared.tokens.in_flight(token.issued_at_ms());
                match sticky.mode {
                    StickyMode::Window => u64::MAX,
                    _ => self.shared.token_need(&token),
                }
            }
            (None, Some(reason)) => {
                crate::metrics::token_rejected(reason.as_str());
                0
            }
            (None, None) => 0,
        }
    }

    /// Counts a token issued after a write.
    pub(crate) fn token_issued(&self) {
        self.shared.tokens.counters.issued();
        self.shared.tokens.in_flight(unix_ms(SystemTime::now()));
    }

    pub(crate) fn sticky(&self) -> &Sticky {
        &self.shared.tokens.sticky
    }
}

impl Shared {
    /// The primary's insert position now, as a token. The insert position, not the write
    /// position: it covers a session's commit even with `synchronous_commit = off`, where the
    /// commit record may not be written yet.
    ///
    /// Where this role cannot read the primary's position, the token names no position
    /// ([`PINNED`]): the client reads from the primary until it expires (`maxPin`).
    pub(super) async fn primary_position(&self) -> Result<ConsistencyToken, Error> {
        let primary = self.primary();
        let capabilities = Capabilities::from_stored(primary.capabilities_stored())
            .unwrap_or(Capabilities::POSTGRES);
        let Some(sql) = capabilities.position_query(PositionFor::Token) else {
            return Ok(ConsistencyToken::new(PINNED));
        };
        let row: Result<capabilities::PositionRow, sqlx::Error> =
            capabilities::one_row(&primary.pool, sql).await;
        let (insert, block, segment, walfile, _) = match row {
            Ok(row) => row,
            // Revoked since the last check: the next check finds out again.
            Err(error) if capabilities::is_statements(&error) => {
                return Ok(ConsistencyToken::new(PINNED));
            }
            Err(error) => return Err(Error::database(&primary.name, &primary.address, error)),
        };
        let (block, segment) = (block.unwrap_or(0) as u64, segment.unwrap_or(0) as u64);
        let walfile = walfile.unwrap_or_default();
        let position = settled_position(insert as u64, block, segment);
        let timeline = walfile_timeline(&walfile).unwrap_or(primary.timeline());
        Ok(ConsistencyToken::new(position).on_timeline(timeline))
    }

    /// Asks every replica in rotation for its replay position, in a round shared with every
    /// read waiting meanwhile.
    pub(super) async fn ask_replicas_together(self: &Arc<Self>) {
        let _ = self
            .tokens
            .replay_rounds
            .join(Duration::ZERO, || self.ask_replicas())
            .await;
    }

    /// Asks every replica in rotation for its replay position, on a connection of its pool,
    /// within a poll interval (at most 250 ms). A replica whose pool has every connection in
    /// use is skipped: this never queues behind application reads.
    pub(super) async fn ask_replicas(self: &Arc<Self>) -> Result<(), std::convert::Infallible> {
        let bound = self
            .tokens
            .sticky
            .poll_interval
            .min(Duration::from_millis(250));
        let mut asks = tokio::task::JoinSet::new();
        for (server, _) in &self.topology().rotation.members {
            let can = Capabilities::from_stored(server.capabilities_stored())
                .is_none_or(|c| c.has(Capability::ReplayPosition));
            if server.exhausted() || !can {
                continue;
            }
            let server = std::sync::Arc::clone(server);
            let shared = std::sync::Arc::clone(self);
            asks.spawn(async move {
                let ask = async {
                    let mut conn = server.pool.acquire().await?;
                    capabilities::one_row::<(Option<i64>,)>(&mut *conn, ASK_REPLAY.to_owned()).await
                };
                if let Ok(Ok((Some(position),))) = tokio::time::timeout(bound, ask).await {
                    shared.replayed(&server, position as u64);
                }
            });
        }
        asks.join_all().await;
        Ok(())
    }

    /// The position a replica must have replayed to serve reads after `token`: its position,
    /// or, for a token from another timeline than the primary's (a failover since), more
    /// than any replica has, so that the primary serves them.
    pub(crate) fn token_need(&self, token: &ConsistencyToken) -> u64 {
        match same_timeline(token.timeline(), self.primary().timeline()) {
            true => token.position().max(1),
            false => u64::MAX,
        }
    }

    /// Whether reads compare tokens with replay positions, which then need polling.
    pub(crate) fn polls_positions(&self) -> bool {
        self.topology().config.separation && self.tokens.sticky.mode == StickyMode::Lsn
    }

    /// Records a sample of the primary's position taken at `at_ms` (Unix ms).
    pub(crate) fn observe_primary(&self, position: u64, at_ms: u64) {
        let primary = self.primary();
        // A pinned token's position is no position of the primary's.
        if position != PINNED && position >= primary.position() {
            self.primary_at(&primary, position);
            self.tokens.sampled_ms.fetch_max(at_ms, Ordering::AcqRel);
        }
    }

    /// Records `position`, the primary's just now: for the tokens' plausibility check and in
    /// the history that lag is measured against.
    pub(crate) fn record_primary(&self, position: u64) {
        self.observe_primary(position, unix_ms(SystemTime::now()));
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.record(std::time::Instant::now(), position);
    }
}

/// A registry's token counters, registered on first use and kept.
#[derive(Debug, Default)]
struct TokenCounters {
    issued: std::sync::OnceLock<metrics::Counter>,
    honoured: std::sync::OnceLock<metrics::Counter>,
}

impl TokenCounters {
    fn issued(&self) {
        self.issued
            .get_or_init(|| metrics::counter!(crate::metrics::TOKENS_ISSUED))
            .increment(1);
    }

    fn honoured(&self) {
        self.honoured
            .get_or_init(|| metrics::counter!(crate::metrics::TOKENS_HONOURED))
            .increment(1);
    }
}
