//! Replicas that stop answering the reads sent to them.
//!
//! A replica's pool hands out a connection used lately without a ping (`server/idle.rs`), so
//! reads can be sent to a replica that has just frozen or dropped off the network. They would
//! wait for an answer as long as TCP keeps trying, and the next check may be
//! `healthCheckInterval` (30 s) away. [`TICK`] after tick this task looks at each replica in
//! service: one with work out on its connections that for `connectTimeout` has answered none of
//! it and passed no check or probe is suspected, and its probe, on a fresh connection, decides.
//! A replica found unreachable leaves service, and the reads waiting on it that have returned
//! nothing run elsewhere (`query/attempt/unreachable.rs`).
//!
//! It reads atomics only: the request path pays nothing for it. Like the health loop, it holds
//! the registry only while it looks, and ends with it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::{Event, Shared};
use crate::server::State;

/// How often the replicas are looked at.
pub(crate) const TICK: Duration = Duration::from_millis(250);

/// Starts the task.
pub(super) fn spawn(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let mut stop = shared.stopped();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                // Shutdown, or the registry (which owns the sender) was dropped.
                _ = stop.changed() => break,
            }
            let Some(shared) = weak.upgrade() else { break };
            look(&shared);
        }
    });
}

/// Suspects each replica in service that is silent (`Server::silent`).
fn look(shared: &Arc<Shared>) {
    let topology = shared.topology();
    for member in topology.replicas.iter() {
        let server = &member.server;
        if server.state() == State::Serving && server.silent() {
            shared.apply(
                server,
                Event::Suspected {
                    cause: "no_answer",
                    error: &"no answer to its reads within connectTimeout",
                },
            );
        }
    }
}
