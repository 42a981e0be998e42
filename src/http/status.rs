//! The status endpoint: the registry's state as JSON, for operators. A plain axum handler that
//! you mount where you want, behind your own authentication.
//!
//! ```
//! use axum::{Router, routing::get};
//! use rwsplit::{Config, Registry, RwSplitLayer, status};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = Registry::connect_lazy(Config::new("127.0.0.1").password("hunter2"))?;
//! let app = Router::new()
//!     .route("/db/status", get(status))
//!     .layer(RwSplitLayer::new(registry.clone()))
//!     .with_state(registry);
//!
//! let response = app.oneshot(http::Request::get("/db/status").body(axum::body::Body::empty())?).await?;
//! let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
//! let json: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(json["primary"]["name"], "primary");
//! assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
//! # Ok(())
//! # }
//! ```
//!
//! The body:
//!
//! ```json
//! {
//!   "separation": true,
//!   "read_replica_share": 100,
//!   "primary_read_weight": 0, "primary_reads": false, "load_balancing": "roundRobin",
//!   "roles": "observed",
//!   "groups": [{ "name": "analytics", "fallback": "replicas", "in_rotation": 1 }],
//!   "primary": { "name": "primary", "member": "10.0.0.10:5432", "address": "10.0.0.10:5432",
//!                "healthy": true, "timeline": 1, "system_identifier": "7302...", ... },
//!   "replicas": [
//!     { "name": "replica1", "address": "10.0.0.11:5432", "weight": 2, "group": null,
//!       "healthy": true,
//!       "state": "serving", "in_rotation": true, "lag_seconds": 0.0, "lag_bytes": 0,
//!       "timeline": 1, "system_identifier": "7302...",
//!       "last_check": "2026-11-22T07:00:00.123Z", "last_success": "...", "last_error": null,
//!       "pool": { "size": 4, "idle": 3, "in_use": 1, "max": 10 },
//!       "outstanding": 1, "latency_ms": null,
//!       "capabilities": ["insert_position", "wal_file", "receive_position", "..."],
//!       "missing_capabilities": ["system_identifier"], "read_only": "startup option",
//!       "stream_name": "replica1", "positions_from_primary": true }
//!   ]
//! }
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, header};
use serde_json::{Value, json};

use crate::registry::{Registry, ServerStatus};

/// Answers with the registry's state as JSON: separation, the primary, and each replica's
/// address (never credentials), weight, health, rotation, lag in seconds and bytes, timeline
/// and system identifier, last check, last success, last error, pool use, work outstanding
/// and latency estimate, the monitoring capabilities this role has and lacks there, and how
/// its sessions are kept read-only. The primary also names the configured server (`member`)
/// that takes the writes now.
pub async fn status(State(registry): State<Registry>) -> Response {
    let status = registry.status();
    let mut primary = server(&status.primary);
    primary["member"] = json!(status.primary_member);
    let body = json!({
        "separation": status.separation,
        "read_replica_share": status.read_replica_share,
        "primary_read_weight": status.primary_read_weight,
        "primary_reads": status.primary_reads,
        "load_balancing": status.load_balancing,
        "roles": status.roles,
        "groups": status.groups.iter().map(|g| json!({
            "name": g.name,
            "fallback": g.fallback,
            "in_rotation": g.in_rotation,
        })).collect::<Vec<_>>(),
        "primary": primary,
        "replicas": status.replicas.iter().map(server).collect::<Vec<_>>(),
    });
    let mut response = body.to_string().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn server(s: &ServerStatus) -> Value {
    json!({
        "name": s.name,
        "address": s.address,
        "weight": s.weight,
        "group": s.group,
        "healthy": s.healthy,
        "state": s.state,
        "in_rotation": s.in_rotation,
        "lag_seconds": s.lag.filter(|l| l.as_secs() < u64::from(u32::MAX)).map(|l| l.as_secs_f64()),
        "lag_bytes": s.lag_bytes,
        "timeline": s.timeline,
        // A 64-bit identifier: a string, which every JSON reader keeps exact.
        "system_identifier": s.system_identifier.map(|id| id.to_string()),
        "last_check": s.last_check.map(rfc3339),
        "last_success": s.last_success.map(rfc3339),
        "last_error": s.last_error,
        "pool": {
            "size": s.pool_size,
            "idle": s.pool_idle,
            "in_use": s.pool_size - s.pool_idle,
            "max": s.pool_max,
        },
        "outstanding": s.outstanding,
        "latency_ms": s.latency.map(|l| l.as_secs_f64() * 1000.0),
        "capabilities": s.capabilities,
        "missing_capabilities": s.missing_capabilities,
        "read_only": s.read_only,
        "stream_name": s.stream_name,
        "positions_from_primary": s.positions_from_primary,
    })
}

/// `2026-11-22T07:00:00.123Z`, from the civil-from-days algorithm (no date crate needed).
fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_331_696_789);
        assert_eq!(rfc3339(t), "2026-11-22T07:14:56.789Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
