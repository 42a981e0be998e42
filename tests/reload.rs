//! The operators' runbook applied live, against a real cluster under a steady read/write load
//! whose clients carry consistency tokens: separation switched on, the rollout share stepped
//! 0 -> 10 -> 50 -> 100 %, a third replica added, weights changed, one replica drained and
//! removed, a broken file refused, separation switched off; through `Registry::reload` and
//! through an edited file watched by `Registry::watch_file`. The split is read from the
//! servers' own counters (`pg_stat_statements`). Health checks stay at their 30 s default.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::load::{self, Load};
use common::{executed, in_rotation, replicated};
use rwsplit::{Config, DbError, DbRead, Registry, RwSplitLayer};
use rwsplit_testkit::{Cluster, Node};

/// Reads per measured step.
const SAMPLE: usize = 600;

/// `GET /split`: a read marked so that each server counts it apart.
fn split_routes(registry: Registry) -> Router {
    async fn split(db: DbRead) -> Result<String, DbError> {
        let one: i32 = sqlx::query_scalar("SELECT 1 /* rollout split read */")
            .fetch_one(&db)
            .await?;
        Ok(one.to_string())
    }
    Router::new()
        .route("/split", get(split))
        .layer(RwSplitLayer::new(registry.clone()))
        .with_state(registry)
}

/// The configuration file as an operator edits it: `replicas` as (node, weight).
fn yaml(cluster: &Cluster, separation: bool, share: u8, replicas: &[(&Node, u32)]) -> String {
    let mut text = format!(
        "db:\n  driver: postgresql\n  host: 127.0.0.1\n  port: {}\n  username: postgres\n  \
         password: \"{}\"\n  database: postgres\n  sslMode: disable\n  connectTimeout: 1s\n  \
         enableReadWriteSeparation: {separation}\n  readReplicaShare: {share}\n  readReplicas:\n",
        cluster.primary().port(),
        rwsplit_testkit::PASSWORD,
    );
    for (node, weight) in replicas {
        text.push_str(&format!(
            "    - {{ name: {}, host: 127.0.0.1, port: {}, weight: {weight} }}\n",
            node.name(),
            node.port()
        ));
    }
    text
}

