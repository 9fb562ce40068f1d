//! For benchmarks and tools, not the fleet: Redis server counters from `INFO`.

use crate::{Context, Queue, Result, collect_text};

/// Redis server counters (from `INFO`), for benchmarks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStats {
    pub used_memory: i64,
    /// Commands executed, over all command types (commands run inside scripts included).
    pub calls: i64,
    /// Microseconds spent in scripts (`EVALSHA`/`EVAL`; inner commands are also counted
    /// under their own names, so summing every command would count them twice).
    pub script_usec: i64,
    /// CPU seconds of the server process (user + system).
    pub cpu_seconds: f64,
    /// On a cluster, each master's own figures, by its port (what would scale with more
    /// machines is what is spread evenly here).
    pub nodes: Vec<(u16, ServerStats)>,
}

impl ServerStats {
    fn parse(info: &str) -> Self {
        let mut stats = Self::default();
        for line in info.lines() {
            let line = line.trim();
            if let Some(v) = line.strip_prefix("tcp_port:") {
                stats.nodes = vec![(v.parse().unwrap_or(0), Self::default())];
            } else if let Some(v) = line.strip_prefix("used_memory:") {
                stats.used_memory = v.parse().unwrap_or(0);
            } else if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or_else(|| line.strip_prefix("used_cpu_user:"))
            {
                stats.cpu_seconds += v.parse::<f64>().unwrap_or(0.0);
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                // cmdstat_evalsha:calls=10,usec=123,usec_per_call=12.3,...
                let (name, fields) = rest.split_once(':').unwrap_or((rest, ""));
                let script = name == "evalsha" || name == "eval";
                for field in fields.split(',') {
                    match field.split_once('=') {
                        Some(("calls", v)) => stats.calls += v.parse::<i64>().unwrap_or(0),
                        Some(("usec", v)) if script => {
                            stats.script_usec += v.parse::<i64>().unwrap_or(0)
                        }
                        _ => {}
                    }
                }
            }
        }
        let own = Self {
            nodes: Vec::new(),
            ..stats.clone()
        };
        if let Some((_, slot)) = stats.nodes.first_mut() {
            *slot = own;
        }
        stats
    }
}

impl Queue {
    /// Server-wide counters for benchmarks: memory in use, and command calls and CPU
    /// microseconds summed over every command (`INFO commandstats`).
    /// On a cluster, the sum over its masters (a cluster answers INFO from every one).
    pub async fn server_stats(&self) -> Result<ServerStats> {
        let mut conn = self.conn("read redis server stats").await?;
        let info: redis::Value = redis::cmd("INFO")
            .arg("all")
            .query_async(&mut conn)
            .await
            .context("read redis server stats")?;
        let mut texts = Vec::new();
        collect_text(&info, &mut texts);
        let mut total = ServerStats::default();
        for text in texts {
            let s = ServerStats::parse(&text);
            total.used_memory += s.used_memory;
            total.calls += s.calls;
            total.script_usec += s.script_usec;
            total.cpu_seconds += s.cpu_seconds;
            total.nodes.extend(s.nodes);
        }
        total.nodes.sort_by_key(|(port, _)| *port);
        Ok(total)
    }
}
