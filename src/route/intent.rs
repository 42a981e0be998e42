//! The route intent: whether a request reads or writes, and why. This file computes every
//! intent: the layer's (the policy, separation off, a client's token), a
//! [`RouteOverride`](crate::RouteOverride)'s and a [`DbWrite`](crate::DbWrite)'s; which server
//! serves it is [`decide`](super::decide)'s.
//!
//! The [`RwSplitLayer`](crate::RwSplitLayer) asks a [`RoutePolicy`] for each request's
//! [`RouteIntent`] and puts it into the request's state (its extensions), where the
//! [`DbRead`](crate::DbRead) extractor and the handler's own code (`intent: RouteIntent`) find it. The default
//! policy, [`MethodPolicy`], reads on GET, HEAD and OPTIONS and writes on everything else.
//!
//! ```
//! use http::Request;
//! use rwsplit::{MethodPolicy, Reason, RouteIntent, RoutePolicy};
//!
//! let get = Request::get("/items").body(()).unwrap();
//! assert_eq!(MethodPolicy.decide(&get), RouteIntent::read(Reason::Method));
//!
//! // A policy of your own: reads under /reports always see the primary.
//! let policy = |request: &http::request::Parts| {
//!     if request.uri.path().starts_with("/reports") {
//!         RouteIntent::write(Reason::Policy)
//!     } else {
//!         RouteIntent::from_method(&request.method)
//!     }
//! };
//! let report = Request::get("/reports/daily").body(()).unwrap();
//! assert!(policy.decide(&report).is_write());
//! ```

use http::{Method, Request};

/// Which kind of server a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A read replica may serve it (the primary does when no replica can).
    Read,
    /// Only the primary may serve it.
    Write,
}

/// Why a request got its role. Shows in logs and metrics as a low-cardinality label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Decided by the HTTP method.
    Method,
    /// Decided by a [`RouteOverride`](crate::RouteOverride) on the route.
    Override,
    /// Decided by a custom [`RoutePolicy`].
    Policy,
    /// Read/write separation is disabled: everything uses the primary.
    Disabled,
    /// The client wrote recently and no replica has caught up with that write yet.
    Sticky,
    /// A read that no replica could serve, so the primary did.
    Fallback,
    /// A read that should have gone to the primary (the client wrote recently), served by a
    /// replica because the primary is down and
    /// [`stale_reads_when_read_only`](crate::ConsistencyConfig::stale_reads_when_read_only)
    /// allows it.
    ReadOnly,
    /// Asked for directly through [`Registry::read`](crate::Registry::read) or
    /// [`Registry::write`](crate::Registry::write), outside any request.
    Direct,
    /// A read that nothing in service could serve (no replica in rotation, the primary
    /// down), tried on a replica out of service for being unreachable rather than refused
    /// untried.
    LastResort,
    /// A read that a replica could have served, kept on the primary by a gradual rollout
    /// (`readReplicaShare` under 100 %).
    Rollout,
    /// A read kept on the primary because no replica in rotation has replayed what the
    /// primary had when [`Registry::wait_for_replicas`](crate::Registry::wait_for_replicas) was
    /// called (after startup migrations).
    Barrier,
    /// A read without a token served by the least-lagging replica while every replica lags
    /// past `replicaLagThreshold`, its lag under `replicaMaxStaleness`: the primary is kept
    /// for the writes and for the reads that must see them.
    Stale,
}

impl Role {
    /// `"read"` or `"write"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }

    /// How many roles there are, for tables indexed by [`index`](Self::index).
    pub(crate) const COUNT: usize = 2;

    /// A dense index, `0..COUNT`.
    pub(crate) const fn index(self) -> usize {
        match self {
            Role::Read => 0,
            Role::Write => 1,
        }
    }
}

impl Reason {
    /// How many reasons there are, for tables indexed by [`index`](Self::index).
    pub(crate) const COUNT: usize = 12;

    /// The reason at `index` (see [`index`](Self::index)).
    pub(crate) const fn from_index(index: usize) -> Reason {
        match index {
            0 => Reason::Method,
            1 => Reason::Override,
            2 => Reason::Policy,
            3 => Reason::Disabled,
            4 => Reason::Sticky,
            5 => Reason::Fallback,
            6 => Reason::ReadOnly,
            7 => Reason::Direct,
            8 => Reason::LastResort,
            9 => Reason::Rollout,
            10 => Reason::Barrier,
            _ => Reason::Stale,
        }
    }

    /// A dense index, `0..COUNT`.
    pub(crate) const fn index(self) -> usize {
        match self {
            Reason::Method => 0,
            Reason::Override => 1,
            Reason::Policy => 2,
            Reason::Disabled => 3,
            Reason::Sticky => 4,
            Reason::Fallback => 5,
            Reason::ReadOnly => 6,
            Reason::Direct => 7,
            Reason::LastResort => 8,
            Reason::Rollout => 9,
            Reason::Barrier => 10,
            Reason::Stale => 11,
        }
    }

