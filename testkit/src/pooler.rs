//! PgBouncer in front of one server of a test cluster: Debian's `pgbouncer` package, started
//! as the servers' OS user on a free loopback port, stopped on drop.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Node, free_port};

/// How PgBouncer hands server connections to clients (`pool_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection for as long as the client stays connected.
    Session,
    /// A server connection for one transaction at a time.
    Transaction,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
        }
    }
}

/// A running PgBouncer in front of one node.
#[derive(Debug)]
pub struct Pooler {
    port: u16,
    child: Child,
    dir: PathBuf,
}

impl Pooler {
    /// Starts PgBouncer in `mode` in front of `node`, for every database, letting in `users`
    /// (name, password) with SCRAM, and ignoring `extra_float_digits` as every sqlx user
    /// behind PgBouncer must.
    pub(crate) fn start(
        node: &Node,
        mode: PoolMode,
        users: &[(&str, &str)],
        owner: Option<(u32, u32)>,
    ) -> io::Result<Pooler> {
        let port = free_port()?;
        let dir = node.root.join(format!("pgbouncer-{port}"));
        fs::create_dir_all(&dir)?;
        let userlist: String = users
            .iter()
            .map(|(user, password)| format!("\"{user}\" \"{password}\"\n"))
            .collect();
        fs::write(dir.join("userlist.txt"), userlist)?;
        let ini = format!(
            "[databases]\n* = host=127.0.0.1 port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_type = scram-sha-256\n\
             auth_file = {}\npool_mode = {}\nignore_startup_parameters = extra_float_digits\n\
             max_client_conn = 500\ndefault_pool_size = 40\nlogfile = {}\n",
            node.port(),
            dir.join("userlist.txt").display(),
            mode.as_str(),
            dir.join("pgbouncer.log").display(),
        );
        let ini_path = dir.join("pgbouncer.ini");
        fs::write(&ini_path, ini)?;
        if let Some((uid, gid)) = owner {
            for file in ["", "userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid))?;
            }
        }
        let mut command = Command::new("pgbouncer");
        command
            .arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = owner {
            command.uid(uid).gid(gid);
        }
        let child = command.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("pgbouncer: {e} (is Debian's pgbouncer package installed?)"),
            )
        })?;
        let pooler = Pooler { port, child, dir };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(io::Error::other(format!(
                    "pgbouncer did not listen on {port} within 10 s:\n{}",
                    pooler.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pooler)
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for Pooler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
