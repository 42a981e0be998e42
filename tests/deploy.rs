//! The dashboard and the alert rules only use metrics that rwsplit records, so that renaming a
//! metric cannot silently leave a panel empty or an alert blind. (`promtool check rules` and
//! `promtool test rules` run in `.ci/run`.)

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The metric names rwsplit records: the names declared in the `metrics!` table of
/// `src/metrics.rs` (`CONSTANT = "rwsplit_...", Kind, ...`).
fn exported() -> BTreeSet<String> {
    let names: BTreeSet<String> = read("src/metrics.rs")
        .lines()
        .filter(|line| line.contains(" = \"rwsplit_"))
        .filter_map(|line| line.split('"').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(
        names.len() > 20,
        "the metrics table was not found: {names:?}"
    );
    names
}

/// Every `rwsplit_*` metric family named in `text`, with Prometheus' histogram suffixes removed.
fn referenced(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("rwsplit_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_uses_only_recorded_metrics_and_covers_the_key_views() {
    let text = read("deploy/grafana/rwsplit.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "distribution",
        "lag",
        "Health",
        "Pool",
        "acquire",
        "latency",
        "Sticky",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "a panel about {wanted}: {titles:?}"
        );
    }
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap().to_owned() + "\n")
        .collect();
    let unknown: Vec<_> = referenced(&exprs)
        .difference(&exported())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics rwsplit does not record: {unknown:?}"
    );
}

#[test]
fn the_alert_rules_use_only_recorded_metrics_and_cover_the_key_failures() {
    let text = read("deploy/prometheus/alerts.yml");
    let rules: serde_json::Value = serde_saphyr::from_str(&text).expect("valid YAML");
    let alerts: Vec<&str> = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for wanted in [
        "RwsplitReplicaDown",
        "RwsplitReplicaLagHigh",
        "RwsplitAllReplicasOut",
        "RwsplitPoolExhausted",
        "RwsplitHighQueryLatency",
        "RwsplitSplitBrain",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} in {alerts:?}");
    }
    let unknown: Vec<_> = referenced(&text).difference(&exported()).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the alerts use metrics rwsplit does not record: {unknown:?}"
    );
}

fn compose(file: &str) -> serde_json::Value {
    serde_saphyr::from_str(&read(file)).expect("valid YAML")
}

#[test]
fn docker_compose_references_files_that_exist_and_starts_in_order() {
    let file = compose("docker-compose.yml");
    let services = file["services"].as_object().unwrap();
    for wanted in [
        "primary",
        "replica1",
        "replica2",
        "app",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(wanted), "service {wanted}");
    }
    for (name, service) in services {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            if let Some(path) = host.strip_prefix("./") {
                let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
                assert!(
                    std::path::Path::new(&full).exists(),
                    "{name}: {host} is missing"
                );
            }
        }
        // Every `service_healthy` dependency has a health check to wait for.
        for (dependency, condition) in service["depends_on"].as_object().into_iter().flatten() {
            if condition["condition"] == "service_healthy" {
                let target = &services[dependency];
                let checked = target["healthcheck"].is_object();
                assert!(
                    checked,
                    "{name} waits for {dependency}, which has no healthcheck"
                );
            }
        }
    }
    // The official image, pinned to a major version; no replication variables it lacks.
    for name in ["primary", "replica1", "replica2"] {
        assert_eq!(services[name]["image"], "postgres:15-bookworm");
    }
    let app = &services["app"];
    assert_eq!(app["build"]["dockerfile"], "Dockerfile");
    assert!(std::path::Path::new(&format!("{}/Dockerfile", env!("CARGO_MANIFEST_DIR"))).exists());
    let prod = compose("docker-compose.prod.yml");
    for (name, service) in prod["services"].as_object().unwrap() {
        assert!(
            services.contains_key(name),
            "the override names a real service: {name}"
        );
        assert!(
            service["deploy"]["resources"]["limits"].is_object(),
            "{name} has limits"
        );
    }
}

/// The part of the Docker topology that runs without Docker: the primary's init script creates
/// the replication role, and the replicas' bootstrap script makes a streaming standby as that
/// role.
#[tokio::test]
async fn the_compose_replication_scripts_work_against_a_real_primary() {
    let mut cluster = rwsplit_testkit::Cluster::start(0).await.unwrap();
    let primary = cluster.primary().clone();
    let script = format!(
        "{}/deploy/postgres/primary-init.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = tokio::process::Command::new("sh")
        .arg(&script)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", primary.port().to_string())
        .env("PGPASSWORD", rwsplit_testkit::PASSWORD)
        .env("POSTGRES_USER", rwsplit_testkit::USER)
        .env("POSTGRES_DB", "postgres")
        .env("PGDATA", primary.data_dir())
        .env("REPLICATION_USER", "replicator")
        .env("REPLICATION_PASSWORD", "replication-test-password")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hba = std::fs::read_to_string(primary.data_dir().join("pg_hba.conf")).unwrap();
    assert!(hba.contains("host replication replicator all scram-sha-256"));
    primary.execute("SELECT pg_reload_conf()").await.unwrap();

    let replica = cluster
        .add_replica_as("replicator", "replication-test-password")
        .await
        .unwrap()
        .clone();
    primary
        .execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        .await
        .unwrap();
    cluster
        .wait_caught_up(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let mut conn = replica.connect().await.unwrap();
    let (standby, v): (bool, i32) = sqlx::query_as("SELECT pg_is_in_recovery(), (SELECT v FROM t)")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(standby, "a hot standby");
    assert_eq!(v, 42, "streaming from the primary");
    let mut primary_conn = primary.connect().await.unwrap();
    let streaming_as: String = sqlx::query_scalar("SELECT usename::text FROM pg_stat_replication")
        .fetch_one(&mut primary_conn)
        .await
        .unwrap();
    assert_eq!(streaming_as, "replicator");
}
