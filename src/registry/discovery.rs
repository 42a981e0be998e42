//! Replicas found by DNS (`db.replicaDiscovery`): each source's name resolved at its interval
//! and on demand ([`Registry::discover`]), with hickory's resolver. An address new to the
//! answer becomes a replica, out of rotation until its first check passes; one that left it
//! takes no new reads at once (weight 0) and is removed after the source's drain delay; a
//! failed lookup keeps the last good answer. Each change is logged once.
//!
//! The loop holds only a `Weak` reference between rounds, as the health loop does.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use tokio::time::Instant;

use super::topology::{Member, Topology};
use super::{Event, Registry, Shared, reload, tasks};
use crate::config::{DiscoveryConfig, Records};

/// How long a registry without sources waits before it looks at its configuration again (a
/// reload may add one).
const IDLE: Duration = Duration::from_secs(5);

/// What discovery keeps between rounds; one round at a time.
#[derive(Default)]
pub(super) struct Discovery {
    state: tokio::sync::Mutex<State>,
    /// Woken when reads found no replica in service: every name is resolved again at once (at
    /// most once a second), in case the replicas moved.
    wanted: Arc<tokio::sync::Notify>,
}

impl Discovery {
    /// Asks for a round now: reads found no replica in service.
    pub(super) fn want(&self) {
        self.wanted.notify_one();
    }
}

#[derive(Default)]
struct State {
    /// Each source's last good answer, by DNS name.
    answers: HashMap<String, Vec<SocketAddr>>,
    /// When each source is due again.
    due: HashMap<String, Instant>,
    /// Sources whose last lookup failed (said once per streak).
    failing: HashSet<String>,
    /// Found replicas that left their answer, and when.
    draining: HashMap<String, Instant>,
    /// A resolver per nameserver (`None`: the system's).
    resolvers: HashMap<Option<SocketAddr>, TokioResolver>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Discovery")
    }
}

impl Registry {
    /// Resolves every `db.replicaDiscovery` name now, as the background loop does at each
    /// source's interval, and applies the answers: new addresses are added (and checked before
    /// they take reads), addresses that left are drained. For a deploy hook or an operator who
    /// knows the records changed.
    pub async fn discover(&self) {
        round(&self.shared, true, true).await;
    }
}

/// Starts the loop; it returns at once when no source is configured and none is added.
pub(super) fn spawn(shared: &Arc<Shared>) {
    let weak: Weak<Shared> = Arc::downgrade(shared);
    let mut stop = shared.stopped();
    // The task holds the bell, not the registry.
    let wanted = Arc::clone(&shared.discovery.wanted);
    tokio::spawn(async move {
        let mut wait = Duration::ZERO;
        let mut asked_at: Option<Instant> = None;
        loop {
            let all = tokio::select! {
                () = tokio::time::sleep(wait) => false,
                () = wanted.notified() => true,
                _ = stop.changed() => break,
            };
            let Some(shared) = weak.upgrade() else { break };
            let now = Instant::now();
            // Asked for: at most a round a second, whatever the reads that want one.
            let all =
                all && asked_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1));
            if all {
                asked_at = Some(now);
            }
            let round = Arc::clone(&shared);
            tasks::supervised("replica discovery", async move {
                self::round(&round, all, true).await;
            })
            .await;
            wait = next_due(&shared).await;
        }
        tracing::debug!("rwsplit replica discovery stopped");
    });
}

/// How long until the next source is due.
async fn next_due(shared: &Shared) -> Duration {
    let state = shared.discovery.state.lock().await;
    let now = Instant::now();
    let sources = &shared.config().discovery;
    (sources.iter())
        .map(|s| state.due.get(&s.dns).map_or(Duration::ZERO, |d| *d - now))
        .min()
        .unwrap_or(IDLE)
}

