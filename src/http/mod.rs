//! The HTTP edge: the [`RwSplitLayer`] that computes each request's intent once and puts it
//! into the request's extensions (and the consistency token on the response), the
//! [`DbRead`](crate::DbRead)/[`DbWrite`](crate::DbWrite) extractors that take it from there,
//! the per-route [`RouteOverride`], and the [`status`] endpoint.

mod extract;
mod layer;
mod route_override;
mod status;

pub use extract::DbRejection;
pub use layer::{ResponseFuture, RwSplit, RwSplitLayer, TARGET_HEADER};
pub use route_override::{RouteOverride, RouteOverrideService};
pub use status::status;
