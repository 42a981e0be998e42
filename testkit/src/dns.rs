//! A DNS server for discovery tests: Debian's `dnsmasq`, answering only for the records it is
//! given, on a free loopback port, stopped on drop. Changing the records restarts it (its SRV
//! records come from its configuration, which it reads at start only).

use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// One record the server answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsRecord {
    /// An A (or AAAA) record: `name` resolves to `ip`; several for one name give several.
    Address { name: String, ip: IpAddr },
    /// An SRV record: `name` names `target` (which needs an address record) at `port`.
    Service {
        name: String,
        target: String,
        port: u16,
    },
}

impl DnsRecord {
    /// `name` resolves to `ip`.
    pub fn a(name: &str, ip: IpAddr) -> DnsRecord {
        DnsRecord::Address {
            name: name.to_owned(),
            ip,
        }
    }

    /// `name` names `target` at `port`.
    pub fn srv(name: &str, target: &str, port: u16) -> DnsRecord {
        DnsRecord::Service {
            name: name.to_owned(),
            target: target.to_owned(),
            port,
        }
    }

    fn line(&self) -> String {
        match self {
            DnsRecord::Address { name, ip } => format!("host-record={name},{ip}"),
            DnsRecord::Service { name, target, port } => {
                format!("srv-host={name},{target},{port}")
            }
        }
    }
}

/// A running `dnsmasq` on 127.0.0.1, answering with its records only (no upstream, no hosts
/// file, nothing cached), until it is stopped or dropped.
#[derive(Debug)]
pub struct Dns {
    port: u16,
    dir: PathBuf,
    records: Vec<DnsRecord>,
    child: Option<Child>,
}

impl Dns {
    /// Starts a server answering with `records`.
    pub fn start(records: &[DnsRecord]) -> io::Result<Dns> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("rwsplit-dns-{port}"));
        fs::create_dir_all(&dir)?;
        let mut dns = Dns {
            port,
            dir,
            records: records.to_vec(),
            child: None,
        };
        dns.resume()?;
        Ok(dns)
    }

    /// Where it listens (UDP and TCP).
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Answers with `records` from now on (a restart of a few milliseconds).
    pub fn set(&mut self, records: &[DnsRecord]) -> io::Result<()> {
        self.records = records.to_vec();
        self.stop();
        self.resume()
    }

    /// Stops answering: queries get no reply, as when the DNS server is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts answering again, with the last records.
    pub fn resume(&mut self) -> io::Result<()> {
        let conf = self.dir.join("dnsmasq.conf");
        let lines: Vec<String> = self.records.iter().map(DnsRecord::line).collect();
        fs::write(&conf, lines.join("\n") + "\n")?;
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--port={}", self.port))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--cache-size=0",
                "--local-ttl=0",
            ])
            .args(["--user=root", "--pid-file="])
            .arg(format!("--conf-file={}", conf.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("start dnsmasq (apt-get install dnsmasq): {e}"),
                )
            })?;
        self.child = Some(child);
        // Up once it answers a query (for `a.`, type A).
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let query = [
            0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 1, 0, 1,
        ];
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut reply = [0u8; 512];
        loop {
            socket.send_to(&query, self.address())?;
            if socket.recv_from(&mut reply).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("dnsmasq did not answer within 10 s"));
            }
        }
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