/// One round: the sources due (every one when `all`) resolved, then the replica set brought
/// in line with the answers; replicas added are checked at once when `check` (otherwise the
/// caller checks every server next).
pub(super) async fn round(shared: &Arc<Shared>, all: bool, check: bool) {
    let config = shared.config();
    let mut state = shared.discovery.state.lock().await;
    let timeout = config.health_check_timeout;
    for source in &config.discovery {
        let now = Instant::now();
        if !all && state.due.get(&source.dns).is_some_and(|due| now < *due) {
            continue;
        }
        state.due.insert(source.dns.clone(), now + source.interval);
        let resolver = state
            .resolvers
            .entry(source.nameserver)
            .or_insert_with(|| resolver(source.nameserver))
            .clone();
        // Each round asks the DNS server: the interval, not the records' TTL, paces lookups.
        resolver.clear_cache();
        let answer = tokio::time::timeout(timeout, resolve(&resolver, source)).await;
        let answer = answer.unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        state.take(source, answer);
    }
    let sources: HashSet<&str> = config.discovery.iter().map(|s| s.dns.as_str()).collect();
    state
        .answers
        .retain(|dns, _| sources.contains(dns.as_str()));
    let added = state.apply(shared, &config.discovery);
    drop(state);
    if added && check {
        tasks::check_all(shared).await;
    }
}

/// A resolver asking `nameserver` (the system's when `None`).
fn resolver(nameserver: Option<SocketAddr>) -> TokioResolver {
    let fixed = |at: SocketAddr| {
        let servers = NameServerConfigGroup::from_ips_clear(&[at.ip()], at.port(), true);
        let config = ResolverConfig::from_parts(None, vec![], servers);
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let mut builder = match nameserver {
        Some(at) => fixed(at),
        None => TokioResolver::builder_tokio().unwrap_or_else(|error| {
            tracing::warn!(%error, "no system DNS configuration: replica discovery asks 127.0.0.1");
            fixed(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 53))
        }),
    };
    builder.options_mut().attempts = 1;
    builder.build()
}

/// The addresses `source`'s records give now, sorted; an error's text when the lookup failed.
/// A name with no records is an answer (every replica left), not a failure.
async fn resolve(
    resolver: &TokioResolver,
    source: &DiscoveryConfig,
) -> Result<Vec<SocketAddr>, String> {
    let mut found = Vec::new();
    match source.records {
        Records::Service => match resolver.srv_lookup(source.dns.as_str()).await {
            Ok(records) => {
                for record in records.iter() {
                    let target = record.target().to_utf8();
                    let ips = match resolver.lookup_ip(target.as_str()).await {
                        Ok(ips) => ips,
                        Err(error) if error.is_no_records_found() => continue,
                        Err(error) => return Err(format!("{target}: {error}")),
                    };
                    found.extend(ips.iter().map(|ip| SocketAddr::new(ip, record.port())));
                }
            }
            Err(error) if error.is_no_records_found() => {}
            Err(error) => return Err(error.to_string()),
        },
        _ => match resolver.lookup_ip(source.dns.as_str()).await {
            Ok(ips) => found.extend(ips.iter().map(|ip| SocketAddr::new(ip, source.port))),
            Err(error) if error.is_no_records_found() => {}
            Err(error) => return Err(error.to_string()),
        },
    }
    found.sort_unstable();
    found.dedup();
    Ok(found)
}

impl State {
    /// Takes one lookup's outcome: a new answer replaces the last (logged when it differs),
    /// a failure keeps it (logged once per streak).
    fn take(&mut self, source: &DiscoveryConfig, answer: Result<Vec<SocketAddr>, String>) {
        let dns = &source.dns;
        match answer {
            Ok(found) => {
                if self.failing.remove(dns) {
                    tracing::info!(dns = %dns, "replica discovery: the name resolves again");
                }
                let before = self.answers.insert(dns.clone(), found.clone());
                if before.as_ref() != Some(&found) {
                    let list: Vec<String> = found.iter().map(ToString::to_string).collect();
                    tracing::info!(
                        dns = %dns,
                        addresses = %list.join(", "),
                        "replica discovery: the name's answer changed"
                    );
                }
            }
            Err(error) => {
                if self.failing.insert(dns.clone()) {
                    let kept = self.answers.get(dns).map_or(0, Vec::len);
                    tracing::warn!(
                        dns = %dns,
                        %error,
                        kept,
                        "replica discovery: looking the name up failed; its last answer stays"
                    );
                }
            }
        }
    }

