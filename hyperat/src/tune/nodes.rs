//! One data-parallel run over several processes (*nodes*, e.g. machines) through
//! burn-collective's global level: node 0 hosts burn-collective's orchestrator at the
//! coordinator's address, every node serves its tensors to the others on its data port,
//! and the all-reduce of [`super::parallel`] then spans every device of every node.
//!
//! burn-collective has no failure detection (a node that dies leaves the others waiting
//! in their all-reduce forever), so the nodes also keep a [`Watch`]: every node holds a
//! TCP connection to node 0 (the coordinator's port + 1) on which both ends send a
//! heartbeat every second. A connection that closes, or stays silent for
//! [`Nodes::heartbeat_timeout`], before the run finished calls `on_lost` (the CLI turns
//! it into a clear error and an exit; the run resumes from its last checkpoint). The same
//! connections carry the handshake (node count, rank, and a key of the run's settings
//! and step, so nodes started with different settings are refused) and the closing
//! barrier (no node leaves while another may still fetch its share of the last step).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use burn::collective::{AllReduceStrategy, CollectiveConfig};

use crate::error::{Error, Result};

/// Called once, from a watch thread, when another node stopped before the run ended.
pub type OnLost = Arc<dyn Fn(String) + Send + Sync>;

/// Where this process stands among the nodes of a run (`--nodes`, `--node-rank`,
/// `--coordinator`, in the style of `torchrun`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nodes {
    /// Processes in the run; each runs the same number of devices.
    pub count: usize,
    /// This node, 0-based; node 0 hosts the coordinator and writes the run folder.
    pub rank: usize,
    /// Host of node 0, as the other nodes reach it.
    pub coordinator_host: String,
    /// burn-collective's orchestrator listens here; the watch on the next port.
    pub coordinator_port: u16,
    /// How the other nodes reach this one (default: the address this machine uses
    /// towards the coordinator).
    pub host: Option<String>,
    /// This node's tensor data service (default: the coordinator's port + 2 + rank).
    pub data_port: Option<u16>,
    /// How long to wait for every node to join.
    pub join_timeout: Duration,
    /// Silence after which a node counts as stopped.
    pub heartbeat_timeout: Duration,
}

const HEARTBEAT: u8 = 1;
const FINISHED: u8 = 2;
const RELEASE: u8 = 3;
const HELLO: [u8; 2] = *b"HA";

