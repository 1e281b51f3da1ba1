//! Soak benchmark of a running `hyperat serve` on loopback (issue 16): CLIENTS clients
//! send mixed traffic for SECONDS — predictions, PGD attacks, comparisons, reads,
//! evaluation jobs, and 5% hostile requests (a decompression bomb, broken multipart,
//! a foreign Host, a cross-site job post, an oversized body, bad parameters) — then it
//! prints throughput, p50/p99 per endpoint, status counts, the server's peak, final and
//! idle resident memory and open file descriptors (from /proc/PID), and what became of every
//! job it submitted: the submitting client follows its job to the end, as a user would,
//! so a job that vanishes, fails or never ends is counted as lost.
//!
//! ```sh
//! scripts/bench-server.sh soak      # starts a server, runs this, stops it
//! cargo run --release -p hyperat-server --example soak -- 127.0.0.1:3000 PID 600 50
//! ```

#[path = "support/http.rs"]
mod http;
#[path = "../tests/common/png.rs"]
mod png;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{form, multipart, pct, request};

/// What one client request was, and how it went.
struct Sample {
    kind: &'static str,
    status: u16,
    secs: f64,
    /// For an accepted job: how it ended, as its submitter saw it.
    job: Option<JobEnd>,
}

/// What became of one accepted job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum JobEnd {
    Done,
    Failed,
    Cancelled,
    /// `GET /api/jobs/{id}` answered 404 before the job ended.
    Vanished,
    /// Not ended within [`JOB_PATIENCE`].
    Unfinished,
}

/// How long a submitter waits for its job.
const JOB_PATIENCE: Duration = Duration::from_secs(300);

