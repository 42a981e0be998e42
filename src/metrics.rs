//! Metric names, their descriptions and the helpers that record them, through the `metrics`
//! facade only: rwsplit never installs a recorder. Install one (for example
//! `metrics-exporter-prometheus`) in your application to collect them.
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `rwsplit_consistency_tokens_issued_total` | counter | | tokens issued after writes |
//! | `rwsplit_consistency_tokens_honoured_total` | counter | | valid tokens applied to a request |
//! | `rwsplit_consistency_tokens_rejected_total` | counter | `reason` | tokens ignored, by [`TokenRejection`](crate::TokenRejection) |
//!
//! ```
//! use metrics_util::debugging::DebuggingRecorder;
//! use rwsplit::{Config, Registry};
//!
//! let recorder = DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! metrics::with_local_recorder(&recorder, || {
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//!     runtime.block_on(async {
//!         let registry = Registry::connect_lazy(Config::new("127.0.0.1")).unwrap();
//!         assert!(registry.verify_token("not a token").is_err());
//!     });
//! });
//! let rejected = snapshotter
//!     .snapshot()
//!     .into_vec()
//!     .into_iter()
//!     .any(|(key, ..)| key.key().name() == "rwsplit_consistency_tokens_rejected_total");
//! assert!(rejected);
//! ```

use metrics::{Unit, counter, describe_counter};

use crate::consistency::TokenRejection;

/// Tokens issued after writes.
pub(crate) const TOKENS_ISSUED: &str = "rwsplit_consistency_tokens_issued_total";
/// Valid tokens applied to a request.
pub(crate) const TOKENS_HONOURED: &str = "rwsplit_consistency_tokens_honoured_total";
/// Tokens ignored, by reason.
pub(crate) const TOKENS_REJECTED: &str = "rwsplit_consistency_tokens_rejected_total";

/// Describes every metric to the installed recorder (once per registry; cheap).
pub(crate) fn describe() {
    describe_counter!(
        TOKENS_ISSUED,
        Unit::Count,
        "Consistency tokens issued after writes."
    );
    describe_counter!(
        TOKENS_HONOURED,
        Unit::Count,
        "Valid consistency tokens applied to a request's reads."
    );
    describe_counter!(
        TOKENS_REJECTED,
        Unit::Count,
        "Consistency tokens ignored (treated as absent), by reason."
    );
}

pub(crate) fn token_issued() {
    counter!(TOKENS_ISSUED).increment(1);
}

pub(crate) fn token_honoured() {
    counter!(TOKENS_HONOURED).increment(1);
}

pub(crate) fn token_rejected(reason: TokenRejection) {
    counter!(TOKENS_REJECTED, "reason" => reason.as_str()).increment(1);
}
