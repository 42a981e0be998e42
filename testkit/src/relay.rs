//! A TCP relay to one server that counts every connection it is asked for, and can stand for
//! an outage: going down closes every relayed connection, and while down it accepts each new
//! connection and closes it at once, as a server that is gone behind a load balancer. It measures how hard clients knock on a server (a fleet's
//! probes, reconnects after an outage); it speaks no PostgreSQL and bytes pass through as they
//! are.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running relay; it stops when dropped.
#[derive(Debug)]
pub struct Relay {
    port: u16,
    accepted: Arc<AtomicU64>,
    down: watch::Sender<bool>,
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
        let target = SocketAddr::from(([127, 0, 0, 1], target_port));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                if *is_down.borrow() {
                    drop(client);
                    continue;
                }
                tokio::spawn(pass(client, target, is_down.clone()));
            }
        });
        Ok(Relay {
            port,
            accepted,
            down,
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

async fn pass(mut client: TcpStream, target: SocketAddr, mut down: watch::Receiver<bool>) {
    if let Ok(mut server) = TcpStream::connect(target).await {
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            _ = down.wait_for(|down| *down) => {}
        }
    }
}
