//! `tickwire-bench c100k-shard`: one feed shard reading the engine's shared-memory ring — what
//! `tickwire-feed --listen ADDR --shm PATH` does, used when that binary is not built next to this
//! one. Started by c100k only.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tickwire_feed::{FeedShard, HubConfig, ShardConfig, ShmSource};

#[derive(clap::Args, Debug, Clone)]
pub struct ShardArgs {
    #[arg(long)]
    pub listen: SocketAddr,
    #[arg(long)]
    pub shm: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub instruments: Vec<u32>,
    #[arg(long, default_value_t = 500)]
    pub poll_us: u64,
}

pub fn run(a: ShardArgs) {
    super::raise_nofile();
    let r = (|| -> Result<(), String> {
        let listener = tickwire_feed::sys::bind_reuseport(a.listen, 1024).map_err(|e| format!("listen {}: {e}", a.listen))?;
        let src = ShmSource::open(&a.shm, Duration::from_micros(a.poll_us)).map_err(|e| format!("shm: {e:?}"))?;
        let mut shard = FeedShard::new(listener, src, ShardConfig::new(HubConfig::new(a.instruments.clone())))
            .map_err(|e| format!("shard: {e}"))?;
        eprintln!("c100k-shard: listening on {}", shard.local_addr());
        let stop = Arc::new(AtomicBool::new(false));
        shard.run(&stop).map_err(|e| format!("shard: {e}"))
    })();
    if let Err(e) = r {
        eprintln!("c100k-shard: error: {e}");
        std::process::exit(1);
    }
}
