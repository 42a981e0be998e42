//! A real PostgreSQL primary with streaming hot standbys on loopback, for rwsplit's tests,
//! demo and benchmarks.
//!
//! [`Cluster::start`] runs `initdb` for a primary, starts it on a free loopback port, makes each
//! replica with `scripts/replica-bootstrap.sh` (`pg_basebackup -R -X stream`, the script the
//! Docker replicas run too) and starts it as a hot standby. Everything lives in one temporary
//! directory under `/tmp` (short, because of the Unix socket path limit). Dropping the
//! [`Cluster`], including while a test panics, stops every server and removes the directory;
//! a cluster left behind by a killed process is cleaned up by the next [`Cluster::start`].
//!
//! Server binaries come from `RWSPLIT_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. PostgreSQL refuses to run as root, so when this
//! process is root the servers run as the `postgres` OS user.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let cluster = rwsplit_testkit::Cluster::start(2).await?;
//! println!("primary on port {}", cluster.primary().port());
//! cluster.replica(0).pause_replay().await?;
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::io::{self, ErrorKind};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod cpu;
mod dns;
mod pooler;
mod relay;

pub use cpu::CpuCap;
pub use dns::{Dns, DnsRecord};
pub use pooler::{PoolMode, Pooler};
pub use relay::Relay;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The superuser password of every test cluster. The servers listen on 127.0.0.1 only.
pub const PASSWORD: &str = "rwsplit-test-secret";
/// The superuser name of every test cluster.
pub const USER: &str = "postgres";

const BOOTSTRAP_SCRIPT: &str = include_str!("../../scripts/replica-bootstrap.sh");
const DIR_PREFIX: &str = "rws-";

/// How a server is stopped, as `pg_ctl stop -m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for the server to shut down cleanly, disconnecting clients.
    Fast,
    /// Kill the server at once, as a crash would.
    Immediate,
}

/// Options for [`Cluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Number of hot standbys.
    pub replicas: usize,
    /// Extra `postgresql.conf` lines for every server (the replicas copy the primary's).
    pub extra_conf: Vec<String>,
    /// Serve TLS with a certificate for `localhost`, signed by a throwaway CA
    /// ([`Cluster::ca_cert`]). Needs the `openssl` command.
    pub tls: bool,
}

/// A running primary and its hot standbys, stopped and removed on drop.
#[derive(Debug)]
pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    primary: Node,
    replicas: Vec<Node>,
}

/// One PostgreSQL server of a [`Cluster`].
#[derive(Debug, Clone)]
pub struct Node {
    name: String,
    port: u16,
    data: PathBuf,
    root: PathBuf,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
}

impl Cluster {
    /// Starts a primary and `replicas` hot standbys.
    pub async fn start(replicas: usize) -> io::Result<Cluster> {
        Cluster::start_with(ClusterOptions {
            replicas,
            ..ClusterOptions::default()
        })
        .await
    }

    /// Starts a cluster with the given options.
    pub async fn start_with(options: ClusterOptions) -> io::Result<Cluster> {
        clean_stale_clusters();
        let bin = find_bin()?;
        let owner = postgres_owner()?;
        let root = make_root(owner)?;
        let mut cluster = Cluster {
            primary: Node::new("primary", &root, &bin, owner),
            replicas: Vec::new(),
            root,
            bin,
            owner,
        };
        let mut extra_conf = options.extra_conf.clone();
        if options.tls {
            cluster.make_certificates().await?;
            extra_conf.extend([
                "ssl = on".to_owned(),
                "ssl_cert_file = 'server.crt'".to_owned(),
                "ssl_key_file = 'server.key'".to_owned(),
            ]);
        }
        cluster.init_primary(&extra_conf).await?;
        for i in 0..options.replicas {
            let node = cluster
                .bootstrap_replica(&format!("replica{}", i + 1), USER, PASSWORD)
                .await?;
            cluster.replicas.push(node);
        }
        cluster.primary.create_extension().await?;
        Ok(cluster)
    }

    /// The primary.
    pub fn primary(&self) -> &Node {
        &self.primary
    }

    /// The `i`th replica (0-based), named `replica{i+1}`.
    pub fn replica(&self, i: usize) -> &Node {
        &self.replicas[i]
    }

