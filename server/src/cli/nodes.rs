//! The flags of a run over several processes or machines (`--nodes`, `--node-rank`,
//! `--coordinator`, in the style of `torchrun`), shared by the commands that train.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use hyperat::tune::nodes::{Nodes, OnLost};

#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Processes (e.g. machines) in the run; each runs the same command with its own
    /// --node-rank and the same number of devices.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// This process's rank, 0 to --nodes − 1 (node 0 hosts the coordinator and writes
    /// the run folder).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// HOST:PORT of node 0, required with --nodes > 1 (node 0 also listens on PORT + 1,
    /// node K serves its tensors on PORT + 2 + K).
    #[arg(long)]
    coordinator: Option<String>,
    /// How the other nodes reach this one (default: this machine's address towards the
    /// coordinator).
    #[arg(long)]
    node_host: Option<String>,
    /// This node's tensor port (default: the coordinator's PORT + 2 + rank).
    #[arg(long)]
    data_port: Option<u16>,
    /// Seconds of silence after which a node counts as stopped (the others then stop
    /// with an error; the run resumes from its last checkpoint).
    #[arg(long, default_value_t = 10)]
    node_timeout: u64,
    /// Seconds to wait for every node to join.
    #[arg(long, default_value_t = 300)]
    join_timeout: u64,
}

impl NodeArgs {
    /// The nodes of a run over several processes; `None` for one process.
    pub fn nodes(&self) -> Result<Option<Nodes>> {
        if self.nodes <= 1 {
            if self.node_rank > 0 || self.coordinator.is_some() {
                bail!("--node-rank and --coordinator need --nodes 2 or more");
            }
            return Ok(None);
        }
        let Some(coordinator) = &self.coordinator else {
            bail!(
                "--nodes {} needs --coordinator HOST:PORT (node 0's address)",
                self.nodes
            )
        };
        let mut n = Nodes::new(self.nodes, self.node_rank, coordinator)?;
        n.host = self.node_host.clone();
        n.data_port = self.data_port;
        n.heartbeat_timeout = Duration::from_secs(self.node_timeout.max(2));
        n.join_timeout = Duration::from_secs(self.join_timeout);
        Ok(Some(n))
    }
}

/// What a node does when another stops first: says so and exits (its own peers are
/// stuck in an all-reduce that will never complete).
pub fn exit_on_lost(command: &'static str) -> OnLost {
    Arc::new(move |why| {
        eprintln!(
            "\n{command}: {why}; this node stops too. Start every node again with --resume \
             to continue from the last checkpoint."
        );
        std::process::exit(3)
    })
}

/// A folder removed when dropped: where a node other than 0 starts a new run (node 0
/// alone writes the run folder).
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn for_node(rank: usize) -> Self {
        Self(std::env::temp_dir().join(format!("hyperat-node{rank}-{}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