    /// Brings the found replicas in line with the answers: adds the new ones, drains the ones
    /// that left, takes back the ones that returned while draining, removes the drained.
    /// Returns whether any was added.
    fn apply(&mut self, shared: &Arc<Shared>, sources: &[DiscoveryConfig]) -> bool {
        let now = Instant::now();
        let config = shared.config();
        let wanted: Vec<(&DiscoveryConfig, crate::config::ReplicaConfig)> = sources
            .iter()
            .flat_map(|s| {
                (self.answers.get(&s.dns).into_iter().flatten()).map(move |a| (s, s.replica(*a)))
            })
            .collect();
        let topology = shared.topology_full();
        // New addresses: out of rotation until checked.
        let fresh: Vec<Member> = (wanted.iter())
            .filter(|(_, r)| topology.replica(&r.name).is_none())
            .map(|(_, r)| {
                let mut member = reload::new_replica(r, &config);
                member.found = true;
                tracing::info!(replica = %r.name, "replica discovery: replica added (in rotation after its first check)");
                member
            })
            .collect();
        // Back in the answer while draining: its weight again.
        for (source, replica) in &wanted {
            if self.draining.remove(&replica.name).is_some()
                && let Some(member) = topology.replica(&replica.name)
            {
                tracing::info!(replica = %replica.name, "replica discovery: replica back in the answer");
                let event = Event::Weighed {
                    weight: source.weight,
                    said: true,
                };
                shared.apply(&member.server, event);
            }
        }
        // Gone from the answer: drained now, removed after the delay.
        let expired = self.drain_gone(shared, &topology, &wanted, sources, now);
        if fresh.is_empty() && expired.is_empty() {
            return false;
        }
        for member in &expired {
            self.draining.remove(&*member.server.name);
        }
        shared.replace(|topology| {
            let mut replicas: Vec<Member> = (topology.replicas.iter())
                .filter(|m| !expired.iter().any(|e| e.is(&m.server)))
                .cloned()
                .collect();
            replicas.extend(
                fresh
                    .iter()
                    .filter(|f| topology.replica(&f.server.name).is_none())
                    .cloned(),
            );
            Some(Topology {
                replicas,
                ..topology.rebuilt()
            })
        });
        for member in expired {
            crate::metrics::forget(&member.server.name);
            tracing::info!(replica = %member.server.name, "replica discovery: drained replica removed");
            tokio::spawn(async move {
                member.server.pool.close().await;
                member.watch.checker.close().await;
            });
        }
        !fresh.is_empty()
    }

    /// Drains the found replicas that left the answer (weight 0, counted from the first round
    /// that missed them) and returns those whose drain delay is over.
    fn drain_gone(
        &mut self,
        shared: &Arc<Shared>,
        topology: &Topology,
        wanted: &[(&DiscoveryConfig, crate::config::ReplicaConfig)],
        sources: &[DiscoveryConfig],
        now: Instant,
    ) -> Vec<Member> {
        let mut expired = Vec::new();
        for member in topology.replicas.iter().filter(|m| m.found) {
            let name = &*member.server.name;
            if wanted.iter().any(|(_, r)| r.name == name) {
                continue;
            }
            let source = sources
                .iter()
                .find(|s| name.starts_with(&format!("{}/", s.dns)));
            let delay = source.map_or(Duration::ZERO, |s| s.drain_delay);
            let since = *self.draining.entry(name.to_owned()).or_insert_with(|| {
                tracing::info!(replica = %name, drain_delay = ?delay, "replica discovery: replica left the answer; draining");
                let event = Event::Weighed { weight: 0, said: true };
                shared.apply(&member.server, event);
                now
            });
            if now.duration_since(since) >= delay {
                expired.push(member.clone());
            }
        }
        expired
    }
}