    /// All replicas, in order.
    pub fn replicas(&self) -> &[Node] {
        &self.replicas
    }

    /// The CA certificate that signed the servers' certificate (with `tls`).
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// Starts PgBouncer (Debian's `pgbouncer`) in `mode` in front of `node`, letting in the
    /// superuser and `users` (name, password). Stopped when the returned value is dropped.
    pub fn pooler(
        &self,
        node: &Node,
        mode: PoolMode,
        users: &[(&str, &str)],
    ) -> io::Result<Pooler> {
        let mut all = vec![(USER, PASSWORD)];
        all.extend_from_slice(users);
        Pooler::start(node, mode, &all, self.owner)
    }

    /// The directory holding every data directory and log.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The cluster as the `db:` block of an rwsplit YAML configuration: separation on, TLS
    /// off, every replica at weight 1.
    pub fn config_yaml(&self) -> String {
        self.config_yaml_weighted(&vec![1; self.replicas.len()])
    }

    /// As [`config_yaml`](Self::config_yaml), with the replicas' weights in order.
    pub fn config_yaml_weighted(&self, weights: &[u32]) -> String {
        let mut yaml = format!(
            "db:\n  host: 127.0.0.1\n  port: {}\n  username: {USER}\n  password: \"{PASSWORD}\"\n  \
             database: postgres\n  sslMode: disable\n  enableReadWriteSeparation: true\n  \
             readReplicas:\n",
            self.primary.port
        );
        for (replica, weight) in self.replicas.iter().zip(weights) {
            yaml.push_str(&format!(
                "    - {{ name: {}, host: 127.0.0.1, port: {}, weight: {weight} }}\n",
                replica.name, replica.port
            ));
        }
        yaml
    }

    /// Waits until every replica has replayed everything the primary has written so far.
    pub async fn wait_caught_up(&self, timeout: Duration) -> io::Result<()> {
        let mut primary = self.primary.connect().await?;
        let target: i64 =
            sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::int8")
                .fetch_one(&mut primary)
                .await
                .map_err(io::Error::other)?;
        let deadline = Instant::now() + timeout;
        for replica in &self.replicas {
            loop {
                if replica.replay_position().await? >= target {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        format!("{} did not catch up within {timeout:?}", replica.name),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// A CA and a server certificate for `localhost`, in the root; copied into the primary's
    /// data directory after `initdb` (replicas get them through `pg_basebackup`).
    async fn make_certificates(&self) -> io::Result<()> {
        let dir = &self.root;
        fs::write(dir.join("server.ext"), "subjectAltName = DNS:localhost\n")?;
        let steps: [&[&str]; 3] = [
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=rwsplit test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
            ],
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        ];
        for args in steps {
            let mut openssl = Command::new("openssl");
            openssl.args(args).current_dir(dir).stdin(Stdio::null());
            run(openssl, "openssl").await?;
        }
        Ok(())
    }

    async fn init_primary(&mut self, extra_conf: &[String]) -> io::Result<()> {
        let data = self.primary.data.clone();
        let pwfile = self.root.join("pwfile");
        fs::write(&pwfile, PASSWORD)?;
        chown(&pwfile, self.owner)?;
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-A", "trust", "--auth-host=scram-sha-256", "-N"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C"]);
        run(initdb, "initdb").await?;
        fs::remove_file(&pwfile)?;
        if self.root.join("server.crt").exists() {
            for file in ["server.crt", "server.key"] {
                let target = data.join(file);
                fs::copy(self.root.join(file), &target)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(0o600))?;
                chown(&target, self.owner)?;
            }
        }
        let mut conf = format!(
            "\n# rwsplit-testkit\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{root}'\n\
             fsync = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n\
             max_connections = 300\n\
             max_wal_senders = 10\n\
             wal_keep_size = 128MB\n\
             max_wal_size = 128MB\n\
             hot_standby = on\n\
             hot_standby_feedback = on\n\
             wal_receiver_status_interval = 1s\n\
             shared_preload_libraries = 'pg_stat_statements'\n\
             log_min_messages = warning\n\
             log_line_prefix = '%m [%p] '\n",
            root = self.root.display()
        );
        for line in extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;
        self.primary.start_on_free_port().await
    }

