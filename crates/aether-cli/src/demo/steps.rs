//! The demo's numbered steps (open and fund accounts, placement, contention on a ledger, a
//! kill, rebuilt balances) and the helpers only they use: the story the demo tells, apart from
//! how its cluster is set up.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use aether_core::{Error, Event, EventStore, Result};
use futures::StreamExt;

use super::cluster::DemoCluster;
use super::model::{script, BankCommand, BankError, Counters};
use super::{DemoArgs, Summary, NODES, SHARDS, WRITERS_CREDITS};

use crate::error::{CliError, CliResult};
use crate::output::{human_duration, progress, spinner, Painter, Table};
use aether_actor::CommandError;

fn account(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i:04}")
}

fn placement(cluster: &DemoCluster, ids: &[String]) -> BTreeMap<String, usize> {
    let mut per_node: BTreeMap<String, usize> =
        cluster.nodes().into_iter().map(|n| (n, 0)).collect();
    for id in ids {
        if let Some(owner) = cluster.owner_of(id) {
            *per_node.entry(owner).or_default() += 1;
        }
    }
    per_node
}

pub(super) async fn steps(
    cluster: &mut DemoCluster,
    args: &DemoArgs,
    prefix: &str,
    counters: &Arc<Counters>,
    painter: Painter,
) -> CliResult<Summary> {
    let n = args.actors;
    let ids: Vec<String> = (0..n).map(|i| account(prefix, i)).collect();
    let concurrency = 32;
    let mut summary = Summary {
        actors: n,
        ..Summary::default()
    };

    // 1. Open the accounts and run each one's script (its commands in order, accounts in
    //    parallel).
    println!(
        "\n{} opening {n} accounts and sending them deposits and withdrawals",
        painter.bold("1.")
    );
    let bar = progress(u64::from(n), "accounts");
    let shared: &DemoCluster = cluster;
    let results: Vec<Result<(u64, u64)>> = futures::stream::iter(0..n)
        .map(|i| {
            let id = &ids[i as usize];
            let bar = &bar;
            async move {
                let mut sent = 1u64;
                shared
                    .send(
                        id,
                        BankCommand::Open {
                            owner: format!("owner {i}"),
                        },
                    )
                    .await?;
                let (commands, _) = script(i);
                for c in commands {
                    sent += 1;
                    shared.send(id, c).await?;
                }
                // Every tenth account tries to overdraw, which the model refuses.
                let mut rejected = 0;
                if i % 10 == 0 {
                    sent += 1;
                    match shared.send(id, BankCommand::Withdraw(1_000_000)).await {
                        Err(CommandError::Rejected(BankError::InsufficientFunds { .. })) => {
                            rejected += 1
                        }
                        Err(e) => return Err(e.into()),
                        Ok(_) => return Err(Error::invalid(format!("{id} allowed an overdraft"))),
                    }
                }
                bar.inc(1);
                Ok((sent, rejected))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    for r in results {
        let (sent, rejected) = r?;
        summary.commands += sent;
        summary.rejected += rejected;
    }
    println!(
        "   {} commands handled, {} overdrafts refused by the accounts",
        summary.commands, summary.rejected
    );

    // 2. Placement.
    summary.before = placement(cluster, &ids);
    println!(
        "\n{} placement (by shard, {SHARDS} shards)",
        painter.bold("2.")
    );
    let mut t = Table::new(&["NODE", "ACCOUNTS", "ACTIVE ACTORS", "SAMPLE"]);
    for (node, count) in &summary.before {
        let active = cluster.active_on(node);
        let sample: Vec<&String> = ids
            .iter()
            .filter(|id| cluster.owner_of(id).as_deref() == Some(node))
            .take(2)
            .collect();
        t.row(vec![
            node.clone(),
            count.to_string(),
            active.len().to_string(),
            sample
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ]);
    }
    print!("{}", indent(&t.render(painter)));

    // 3. Contention: one writer per node credits a shared ledger at the same time, retrying
    //    each version conflict.
    let ledger = format!("{prefix}-ledger");
    let stores = cluster.stores();
    println!(
        "\n{} {} writers credit {ledger} {WRITERS_CREDITS} times each, concurrently",
        painter.bold("3."),
        stores.len()
    );
    let conflicts_before = counters.conflicts.load(Ordering::Relaxed);
    let writers = stores.len() as u64;
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(w, store)| {
            let ledger = ledger.clone();
            tokio::spawn(async move { credit(store, &ledger, w).await })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| CliError::new(format!("a ledger writer failed: {e}")))??;
    }
    let ledger_version = cluster_version(cluster, &ledger).await?;
    println!(
        "   ledger at version {ledger_version} (expected {}), {} conflicts retried",
        writers * WRITERS_CREDITS,
        counters.conflicts.load(Ordering::Relaxed) - conflicts_before
    );

    // 4. Kill the node with the most accounts, so the failover has the most to show.
    let victim = summary
        .before
        .iter()
        .max_by_key(|(node, count)| (**count, std::cmp::Reverse((*node).clone())))
        .map(|(node, _)| node.clone())
        .unwrap_or_else(|| NODES[1].to_string());
    let victims: Vec<(u32, String)> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| cluster.owner_of(id).as_deref() == Some(victim.as_str()))
        .map(|(i, id)| (i as u32, id.clone()))
        .collect();
    println!(
        "\n{} killing {} (it owns {} accounts, {} active)",
        painter.bold("4."),
        painter.red(&victim),
        victims.len(),
        cluster.active_on(&victim).len()
    );
    let wait = spinner("waiting for the survivors to take over its shards");
    let kill_started = Instant::now();
    cluster.kill(&victim).await?;
    wait.finish_and_clear();
    println!(
        "   shards moved to {} in {}",
        cluster.nodes().join(" and "),
        human_duration(kill_started.elapsed())
    );
    summary.killed = victim.clone();
    summary.after = placement(cluster, &ids);

    // 5. Its accounts answer from the survivors, rebuilt from their events.
    println!(
        "\n{} asking {}'s accounts for their balance",
        painter.bold("5."),
        victim
    );
    let bar = progress(victims.len() as u64, "rebuilding");
    let shared: &DemoCluster = cluster;
    let checks: Vec<Result<(u32, String, i64, i64)>> = futures::stream::iter(victims.iter())
        .map(|(i, id)| {
            let bar = &bar;
            async move {
                let balance = shared.send(id, BankCommand::Balance).await?;
                bar.inc(1);
                Ok((*i, id.clone(), balance, script(*i).1))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut checks: Vec<(u32, String, i64, i64)> =
        checks.into_iter().collect::<Result<Vec<_>>>()?;
    checks.sort();
    summary.moved = checks.len();
    summary.verified = checks.iter().filter(|c| c.2 == c.3).count();
    let mut t = Table::new(&["ACCOUNT", "WAS ON", "NOW ON", "BALANCE", "EXPECTED", ""]);
    for (_, id, balance, expected) in checks.iter().take(5) {
        t.row(vec![
            id.clone(),
            victim.clone(),
            cluster.owner_of(id).unwrap_or_default(),
            balance.to_string(),
            expected.to_string(),
            if balance == expected {
                painter.green("ok")
            } else {
                painter.red("WRONG")
            },
        ]);
    }
    print!("{}", indent(&t.render(painter)));
    println!(
        "   {} of {} balances match what was sent before the kill",
        summary.verified, summary.moved
    );

    // 6. Transfers: each one changes two accounts at once, in one transaction, whichever
    //    nodes own them; the total is conserved.
    transfers(cluster, &ids, &mut summary, painter).await?;

    summary.events_written = counters.events_written.load(Ordering::Relaxed);
    summary.conflicts_retried = counters.conflicts.load(Ordering::Relaxed);
    Ok(summary)
}

/// The sum of the balances of `ids`, read through the cluster.
async fn total(cluster: &DemoCluster, ids: &[String]) -> Result<i64> {
    let mut total = 0;
    for id in ids {
        total += cluster.send(id, BankCommand::Balance).await?;
    }
    Ok(total)
}

async fn transfers(
    cluster: &DemoCluster,
    ids: &[String],
    summary: &mut Summary,
    painter: Painter,
) -> CliResult<()> {
    let accounts: Vec<String> = ids.iter().take(20).cloned().collect();
    if accounts.len() < 2 {
        return Ok(());
    }
    let count = 60u64;
    println!(
        "\n{} {count} transfers between {} accounts, 8 at a time, each one transaction over two accounts",
        painter.bold("6."),
        accounts.len()
    );
    let before = total(cluster, &accounts).await?;
    let n = accounts.len();
    let results: Vec<std::result::Result<i64, CommandError<BankError>>> =
        futures::stream::iter(0..count)
            .map(|k| {
                let from = &accounts[(k as usize * 7) % n];
                let to = &accounts[(k as usize * 7 + 1 + k as usize % (n - 1)) % n];
                let amount = 5 + (k as i64 % 4) * 20;
                async move {
                    if from == to {
                        return Ok(0);
                    }
                    cluster.transfer(from, to, amount).await
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    for r in results {
        match r {
            Ok(_) => summary.transfers += 1,
            Err(CommandError::Rejected(BankError::InsufficientFunds { .. })) => {
                summary.transfers_refused += 1
            }
            Err(CommandError::Infrastructure(Error::Unsupported { reason, .. })) => {
                println!("   {}", painter.yellow(&format!("skipped: {reason}")));
                return Ok(());
            }
            Err(e) => return Err(Error::from(e).into()),
        }
    }
    let after = total(cluster, &accounts).await?;
    summary.totals = Some((before, after));
    println!(
        "   {} committed, {} refused for lack of funds; total {before} before, {after} after",
        summary.transfers, summary.transfers_refused
    );
    Ok(())
}

/// The ledger's version as the cluster's first store sees it.
async fn cluster_version(cluster: &DemoCluster, actor: &str) -> CliResult<u64> {
    match cluster.stores().first() {
        Some(s) => Ok(s.get_latest_version(actor).await?),
        None => Err(CliError::new("no store left")),
    }
}

/// Appends [`WRITERS_CREDITS`] credits to `ledger`, re-reading the version after each conflict.
async fn credit(store: Arc<dyn EventStore>, ledger: &str, writer: usize) -> CliResult<()> {
    for _ in 0..WRITERS_CREDITS {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let version = store.get_latest_version(ledger).await?;
            // Let the other writers in between the read and the write, as on a real network.
            tokio::task::yield_now().await;
            let event = Event::new("Credited", ledger, version + 1)
                .with_field("amount", 1)
                .with_field("writer", writer as u64);
            match store.save_event(&event).await {
                Ok(()) => break,
                Err(e) if e.is_version_conflict() && attempts < 1000 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}
