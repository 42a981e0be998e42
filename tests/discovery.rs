//! Replicas found by DNS: a real DNS server (`dnsmasq`, started by the test on loopback) whose
//! records change while reads run: a replica added, one removed and drained, the DNS server
//! down for a while. No read fails; each read's server is the one that answered it
//! (`inet_server_port()`). Health checks run at their 30 s default.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rwsplit::{Config, DiscoveryConfig, Registry};
use rwsplit_testkit::{Cluster, Dns, DnsRecord, Node};

const SERVICE: &str = "_postgresql._tcp.replicas.test";

/// The SRV records for `nodes`, each at `<name>.test` on 127.0.0.1.
fn records(nodes: &[&Node]) -> Vec<DnsRecord> {
    let mut records = Vec::new();
    for node in nodes {
        let target = format!("{}.test", node.name());
        records.push(DnsRecord::srv(SERVICE, &target, node.port()));
        records.push(DnsRecord::a(&target, [127, 0, 0, 1].into()));
    }
    records
}

/// The name discovery gives the replica `node`.
fn found(node: &Node) -> String {
    format!("{SERVICE}/127.0.0.1:{}", node.port())
}

/// Reads through `registry.read()` from `readers` tasks until stopped: per port, the reads
/// it answered and when it last did; and every failure.
struct Load {
    served: Arc<Mutex<BTreeMap<i32, (usize, Instant)>>>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(registry: &Registry, readers: usize) -> Load {
        let served = Arc::new(Mutex::new(BTreeMap::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let tasks = (0..readers)
            .map(|_| {
                let (registry, served, failures) =
                    (registry.clone(), served.clone(), failures.clone());
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    while !*stopped.borrow() {
                        let read = sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
                            .fetch_one(&registry.read())
                            .await;
                        match read {
                            Ok(port) => {
                                let mut served = served.lock().unwrap();
                                let entry = served.entry(port).or_insert((0, Instant::now()));
                                *entry = (entry.0 + 1, Instant::now());
                            }
                            Err(error) => failures.lock().unwrap().push(error.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Load {
            served,
            failures,
            stop,
            tasks,
        }
    }

    fn reads_on(&self, node: &Node) -> usize {
        let served = self.served.lock().unwrap();
        served
            .get(&i32::from(node.port()))
            .map_or(0, |(count, _)| *count)
    }

    fn last_read_on(&self, node: &Node) -> Option<Instant> {
        let served = self.served.lock().unwrap();
        served.get(&i32::from(node.port())).map(|(_, at)| *at)
    }

    async fn finish(self) -> Vec<String> {
        self.stop.send(true).unwrap();
        for task in self.tasks {
            task.await.unwrap();
        }
        self.failures.lock().unwrap().clone()
    }
}

fn names(registry: &Registry) -> Vec<(String, u32, bool)> {
    let mut names: Vec<_> = (registry.status().replicas.iter())
        .map(|r| (r.name.clone(), r.weight, r.in_rotation))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_the_dns_records_under_load_without_a_failed_read() {
    let cluster = Cluster::start(3).await.unwrap();
    let (replica1, replica2, replica3) =
        (cluster.replica(0), cluster.replica(1), cluster.replica(2));
    let mut dns = Dns::start(&records(&[replica1])).unwrap();
    // replica3 listed in the file, the others found by DNS.
    let yaml = cluster
        .config_yaml()
        .lines()
        .filter(|l| !l.contains("name: replica1") && !l.contains("name: replica2"))
        .collect::<Vec<_>>()
        .join("\n");
    let config = Config::from_yaml(&yaml).unwrap().replica_discovery(
        DiscoveryConfig::srv(SERVICE)
            .nameserver(dns.address())
            .interval(Duration::from_secs(1))
            .drain_delay(Duration::from_secs(2)),
    );
    let registry = Registry::connect(config).await.unwrap();
    assert_eq!(
        names(&registry),
        [(found(replica1), 1, true), ("replica3".to_owned(), 1, true)],
        "found and listed replicas together, checked before the first read"
    );
    let load = Load::start(&registry, 8);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(load.reads_on(replica1) > 0 && load.reads_on(replica3) > 0);

    // Added: replica2 joins the answer and takes reads.
    dns.set(&records(&[replica1, replica2])).unwrap();
    wait_for(
        "replica2 found and in rotation",
        Duration::from_secs(15),
        || names(&registry).contains(&(found(replica2), 1, true)),
    )
    .await;
    let before = load.reads_on(replica2);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(load.reads_on(replica2) > before, "replica2 takes reads");

    // Removed: replica1 leaves the answer, drains (no new reads), then is removed.
    dns.set(&records(&[replica2])).unwrap();
    wait_for("replica1 drained", Duration::from_secs(15), || {
        names(&registry).contains(&(found(replica1), 0, false))
    })
    .await;
    let drained_at = Instant::now();
    wait_for(
        "replica1 removed after the drain delay",
        Duration::from_secs(15),
        || {
            !names(&registry)
                .iter()
                .any(|(name, ..)| *name == found(replica1))
        },
    )
    .await;
    assert!(
        drained_at.elapsed() >= Duration::from_millis(1500),
        "removed only after the delay"
    );
    assert!(
        load.last_read_on(replica1)
            .is_some_and(|at| at <= drained_at),
        "no read reached replica1 once it drained"
    );

    // The DNS server down for a while: the last answer stays, reads go on.
    dns.stop();
    let during = load.reads_on(replica2);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        names(&registry),
        [(found(replica2), 1, true), ("replica3".to_owned(), 1, true)],
        "the last good answer stays while DNS is down"
    );
    assert!(
        load.reads_on(replica2) > during,
        "replica2 keeps taking reads"
    );
    // Back, with replica1 again: it returns.
    dns.set(&records(&[replica1, replica2])).unwrap();
    wait_for("replica1 found again", Duration::from_secs(15), || {
        names(&registry).contains(&(found(replica1), 1, true))
    })
    .await;

    let failures = load.finish().await;
    assert!(failures.is_empty(), "failed reads: {failures:?}");
}

/// A records: each address at the configured port, found at connect; `discover()` resolves at
/// once, and a name with no records any more drains its replicas.
#[tokio::test]
async fn address_records_at_the_configured_port() {
    let cluster = Cluster::start(1).await.unwrap();
    let replica = cluster.replica(0);
    let mut dns = Dns::start(&[DnsRecord::a("replicas.test", [127, 0, 0, 1].into())]).unwrap();
    let yaml = format!(
        "{}  replicaDiscovery:\n    - dns: replicas.test\n      records: A\n      port: {}\n      \
         nameserver: \"{}\"\n      drainDelay: 0s\n      group: found\n",
        cluster.config_yaml().replace(
            &format!(
                "    - {{ name: replica1, host: 127.0.0.1, port: {}, weight: 1 }}\n",
                replica.port()
            ),
            ""
        ),
        replica.port(),
        dns.address(),
    );
    let registry = Registry::connect(Config::from_yaml(&yaml).unwrap())
        .await
        .unwrap();
    let name = format!("replicas.test/127.0.0.1:{}", replica.port());
    let status = registry.status();
    assert_eq!(status.replicas.len(), 1, "{:?}", names(&registry));
    assert_eq!(status.replicas[0].name, name);
    assert_eq!(status.replicas[0].group.as_deref(), Some("found"));
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&registry.read_from("found"))
        .await
        .unwrap();
    assert_eq!(port, i32::from(replica.port()));

    dns.set(&[DnsRecord::a("other.test", [127, 0, 0, 1].into())])
        .unwrap();
    registry.discover().await;
    registry.discover().await;
    assert!(
        registry.status().replicas.is_empty(),
        "{:?}",
        names(&registry)
    );
}

/// Reads that find no replica in service have the names resolved again at once, not at the
/// next interval: a replica that moved is found within seconds.
#[tokio::test]
async fn reads_falling_back_resolve_the_names_again() {
    let cluster = Cluster::start(2).await.unwrap();
    let (replica1, replica2) = (cluster.replica(0), cluster.replica(1));
    let mut dns = Dns::start(&records(&[replica1])).unwrap();
    let yaml = cluster
        .config_yaml()
        .lines()
        .filter(|l| !l.contains("name: replica"))
        .collect::<Vec<_>>()
        .join("\n");
    // The default interval: a minute.
    let config = Config::from_yaml(&yaml)
        .unwrap()
        .replica_discovery(DiscoveryConfig::srv(SERVICE).nameserver(dns.address()));
    let registry = Registry::connect(config).await.unwrap();
    assert_eq!(names(&registry), [(found(replica1), 1, true)]);

    // The replica goes away and DNS lists another one.
    replica1
        .stop(rwsplit_testkit::StopMode::Immediate)
        .await
        .unwrap();
    dns.set(&records(&[replica2])).unwrap();
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < Duration::from_secs(20) {
        last = sqlx::query_scalar::<_, i32>("SELECT inet_server_port()")
            .fetch_one(&registry.read())
            .await
            .unwrap();
        if last == i32::from(replica2.port()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        last,
        i32::from(replica2.port()),
        "reads reach the replica DNS lists now"
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    println!("found the moved replica after {:?}", start.elapsed());
}