/// Polls `GET /api/jobs/{id}` until the job ends (or vanishes, or patience runs out).
async fn follow(addr: &str, id: &str) -> JobEnd {
    let t0 = Instant::now();
    while t0.elapsed() < JOB_PATIENCE {
        match request(addr, "GET", &format!("/api/jobs/{id}"), "", None, b"").await {
            Ok((404, _, _)) => return JobEnd::Vanished,
            Ok((200, _, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                match v["status"].as_str() {
                    Some("done") => return JobEnd::Done,
                    Some("failed") => return JobEnd::Failed,
                    Some("cancelled") => return JobEnd::Cancelled,
                    _ => {}
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    JobEnd::Unfinished
}

/// How long after the traffic the idle resident memory is read.
const IDLE_SECONDS: u64 = 15;

/// A 16-bit RGBA PNG declaring 8192 × 8192 pixels (512 MiB decoded).
fn bomb() -> Vec<u8> {
    png::declared_png(8192, 8192, 16, 6)
}

/// Resident memory (MiB) and open descriptors of process `pid`.
fn usage(pid: u32) -> (f64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

async fn one(addr: &str, pick: u64, i: usize, bomb: &[u8]) -> Sample {
    let sample = |i: usize| ("sample", (i % 1000).to_string());
    let ds = ("dataset", "fashion-mnist".to_string());
    let mp = multipart();
    let (kind, method, path, headers, ct, body): (
        &str,
        &str,
        &str,
        String,
        Option<String>,
        Vec<u8>,
    ) = match pick % 100 {
        0..=54 => (
            "predict",
            "POST",
            "/api/predict",
            String::new(),
            Some(mp),
            form(&[sample(i), ds], None),
        ),
        55..=74 => {
            let f = [
                sample(i),
                ds,
                ("attack", "pgd".into()),
                ("eps", "0.1".into()),
                ("steps", "10".into()),
            ];
            (
                "attack",
                "POST",
                "/api/attack",
                String::new(),
                Some(mp),
                form(&f, None),
            )
        }
        75..=79 => {
            let f = [
                sample(i),
                ds,
                ("attack", "fgsm".into()),
                ("eps", "0.1".into()),
            ];
            (
                "compare",
                "POST",
                "/api/compare",
                String::new(),
                Some(mp),
                form(&f, None),
            )
        }
        80..=89 => (
            "read",
            "GET",
            ["/api/health", "/api/models"][i % 2],
            String::new(),
            None,
            vec![],
        ),
        90..=94 => {
            let job = r#"{"kind": "eval", "config": {"limit": 16, "attack": "none"}}"#;
            (
                "job",
                "POST",
                "/api/jobs",
                String::new(),
                Some("application/json".into()),
                job.into(),
            )
        }
        _ => match i % 6 {
            0 => (
                "hostile",
                "POST",
                "/api/predict",
                String::new(),
                Some(mp),
                form(&[], Some(bomb)),
            ),
            1 => (
                "hostile",
                "POST",
                "/api/predict",
                String::new(),
                Some(mp),
                b"--x\r\nbroken".to_vec(),
            ),
            2 => (
                "hostile",
                "GET",
                "/api/jobs",
                "Host: evil.example\r\n".into(),
                None,
                vec![],
            ),
            3 => {
                let h = "Origin: http://evil.example\r\n".to_string();
                (
                    "hostile",
                    "POST",
                    "/api/jobs",
                    h,
                    Some("text/plain".into()),
                    b"{}".to_vec(),
                )
            }
            4 => (
                "hostile",
                "POST",
                "/api/predict",
                String::new(),
                Some(mp),
                vec![b'x'; 11 << 20],
            ),
            _ => {
                let f = [
                    sample(i),
                    ds,
                    ("eps", "NaN".into()),
                    ("steps", "99999".into()),
                ];
                (
                    "hostile",
                    "POST",
                    "/api/attack",
                    String::new(),
                    Some(mp),
                    form(&f, None),
                )
            }
        },
    };
    match request(addr, method, path, &headers, ct.as_deref(), &body).await {
        Ok((status, secs, reply)) => {
            let id = (kind == "job" && status == 201)
                .then(|| serde_json::from_slice::<serde_json::Value>(&reply).ok())
                .flatten()
                .and_then(|v| v["id"].as_str().map(String::from));
            let job = match id {
                Some(id) => Some(follow(addr, &id).await),
                None if kind == "job" && status == 201 => Some(JobEnd::Vanished),
                None => None,
            };
            Sample {
                kind,
                status,
                secs,
                job,
            }
        }
        // The server may close an oversized upload before reading it all.
        Err(_) => Sample {
            kind,
            status: 0,
            secs: 0.0,
            job: None,
        },
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let pid: u32 = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .expect("the server's PID");
    let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(600);
    let clients: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50);
    let (rss0, fds0) = usage(pid);
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let peak = Arc::new(Mutex::new(rss0));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(seconds);
    let bomb = Arc::new(bomb());
    let mut tasks = vec![];
    for c in 0..clients {
        let (addr, samples, bomb) = (addr.clone(), samples.clone(), bomb.clone());
        tasks.push(tokio::spawn(async move {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ c as u64;
            let mut i = c;
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let s = one(&addr, x, i, &bomb).await;
                samples.lock().unwrap().push(s);
                i += clients;
            }
        }));
    }
    // The memory baseline is taken warm, after a tenth of the run (the test split, model
    // variants and worker buffers are loaded by then), beside the cold start.
    let warm_at = t0 + Duration::from_secs((seconds / 10).max(5));
    let warm = Arc::new(Mutex::new(None::<f64>));
    let watch = {
        let (peak, warm) = (peak.clone(), warm.clone());
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let (rss, _) = usage(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(rss);
                }
                if Instant::now() >= warm_at {
                    warm.lock().unwrap().get_or_insert(rss);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    for t in tasks {
        t.await.expect("client");
    }
    watch.await.expect("watch");
    let wall = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss1, fds1) = usage(pid);
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    let mut by_kind: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut statuses: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for s in samples.iter() {
        if (200..300).contains(&s.status) {
            by_kind.entry(s.kind).or_default().push(s.secs);
        }
        *statuses.entry((s.kind, s.status)).or_default() += 1;
    }
    println!(
        "soak: {clients} clients, {wall:.0} s, {} requests ({:.1}/s)",
        samples.len(),
        samples.len() as f64 / wall
    );
    println!("| endpoint | ok | p50 ms | p99 ms |\n|---|---|---|---|");
    for (k, mut v) in by_kind {
        v.sort_by(f64::total_cmp);
        println!(
            "| {k} | {} | {:.0} | {:.0} |",
            v.len(),
            1e3 * pct(&v, 0.5),
            1e3 * pct(&v, 0.99)
        );
    }
    let counts: Vec<String> = statuses
        .iter()
        .map(|((k, s), n)| format!("{k} {s}: {n}"))
        .collect();
    println!(
        "statuses (0 = connection closed early): {}",
        counts.join(", ")
    );
    let fives: usize = statuses
        .iter()
        .filter(|((_, s), _)| *s >= 500)
        .map(|(_, n)| n)
        .sum();
    let mut ends: BTreeMap<JobEnd, usize> = BTreeMap::new();
    for e in samples.iter().filter_map(|s| s.job) {
        *ends.entry(e).or_default() += 1;
    }
    let submitted: usize = ends.values().sum();
    let lost: usize = ends
        .iter()
        .filter(|(e, _)| !matches!(e, JobEnd::Done | JobEnd::Cancelled))
        .map(|(_, n)| n)
        .sum();
    let ends: Vec<String> = ends.iter().map(|(e, n)| format!("{e:?} {n}")).collect();
    let warm = warm.lock().unwrap().unwrap_or(rss0);
    // What the server keeps once the traffic is over (it hands freed memory back to the OS
    // after a second unused; idle pool threads exit after 10 s).
    tokio::time::sleep(Duration::from_secs(IDLE_SECONDS)).await;
    let (idle, _) = usage(pid);
    println!(
        "5xx: {fives}; jobs accepted {submitted}, lost {lost} ({}); RSS cold {rss0:.0} MiB, warm {warm:.0} MiB, peak {:.0} MiB, end {rss1:.0} MiB ({:+.0}% of warm), {idle:.0} MiB after {IDLE_SECONDS} s idle; open fds {fds0} -> {fds1}",
        ends.join(", "),
        *peak.lock().unwrap(),
        100.0 * (rss1 - warm) / warm.max(1.0)
    );
}
