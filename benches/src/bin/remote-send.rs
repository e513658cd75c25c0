//! The remote send against its floor in steady state, in interleaved rounds: `ClusterNode::send`
//! of a read to an actor active on the other node of a two-node cluster, and a raw NATS
//! request/reply of the same size to a responder on a connection of its own (as the owner node
//! is), in one process on one nats-server the program starts.
//!
//! The criterion group `cluster_send_remote` measures the two sides one after the other, so a
//! change in the machine's speed between them (these machines are shared) moves the ratio.
//! Here each round times a block of sends of each side back to back, the first side alternating
//! from round to round, and the ratio is taken per round: what the machine does to both sides
//! cancels out. Printed: the median per-send time of each side over the rounds, and the median
//! and quartiles of the per-round ratios; `--json FILE` writes them too.
//!
//! Run with `cargo run --release -p aether-benches --bin remote-send [-- --rounds N --block M]`.

use std::hint::black_box;
use std::time::Instant;

use aether_benches::echo::{raw_responder, request_size, two_nodes, Echo};
use aether_benches::setup::{fail, OrFail};
use aether_testkit::NatsServer;

/// Sends of one side per round.
const BLOCK: usize = 1_000;
/// Rounds (each side timed once per round).
const ROUNDS: usize = 30;
/// Sends of each side before the rounds.
const WARM_UP: usize = 2_000;

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip_while(|a| a != name);
    args.next()?;
    args.next()
}

fn number(name: &str, default: usize) -> usize {
    match arg(name) {
        None => default,
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| fail(format!("{name} takes a positive number, not {v:?}"))),
    }
}

/// The `q` quantile of `v` (sorted here), `v` not empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn main() {
    let (rounds, block) = (number("--rounds", ROUNDS), number("--block", BLOCK));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("a runtime");
    let server = NatsServer::start().or_fail("nats-server");
    let url = server.url();
    let (mut aether, mut raw, mut ratios) = rt.block_on(async move {
        let (nodes, remote, _) = two_nodes(&url).await.or_fail("two nodes");
        raw_responder(&url, "raw.echo")
            .await
            .or_fail("raw responder");
        let client = async_nats::connect(&url).await.or_fail("connect");
        let size = request_size(&nodes[0], &remote, "ping").or_fail("request size");
        let payload = bytes::Bytes::from(vec![b'x'; size]);
        let node = &nodes[0];
        let send = || async {
            black_box(node.send::<Echo>(&remote, "ping".into()).await).or_fail("send");
        };
        let request = || async {
            black_box(client.request("raw.echo", payload.clone()).await).or_fail("request");
        };
        for _ in 0..WARM_UP {
            send().await;
            request().await;
        }
        let (mut aether, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut micros = [0f64; 2];
            for k in 0..2 {
                let side = (k + round) % 2;
                let started = Instant::now();
                for _ in 0..block {
                    if side == 0 {
                        send().await;
                    } else {
                        request().await;
                    }
                }
                micros[side] = started.elapsed().as_secs_f64() * 1e6 / block as f64;
            }
            aether.push(micros[0]);
            raw.push(micros[1]);
            ratios.push(micros[0] / micros[1]);
        }
        (aether, raw, ratios)
    });
    let (a, r) = (quantile(&mut aether, 0.5), quantile(&mut raw, 0.5));
    let (q1, median, q3) = (
        quantile(&mut ratios, 0.25),
        quantile(&mut ratios, 0.5),
        quantile(&mut ratios, 0.75),
    );
    println!(
        "remote send {a:.1} µs, raw request/reply {r:.1} µs per send (medians of {rounds} rounds of {block}); ratio per round: median {median:.3}×, quartiles {q1:.3}–{q3:.3}"
    );
    if let Some(path) = arg("--json") {
        let json = serde_json::json!({
            "rounds": rounds, "block": block, "aether_us": a, "raw_us": r,
            "ratio_median": median, "ratio_q1": q1, "ratio_q3": q3,
        });
        std::fs::write(&path, json.to_string()).or_fail("writing the JSON file");
    }
}
