//! Measuring and judging servers, holding nothing: the [`check`] that asks a server its role,
//! positions and identity (with the [`capabilities`] its role has), the pure [`verdict`] on
//! what it saw, replication [`lag`] in bytes and time, who may take the writes ([`roles`],
//! pure), replicas' positions as the primary reports them ([`standby`]), and whether a server
//! refuses connections at all ([`reach`]). The registry runs the
//! checks, keeps what they found, and acts on it.

pub(crate) mod capabilities;
pub(crate) mod check;
pub(crate) mod lag;
pub(crate) mod reach;
pub(crate) mod roles;
pub(crate) mod standby;
pub(crate) mod verdict;

pub(crate) use capabilities::{Capabilities, Capability};
pub(crate) use check::{Checker, Observation};
pub(crate) use lag::{Lag, PrimaryHistory, settled_position};
pub(crate) use verdict::{Source, Verdict};