/// Sends `SAMPLE` reads to `/split` and returns how many each node executed, in the order of
/// `nodes`, from the servers' own counters.
async fn split(app: &Router, cluster: &Cluster, nodes: &[&Node]) -> Vec<usize> {
    let before = counts(nodes).await;
    for _ in 0..SAMPLE {
        let answer = common::call(app, cluster, "GET", "/split").await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let after = counts(nodes).await;
    let served: Vec<usize> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(served.iter().sum::<usize>(), SAMPLE, "{served:?}");
    served
}

async fn counts(nodes: &[&Node]) -> Vec<usize> {
    let mut counts = Vec::new();
    for node in nodes {
        counts.push(executed(node, "rollout split read").await as usize);
    }
    counts
}

fn percent(part: usize) -> f64 {
    part as f64 * 100.0 / SAMPLE as f64
}

/// Waits until the registry's status satisfies `check` (a watched file applies within a
/// second).
async fn until(registry: &Registry, what: &str, check: impl Fn(&Registry) -> bool) {
    let found = load::time_until(Duration::from_secs(10), || check(registry)).await;
    assert!(found.is_some(), "{what}: {:?}", registry.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_applies_live_under_load_without_a_failed_or_stale_request() {
    let cluster = Cluster::start(3).await.expect("start the local cluster");
    replicated(
        &cluster,
        "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL)",
    )
    .await;
    replicated(
        &cluster,
        "INSERT INTO items (id, name) VALUES (1000000, 'seed')",
    )
    .await;
    let (primary, r1, r2, r3) = (
        cluster.primary(),
        cluster.replica(0),
        cluster.replica(1),
        cluster.replica(2),
    );
    let all = [primary, r1, r2, r3];

    // Deployed with separation off, replicas 1 and 2 listed.
    let dir = tempdir();
    let file = dir.join("rwsplit.yaml");
    let write = |text: String| std::fs::write(&file, text).unwrap();
    write(yaml(&cluster, false, 100, &[(r1, 1), (r2, 1)]));
    let config = Config::from_file(&file).unwrap();
    assert_eq!(config.health_interval(), Duration::from_secs(30));
    let registry = Registry::connect(config).await.unwrap();
    let app = load::app(registry.clone()).merge(split_routes(registry.clone()));
    let sticky = Load::start(&app, 3, true, 1_000_000);
    let plain = Load::start(&app, 1, false, 1_000_000);

    let served = split(&app, &cluster, &all).await;
    assert_eq!(
        served[0], SAMPLE,
        "separation off: all on the primary {served:?}"
    );

    // Switched on with a share of 0, then stepped up, through `reload`.
    let changes = registry
        .reload(Config::from_yaml(&yaml(&cluster, true, 0, &[(r1, 1), (r2, 1)])).unwrap())
        .await
        .unwrap();
    assert_eq!(
        changes,
        [
            "enableReadWriteSeparation false -> true",
            "readReplicaShare 100% -> 0%"
        ]
    );
    let mut steps = Vec::new();
    for share in [0u8, 10, 50, 100] {
        let text = yaml(&cluster, true, share, &[(r1, 1), (r2, 1)]);
        registry
            .reload(Config::from_yaml(&text).unwrap())
            .await
            .unwrap();
        assert_eq!(registry.status().read_replica_share, share);
        let served = split(&app, &cluster, &all).await;
        let on_replicas = percent(served[1] + served[2]);
        steps.push((share, on_replicas));
        assert!(
            (on_replicas - f64::from(share)).abs() <= 2.0,
            "share {share}%: {on_replicas:.1}% on replicas {served:?}"
        );
    }
    println!("| share | reads on replicas |");
    for (share, on) in &steps {
        println!("| {share}% | {on:.1}% |");
    }

    // From here on through the file, as the runbook's "deploy configuration change".
    let _watch = registry.watch_file(&file);
    write(yaml(&cluster, true, 100, &[(r1, 1), (r2, 1), (r3, 1)]));
    until(&registry, "replica3 added", |r| in_rotation(r, "replica3")).await;
    let served = split(&app, &cluster, &all).await;
    assert_eq!(served[0], 0, "{served:?}");
    for (i, n) in served[1..].iter().enumerate() {
        assert!(
            (percent(*n) - 100.0 / 3.0).abs() <= 6.0,
            "replica{} takes its weighted third: {served:?}",
            i + 1
        );
    }

    // Weights changed; replica1 drained (weight 0), then removed.
    write(yaml(&cluster, true, 100, &[(r1, 0), (r2, 3), (r3, 1)]));
    until(&registry, "replica1 drained", |r| {
        !in_rotation(r, "replica1")
    })
    .await;
    let served = split(&app, &cluster, &all).await;
    assert_eq!((served[0], served[1]), (0, 0), "{served:?}");
    assert!(
        (percent(served[2]) - 75.0).abs() <= 5.0,
        "weights 3:1 {served:?}"
    );
    write(yaml(&cluster, true, 100, &[(r2, 3), (r3, 1)]));
    until(&registry, "replica1 removed", |r| {
        r.status().replicas.iter().all(|s| s.name != "replica1")
    })
    .await;
    let sessions = || async {
        let mut conn = r1.connect().await.unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'rwsplit'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    let mut closed = false;
    for _ in 0..100 {
        if sessions().await == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "replica1's sessions close after its removal");

    // Pool limits changed: every server (the primary included) gets a new pool under load.
    write(yaml(&cluster, true, 100, &[(r2, 3), (r3, 1)]).replace(
        "connectTimeout: 1s\n",
        "connectTimeout: 1s\n  maxConnections: 12\n",
    ));
    until(&registry, "new pools of 12", |r| {
        let status = r.status();
        status.primary.pool_max == 12
            && status
                .replicas
                .iter()
                .all(|s| s.pool_max == 12 && s.in_rotation)
    })
    .await;

    // A broken file is refused and nothing changes.
    let before = format!("{:?}", weights(&registry));
    write(yaml(&cluster, true, 100, &[(r2, 3), (r3, 1)]).replace("weight: 3", "weight: -3"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(format!("{:?}", weights(&registry)), before);
    write("db: [not, a, mapping\n".to_owned());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(format!("{:?}", weights(&registry)), before);
    assert!(registry.separation_enabled());

    // Separation off again: everything on the primary.
    write(yaml(&cluster, false, 100, &[(r2, 3), (r3, 1)]));
    until(&registry, "separation off", |r| !r.separation_enabled()).await;
    let served = split(&app, &cluster, &all).await;
    assert_eq!(served[0], SAMPLE, "{served:?}");

    let mut report = sticky.finish().await;
    report.merge(plain.finish().await);
    println!("load through the whole runbook: {report}");
    assert!(report.reads > 500 && report.writes > 50, "{report}");
    report.assert_clean();
    registry.shutdown().await;
}

fn weights(registry: &Registry) -> Vec<(String, u32, bool)> {
    registry
        .status()
        .replicas
        .into_iter()
        .map(|s| (s.name, s.weight, s.in_rotation))
        .collect()
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rwsplit-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An invalid configuration is refused by `reload` with the error startup gives, and the
/// running one stays; a moved primary gets a new pool, and what cannot change live is reported,
/// not silently dropped.
#[tokio::test]
async fn reload_refuses_an_invalid_configuration_whole() {
    let base = "db:\n  host: 127.0.0.1\n  port: 1\n  enableReadWriteSeparation: true\n  \
                healthCheckInterval: 1h\n  readReplicas:\n    - { name: r1, host: 127.0.0.1, port: 2 }\n";
    let registry = Registry::connect_lazy(Config::from_yaml(base).unwrap()).unwrap();
    let invalid = Config::new("127.0.0.1")
        .read_write_separation(false)
        .replica(rwsplit::ReplicaConfig::new("r1", "127.0.0.1").weight(20_000));
    let startup = invalid.clone().validate().unwrap_err().to_string();
    let refused = registry.reload(invalid).await.unwrap_err().to_string();
    assert!(refused.contains(&startup), "{refused} / {startup}");
    assert!(registry.separation_enabled(), "nothing changed");
    assert_eq!(registry.status().replicas[0].weight, 1);

    let moved = base.replace("port: 1\n", "port: 3\n") + "  consistency:\n    mode: window\n";
    let changes = registry
        .reload(Config::from_yaml(&moved).unwrap())
        .await
        .unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes[0].starts_with("primary: connection settings"),
        "{changes:?}"
    );
    assert!(
        changes[1].contains("db.consistency changed: applied at the next start"),
        "{changes:?}"
    );
    // Writes use the new primary pool at once.
    assert!(registry.status().primary.address.ends_with(":3"));
}

/// SIGHUP re-applies the file even when it has not changed: a weight changed in code since
/// returns to the file's.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reapplies_the_file() {
    let dir = tempdir();
    let file = dir.join("sighup.yaml");
    std::fs::write(
        &file,
        "db:\n  host: 127.0.0.1\n  port: 1\n  healthCheckInterval: 1h\n  readReplicas:\n    \
         - { name: r1, host: 127.0.0.1, port: 2, weight: 2 }\n",
    )
    .unwrap();
    let registry = Registry::connect_lazy(Config::from_file(&file).unwrap()).unwrap();
    let _watch = registry.watch_file(&file);
    registry.set_weight("r1", 7).unwrap();
    // The file is unchanged: polling alone never re-applies it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(registry.status().replicas[0].weight, 7);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    until(&registry, "the file's weight after SIGHUP", |r| {
        r.status().replicas[0].weight == 2
    })
    .await;
}
