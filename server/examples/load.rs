//! Load benchmark of a running `hyperat serve` on loopback: N concurrent predictions
//! and M concurrent PGD-20 attacks on the default model (dataset samples, so every
//! request is real work), then throughput and p50 / p99 latency.
//!
//! ```sh
//! scripts/bench-server.sh          # starts a server, runs this, stops it
//! cargo run --release -p hyperat-server --example load -- 127.0.0.1:3000 200 20
//! ```

#[path = "support/http.rs"]
mod http;

use std::time::{Duration, Instant};

use http::{form, pct, post};

async fn wave(addr: &str, path: &str, bodies: Vec<Vec<u8>>) -> (f64, Vec<f64>, usize) {
    let t0 = Instant::now();
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|b| {
            let (addr, path) = (addr.to_string(), path.to_string());
            tokio::spawn(async move { post(&addr, &path, &b).await })
        })
        .collect();
    let (mut lat, mut failed) = (vec![], 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok((200, s)) => lat.push(s),
            _ => failed += 1,
        }
    }
    lat.sort_by(f64::total_cmp);
    (t0.elapsed().as_secs_f64(), lat, failed)
}

fn report(name: &str, n: usize, (wall, lat, failed): (f64, Vec<f64>, usize)) {
    if lat.is_empty() {
        println!("{name}: all {n} requests failed");
        return;
    }
    println!(
        "{name}: {n} concurrent, {failed} failed, {:.1} req/s, latency p50 {:.1} ms, p99 {:.1} ms",
        lat.len() as f64 / wall,
        1e3 * pct(&lat, 0.5),
        1e3 * pct(&lat, 0.99),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let n_predict: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let n_attack: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let predict = |i: usize| {
        form(
            &[
                ("sample", i.to_string()),
                ("dataset", "fashion-mnist".into()),
            ],
            None,
        )
    };
    let attack = |i: usize| {
        form(
            &[
                ("sample", i.to_string()),
                ("dataset", "fashion-mnist".into()),
                ("attack", "pgd".into()),
                ("eps", "0.1".into()),
                ("alpha", "0.01".into()),
                ("steps", "20".into()),
            ],
            None,
        )
    };
    // Warm-up (loads the test split, touches every code path).
    for _ in 0..3 {
        let _ = post(&addr, "/api/predict", &predict(0)).await;
        let _ = post(&addr, "/api/attack", &attack(0)).await;
    }
    // Single requests, one after another.
    let mut single = vec![];
    for i in 0..30 {
        single.push(
            post(&addr, "/api/predict", &predict(i))
                .await
                .expect("predict")
                .1,
        );
    }
    single.sort_by(f64::total_cmp);
    let mut single_attack = vec![];
    for i in 0..10 {
        single_attack.push(
            post(&addr, "/api/attack", &attack(i))
                .await
                .expect("attack")
                .1,
        );
    }
    single_attack.sort_by(f64::total_cmp);
    println!(
        "single predict: p50 {:.1} ms; single PGD-20 attack: p50 {:.1} ms (round trip on loopback)",
        1e3 * pct(&single, 0.5),
        1e3 * pct(&single_attack, 0.5)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    report(
        "predict",
        n_predict,
        wave(&addr, "/api/predict", (0..n_predict).map(predict).collect()).await,
    );
    report(
        "PGD-20 attack",
        n_attack,
        wave(&addr, "/api/attack", (0..n_attack).map(attack).collect()).await,
    );
}