impl Nodes {
    /// Node `rank` of `count`, node 0 at `coordinator` (`HOST:PORT`).
    pub fn new(count: usize, rank: usize, coordinator: &str) -> Result<Self> {
        let bad = |why: &str| Error::Invalid(format!("--coordinator `{coordinator}`: {why}"));
        let (host, port) = coordinator
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT, e.g. 10.0.0.1:29500"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        if count == 0 || rank >= count {
            return Err(Error::Invalid(format!(
                "--node-rank {rank} is not one of --nodes {count} (0 to {})",
                count.saturating_sub(1)
            )));
        }
        if usize::from(port) + 2 + count > usize::from(u16::MAX) {
            return Err(bad(
                "the port leaves no room for the watch and data ports above it",
            ));
        }
        Ok(Self {
            count,
            rank,
            coordinator_host: host.trim_matches(['[', ']']).to_string(),
            coordinator_port: port,
            host: None,
            data_port: None,
            join_timeout: Duration::from_secs(300),
            heartbeat_timeout: Duration::from_secs(10),
        })
    }

    /// Whether this node leads (hosts the coordinator, writes the run folder).
    pub fn leads(&self) -> bool {
        self.rank == 0
    }

    fn watch_port(&self) -> u16 {
        self.coordinator_port + 1
    }

    /// This node's tensor data port.
    pub fn data_port(&self) -> u16 {
        self.data_port
            .unwrap_or(self.coordinator_port + 2 + self.rank as u16)
    }

    /// The host the other nodes reach this one at.
    fn own_host(&self) -> Result<String> {
        if let Some(h) = &self.host {
            return Ok(h.clone());
        }
        if ["127.0.0.1", "localhost", "::1"].contains(&self.coordinator_host.as_str()) {
            return Ok("127.0.0.1".into());
        }
        // The local address of a route towards the coordinator (a UDP "connect" sends
        // nothing).
        let route = |e| Error::io("finding this node's address", e);
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(route)?;
        socket
            .connect((self.coordinator_host.as_str(), self.coordinator_port))
            .map_err(route)?;
        Ok(socket.local_addr().map_err(route)?.ip().to_string())
    }

    /// burn-collective's settings for `local` devices on this node.
    pub fn collective_config(&self, local: usize) -> Result<CollectiveConfig> {
        let address = |host: &str, port: u16| {
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_string()
            };
            format!("ws://{host}:{port}")
                .parse()
                .map_err(|e| Error::Invalid(format!("address {host}:{port}: {e}")))
        };
        // Tree, not burn's default ring: the ring cuts every tensor into one slice per
        // node and refuses tensors smaller than that (a bias, a step's loss).
        Ok(CollectiveConfig::default()
            .with_num_devices(local)
            .with_global_all_reduce_strategy(AllReduceStrategy::Tree(2))
            .with_num_nodes(self.count as u32)
            .with_global_address(address(&self.coordinator_host, self.coordinator_port)?)
            .with_node_address(address(&self.own_host()?, self.data_port())?)
            .with_data_service_port(self.data_port()))
    }

    /// Joins the run: node 0 starts burn-collective's orchestrator and waits for every
    /// other node's watch connection; the others connect to it. `run_key` (the run's
    /// settings and step) must be equal on every node. `on_lost` is called once if a
    /// node stops before [`Watch::finish`].
    pub fn join(&self, run_key: u64, on_lost: OnLost) -> Result<Watch> {
        let shared = Arc::new(Shared {
            stopped: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            on_lost,
            timeout: self.heartbeat_timeout,
        });
        let deadline = Instant::now() + self.join_timeout;
        let links = if self.leads() {
            start_orchestrator(self.coordinator_port, shared.clone())?;
            self.accept_nodes(run_key, deadline)?
        } else {
            vec![self.connect_to_lead(run_key, deadline)?]
        };
        let links = links
            .into_iter()
            .map(|(node, stream)| Link::start(node, stream, shared.clone()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Watch {
            links,
            shared,
            leads: self.leads(),
        })
    }

    fn hello(&self, run_key: u64) -> [u8; 14] {
        let mut h = [0u8; 14];
        h[..2].copy_from_slice(&HELLO);
        h[2..4].copy_from_slice(&(self.count as u16).to_le_bytes());
        h[4..6].copy_from_slice(&(self.rank as u16).to_le_bytes());
        h[6..].copy_from_slice(&run_key.to_le_bytes());
        h
    }

    fn accept_nodes(&self, run_key: u64, deadline: Instant) -> Result<Vec<(usize, TcpStream)>> {
        let port = self.watch_port();
        let listener = TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
            Error::Invalid(format!(
                "node 0 cannot listen on the watch port {port}: {e}"
            ))
        })?;
        listener.set_nonblocking(true).map_err(watch_io)?;
        let mut joined: Vec<(usize, TcpStream)> = Vec::new();
        while joined.len() + 1 < self.count {
            let (mut stream, from) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(self.missing(joined.iter().map(|(n, _)| *n)));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => return Err(watch_io(e)),
            };
            stream.set_nonblocking(false).map_err(watch_io)?;
            stream
                .set_read_timeout(Some(self.heartbeat_timeout))
                .map_err(watch_io)?;
            let mut hello = [0u8; 14];
            if stream.read_exact(&mut hello).is_err() || hello[..2] != HELLO {
                eprintln!("nodes: ignored a connection from {from} that is not a node of this run");
                continue;
            }
            let count = u16::from_le_bytes([hello[2], hello[3]]) as usize;
            let rank = u16::from_le_bytes([hello[4], hello[5]]) as usize;
            let key = u64::from_le_bytes(hello[6..].try_into().expect("8 bytes"));
            let refuse = if count != self.count {
                Some(format!(
                    "node {rank} ({from}) was started with --nodes {count}, node 0 with {}",
                    self.count
                ))
            } else if rank == 0 || rank >= count || joined.iter().any(|(n, _)| *n == rank) {
                Some(format!(
                    "node rank {rank} ({from}) is taken or out of range"
                ))
            } else if key != run_key {
                Some(format!(
                    "node {rank} ({from}) holds a different run: its settings or its checkpoint's step differ from node 0's"
                ))
            } else {
                None
            };
            if let Some(why) = refuse {
                let _ = stream.write_all(&[0]);
                return Err(Error::Invalid(why));
            }
            stream.write_all(&[1]).map_err(watch_io)?;
            joined.push((rank, stream));
        }
        Ok(joined)
    }

    fn connect_to_lead(&self, run_key: u64, deadline: Instant) -> Result<(usize, TcpStream)> {
        let target = (self.coordinator_host.as_str(), self.watch_port());
        let mut stream = loop {
            let tried = target
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)));
            match tried {
                Some(Ok(s)) => break s,
                _ if Instant::now() > deadline => {
                    return Err(Error::Invalid(format!(
                        "node 0 did not answer at {}:{} within {} s",
                        target.0,
                        target.1,
                        self.join_timeout.as_secs()
                    )));
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        stream.write_all(&self.hello(run_key)).map_err(watch_io)?;
        let left = deadline.saturating_duration_since(Instant::now());
        stream
            .set_read_timeout(Some(left.max(Duration::from_secs(1))))
            .map_err(watch_io)?;
        let mut answer = [0u8; 1];
        match stream.read_exact(&mut answer) {
            Ok(()) if answer[0] == 1 => Ok((0, stream)),
            _ => Err(Error::Invalid(
                "node 0 refused this node (its count, rank or run differs; node 0 says why)".into(),
            )),
        }
    }

    fn missing(&self, joined: impl Iterator<Item = usize>) -> Error {
        let joined: Vec<usize> = joined.collect();
        let missing: Vec<String> = (1..self.count)
            .filter(|n| !joined.contains(n))
            .map(|n| n.to_string())
            .collect();
        Error::Invalid(format!(
            "node(s) {} did not join within {} s",
            missing.join(", "),
            self.join_timeout.as_secs()
        ))
    }
}

