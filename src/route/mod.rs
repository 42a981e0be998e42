//! Routing as data, lowest in the crate and pure: the [`intent`] of a request (read or write,
//! and why), the [`decide`] function that turns an intent and what is known of each server
//! into a server (a replica, the primary, or nobody), the weighted [`schedule`] of replicas,
//! how a read's server is chosen with it ([`balance`]), the [`share`]s of reads (the
//! primary's, a rollout's), and the [`subset`] of replicas an instance connects to. Nothing here does I/O or
//! holds a server; the registry feeds it.

pub(crate) mod balance;
pub(crate) mod decide;
pub(crate) mod intent;
pub(crate) mod schedule;
pub(crate) mod share;
pub(crate) mod subset;

pub(crate) use decide::{Ask, Decision, Seen, decide};
pub use intent::{MethodPolicy, Reason, Role, RouteIntent, RoutePolicy};
pub(crate) use schedule::{Schedule, Tickets};
pub(crate) use share::{admits, primary_takes};
