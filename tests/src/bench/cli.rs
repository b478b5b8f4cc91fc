//! The `vserver-lab` command line.
//!
//! Exit codes: 0 done, 1 failed (the message says why), 2 bad usage, 130 interrupted by Ctrl-C
//! (after everything the run made was released).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use super::start::{run_start, StartOptions, Variant};
use super::Interrupted;

/// A lab of network namespaces on one machine, for benchmarks and demos of the product.
#[derive(Debug, Parser)]
#[command(name = "vserver-lab", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the product in two minutes: three hosts and a client in network namespaces on this machine, an
    /// agent and a watchdog on each, a busybox vserver serving HTTP at its own address on h0, replicated to
    /// h1 and h2; crash h0 and watch the takeover from the client, phase by phase; bring h0 back and migrate
    /// the vserver home by command. Everything is removed at the end and on Ctrl-C.
    Demo {
        /// Leave the lab, agents and vserver running, and print how to explore them and a script that removes
        /// them.
        #[arg(long)]
        keep: bool,
        /// The short form (CI runs it): no look inside, no return of h0 and no migrate back; still a real crash
        /// and a checked takeover.
        #[arg(long)]
        quick: bool,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// The agent: GET /v1/status latency at a fixed rate and throughput (from inside its namespace), and its
    /// resident memory and CPU at rest with 5 peers heartbeating at the default interval.
    Agent {
        /// Target rate of the fixed-rate phase, requests per second.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Seconds of each load phase.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Seconds of the idle window.
        #[arg(long, default_value_t = 10)]
        idle: u64,
        /// Keep-alive connections of the load.
        #[arg(long, default_value_t = 4)]
        connections: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What an agent costs at rest as the cluster grows: for each size, a lab of that many hosts, the cluster
    /// formed by init and join at the default timing, then an idle window measuring each agent's CPU
    /// (non-voters, voters, the leader apart) and memory, the frames and bytes per second on the switch and
    /// the false suspicions; then the last host crashes and its ten vservers' recovery on their standby is
    /// timed; and each figure's growth exponent across the sizes.
    Scale {
        /// The cluster sizes, in hosts (comma-separated; 3 to 335).
        #[arg(long, value_delimiter = ',', default_value = "3,8,16,32,64")]
        sizes: Vec<usize>,
        /// Seconds of the idle window at each size.
        #[arg(long, default_value_t = 10)]
        idle: u64,
        /// Keep each host's run directory on the lab's disk instead of a tmpfs of its own (real hosts have
        /// /run on a tmpfs; the agent writes its lease there ten times a second).
        #[arg(long)]
        run_dirs_on_disk: bool,
        /// Have the lab deliver each frame in the sender's context, charged to the sending agent, as the lab did
        /// before (by default the switch's ports receive on kernel threads of their own, as separate machines
        /// leave receiving to the receiver, and their CPU is reported apart; that takes ethtool).
        #[arg(long)]
        delivery_in_sender: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replication and migrate on a tree of at least 1 GiB: a sync beside plain rsync of the same change, the
    /// outage of migrate beside a stop, rsync of the change onto a copy kept on the other host, start (and
    /// beside a stop, full copy, start), and a no-change pass over 100,000 files.
    Replicate {
        /// Size of the generated data, MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// Number of data files.
        #[arg(long, default_value_t = 16384)]
        files: u64,
        /// Percent of the files changed between two syncs.
        #[arg(long, default_value_t = 1.0)]
        change_pct: f64,
        /// Rounds of each measurement (migrate runs there and back in each).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Files of the no-change tree.
        #[arg(long, default_value_t = 100_000)]
        small_files: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Each data path (block: a loop device behind the lab's power fence) under a steady writer inside the vserver (rounds of 20 files of 4 KiB and 1 MiB
    /// appended, each made durable, 10 a second at most), in a lab of three hosts: the first standby's lag
    /// (p50, p99), the acknowledged writes a crash of the primary loses, and the writer's rounds a second as a
    /// ratio to a vserver with no standby. About a minute per data path.
    Data {
        /// The data paths, comma-separated (none, the writer's baseline, always runs first).
        #[arg(long, value_delimiter = ',', default_value = "periodic,continuous,shared,block")]
        modes: Vec<crate::bench::DataMode>,
        /// Seconds of writing measured per data path, before the crash.
        #[arg(long, default_value_t = 30)]
        secs: u64,
        /// The periodic path's interval, seconds.
        #[arg(long, default_value_t = 10)]
        interval_secs: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Automatic takeover, and what must not cause one; default timing, a watchdog per host. Four runs: host
    /// crashes with 3 and 5 hosts (recovery from the kill to the service answering at its address, seen from
    /// the client: p50/p90/max); blips of the owner (its link cut, its agent frozen, 0.2 to 1.5 s: stops,
    /// restarts, moves, fences and the client's longest gap; no stop, restart or move at or under the blip
    /// budget, 1.0 s); a slow link (200 ms each way and 20% loss on every host's link for 5 minutes: fences
    /// and takeovers, target 0); clean restarts of the owner's agent in a row (fences, target 0). A sampler
    /// checks all along that the vserver never runs on two hosts. The crash run's baseline, in the same run:
    /// keepalived (VRRP, advert_int 1 s, its default) moving an address between two hosts running busybox
    /// httpd, crashed alike; each size's p50 over keepalived's (needs `apt-get install keepalived`, else
    /// skipped). About 20 minutes.
    Takeover {
        /// Only these runs, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "crash,blip,slow,restarts")]
        only: Vec<crate::bench::TakeoverRun>,
        /// Cluster sizes of the crash trials, comma-separated (3 to 15 hosts each). The other runs use 3.
        #[arg(long, value_delimiter = ',', default_value = "3,5")]
        hosts: Vec<usize>,
        /// Host-crash trials per cluster size.
        #[arg(long, default_value_t = 20)]
        trials: usize,
        /// Lengths of the blips, seconds, comma-separated (each one a cut and a freeze).
        #[arg(long, value_delimiter = ',', default_value = "0.2,0.4,0.6,0.8,1.0,1.2,1.5")]
        blips: Vec<f64>,
        /// Times each blip runs (0: no blip run).
        #[arg(long, default_value_t = 3)]
        blip_repeats: usize,
        /// Seconds of the slow-link run (0: none). `--loss-secs`, its former name, still works.
        #[arg(long, alias = "loss-secs", default_value_t = 300)]
        slow_secs: u64,
        /// How long every frame a host sends is held during that run, ms (0: loss alone).
        #[arg(long, default_value_t = 200)]
        slow_delay_ms: u64,
        /// Percent of frames dropped on every host's link, each way, during that run.
        #[arg(long, default_value_t = 20)]
        loss_pct: u8,
        /// Clean restarts of the owner's agent in a row (0: none).
        #[arg(long, default_value_t = 50)]
        restarts: usize,
        /// Skip the crash run's keepalived baseline.
        #[arg(long)]
        no_baseline: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every benchmark above, one after the other, and one table of their figures, targets and ratios
    /// (about 25 minutes; --quick about 7). Save it with --save and compare the next release's with
    /// --compare.
    Report {
        /// Smaller runs: fewer instances, trials, blips and files, shorter slow-link and agent-restart runs
        /// (noisier figures, not comparable with a full report).
        #[arg(long)]
        quick: bool,
        /// Only these benchmarks (start, agent, replicate, takeover), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// An earlier report saved with --save (or --json): each figure's earlier value and change.
        #[arg(long, value_name = "FILE")]
        compare: Option<std::path::PathBuf>,
        /// Also write this report as JSON to FILE, for the next comparison.
        #[arg(long, value_name = "FILE")]
        save: Option<std::path::PathBuf>,
        /// Print the report as JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Time from a start command to the service answering HTTP, for vserver (hardened, and interleaved with
    /// the same with its hardening off), LXC and a bare floor.
    Start {
        /// Instances per variant (1..=150).
        #[arg(long, default_value_t = 50)]
        count: usize,
        /// Variants to measure, in this order (vserver and unhardened together, interleaved).
        #[arg(long, value_delimiter = ',', default_value = "vserver,unhardened,lxc,floor")]
        variants: Vec<Variant>,
        /// Longest wait, in seconds, for one instance to answer.
        #[arg(long, default_value_t = 20)]
        timeout: u64,
        /// Print the report as JSON on stdout instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; progress goes to stderr, the report to stdout.
pub fn run(cli: Cli) -> ExitCode {
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Interrupted>() => {
            eprintln!("vserver-lab: interrupted; everything it made has been removed");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("vserver-lab: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // Ctrl-C, and SIGTERM or SIGHUP (`kill`, `timeout`, a closed terminal): the lab is taken down either way.
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C and SIGTERM handler")?;
    let bench = match cli.command {
        Command::Demo { keep, quick } => {
            return crate::demo::run_demo(&crate::demo::DemoOptions { keep, quick }, &cancel)
        }
        Command::Bench { bench } => bench,
    };
    let (count, variants, timeout, json) = match bench {
        Bench::Start { count, variants, timeout, json } => (count, variants, timeout, json),
        Bench::Replicate { size_mib, files, change_pct, rounds, small_files, json } => {
            let opts = crate::bench::ReplicateOptions { size_mib, files, change_pct, rounds, small_files };
            let report = crate::bench::run_replicate_bench(&opts, &cancel)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        Bench::Data { modes, secs, interval_secs, json } => {
            if secs == 0 || interval_secs == 0 {
                anyhow::bail!("--secs and --interval-secs must be above 0");
            }
            let opts = crate::bench::DataOptions { modes, secs, interval_secs };
            let report = crate::bench::run_data_bench(&opts, &cancel)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        Bench::Report { quick, only, compare, save, json } => {
            // The earlier report is read first: a wrong path fails now, not after half an hour.
            let last = compare.as_deref().map(crate::bench::report::load).transpose()?;
            let opts = crate::bench::report::ReportOptions { quick, only };
            let report = crate::bench::report::run_report(&opts, &cancel)?;
            if let Some(path) = save {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?)
                    .with_context(|| format!("saving the report to {}", path.display()))?;
                eprintln!("bench report: saved to {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table(last.as_ref()));
            }
            anyhow::ensure!(
                report.failures.is_empty(),
                "{} benchmark(s) failed (see the table)",
                report.failures.len()
            );
            return Ok(());
        }
        Bench::Takeover {
            only,
            hosts,
            trials,
            blips,
            blip_repeats,
            slow_secs,
            slow_delay_ms,
            loss_pct,
            restarts,
            no_baseline,
            json,
        } => {
            anyhow::ensure!(loss_pct <= 100, "--loss-pct is a percentage: at most 100");
            anyhow::ensure!(slow_delay_ms <= 10_000, "--slow-delay-ms: at most 10000");
            let mut blips_ms = Vec::new();
            for s in blips {
                anyhow::ensure!(
                    s > 0.0 && s <= 30.0,
                    "--blips: each length in seconds, above 0 and at most 30, not {s}"
                );
                blips_ms.push((s * 1000.0).round() as u64);
            }
            let opts = crate::bench::TakeoverOptions {
                only,
                hosts,
                trials,
                blips_ms,
                blip_repeats,
                slow_secs,
                slow_delay_ms,
                loss_pct,
                restarts,
                baseline: !no_baseline,
            };
            let report = crate::bench::run_takeover_bench(&opts, &cancel)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        Bench::Scale { sizes, idle, run_dirs_on_disk, delivery_in_sender, json } => {
            let max = crate::MAX_HOSTS;
            if sizes.is_empty() || sizes.iter().any(|&n| !(3..=max).contains(&n)) || idle == 0 {
                anyhow::bail!("--sizes must name sizes of 3 to {max} hosts, and --idle must be above 0");
            }
            let opts = crate::bench::ScaleOptions {
                sizes,
                idle: Duration::from_secs(idle),
                run_dirs_on_disk,
                delivery_in_sender,
            };
            let report = crate::bench::run_scale_bench(&opts, &cancel)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
        Bench::Agent { rate, seconds, idle, connections, json } => {
            if rate == 0 || connections == 0 || seconds == 0 {
                anyhow::bail!("--rate, --connections and --seconds must be above 0");
            }
            let opts = crate::bench::AgentBenchOptions {
                rate,
                duration: Duration::from_secs(seconds),
                idle: Duration::from_secs(idle),
                connections,
            };
            let report = crate::bench::run_agent_bench(&opts, &cancel)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
            return Ok(());
        }
    };
    let options = StartOptions { count, variants, answer_timeout: Duration::from_secs(timeout) };
    let report = run_start(&options, &cancel)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