/// Starts burn-collective's orchestrator on `port` on a thread of its own. It ends only
/// on a failure or Ctrl-C (it takes over the process's Ctrl-C), either of which stops
/// the run: `on_lost` says so.
fn start_orchestrator(port: u16, shared: Arc<Shared>) -> Result<()> {
    // burn's orchestrator only logs a port it cannot take; say so before it starts.
    drop(TcpListener::bind(("0.0.0.0", port)).map_err(|e| {
        Error::Invalid(format!("the coordinator cannot listen on port {port}: {e}"))
    })?);
    std::thread::Builder::new()
        .name("hyperat-orchestrator".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            runtime.block_on(burn_collective::start_global_orchestrator(port));
            shared.lost("the coordinator on node 0 stopped (Ctrl-C, or its port failed)".into());
        })
        .map_err(|e| Error::io("starting the coordinator", e))?;
    Ok(())
}

fn watch_io(e: std::io::Error) -> Error {
    Error::io("the nodes' watch connection", e)
}

struct Shared {
    /// This node closed its watch: what the links see next is not a lost node.
    stopped: AtomicBool,
    fired: AtomicBool,
    on_lost: OnLost,
    timeout: Duration,
}

impl Shared {
    fn lost(&self, why: String) {
        if !self.stopped.load(Ordering::SeqCst) && !self.fired.swap(true, Ordering::SeqCst) {
            (self.on_lost)(why);
        }
    }
}

/// One watch connection: to node 0, or (on node 0) to another node.
struct Link {
    stream: TcpStream,
    /// The other end finished its run (node 0 sees FINISHED) or released this node
    /// (another node sees RELEASE).
    done: Arc<AtomicBool>,
    /// The connection ended (the other node closed its watch or went away).
    closed: Arc<AtomicBool>,
}

