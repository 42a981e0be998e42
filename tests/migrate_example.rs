//! `examples/migrate`: the same app before and after its move to rwsplit, against a real primary
//! with two streaming replicas that apply WAL late. The moved app answers every request as the
//! original did, its first read right after the startup migrations included, and the README's
//! diff is the real one.

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use http::{HeaderValue, Request};
use rwsplit_testkit::Cluster;
use tower::ServiceExt;

#[path = "../examples/migrate/after.rs"]
#[allow(dead_code)]
mod after;
#[path = "../examples/migrate/before.rs"]
#[allow(dead_code)]
mod before;

/// How late both replicas apply WAL.
const DELAY: Duration = Duration::from_millis(1500);

/// A client that keeps the consistency token of its last write, as a browser keeps the cookie.
#[derive(Default)]
struct Client {
    token: Option<HeaderValue>,
}

impl Client {
    async fn send(&mut self, app: &Router, method: &str, uri: &str, body: &str) -> (u16, String) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("x-db-consistency", token.clone());
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        if let Some(token) = response.headers().get("x-db-consistency") {
            self.token = Some(token.clone());
        }
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The requests a client of the notes API makes, with what each answered.
async fn tour(app: &Router, client: &mut Client, author: &str) -> Vec<(u16, String)> {
    let note = format!(r#"{{"author": "{author}", "body": "first"}}"#);
    let mut answers = vec![client.send(app, "POST", "/notes", &note).await];
    let id: i64 = serde_json::from_str::<serde_json::Value>(&answers[0].1).unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    let steps = [
        ("GET", format!("/notes/{id}"), String::new()),
        ("PUT", format!("/notes/{id}"), "edited".to_owned()),
        ("GET", format!("/notes/{id}"), String::new()),
        ("GET", format!("/authors/{author}/count"), String::new()),
        (
            "POST",
            "/notes".to_owned(),
            format!(
                r#"{{"author": "{author}", "body": "{}"}}"#,
                "x".repeat(2000)
            ),
        ),
        ("GET", "/notes/999999".to_owned(), String::new()),
    ];
    for (method, uri, body) in steps {
        answers.push(client.send(app, method, &uri, &body).await);
    }
    // Ids differ between the two runs; what each answer says does not.
    answers
        .into_iter()
        .map(|(status, body)| (status, body.replace(&format!("\"id\":{id},"), "")))
        .collect()
}

#[tokio::test]
async fn the_moved_app_answers_as_before_from_its_first_read_after_the_migrations() {
    let cluster = Cluster::start(2).await.unwrap();
    for replica in cluster.replicas() {
        replica.set_apply_delay(DELAY).await.unwrap();
    }
    let replicas: Vec<String> = cluster.replicas().iter().map(|r| r.url()).collect();

    // The moved app: migrations, then the replicas' barrier, then the first GET at once.
    let started = Instant::now();
    let moved = after::app(&cluster.primary().url(), &replicas)
        .await
        .unwrap();
    let took = started.elapsed();
    let mut client = Client::default();
    let first = client.send(&moved, "GET", "/notes", "").await;
    assert_eq!(first, (200, "[]".to_owned()));
    // It waited for replicas that applied the migrations late.
    assert!(took >= DELAY, "started in {took:?}");

    let moved_answers = tour(&moved, &mut client, "ada").await;
    let statuses: Vec<u16> = moved_answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 413, 404],
        "{moved_answers:?}"
    );
    assert!(
        moved_answers[3].1.contains("\"revision\":2"),
        "{moved_answers:?}"
    );
    assert_eq!(moved_answers[4].1, "1");

    // The original app, on the primary alone, answers the same (its migrations are applied).
    let original = before::app(&cluster.primary().url()).await.unwrap();
    let original_answers = tour(&original, &mut Client::default(), "ada").await;
    // The count is per author: the second run's note is the author's second.
    let mut expected = moved_answers.clone();
    expected[0].1 = expected[0].1.replace("},1]", "},2]");
    expected[4].1 = "2".to_owned();
    assert_eq!(original_answers, expected);
}

/// The lines a line diff of `old` and `new` removes and adds (a longest common subsequence).
fn changed_lines(old: &str, new: &str) -> (Vec<String>, Vec<String>) {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j == b.len() || (i < a.len() && common[i + 1][j] >= common[i][j + 1]) {
            removed.push(a[i].to_owned());
            i += 1;
        } else {
            added.push(b[j].to_owned());
            j += 1;
        }
    }
    (removed, added)
}

#[test]
fn the_readme_shows_the_whole_move_and_nothing_else() {
    let root = env!("CARGO_MANIFEST_DIR");
    let read = |path: &str| std::fs::read_to_string(format!("{root}/{path}")).unwrap();
    let (removed, added) = changed_lines(
        &read("examples/migrate/before.rs"),
        &read("examples/migrate/after.rs"),
    );
    let readme = read("README.md");
    let start = readme
        .find("```diff\n--- examples/migrate/before.rs")
        .expect("the README shows the example's diff");
    let block = &readme[start..];
    let block = &block[..block[3..].find("```").unwrap() + 3];
    let (mut shown_removed, mut shown_added) = (Vec::new(), Vec::new());
    for line in block.lines().skip(3) {
        if let Some(line) = line.strip_prefix('-') {
            shown_removed.push(line.to_owned());
        } else if let Some(line) = line.strip_prefix('+') {
            shown_added.push(line.to_owned());
        }
    }
    assert_eq!(shown_removed, removed, "README's removed lines");
    assert_eq!(shown_added, added, "README's added lines");
    // Apart from the module docs, the imports and the startup, only parameter types change.
    let handler_lines = removed
        .iter()
        .filter(|l| l.contains("Extension(pool): Extension<PgPool>"))
        .count();
    assert_eq!(handler_lines, 5);
}
