//! Hostile HTTP against the demo app, served over real TCP by hyper in front of a real cluster:
//! invalid and unknown methods, huge headers and bodies, malformed JSON, forged and garbage
//! consistency tokens, junk paths, and a few hundred randomly assembled requests. None may get
//! a 5xx, and the app keeps serving (and writing) afterwards.

mod common;

#[path = "../examples/demo/app.rs"]
#[allow(dead_code, unreachable_pub)]
mod demo;

use std::net::SocketAddr;
use std::time::Duration;

use common::{cluster, config};
use rwsplit::{ConsistencyConfig, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` as raw bytes on a new connection and returns the response's status, or
/// `None` when the server closed the connection without answering (as hyper does for some
/// requests it cannot parse). A request the server still waits on after a second (a body
/// shorter than its length) gets its connection half-closed.
async fn send(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything (a body over the limit):
    // a failed write is not a failure of the test; the answer, if any, is still read.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    let mut half_closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server hung on {}",
            preview(request)
        );
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) if !half_closed && response.is_empty() => {
                half_closed = true;
                let _ = stream.shutdown().await;
            }
            Err(_) => {}
        }
        if response.len() > 1 << 20 {
            break;
        }
    }
    let head = std::str::from_utf8(response.get(..12)?).ok()?;
    head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn preview(request: &[u8]) -> String {
    let text = String::from_utf8_lossy(&request[..request.len().min(120)]);
    format!("{text}... ({} bytes)", request.len())
}

fn request(method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn json(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    request(
        method,
        path,
        &[("content-type", "application/json".into())],
        body,
    )
}

/// A deterministic stream of pseudo-random numbers (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// A request assembled from valid and invalid parts.
fn random_request(rng: &mut Rng, token: &str) -> Vec<u8> {
    let method = rng.pick(&[
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO", "get", "G-T",
        "PROPFIND",
    ]);
    let path = rng.pick(&[
        "/items",
        "/items/1",
        "/items/1/fresh",
        "/items/search",
        "/items/abc",
        "/items/-1",
        "/items/99999999999999999999",
        "/items/%ZZ",
        "/items/1%00",
        "/db/status",
        "/metrics",
        "/nowhere",
        "/items//1",
        "/items/1?x=%ZZ&&=",
    ]);
    let content_type = rng.pick(&[
        "application/json",
        "text/plain",
        "application/json; charset=\u{1}",
        "",
    ]);
    let forged = format!("2.{}", "A".repeat(70));
    let forged_old = format!("1.{}", "A".repeat(64));
    let tampered = format!("{}B", &token[..token.len() - 1]);
    let garbage = String::from_utf8_lossy(&rng.bytes(40))
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    let tokens = [
        token,
        &forged,
        &forged_old,
        &tampered,
        "garbage",
        "1.",
        "2.",
        "",
        &garbage,
        "2.!!!!",
    ];
    let chosen = tokens[rng.below(tokens.len())].to_owned();
    let mut headers = vec![("content-type", content_type.to_owned())];
    match rng.below(3) {
        0 => headers.push(("x-db-consistency", chosen)),
        1 => headers.push(("cookie", format!("a=b; rwsplit_consistency={chosen}; c"))),
        _ => {}
    }
    let body: Vec<u8> = match rng.below(6) {
        0 => Vec::new(),
        1 => br#"{"name":"fuzzed"}"#.to_vec(),
        2 => br#"{"q":"fu"}"#.to_vec(),
        3 => rng.bytes(64),
        4 => br#"{"name":"#.to_vec(),
        _ => br#"{"name": 5, "q": null}"#.to_vec(),
    };
    request(method, path, &headers, &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_never_get_a_5xx_and_the_demo_keeps_serving() {
    let cluster = cluster().await;
    let config = config(&cluster).consistency(ConsistencyConfig::lsn().cookie_secure(false));
    let registry = Registry::connect(config).await.unwrap();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, demo::service(registry.clone(), metrics)).into_future());

    // A real token to tamper with, from a real write.
    let created = json("POST", "/items", br#"{"name":"first"}"#);
    assert_eq!(send(addr, &created).await, Some(201));
    let token = registry
        .sign_token(&registry.consistency_token().await.unwrap())
        .to_string();

    let huge = "x".repeat(1 << 20);
    let big_json = format!(r#"{{"name":"{}"}}"#, "y".repeat(3 << 20));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many_headers: Vec<(&str, String)> = (0..500)
        .map(|i| ("x-filler", format!("value {i}")))
        .collect();
    let many_cookies = (0..2_000)
        .map(|i| format!("c{i}=rwsplit_consistency"))
        .collect::<Vec<_>>()
        .join("; ");
    let long_path = format!("/items/{}", "1".repeat(60_000));
    let long_method = "A".repeat(10_000);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Methods
        ("unknown method", request("FOO", "/items", &[], b"")),
        ("lowercase method", request("get", "/items", &[], b"")),
        ("WebDAV method", request("PROPFIND", "/items/1", &[], b"")),
        ("TRACE", request("TRACE", "/items", &[], b"")),
        ("CONNECT", request("CONNECT", "/items", &[], b"")),
        ("method not allowed", request("PATCH", "/items/1", &[], b"")),
        ("DELETE on a collection", request("DELETE", "/items", &[], b"")),
        ("invalid method bytes", b"G\x01T /items HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        ("long method", request(&long_method, "/items", &[], b"")),
        ("no version", b"GET /items\r\n\r\n".to_vec()),
        ("HTTP/0.9", b"GET /items\n".to_vec()),
        ("binary garbage", Rng(7).bytes(4096)),
        // Headers
        ("1 MiB header", request("GET", "/items", &[("x-big", huge.clone())], b"")),
        ("1 MiB token header", request("GET", "/items", &[("x-db-consistency", huge.clone())], b"")),
        ("1 MiB cookie", request("GET", "/items", &[("cookie", huge.clone())], b"")),
        ("500 headers", request("GET", "/items", &many_headers, b"")),
        ("2,000 cookies", request("GET", "/items", &[("cookie", many_cookies.clone())], b"")),
        ("non-UTF-8 token", b"GET /items HTTP/1.1\r\nhost: x\r\nx-db-consistency: 1.\xff\xfe\xfd\r\nconnection: close\r\n\r\n".to_vec()),
        ("non-UTF-8 cookie", b"GET /items HTTP/1.1\r\nhost: x\r\ncookie: rwsplit_consistency=\xff\xfe\r\nconnection: close\r\n\r\n".to_vec()),
        ("forged token", request("GET", "/items/1", &[("x-db-consistency", format!("1.{}", "A".repeat(64)))], b"")),
        ("tampered token", request("GET", "/items/1", &[("x-db-consistency", format!("{}A", &token[..token.len() - 1]))], b"")),
        ("token in a garbage cookie", request("GET", "/items", &[("cookie", format!("=;;rwsplit_consistency=\"{token}\"; ==="))], b"")),
        ("bad content-length", b"POST /items HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n".to_vec()),
        ("two content-lengths", b"POST /items HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello".to_vec()),
        ("header without a colon", b"GET /items HTTP/1.1\r\nhost: x\r\nnot a header\r\n\r\n".to_vec()),
        // Bodies
        ("3 MiB JSON body", json("POST", "/items", big_json.as_bytes())),
        ("3 MiB chunked body", {
            let mut r = b"POST /items HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
            for _ in 0..48 {
                r.extend_from_slice(b"10000\r\n");
                r.extend_from_slice(&[b'z'; 0x10000]);
                r.extend_from_slice(b"\r\n");
            }
            r.extend_from_slice(b"0\r\n\r\n");
            r
        }),
        ("body shorter than its length", b"POST /items HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\"".to_vec()),
        ("bad chunk size", b"POST /items HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n".to_vec()),
        // JSON
        ("truncated JSON", json("POST", "/items", br#"{"name":"#)),
        ("JSON of the wrong shape", json("POST", "/items", b"[1, 2, 3]")),
        ("JSON with a wrong type", json("POST", "/items", br#"{"name": 5}"#)),
        ("JSON null", json("PUT", "/items/1", b"null")),
        ("empty JSON body", json("POST", "/items", b"")),
        ("invalid UTF-8 in JSON", json("POST", "/items", b"{\"name\":\"\xff\xfe\"}")),
        ("NUL in a JSON string", json("POST", "/items", br#"{"name":"a\u0000b"}"#)),
        ("lone surrogate in JSON", json("POST", "/items", br#"{"name":"\ud800"}"#)),
        ("deeply nested JSON", json("POST", "/items/search", deep.as_bytes())),
        ("JSON without content type", request("POST", "/items", &[], br#"{"name":"x"}"#)),
        ("JSON as text/plain", request("POST", "/items", &[("content-type", "text/plain".into())], br#"{"name":"x"}"#)),
        ("search with a NUL", json("POST", "/items/search", br#"{"q":"\u0000"}"#)),
        ("search with LIKE metacharacters", json("POST", "/items/search", br#"{"q":"%_\\'"}"#)),
        // Paths
        ("non-numeric id", request("GET", "/items/abc", &[], b"")),
        ("id out of range", request("GET", "/items/99999999999999999999", &[], b"")),
        ("negative id", request("DELETE", "/items/-1", &[], b"")),
        ("bad percent-encoding", request("GET", "/items/%ZZ", &[], b"")),
        ("encoded NUL", request("GET", "/items/1%00", &[], b"")),
        ("60 kB path", request("GET", &long_path, &[], b"")),
        ("absolute-form target", request("GET", "http://elsewhere/items", &[], b"")),
        ("asterisk target", request("OPTIONS", "*", &[], b"")),
        ("unknown route", request("GET", "/../../etc/passwd", &[], b"")),
    ];

    let mut statuses = Vec::new();
    for (name, bytes) in &cases {
        let status = send(addr, bytes).await;
        println!("{name:<32} {status:?}");
        assert!(
            status.is_none_or(|s| s < 500),
            "{name}: got {status:?} for {}",
            preview(bytes)
        );
        statuses.push(status);
    }
    // Most are answered with a clear 4xx, not a dropped connection.
    let answered = statuses.iter().filter(|s| s.is_some()).count();
    assert!(
        answered * 10 >= cases.len() * 8,
        "{answered} of {}",
        cases.len()
    );

    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let mut by_status = std::collections::BTreeMap::<Option<u16>, usize>::new();
    for _ in 0..300 {
        let bytes = random_request(&mut rng, &token);
        let status = send(addr, &bytes).await;
        assert!(
            status.is_none_or(|s| s < 500),
            "got {status:?} for {}",
            preview(&bytes)
        );
        *by_status.entry(status).or_default() += 1;
    }
    println!("random requests by status: {by_status:?}");

    // Still serving reads and writes.
    assert_eq!(
        send(addr, &request("GET", "/items", &[], b"")).await,
        Some(200)
    );
    let created = json("POST", "/items", br#"{"name":"after"}"#);
    assert_eq!(send(addr, &created).await, Some(201));
    assert!(registry.status().primary.healthy);
    registry.shutdown().await;
}
