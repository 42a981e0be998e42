//! A TCP relay to one server that counts every connection it is asked for, and can stand for
//! an outage: going down closes every relayed connection, and while down it accepts each new
//! connection and closes it at once, as a server that is gone behind a load balancer. It measures how hard clients knock on a server (a fleet's
//! probes, reconnects after an outage); it speaks no PostgreSQL and bytes pass through as they
//! are.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Bytes that, sent by a client, cut its connection.
type Cut = Arc<Mutex<Option<Vec<u8>>>>;

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    port: u16,
    accepted: Arc<AtomicU64>,
    down: watch::Sender<bool>,
    cut: Cut,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays a free loopback port to `target_port` on loopback.
    pub async fn start(target_port: u16) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let accepted = Arc::new(AtomicU64::new(0));
        let (down, is_down) = watch::channel(false);
        let count = Arc::clone(&accepted);
        let cut: Cut = Arc::default();
        let cuts = Arc::clone(&cut);
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                if *is_down.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(pass(client, target, is_down.clone(), Arc::clone(&cuts)));
            }
        });
        Ok(Relay {
            port,
            accepted,
            down,
            cut,
            task,
        })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections asked for so far, relayed or not.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// From now on, a connection whose client sends `bytes` (in one read) is closed before
    /// they reach the server; `None` stops cutting.
    pub fn cut_on(&self, bytes: Option<&[u8]>) {
        *self.cut.lock().unwrap_or_else(|e| e.into_inner()) = bytes.map(<[u8]>::to_vec);
    }

    /// Going down closes every relayed connection; while down, every new connection is
    /// closed at once.
    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pass(client: TcpStream, target: SocketAddr, mut down: watch::Receiver<bool>, cut: Cut) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = from_client.read(&mut buffer).await?;
            if read == 0 {
                return Ok::<(), io::Error>(());
            }
            let sent = &buffer[..read];
            let cutting = cut.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let matches =
                |bytes: Vec<u8>| !bytes.is_empty() && sent.windows(bytes.len()).any(|w| w == bytes);
            if cutting.is_some_and(matches) {
                return Ok(());
            }
            to_server.write_all(sent).await?;
        }
    };
    tokio::select! {
        _ = upstream => {}
        _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
        _ = down.wait_for(|down| *down) => {}
    }
}
