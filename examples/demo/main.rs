//! rwsplit against a real replicated PostgreSQL.
//!
//! `cargo run --example demo` starts a local primary with two streaming replicas (no Docker),
//! serves an `items` API on 127.0.0.1:3000 (or the next free port), walks through a short tour
//! that prints where each request went and why, then serves until Ctrl-C.
//!
//! `cargo run --example demo -- --config FILE [--listen ADDR]` uses a YAML configuration
//! (`${ENV}` placeholders allowed) and starts no cluster. `--exit-after-tour` stops after the
//! tour, for scripts.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rwsplit::{Config, ConsistencyConfig, Registry};
use tokio::net::TcpListener;

mod app;

struct Args {
    config: Option<String>,
    listen: Option<SocketAddr>,
    exit_after_tour: bool,
    no_tour: bool,
    metrics_out: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        listen: None,
        exit_after_tour: false,
        no_tour: false,
        metrics_out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?),
            "--listen" => {
                let addr = it.next().ok_or("--listen needs an address")?;
                args.listen = Some(addr.parse().map_err(|e| format!("--listen {addr}: {e}"))?);
            }
            "--exit-after-tour" => args.exit_after_tour = true,
            "--no-tour" => args.no_tour = true,
            "--metrics-out" => {
                args.metrics_out = Some(it.next().ok_or("--metrics-out needs a file")?)
            }
            "-h" | "--help" => {
                return Err(
                    "usage: demo [--config FILE] [--listen ADDR] [--exit-after-tour] [--no-tour] [--metrics-out FILE]".into(),
                );
            }
            other => return Err(format!("unknown argument `{other}` (try --help)")),
        }
    }
    Ok(args)
}

async fn listener(addr: Option<SocketAddr>) -> std::io::Result<TcpListener> {
    if let Some(addr) = addr {
        return TcpListener::bind(addr).await;
    }
    for port in 3000..3100 {
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
            return Ok(listener);
        }
    }
    TcpListener::bind("127.0.0.1:0").await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "rwsplit=info,demo=info,warn".into()),
        )
        .init();
    let args = args().map_err(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    })?;

    let mut cluster = None;
    let config = match &args.config {
        Some(file) => Config::from_file(file).unwrap_or_else(|e| {
            // The error names the key and the value (never a secret's).
            eprintln!("{file}: {e}");
            std::process::exit(2)
        }),
        None => {
            println!("starting a local primary and two streaming replicas...");
            let started = rwsplit_testkit::Cluster::start(2).await?;
            let config = Config::from_yaml(&started.config_yaml())?
                .health_check_interval(Duration::from_millis(500))
                .replica_lag_threshold(Duration::from_secs(5))
                // No key configured: a per-process key (and a warning) is right for one demo
                // process; set `db.consistency.signingKey` when running several instances.
                .consistency(ConsistencyConfig::lsn().cookie_secure(false));
            for replica in started.replicas() {
                // Replicas that apply each write 400 ms late make read-your-writes visible.
                replica.set_apply_delay(Duration::from_millis(400)).await?;
                println!(
                    "  {:<9} 127.0.0.1:{}  (applies writes 400 ms late)",
                    replica.name(),
                    replica.port()
                );
            }
            println!("  primary   127.0.0.1:{}", started.primary().port());
            cluster = Some(started);
            config
        }
    };

    let metrics = rwsplit::prometheus::install_recorder()?;
    let registry = Registry::connect(config).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, name text NOT NULL)")
        .execute(&registry.primary())
        .await?;

    if let Some(file) = &args.config {
        // Edits of the file (and SIGHUP) apply live: separation, rollout share, replicas
        // added, drained, removed, thresholds.
        registry.watch_file(file);
        println!("watching {file}: edits apply without a restart");
    }

    let listener = listener(args.listen).await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(
        axum::serve(listener, app::service(registry.clone(), metrics.clone()))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .into_future(),
    );
    println!("\nserving on http://{addr}\n");

    let toured = if args.no_tour {
        Ok(())
    } else {
        tour(addr).await
    };
    if let Some(file) = &args.metrics_out {
        std::fs::write(file, metrics.render())?;
    }
    if let Err(e) = &toured {
        eprintln!("tour failed: {e}");
    }
    if args.exit_after_tour {
        registry.shutdown().await;
        drop(cluster);
        return toured;
    }
    println!("\ntry: curl -i http://{addr}/items   (Ctrl-C to stop)");
    server.await??;
    println!("stopping...");
    registry.shutdown().await;
    drop(cluster);
    Ok(())
}

