//! TLS against a local cluster serving a self-signed certificate for `localhost`: `require`
//! encrypts connections to the primary and (inherited) to the replicas; `verify-full` accepts
//! the right host name and rejects a wrong one.

use std::time::Duration;

use rwsplit::{Config, PgSslMode, Registry, ReplicaConfig};
use rwsplit_testkit::{Cluster, ClusterOptions};

async fn tls_cluster() -> Cluster {
    Cluster::start_with(ClusterOptions {
        replicas: 2,
        tls: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("a cluster serving TLS")
}

/// Whether the server behind `pool` sees this connection as TLS (`pg_stat_ssl`, the server's
/// own view).
async fn encrypted<'c>(
    db: impl sqlx::Executor<'c, Database = sqlx::Postgres>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(db)
        .await
}

fn config(cluster: &Cluster, host: &str) -> Config {
    let mut config = Config::new(host)
        .port(cluster.primary().port())
        .username(rwsplit_testkit::USER)
        .password(rwsplit_testkit::PASSWORD)
        .read_write_separation(true)
        .health_check_interval(Duration::from_millis(200))
        .connect_timeout(Duration::from_secs(3));
    for replica in cluster.replicas() {
        // No TLS settings of their own: the replicas inherit the primary's.
        config = config.replica(ReplicaConfig::new(replica.name(), host).port(replica.port()));
    }
    config
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
#[tokio::test]
async fn require_encrypts_every_connection_and_replicas_inherit_it() {
    let cluster = tls_cluster().await;
    let registry = Registry::connect(config(&cluster, "127.0.0.1").ssl_mode(PgSslMode::Require))
        .await
        .unwrap();
    assert!(
        encrypted(&registry.primary()).await.unwrap(),
        "primary over TLS"
    );
    for _ in 0..2 {
        let read = registry.read();
        assert!(!read.is_primary());
        assert!(encrypted(&read).await.unwrap(), "{} over TLS", read.name());
    }
    // Without TLS settings the same servers are reached in plain text (`disable`), so the
    // check above can tell the difference.
    let plain = Registry::connect(config(&cluster, "127.0.0.1").ssl_mode(PgSslMode::Disable))
        .await
        .unwrap();
    assert!(!encrypted(&plain.primary()).await.unwrap());
}

#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
#[tokio::test]
async fn verify_full_accepts_the_right_host_name_and_rejects_a_wrong_one() {
    let cluster = tls_cluster().await;
    let verified = config(&cluster, "localhost")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(cluster.ca_cert());
    let registry = Registry::connect(verified).await.unwrap();
    assert!(encrypted(&registry.primary()).await.unwrap());
    assert!(encrypted(&registry.read()).await.unwrap());

    // The certificate names `localhost`, not `127.0.0.1`.
    let wrong_name = config(&cluster, "127.0.0.1")
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(cluster.ca_cert());
    let registry = Registry::connect(wrong_name).await.unwrap();
    let error = encrypted(&registry.primary())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.to_lowercase().contains("certificate") || error.contains("NotValidForName"),
        "{error}"
    );
    let status = registry.status();
    assert!(
        !status.primary.healthy,
        "the health check fails the same way: {status:?}"
    );
    assert!(status.replicas.iter().all(|r| !r.healthy));
}