    /// The reason as a lowercase label: `method`, `override`, `policy`, `disabled`, `sticky`,
    /// `fallback`, `read_only`, `direct`, `last_resort`, `rollout`, `barrier`, `stale`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Method => "method",
            Reason::Override => "override",
            Reason::Policy => "policy",
            Reason::Disabled => "disabled",
            Reason::Sticky => "sticky",
            Reason::Fallback => "fallback",
            Reason::ReadOnly => "read_only",
            Reason::Direct => "direct",
            Reason::LastResort => "last_resort",
            Reason::Rollout => "rollout",
            Reason::Barrier => "barrier",
            Reason::Stale => "stale",
        }
    }
}

/// The decision for one request: its [`Role`] and the [`Reason`] for it.
///
/// Every request that passed through [`RwSplitLayer`](crate::RwSplitLayer) has one: a handler
/// that wants to know takes it as an extractor (`intent: RouteIntent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteIntent {
    role: Role,
    reason: Reason,
    /// The WAL position a replica must have replayed to serve this request's reads: 0 for
    /// any, `u64::MAX` for none (time-window stickiness).
    min_position: u64,
    /// The replica group its reads ask for (`RouteOverride::replica_group`,
    /// `Registry::read_from`); `None`: the replicas of no group.
    group: Option<&'static str>,
}

impl RouteIntent {
    /// A read, for `reason`.
    pub const fn read(reason: Reason) -> RouteIntent {
        RouteIntent {
            role: Role::Read,
            reason,
            min_position: 0,
            group: None,
        }
    }

    /// A write, for `reason`.
    pub const fn write(reason: Reason) -> RouteIntent {
        RouteIntent {
            role: Role::Write,
            reason,
            min_position: 0,
            group: None,
        }
    }

    /// The default decision for a method: GET, HEAD and OPTIONS read; every other method,
    /// including ones this crate has never heard of, writes.
    pub fn from_method(method: &Method) -> RouteIntent {
        if is_read_method(method) {
            RouteIntent::read(Reason::Method)
        } else {
            RouteIntent::write(Reason::Method)
        }
    }

    /// The role.
    pub const fn role(self) -> Role {
        self.role
    }

    /// The reason.
    pub const fn reason(self) -> Reason {
        self.reason
    }

    /// The WAL position a replica must have replayed before it may serve this request's reads,
    /// when the client sent a valid consistency token after a write. `None`: any replica in
    /// rotation will do.
    pub const fn min_position(self) -> Option<u64> {
        if self.min_position == 0 {
            None
        } else {
            Some(self.min_position)
        }
    }

    /// The same intent with another role and reason, keeping its consistency requirement.
    pub(crate) const fn with(self, role: Role, reason: Reason) -> RouteIntent {
        RouteIntent {
            role,
            reason,
            min_position: self.min_position,
            group: self.group,
        }
    }

    /// The same intent, its reads for the replica group `group` (`None`: no group).
    pub(crate) const fn for_group(self, group: Option<&'static str>) -> RouteIntent {
        RouteIntent { group, ..self }
    }

    /// The replica group this request's reads ask for, if any
    /// ([`RouteOverride::replica_group`](crate::RouteOverride::replica_group)).
    pub const fn group(&self) -> Option<&'static str> {
        self.group
    }

    pub(crate) const fn requiring(self, min_position: u64) -> RouteIntent {
        RouteIntent {
            min_position,
            ..self
        }
    }

    /// A request's intent: its policy's decision (a write while separation is off), needing
    /// the position its client's token names (`required` is asked only when it may matter).
    pub(crate) fn of_request<P: RoutePolicy, B>(
        policy: &P,
        request: &Request<B>,
        separation: bool,
        required: impl FnOnce() -> u64,
    ) -> RouteIntent {
        if !separation {
            return RouteIntent::write(Reason::Disabled);
        }
        let intent = policy.decide(request);
        match required() {
            0 => intent,
            position => intent.requiring(position),
        }
    }

    /// The intent a [`RouteOverride`](crate::RouteOverride) to `role` leaves: the role, for
    /// reason `override`; with separation off, nothing changes (everything is the primary's).
    pub(crate) const fn overridden(self, role: Role) -> RouteIntent {
        match self.reason {
            Reason::Disabled => self,
            _ => self.with(role, Reason::Override),
        }
    }

    /// The intent of a [`DbWrite`](crate::DbWrite) taken for a request of this intent: a
    /// write; on a read route, one the handler asked for (`override`).
    pub(crate) const fn for_writing(self) -> RouteIntent {
        match self.role {
            Role::Write => self,
            Role::Read => RouteIntent::write(Reason::Override),
        }
    }

    /// The intent packed in two words, for a request's state to keep in atomics: role and
    /// reason, and the position. A group travels beside it, in the request's extensions.
    pub(crate) const fn packed(self) -> (u8, u64) {
        let role = match self.role {
            Role::Read => 0,
            Role::Write => 1,
        };
        ((role << 4) | self.reason.index() as u8, self.min_position)
    }

    /// The intent [`packed`](Self::packed) made of.
    pub(crate) const fn unpacked(kind: u8, min_position: u64) -> RouteIntent {
        RouteIntent {
            role: match kind >> 4 {
                0 => Role::Read,
                _ => Role::Write,
            },
            reason: Reason::from_index((kind & 0x0f) as usize),
            min_position,
            group: None,
        }
    }

    /// This intent as `rwsplit_route_decisions_total` counts it.
    pub(crate) fn decision(self) -> crate::metrics::Decision {
        crate::metrics::Decision {
            slot: self.role.index() * Reason::COUNT + self.reason.index(),
            role: self.role.as_str(),
            reason: self.reason.as_str(),
        }
    }

    /// Whether a replica may serve this request.
    pub const fn is_read(self) -> bool {
        matches!(self.role, Role::Read)
    }

    /// Whether only the primary may serve this request.
    pub const fn is_write(self) -> bool {
        matches!(self.role, Role::Write)
    }
}

