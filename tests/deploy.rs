//! The dashboard and the alert rules only use metrics that rwsplit records, so that renaming a
//! metric cannot silently leave a panel empty or an alert blind. (`promtool check rules` and
//! `promtool test rules` run in `.ci/run`.)

use std::collections::BTreeSet;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The metric names rwsplit records: the `rwsplit_*` string constants of `src/metrics.rs`.
fn exported() -> BTreeSet<String> {
    read("src/metrics.rs")
        .lines()
        .filter(|line| line.starts_with("pub(crate) const "))
        .filter_map(|line| line.split('"').nth(1))
        .map(str::to_owned)
        .collect()
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
    ] {
        assert!(alerts.contains(&wanted), "{wanted} in {alerts:?}");
    }
    let unknown: Vec<_> = referenced(&text).difference(&exported()).cloned().collect();
    assert!(
        unknown.is_empty(),
        "the alerts use metrics rwsplit does not record: {unknown:?}"
    );
}
