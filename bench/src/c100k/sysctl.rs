//! Warnings for kernel settings below what a requested run needs, judged against
//! `tuning/sysctl.conf` (the recommended values) and the run's size.

use std::path::Path;

/// The recommended file, next to the workspace.
pub const CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tuning/sysctl.conf");

fn read_proc(key: &str) -> Option<Vec<u64>> {
    let p = format!("/proc/sys/{}", key.replace('.', "/"));
    let s = std::fs::read_to_string(p).ok()?;
    s.split_whitespace().map(|w| w.parse().ok()).collect()
}

/// `(key, values)` of every setting in the file.
pub fn parse_conf(text: &str) -> Vec<(String, Vec<u64>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let vals: Option<Vec<u64>> = v.split_whitespace().map(|w| w.parse().ok()).collect();
            Some((k.trim().to_string(), vals?))
        })
        .collect()
}

/// What a run needs.
pub struct Need {
    /// Subscriber connections (each is 2 sockets on loopback).
    pub connections: u64,
    /// Connections per process at most (client or shard).
    pub per_process: u64,
    /// New connections per second per listening shard.
    pub accept_rate_per_shard: u64,
    /// Connections per client source address.
    pub per_source_addr: u64,
}

/// One line per setting below the run's need (empty when all is well).
pub fn warnings(conf_path: &Path, need: &Need) -> Vec<String> {
    let text = match std::fs::read_to_string(conf_path) {
        Ok(t) => t,
        Err(e) => return vec![format!("cannot read {} ({e}): sysctl settings not checked", conf_path.display())],
    };
    let mut out = Vec::new();
    let sockets = need.connections * 2;
    for (key, rec) in parse_conf(&text) {
        let Some(cur) = read_proc(&key) else { continue };
        // (current value compared, value this run needs); only settings where more is needed.
        let (have, want) = match key.as_str() {
            "fs.file-max" => (cur[0], sockets + 20_000),
            "fs.nr_open" => (cur[0], need.per_process + 1_000),
            "net.core.somaxconn" | "net.ipv4.tcp_max_syn_backlog" => (cur[0], need.accept_rate_per_shard.clamp(1_024, 65_535)),
            "net.ipv4.ip_local_port_range" if cur.len() == 2 => (cur[1].saturating_sub(cur[0]), need.per_source_addr),
            // Pages: about 2 pages of buffers per idle loopback socket when data flows.
            "net.ipv4.tcp_mem" if cur.len() == 3 => (cur[2], sockets * 2),
            _ => continue,
        };
        let want = want.min(match key.as_str() {
            "net.ipv4.ip_local_port_range" if rec.len() == 2 => rec[1] - rec[0],
            "net.ipv4.tcp_mem" if rec.len() == 3 => rec[2].max(want),
            _ => rec[0].max(want),
        });
        if have < want {
            let recv: Vec<String> = rec.iter().map(u64::to_string).collect();
            let curv: Vec<String> = cur.iter().map(u64::to_string).collect();
            out.push(format!(
                "sysctl {key} = {} is below what this run needs (~{want}); tuning/sysctl.conf sets {} \
                 (sudo sysctl -w {key}=\"{}\")",
                curv.join(" "),
                recv.join(" "),
                recv.join(" ")
            ));
        }
    }
    // Not in the file but fatal when too small: loopback connections are tracked too when
    // conntrack is loaded, and a full table drops SYNs.
    if let Some(c) = read_proc("net.netfilter.nf_conntrack_max") {
        if c[0] < need.connections + 10_000 {
            out.push(format!(
                "sysctl net.netfilter.nf_conntrack_max = {} is below the run's {} connections: SYNs will be dropped \
                 once the table is full",
                c[0], need.connections
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_repository_file() {
        let text = std::fs::read_to_string(CONF).unwrap();
        let v = parse_conf(&text);
        assert!(v.iter().any(|(k, v)| k == "net.core.somaxconn" && v == &[65535]));
        assert!(v.iter().any(|(k, v)| k == "net.ipv4.tcp_mem" && v.len() == 3));
    }

    #[test]
    fn tiny_run_has_no_scale_warning_for_file_max() {
        let w = warnings(Path::new(CONF), &Need { connections: 10, per_process: 10, accept_rate_per_shard: 10, per_source_addr: 1 });
        assert!(w.iter().all(|l| !l.contains("fs.file-max")), "{w:?}");
    }
}