impl Link {
    fn start(node: usize, stream: TcpStream, shared: Arc<Shared>) -> Result<Self> {
        stream
            .set_read_timeout(Some(shared.timeout))
            .map_err(watch_io)?;
        // One-byte heartbeats go out at once, not held back by Nagle's algorithm.
        stream.set_nodelay(true).map_err(watch_io)?;
        let done = Arc::new(AtomicBool::new(false));
        let mut writer = stream.try_clone().map_err(watch_io)?;
        let beat = shared.clone();
        std::thread::spawn(move || {
            while !beat.stopped.load(Ordering::SeqCst) && writer.write_all(&[HEARTBEAT]).is_ok() {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let mut reader = stream.try_clone().map_err(watch_io)?;
        let seen = done.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let ended = closed.clone();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            let why = loop {
                match reader.read(&mut byte) {
                    Ok(0) => break "closed its connection".to_string(),
                    Ok(_) if byte[0] == HEARTBEAT => {}
                    Ok(_) if byte[0] == FINISHED || byte[0] == RELEASE => {
                        seen.store(true, Ordering::SeqCst)
                    }
                    Ok(_) => break "sent an unknown byte".to_string(),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        break format!("sent nothing for {} s", shared.timeout.as_secs());
                    }
                    Err(e) => break e.to_string(),
                }
            };
            ended.store(true, Ordering::SeqCst);
            if !seen.load(Ordering::SeqCst) {
                shared.lost(format!("node {node} stopped ({why})"));
            }
        });
        Ok(Self {
            stream,
            done,
            closed,
        })
    }

    fn send(&self, byte: u8) {
        let _ = (&self.stream).write_all(&[byte]);
    }
}

/// The watch over the other nodes, held for the run. Dropped without [`Watch::finish`]
/// (this node failed), it closes its connections, so the other nodes stop too.
pub struct Watch {
    links: Vec<Link>,
    shared: Arc<Shared>,
    leads: bool,
}

impl Watch {
    /// The closing barrier after this node's last step: every other node tells node 0
    /// it finished and waits for node 0's release; node 0 releases them once all have
    /// finished, so no node's data service goes away while another may still need it.
    pub fn finish(&self) -> Result<()> {
        let wait = |links: &[Link]| {
            while !links.iter().all(|l| l.done.load(Ordering::SeqCst)) {
                if self.shared.fired.load(Ordering::SeqCst) {
                    return Err(Error::Invalid("a node stopped before the run ended".into()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        };
        if self.leads {
            wait(&self.links)?;
            self.links.iter().for_each(|l| l.send(RELEASE));
        } else {
            self.links.iter().for_each(|l| l.send(FINISHED));
            wait(&self.links)?;
        }
        Ok(())
    }

    /// After this node's step failed in the collective ([`crate::Error::PeerLost`]):
    /// waits (up to the heartbeat timeout) for the watch to name the node that stopped,
    /// as a failed all-reduce often comes first and only says "a peer". `on_lost` has
    /// then been called; the step's own error follows. Other errors need no wait.
    pub fn settle(&self) {
        let until = Instant::now() + self.shared.timeout;
        while Instant::now() < until && !self.shared.fired.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes the watch after the peers left the collective. Node 0 first waits (up to
    /// the heartbeat timeout) for the others to close theirs: they unregister from the
    /// orchestrator it hosts, which must outlive them.
    pub fn close(self) {
        if self.leads {
            let until = Instant::now() + self.shared.timeout;
            while Instant::now() < until
                && !self.links.iter().all(|l| l.closed.load(Ordering::SeqCst))
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        for l in &self.links {
            let _ = l.stream.shutdown(Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_addresses_are_checked() {
        let n = Nodes::new(2, 1, "10.0.0.1:29500").unwrap();
        assert_eq!(
            (n.coordinator_host.as_str(), n.coordinator_port),
            ("10.0.0.1", 29500)
        );
        assert_eq!(n.data_port(), 29503);
        assert!(Nodes::new(2, 2, "h:1").is_err());
        assert!(Nodes::new(2, 0, "h").is_err());
        assert!(Nodes::new(2, 0, "h:x").is_err());
        assert!(Nodes::new(2, 0, "h:65534").is_err());
    }
}
