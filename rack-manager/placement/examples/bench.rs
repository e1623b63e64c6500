//! The placement bench: `cargo xtask bench placement` runs it in release mode.
//!
//! Places the seeded workload of `placement::workload` with every heuristic, on one rack and on
//! 1,000 racks, and prints time (median of the timed runs), throughput and hosts used against the
//! lower bound. Times cover building the cluster and placing the batch, single-threaded.
//!
//! Usage: `bench [--runs N] [--seed S]` (N ≥ 3, default 5; S default 1).

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use placement::{Cluster, Heuristic, Plan, lower_bound, workload};

struct Case {
    name: &'static str,
    racks: u32,
    instances: usize,
}

const CASES: [Case; 2] =
    [Case { name: "1 rack", racks: 1, instances: 3_000 }, Case { name: "1000 racks", racks: 1000, instances: 100_000 }];

fn main() -> ExitCode {
    let (runs, seed) = match parse_args() {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("error: {message}\nusage: bench [--runs N] [--seed S]");
            return ExitCode::from(2);
        }
    };
    println!(
        "placement bench: seed {seed}; times are the median and minimum of {runs} runs after 1 warm-up, one thread, \
         building the cluster and placing the batch"
    );
    let mut verdict = String::new();
    for case in CASES {
        let hosts = workload::racks(case.racks);
        let requests = workload::instances(seed, case.instances);
        let bound = lower_bound(&hosts, &requests);
        let per_arch: Vec<String> = bound
            .per_arch
            .iter()
            .map(|b| format!("{} {} by {}", b.arch, b.hosts, b.binding.map_or("anti-affinity", |d| d.name())))
            .collect();
        println!();
        println!("{}: lower bound {} hosts ({})", case.name, bound.hosts, per_arch.join(", "));
        println!(
            "{:<29} {:>9} {:>6} {:>10} {:>10} {:>12} {:>10} {:>9} {:>9} {:>10}",
            "heuristic",
            "instances",
            "hosts",
            "time p50",
            "min",
            "instances/s",
            "hosts used",
            "vs bound",
            "unplaced",
            "est. draw"
        );
        for heuristic in Heuristic::ALL {
            let mut times = Vec::new();
            let mut last: Option<(Plan, Cluster)> = None;
            for run in 0..=runs {
                let (hosts, requests) = (hosts.clone(), requests.clone());
                let start = Instant::now();
                let mut cluster = Cluster::new(hosts).expect("the workload's hosts are valid");
                let plan = cluster.place(requests, heuristic);
                let elapsed = start.elapsed();
                if run > 0 {
                    times.push(elapsed);
                }
                if let Some((previous, _)) = &last {
                    assert_eq!(previous, &plan, "the same input gave a different plan");
                }
                last = Some((plan, cluster));
            }
            let (plan, cluster) = last.expect("at least one run");
            times.sort();
            let mid = times.len() / 2;
            let median = if times.len() % 2 == 0 { (times[mid - 1] + times[mid]) / 2 } else { times[mid] };
            let stats = cluster.stats();
            let ratio = 100.0 * f64::from(stats.active_hosts) / bound.hosts as f64;
            let default = heuristic == Heuristic::default();
            println!(
                "{:<29} {:>9} {:>6} {:>10} {:>10} {:>12.0} {:>10} {:>8.1}% {:>9} {:>7.1} kW",
                format!("{heuristic}{}", if default { " (default)" } else { "" }),
                case.instances,
                hosts.len(),
                ms(median),
                ms(times[0]),
                case.instances as f64 / median.as_secs_f64(),
                stats.active_hosts,
                ratio,
                plan.unplaced.len(),
                stats.estimated_draw_mw as f64 / 1e6,
            );
            if let Some(first) = plan.unplaced.first() {
                println!("{:<29} first unplaced: {}: {}", "", first.instance, first.reason);
            }
            if default && case.racks == 1000 {
                let met = median.as_secs_f64() <= 2.0 && ratio <= 103.0 && plan.unplaced.is_empty();
                verdict = format!(
                    "target (1000 racks, default heuristic): ≤ 2 s and ≤ 103% of the bound: {} and {ratio:.1}%: {}",
                    ms(median),
                    if met { "met" } else { "MISSED" }
                );
            }
        }
    }
    println!();
    println!("{verdict}");
    println!("for scale: Nomad's published C1M run placed ~3,750 containers/s across a cluster");
    ExitCode::SUCCESS
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn parse_args() -> Result<(u32, u64), String> {
    let (mut runs, mut seed) = (5u32, 1u64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--runs" => runs = value.parse().map_err(|e| format!("--runs {value}: {e}"))?,
            "--seed" => seed = value.parse().map_err(|e| format!("--seed {value}: {e}"))?,
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if runs < 3 {
        return Err("--runs must be at least 3 (the median of fewer says little)".to_owned());
    }
    Ok((runs, seed))
}
