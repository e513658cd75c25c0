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
//! `--only aether` or `--only raw` times one side alone (no ratio), for counting what one
//! side does with `perf stat` or `strace -c`.

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

/// This process's user and system CPU time so far, in seconds (`/proc/self/stat`, Linux
/// only; `None` elsewhere). The server is another process, so it is not counted.
fn process_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command's closing parenthesis; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split(' ').skip(11);
    let mut ticks = || fields.next()?.parse::<f64>().ok();
    let (user, system) = (ticks()?, ticks()?);
    Some((user / 100.0, system / 100.0))
}

/// The `q` quantile of `v` (sorted here), `v` not empty.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i]
}

fn main() {
    let (rounds, block) = (number("--rounds", ROUNDS), number("--block", BLOCK));
    let only = match arg("--only").as_deref() {
        None => None,
        Some("aether") => Some(0),
        Some("raw") => Some(1),
        Some(other) => fail(format!("--only takes aether or raw, not {other:?}")),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("a runtime");
    let server = NatsServer::start().or_fail("nats-server");
    let url = server.url();
    let (mut aether, mut raw, mut ratios, cpu) = rt.block_on(async move {
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
            if only != Some(1) {
                send().await;
            }
            if only != Some(0) {
                request().await;
            }
        }
        let (mut aether, mut raw, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let cpu_before = process_cpu();
        for round in 0..rounds {
            let mut micros = [0f64; 2];
            for k in 0..2 {
                let side = (k + round) % 2;
                if only.is_some_and(|o| o != side) {
                    continue;
                }
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
        let cpu = cpu_before.zip(process_cpu()).map(|((u0, s0), (u1, s1))| {
            let per_send = |d: f64| d * 1e6 / (rounds * block) as f64;
            (per_send(u1 - u0), per_send(s1 - s0))
        });
        (aether, raw, ratios, cpu)
    });
    let (a, r) = (quantile(&mut aether, 0.5), quantile(&mut raw, 0.5));
    if let Some(side) = only {
        let (name, us) = if side == 0 {
            ("remote send", a)
        } else {
            ("raw request/reply", r)
        };
        println!("{name} alone: {us:.1} µs per send (median of {rounds} rounds of {block})");
        if let Some((user, system)) = cpu {
            println!("this process's CPU per send (nats-server's not counted): {user:.1} µs user, {system:.1} µs system");
        }
        return;
    }
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