// Every (role, reason) pair has a counter of its own.
const _: () = assert!(Role::COUNT * Reason::COUNT <= crate::metrics::DECISIONS);

fn is_read_method(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD || *method == Method::OPTIONS
}

/// Decides the [`RouteIntent`] of a request from its head (method, URI, headers, extensions).
///
/// Implemented by [`MethodPolicy`] and by any
/// `Fn(&http::request::Parts) -> RouteIntent + Clone + Send + Sync + 'static`. The layer
/// calls it once per request, before the inner service, and it must not block. A
/// [`RouteOverride`](crate::RouteOverride) on a route still wins over what it decides.
pub trait RoutePolicy: Clone + Send + Sync + 'static {
    /// The intent for a request.
    fn decide<B>(&self, request: &Request<B>) -> RouteIntent;
}

/// The default policy: GET, HEAD and OPTIONS read, everything else writes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodPolicy;

impl RoutePolicy for MethodPolicy {
    fn decide<B>(&self, request: &Request<B>) -> RouteIntent {
        RouteIntent::from_method(request.method())
    }
}

impl<F> RoutePolicy for F
where
    F: Fn(&http::request::Parts) -> RouteIntent + Clone + Send + Sync + 'static,
{
    fn decide<B>(&self, request: &Request<B>) -> RouteIntent {
        // A `Parts` cannot be borrowed out of a `Request`, so the closure sees a copy of the
        // head without the extensions. Custom policies are opt-in, and this cost is theirs.
        let mut head = Request::new(());
        *head.method_mut() = request.method().clone();
        *head.uri_mut() = request.uri().clone();
        *head.version_mut() = request.version();
        *head.headers_mut() = request.headers().clone();
        let (parts, ()) = head.into_parts();
        self(&parts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods_read_and_everything_else_writes() {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(RouteIntent::from_method(&method).is_read(), "{method}");
        }
        let custom = Method::from_bytes(b"PURGE").unwrap();
        for method in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::TRACE,
            Method::CONNECT,
            custom,
        ] {
            let intent = RouteIntent::from_method(&method);
            assert!(intent.is_write(), "{method}");
            assert_eq!(intent.reason(), Reason::Method);
        }
    }

    #[test]
    fn overrides_and_writes_change_the_intent_unless_separation_is_off() {
        let read = RouteIntent::read(Reason::Method).requiring(42);
        assert_eq!(
            read.overridden(Role::Write),
            RouteIntent::write(Reason::Override).requiring(42)
        );
        let off = RouteIntent::write(Reason::Disabled);
        assert_eq!(off.overridden(Role::Read), off);
        assert_eq!(read.for_writing(), RouteIntent::write(Reason::Override));
        let write = RouteIntent::write(Reason::Method);
        assert_eq!(write.for_writing(), write);

        let get = Request::get("/").body(()).unwrap();
        let asked = std::cell::Cell::new(false);
        let token = || {
            asked.set(true);
            7
        };
        assert_eq!(
            RouteIntent::of_request(&MethodPolicy, &get, false, token),
            RouteIntent::write(Reason::Disabled)
        );
        assert!(!asked.get(), "no token is read while separation is off");
        assert_eq!(
            RouteIntent::of_request(&MethodPolicy, &get, true, token).min_position(),
            Some(7)
        );
    }

    #[test]
    fn every_intent_packs_and_unpacks_unchanged() {
        for role in [Role::Read, Role::Write] {
            for index in 0..Reason::COUNT {
                let reason = Reason::from_index(index);
                assert_eq!(reason.index(), index);
                for position in [0, 1, u64::MAX] {
                    let intent = RouteIntent::read(reason)
                        .with(role, reason)
                        .requiring(position);
                    let (kind, min) = intent.packed();
                    assert_eq!(RouteIntent::unpacked(kind, min), intent);
                }
            }
        }
    }

    #[test]
    fn closures_are_policies() {
        let policy = |parts: &http::request::Parts| {
            if parts.headers.contains_key("x-fresh") {
                RouteIntent::write(Reason::Policy)
            } else {
                RouteIntent::from_method(&parts.method)
            }
        };
        let plain = Request::get("/").body(()).unwrap();
        let fresh = Request::get("/").header("x-fresh", "1").body(()).unwrap();
        assert!(policy.decide(&plain).is_read());
        assert_eq!(policy.decide(&fresh), RouteIntent::write(Reason::Policy));
    }
}
