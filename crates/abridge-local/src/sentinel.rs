//! A throwaway Sentinel group: a master, a replica and three sentinels (`redis-server
//! --sentinel`), for the tests and drills that need real failovers.

use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::child::{find_binary, free_port, server_dir};
use crate::cluster::{command, spawn_server};

/// The master's name the sentinels watch.
pub const MASTER_NAME: &str = "abridge";

pub struct LocalRedisSentinel {
    /// `(port, process)`: the first master, the replica, then the sentinels.
    servers: Vec<(u16, Option<Child>)>,
    sentinels: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl LocalRedisSentinel {
    pub fn start() -> anyhow::Result<Self> {
        let dir = server_dir("redis-sentinel")?;
        let bin = find_binary("redis-server", &[])?;
        let spawn = |port: u16, args: &[&str]| {
            anyhow::Ok((port, Some(spawn_server(&bin, dir.path(), port, args)?)))
        };
        let no_disk = ["--save", "", "--appendonly", "no"];
        let master = spawn(free_port()?, &no_disk)?;
        let master_port = master.0.to_string();
        let replica = spawn(
            free_port()?,
            &[&no_disk[..], &["--replicaof", "127.0.0.1", &master_port]].concat(),
        )?;
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let port = free_port()?;
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "sentinel resolve-hostnames no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    master.0
                ),
            )?;
            let conf = conf.to_str().context("a sentinel config path")?;
            sentinels.push(spawn(port, &[conf, "--sentinel"])?);
        }
        let group = Self {
            servers: vec![master, replica],
            sentinels,
            _dir: dir,
        };
        // Ready once every sentinel has found the replica.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !group.sentinels.iter().all(|(p, _)| {
            command(*p, &format!("SENTINEL REPLICAS {MASTER_NAME}"))
                .is_some_and(|r| r.contains(&group.servers[1].0.to_string()))
        }) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the sentinels did not find the replica"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(group)
    }

    /// `redis+sentinel://` naming every sentinel and the master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port, as the first sentinel that answers names it.
    pub fn master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(p, _)| {
            let reply = command(
                *p,
                &format!("SENTINEL GET-MASTER-ADDR-BY-NAME {MASTER_NAME}"),
            )?;
            reply
                .lines()
                .filter(|l| !l.starts_with(['*', '$']))
                .nth(1)?
                .trim()
                .parse()
                .ok()
        })
    }

    /// Asks the sentinels to fail over now (the master steps down to a replica).
    pub fn failover(&self) -> anyhow::Result<()> {
        let reply = command(
            self.sentinels[0].0,
            &format!("SENTINEL FAILOVER {MASTER_NAME}"),
        )
        .unwrap_or_default();
        anyhow::ensure!(reply.starts_with("+OK"), "SENTINEL FAILOVER: {reply}");
        Ok(())
    }
}

impl Drop for LocalRedisSentinel {
    fn drop(&mut self) {
        for (_, child) in self.servers.iter_mut().chain(self.sentinels.iter_mut()) {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