/// A tiny HTTP client for the tour that keeps the consistency token, as a browser's cookie jar
/// keeps the cookie.
struct TourClient {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
}

impl TourClient {
    /// A client with an empty cookie jar.
    fn new(addr: SocketAddr, client: &Client<HttpConnector, Full<Bytes>>) -> Self {
        TourClient {
            addr,
            client: client.clone(),
            token: None,
        }
    }

    /// Sends one request, prints where it went and why, and checks the status and the kind of
    /// server (`primary`, `replica`) it must get. Returns the body.
    async fn step(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&'static str>,
        want_status: u16,
        want_server: &str,
    ) -> Result<String, Box<dyn std::error::Error>> {
        let (status, target, body) = self.send(method, path, body).await?;
        let served_right = match want_server {
            "replica" => target.starts_with("replica"),
            other => target == other,
        };
        if status != want_status || !served_right {
            return Err(format!(
                "{method} {path}: expected {want_status} from {want_server}, got {status} from {target}"
            )
            .into());
        }
        Ok(body)
    }

    async fn send(
        &mut self,
        method: &'static str,
        path: &str,
        body: Option<&'static str>,
    ) -> Result<(u16, String, String), Box<dyn std::error::Error>> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("x-db-consistency", token);
        }
        let response = self
            .client
            .request(request.body(Full::new(Bytes::from(body.unwrap_or(""))))?)
            .await?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (target, reason) = (header("x-db-target"), header("x-db-reason"));
        if let Some(token) = header("x-db-consistency") {
            self.token = Some(token);
        }
        let target = target.unwrap_or_else(|| "-".into());
        let body = response.into_body().collect().await?.to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        println!(
            "{method:<6} {path:<20} -> {status:<3} served by {target:<9} {:<17} {}",
            reason.unwrap_or_else(|| "-".into()),
            body.chars().take(58).collect::<String>()
        );
        Ok((status, target, body))
    }
}

/// Sends a few requests and prints where each went and why.
async fn tour(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let http = Client::builder(TokioExecutor::new()).build_http();
    let mut client = TourClient::new(addr, &http);
    println!("tour: each request, the server that served it (x-db-target) and why\n");
    let created = client
        .step(
            "POST",
            "/items",
            Some(r#"{"name":"apple"}"#),
            201,
            "primary",
        )
        .await?;
    let id = serde_json::from_str::<serde_json::Value>(&created)?["id"]
        .as_i64()
        .unwrap_or(1);
    let item = format!("/items/{id}");

    println!("\n  read-your-writes: the write set a token; the replicas have not replayed it yet");
    client.step("GET", &item, None, 200, "primary").await?;
    println!("  ...a moment later, a replica has caught up, so the same client reads from it");
    let start = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, target, _) = client.send("GET", &item, None).await?;
        if status != 200 {
            return Err(format!("GET {item}: {status}").into());
        }
        if target.starts_with("replica") {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("no replica caught up within 10 s".into());
        }
    }

    println!("\n  a client without a token reads from replicas; overrides win over the method");
    let mut other = TourClient::new(addr, &http);
    other.step("GET", "/items", None, 200, "replica").await?;
    other
        .step("GET", &format!("{item}/fresh"), None, 200, "primary")
        .await?;
    other
        .step(
            "POST",
            "/items/search",
            Some(r#"{"q":"ap"}"#),
            200,
            "replica",
        )
        .await?;
    other
        .step(
            "PUT",
            &item,
            Some(r#"{"name":"green apple"}"#),
            200,
            "primary",
        )
        .await?;

    println!("\n  malformed input (a new client): a 4xx with a JSON error, never a 5xx");
    let mut other = TourClient::new(addr, &http);
    other
        .step("POST", "/items", Some(r#"{"nme": oops"#), 400, "primary")
        .await?;
    other
        .step("GET", "/items/not-a-number", None, 400, "replica")
        .await?;
    other.step("DELETE", &item, None, 204, "primary").await?;
    other.step("DELETE", &item, None, 404, "primary").await?;

    println!("\n  for operators: the registry's state and the metrics");
    let status = other.step("GET", "/db/status", None, 200, "-").await?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    for replica in status["replicas"].as_array().into_iter().flatten() {
        println!(
            "         {}: healthy {}, in rotation {}, lag {}s / {} bytes",
            replica["name"],
            replica["healthy"],
            replica["in_rotation"],
            replica["lag_seconds"],
            replica["lag_bytes"]
        );
    }
    let metrics = other.step("GET", "/metrics", None, 200, "-").await?;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("rwsplit_route_decisions_total"))
    {
        println!("         {line}");
    }
    Ok(())
}
