//! tickwire-bench: `cargo run --release -p tickwire-bench -- <bench> [--quick] [--json]`.
//! Every benchmark measures its baseline in the same run and prints ratios against it.

mod c100k;
mod journal_bench;
mod fanout;
mod gateway_bench;
mod match_bench;
mod report;
mod serve;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tickwire-bench", about = "Tickwire benchmarks (each with its baseline in the same run)")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

/// Options every benchmark takes.
#[derive(clap::Args, Clone, Debug)]
pub struct Common {
    /// Short run (about a minute).
    #[arg(long)]
    pub quick: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Bench {
    /// Matching engine: direct and through the rings, vs matchcore.
    Match(Common),
    /// Market-data fan-out to K WebSocket subscribers (client processes), vs tokio-tungstenite.
    Fanout(fanout::FanoutArgs),
    /// Order entry through `tickwire serve` (child process): RTT with journal none and sync vs
    /// a raw TCP ping-pong and fdatasync; open-loop throughput of N sessions at fixed rates.
    Gateway(gateway_bench::GatewayArgs),
    /// Command journal (sync group commit, ack latency, replay) and snapshots, vs raw fdatasync.
    Journal(journal_bench::JournalArgs),
    /// Many market-data subscribers (10K..1M): feed shard processes on one port, client processes
    /// on their own source addresses; connect ramp, fan-out latency, memory per connection.
    C100k(c100k::C100kArgs),
    /// One client process of c100k (started by c100k itself).
    #[command(hide = true)]
    C100kClient(c100k::client::ClientArgs),
    /// One feed shard process of c100k (started by c100k itself).
    #[command(hide = true)]
    C100kShard(c100k::shard::ShardArgs),
}

fn main() {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Match(c) => match_bench::run(&c),
        Bench::Fanout(a) => fanout::run(&a),
        Bench::Gateway(a) => gateway_bench::run(&a),
        Bench::Journal(a) => journal_bench::run(&a),
        Bench::C100k(a) => c100k::run(&a),
        Bench::C100kClient(a) => c100k::client::run(a),
        Bench::C100kShard(a) => c100k::shard::run(a),
    }
}
