//! `hyperat tune --nodes 2`: two processes on 127.0.0.1 in one data-parallel run through
//! burn-collective's coordinator, against one process; a node killed mid-run.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hyperat::host_tensor::read_safetensors;

fn hyperat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hyperat"))
}

fn backbone() -> PathBuf {
    // Relative to the package root, where cargo runs tests: `env!("CARGO_MANIFEST_DIR")`
    // would name the clone that compiled the test, which a shared target dir reuses.
    Path::new("../tests/fixtures/timm/vit_tiny_p4_28_c1")
        .canonicalize()
        .expect("the timm fixture")
}

/// A coordinator port whose next three ports (watch, two data ports) are free too,
/// below Linux's ephemeral range (where the nodes' own outgoing connections take theirs).
fn free_ports() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as usize
        + std::process::id() as usize;
    for attempt in 0..500 {
        let port = (20_000 + (seed + attempt * 7919) % 12_000 / 4 * 4) as u16;
        if (port..port + 4).all(|p| TcpListener::bind(("0.0.0.0", p)).is_ok()) {
            return port;
        }
    }
    panic!("no four free ports in a row");
}

/// One test at a time: each runs two processes and takes ports.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The process's output once it exits; killed, and the test failed, after `limit`.
fn output_within(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "a node ran past {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

const LIMIT: Duration = Duration::from_secs(240);

/// A toy HyperAT run of `steps` steps (PGD-AT and MART alternate, batch 8).
fn tune(steps: usize, out: &Path) -> Command {
    let mut cmd = hyperat();
    cmd.args(["tune", "--dataset", "fashion-mnist", "--kind", "hyperat"])
        .args(["--methods", "pgd-at,mart", "--sampling", "balanced"])
        .args(["--steps", &steps.to_string(), "--batch-size", "8"])
        .args(["--eps", "0.1", "--attack-steps", "2", "--holdout", "32"])
        .args([
            "--train-limit",
            "256",
            "--checkpoint-every",
            "2",
            "--eval-every",
            "0",
        ])
        .arg("--backbone")
        .arg(backbone())
        .arg("--out")
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn as_node(mut cmd: Command, rank: usize, port: u16) -> Command {
    cmd.args(["--nodes", "2", "--node-rank", &rank.to_string()])
        .args(["--coordinator", &format!("127.0.0.1:{port}")])
        .args(["--node-timeout", "30", "--join-timeout", "60"]);
    cmd
}

fn finished(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a node failed:\n{stderr}");
    stderr
}

/// The parameters' fingerprint a finished `tune` prints.
fn fingerprint(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tune: done"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    line.rsplit(' ').next().unwrap().to_string()
}

fn checkpoint(run: &Path) -> hyperat::host_tensor::TensorMap {
    read_safetensors(&std::fs::read(run.join("checkpoint.safetensors")).unwrap()).unwrap()
}

fn spawn_nodes(steps: usize, out: &Path, resume: bool) -> Vec<Child> {
    let port = free_ports();
    (0..2)
        .map(|rank| {
            let mut cmd = as_node(tune(steps, out), rank, port);
            if resume {
                cmd.arg("--resume");
            }
            cmd.spawn().unwrap()
        })
        .collect()
}

#[test]
fn two_processes_through_the_coordinator_take_the_steps_of_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let alone = finished(tune(3, &one).output().unwrap());
    let nodes: Vec<String> = spawn_nodes(3, &two, false)
        .into_iter()
        .map(|c| finished(output_within(c, LIMIT)))
        .collect();
    // Both nodes end with bit-equal parameters; node 0 alone wrote the run folder.
    assert_eq!(fingerprint(&nodes[0]), fingerprint(&nodes[1]));
    assert!(
        nodes[1].contains("of 2 nodes (this one: 1)"),
        "{}",
        nodes[1]
    );
    assert!(two.join("summary.json").is_file());
    // ... equal to one process taking the whole batch, up to float summation order.
    let (a, b) = (checkpoint(&one), checkpoint(&two));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let mut worst = 0.0f64;
    for (name, x) in &a {
        let y = &b[name];
        let diff: f64 = x
            .data
            .iter()
            .zip(&y.data)
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum();
        let norm: f64 = x.data.iter().map(|p| f64::from(*p).powi(2)).sum();
        worst = worst.max((diff / norm.max(1e-30)).sqrt());
    }
    eprintln!("two nodes vs one process: parameters {worst:e} relative apart");
    assert!(
        worst <= 1e-5,
        "two nodes vs one process: {worst:e} relative"
    );
    assert!(!fingerprint(&alone).is_empty());
}

#[test]
fn a_killed_node_stops_the_other_and_the_run_resumes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let steps = 60;
    let mut nodes = spawn_nodes(steps, &out, false);
    // Kill node 1 once node 0 has a checkpoint.
    let start = Instant::now();
    while !out.join("checkpoint.safetensors").is_file() {
        if start.elapsed() > Duration::from_secs(120) {
            nodes.iter_mut().for_each(|n| drop(n.kill()));
            panic!("no checkpoint after 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    nodes[1].kill().unwrap();
    nodes[1].wait().unwrap();
    let killed = Instant::now();
    let lead = nodes.remove(0);
    let out0 = output_within(lead, LIMIT);
    let stopped_after = killed.elapsed();
    let stderr = String::from_utf8_lossy(&out0.stderr);
    assert!(!out0.status.success(), "node 0 went on:\n{stderr}");
    assert!(stderr.contains("node 1 stopped"), "{stderr}");
    eprintln!("node 0 stopped {stopped_after:?} after node 1 was killed");
    assert!(stopped_after < Duration::from_secs(30), "{stopped_after:?}");
    assert!(!out.join("summary.json").exists());
    // Both nodes again with --resume (node 1 reads node 0's folder): the run completes.
    let resumed: Vec<String> = spawn_nodes(steps, &out, true)
        .into_iter()
        .map(|c| finished(output_within(c, LIMIT)))
        .collect();
    assert_eq!(fingerprint(&resumed[0]), fingerprint(&resumed[1]));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], steps);
}