    /// Adds and starts one more hot standby, bootstrapped by `scripts/replica-bootstrap.sh`
    /// as `user` (a role with the REPLICATION attribute) with `password`.
    pub async fn add_replica_as(&mut self, user: &str, password: &str) -> io::Result<&Node> {
        let name = format!("replica{}", self.replicas.len() + 1);
        let node = self.bootstrap_replica(&name, user, password).await?;
        self.replicas.push(node);
        Ok(self.replicas.last().expect("just pushed"))
    }

    async fn bootstrap_replica(&self, name: &str, user: &str, password: &str) -> io::Result<Node> {
        let mut node = Node::new(name, &self.root, &self.bin, self.owner);
        node.bootstrap_from(&self.primary, user, password).await?;
        node.start_on_free_port().await?;
        Ok(node)
    }

    fn command(&self, program: &str) -> Command {
        command(&self.bin, program, self.owner, &self.root)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.replicas.iter().chain(std::iter::once(&self.primary)) {
            node.stop_blocking();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl Node {
    fn new(name: &str, root: &Path, bin: &Path, owner: Option<(u32, u32)>) -> Node {
        Node {
            name: name.to_owned(),
            port: 0,
            data: root.join(name),
            root: root.to_owned(),
            bin: bin.to_owned(),
            owner,
        }
    }

    /// The node's name: `primary`, `replica1`, `replica2`, ...
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log.
    pub fn log_file(&self) -> PathBuf {
        self.root.join(format!("{}.log", self.name))
    }

    /// A `postgres://` URL for this server, with the superuser's credentials.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// sqlx connect options for this server.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(USER)
            .password(PASSWORD)
            .database("postgres")
            .disable_statement_logging()
    }

    /// Opens one connection to this server.
    pub async fn connect(&self) -> io::Result<PgConnection> {
        PgConnection::connect_with(&self.connect_options())
            .await
            .map_err(|e| io::Error::other(format!("connect to {}: {e}", self.name)))
    }

    /// Runs one SQL statement on this server.
    pub async fn execute(&self, sql: &str) -> io::Result<()> {
        let mut conn = self.connect().await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .map_err(|e| io::Error::other(format!("{}: {sql}: {e}", self.name)))?;
        conn.close().await.ok();
        Ok(())
    }

    /// The position this standby has replayed up to, in bytes since `0/0`.
    pub async fn replay_position(&self) -> io::Result<i64> {
        let mut conn = self.connect().await?;
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::int8")
            .fetch_one(&mut conn)
            .await
            .map_err(io::Error::other)
    }

    /// Pauses WAL replay on this standby (`pg_wal_replay_pause()`): it keeps receiving WAL
    /// but its data stops moving, so its lag grows with every write on the primary.
    pub async fn pause_replay(&self) -> io::Result<()> {
        self.execute("SELECT pg_wal_replay_pause()").await
    }

    /// Resumes WAL replay on this standby.
    pub async fn resume_replay(&self) -> io::Result<()> {
        self.execute("SELECT pg_wal_replay_resume()").await
    }

    /// Sets `recovery_min_apply_delay` on this standby and reloads it: every transaction is
    /// applied no sooner than `delay` after it committed on the primary.
    pub async fn set_apply_delay(&self, delay: Duration) -> io::Result<()> {
        self.execute(&format!(
            "ALTER SYSTEM SET recovery_min_apply_delay = '{}ms'",
            delay.as_millis()
        ))
        .await?;
        self.execute("SELECT pg_reload_conf()").await
    }

    /// Stops the server.
    pub async fn stop(&self, mode: StopMode) -> io::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60", "-m", mode.as_arg()]);
        run(stop, "pg_ctl stop").await
    }

    /// Promotes this standby to a primary (`pg_ctl promote`), waiting until it accepts
    /// writes. It starts a new timeline.
    pub async fn promote(&self) -> io::Result<()> {
        let mut promote = self.command("pg_ctl");
        promote
            .arg("promote")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "60"]);
        run(promote, "pg_ctl promote").await
    }

    /// Re-points this running standby at `primary` (its `primary_conninfo`, reloaded): it
    /// follows the primary's latest timeline if it can, as after a failover. A standby that
    /// replayed past the point where `primary`'s timeline forked cannot, and stays where it is.
    pub async fn follow(&self, primary: &Node) -> io::Result<()> {
        self.execute(&format!(
            "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={} user={USER} \
             password={PASSWORD} application_name={}'",
            primary.port, self.name
        ))
        .await?;
        self.execute("SELECT pg_reload_conf()").await
    }

    /// Stops this standby's WAL receiver (an empty `primary_conninfo`): it keeps what it has
    /// and receives nothing more until [`follow`](Self::follow).
    pub async fn detach(&self) -> io::Result<()> {
        self.execute("ALTER SYSTEM SET primary_conninfo = ''")
            .await?;
        self.execute("SELECT pg_reload_conf()").await
    }

    /// Makes this stopped server a fresh hot standby of `primary` and starts it on its old
    /// port: its data directory is replaced by a base backup of `primary`
    /// (`scripts/replica-bootstrap.sh`), as a former primary is rebuilt after a failover.
    pub async fn rejoin_as_standby(&self, primary: &Node) -> io::Result<()> {
        fs::remove_dir_all(&self.data)?;
        self.bootstrap_from(primary, USER, PASSWORD).await?;
        // The backup carries the primary's port; this server keeps its own.
        append(
            &self.data.join("postgresql.conf"),
            &format!("port = {}\n", self.port),
        )?;
        self.start().await
    }

    /// Fills this node's (absent) data directory with a standby of `primary`, through
    /// `scripts/replica-bootstrap.sh` as `user` with `password`.
    async fn bootstrap_from(&self, primary: &Node, user: &str, password: &str) -> io::Result<()> {
        let script = self.root.join("replica-bootstrap.sh");
        if !script.exists() {
            fs::write(&script, BOOTSTRAP_SCRIPT)?;
            fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
        }
        let mut bootstrap = self.command("sh");
        bootstrap
            .arg(&script)
            .env("PGDATA", &self.data)
            .env("PRIMARY_HOST", "127.0.0.1")
            .env("PRIMARY_PORT", primary.port.to_string())
            .env("REPLICATION_USER", user)
            .env("PGPASSWORD", password)
            .env("PG_BIN", &self.bin)
            .env("WAIT_SECONDS", "30")
            .env("STANDBY_NAME", &self.name);
        run(bootstrap, "replica-bootstrap.sh").await
    }

    /// Freezes the server's postmaster with `SIGSTOP`: it still accepts TCP connections (the
    /// kernel queues them) but answers none, like a hung host. Sessions already open keep
    /// working. Undo with [`thaw`](Self::thaw).
    pub async fn freeze(&self) -> io::Result<()> {
        self.signal("STOP").await
    }

    /// Resumes a server frozen by [`freeze`](Self::freeze) (`SIGCONT`).
    pub async fn thaw(&self) -> io::Result<()> {
        self.signal("CONT").await
    }

    /// Freezes the whole server with `SIGSTOP`, its postmaster and every process it started,
    /// sessions included: like a host that hangs or drops off the network, every connection
    /// to it stays open and nothing answers. Undo with [`thaw_all`](Self::thaw_all).
    pub async fn freeze_all(&self) -> io::Result<()> {
        self.signal("STOP").await?;
        self.signal_children("STOP").await
    }

    /// Resumes a server frozen by [`freeze_all`](Self::freeze_all).
    pub async fn thaw_all(&self) -> io::Result<()> {
        self.signal_children("CONT").await?;
        self.signal("CONT").await
    }

    async fn signal_children(&self, signal: &str) -> io::Result<()> {
        let parent = self.postmaster_pid()?;
        let mut children = Vec::new();
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid ...`; `comm` may hold spaces and parentheses.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            if after.split_whitespace().nth(1) == Some(parent.as_str()) {
                children.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        if children.is_empty() {
            return Ok(());
        }
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}")).args(children);
        // A process that exited since the listing fails `kill`; the others got the signal.
        let _ = run(kill, "kill").await;
        Ok(())
    }

    fn postmaster_pid(&self) -> io::Result<String> {
        let pid_file = std::fs::read_to_string(self.data.join("postmaster.pid"))?;
        pid_file
            .lines()
            .next()
            .map(str::trim)
            .filter(|p| p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other("postmaster.pid has no pid"))
    }

    async fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self.postmaster_pid()?;
        let mut kill = Command::new("kill");
        kill.arg(format!("-{signal}")).arg(pid);
        run(kill, "kill").await
    }

    /// Starts the server again on the same port, waiting until it accepts connections.
    pub async fn start(&self) -> io::Result<()> {
        let mut start = self.command("pg_ctl");
        start
            .arg("start")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60"]);
        run(start, "pg_ctl start")
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("{e}\n{}", self.log_tail())))
    }

    async fn start_on_free_port(&mut self) -> io::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            self.port = free_port()?;
            append(
                &self.data.join("postgresql.conf"),
                &format!("port = {}\n", self.port),
            )?;
            match self.start().await {
                Ok(()) => return Ok(()),
                // Another process may have taken the port between our probe and the bind.
                Err(e) if e.to_string().contains("in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    async fn create_extension(&self) -> io::Result<()> {
        self.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .await
    }

    fn stop_blocking(&self) {
        if self.port == 0 {
            return;
        }
        // A frozen postmaster would not act on the stop signal.
        if let Ok(pid) = fs::read_to_string(self.data.join("postmaster.pid"))
            && let Some(pid) = pid.lines().next()
        {
            let _ = Command::new("kill")
                .args(["-CONT", pid.trim()])
                .stderr(Stdio::null())
                .status();
        }
        let mut stop = self.command("pg_ctl");
        stop.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_file().display())
    }

    fn command(&self, program: &str) -> Command {
        command(&self.bin, program, self.owner, &self.root)
    }
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

fn command(bin: &Path, program: &str, owner: Option<(u32, u32)>, cwd: &Path) -> Command {
    let path = bin.join(program);
    let mut cmd = if path.exists() {
        Command::new(path)
    } else {
        Command::new(program)
    };
    cmd.current_dir(cwd).stdin(Stdio::null());
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

async fn run(cmd: Command, what: &str) -> io::Result<()> {
    let mut cmd = tokio::process::Command::from(cmd);
    let out = cmd.kill_on_drop(true).output().await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{what}: {e} (are the PostgreSQL server binaries installed?)"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

fn find_bin() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("RWSPLIT_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("initdb").exists()))
        .unwrap_or(false);
    if on_path {
        // `command` falls back to a PATH lookup for programs it does not find in `bin`.
        return Ok(PathBuf::new());
    }
    Err(io::Error::new(
        ErrorKind::NotFound,
        "PostgreSQL server binaries not found: install them (for example \
         `apt-get install -y postgresql`) or set RWSPLIT_PG_BIN to the directory holding initdb",
    ))
}

/// The uid and gid to run servers as: `postgres` when this process is root, else none.
fn postgres_owner() -> io::Result<Option<(u32, u32)>> {
    if fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres") && fields.len() > 3)
        .and_then(|fields| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
        .map(Some)
        .ok_or_else(|| {
            io::Error::new(
                ErrorKind::NotFound,
                "running as root but there is no `postgres` OS user to run PostgreSQL as \
                 (installing the postgresql package creates it)",
            )
        })
}

fn make_root(owner: Option<(u32, u32)>) -> io::Result<PathBuf> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("{DIR_PREFIX}{pid}-{n}"));
        match fs::create_dir(&root) {
            Ok(()) => {
                fs::write(root.join("owner"), pid.to_string())?;
                fs::set_permissions(&root, fs::Permissions::from_mode(0o700))?;
                chown(&root, owner)?;
                return Ok(root);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Stops and removes clusters whose owning process is gone (killed before it could drop them).
fn clean_stale_clusters() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let root = entry.path();
        let Ok(owner) = fs::read_to_string(root.join("owner")) else {
            continue;
        };
        if Path::new("/proc").join(owner.trim()).exists() {
            continue;
        }
        let bin = find_bin().unwrap_or_default();
        let ids = postgres_owner().ok().flatten();
        for data in fs::read_dir(&root).into_iter().flatten().flatten() {
            if data.path().join("postmaster.pid").exists() {
                let mut stop = command(&bin, "pg_ctl", ids, &root);
                stop.arg("stop")
                    .arg("-D")
                    .arg(data.path())
                    .args(["-m", "immediate"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = stop.status();
            }
        }
        let _ = fs::remove_dir_all(&root);
    }
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> io::Result<()> {
    match owner {
        Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

fn append(path: &Path, text: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
