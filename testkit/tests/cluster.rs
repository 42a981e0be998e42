//! The local cluster really replicates, and its controls do what they say.

use std::time::Duration;

use rwsplit_testkit::Cluster;

#[tokio::test]
async fn replicas_stream_from_the_primary_and_can_be_paused() {
    let cluster = Cluster::start(2).await.expect("cluster starts");
    let root = cluster.root().to_owned();
    cluster
        .primary()
        .execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();
    for replica in cluster.replicas() {
        let mut conn = replica.connect().await.unwrap();
        let (recovery, count): (bool, i64) =
            sqlx::query_as("SELECT pg_is_in_recovery(), (SELECT count(*) FROM t)")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert!(recovery, "{} is a standby", replica.name());
        assert_eq!(count, 1, "{} replayed the insert", replica.name());
    }

    cluster.replica(0).pause_replay().await.unwrap();
    cluster
        .primary()
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = cluster.replica(0).connect().await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(count, 1, "a paused replica does not see new rows");
    cluster.replica(0).resume_replay().await.unwrap();
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();

    cluster
        .replica(0)
        .set_apply_delay(Duration::from_millis(700))
        .await
        .unwrap();
    cluster
        .primary()
        .execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let delayed: i64 = sqlx::query_scalar("SELECT count(*) FROM t")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        delayed, 2,
        "a delayed replica applies the insert only after the delay"
    );
    cluster
        .wait_caught_up(Duration::from_secs(10))
        .await
        .unwrap();

    cluster
        .replica(1)
        .stop(rwsplit_testkit::StopMode::Immediate)
        .await
        .unwrap();
    assert!(cluster.replica(1).connect().await.is_err());
    cluster.replica(1).start().await.unwrap();
    cluster.replica(1).connect().await.unwrap();

    drop(cluster);
    assert!(!root.exists(), "the cluster directory is removed on drop");
}
