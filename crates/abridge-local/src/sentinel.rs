//! A throwaway Sentinel group: a master, a replica and three sentinels (`redis-server
//! --sentinel`), for the tests and drills that need real failovers.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::{find_binary, free_port, server_dir, spawn_tied, wait_for_port};
use crate::cluster::command;

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
        let spawn = |port: u16, extra: &[String], conf: Option<&std::path::Path>| {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)?;
            let mut cmd = Command::new(&bin);
            if let Some(conf) = conf {
                cmd.arg(conf).arg("--sentinel");
            }
            cmd.args(["--port", &port.to_string()])
                .args(["--bind", "127.0.0.1"])
                .args(["--protected-mode", "no"])
                .args(extra)
                .arg("--dir")
                .arg(&node_dir)
                .arg("--logfile")
                .arg(node_dir.join("redis.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = spawn_tied(cmd)?;
            wait_for_port(&mut child, port, "redis-server", Duration::from_secs(10))?;
            anyhow::Ok((port, Some(child)))
        };
        let no_disk = [
            "--save".to_owned(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ];
        let master = spawn(free_port()?, &no_disk, None)?;
        let mut replica_args = no_disk.to_vec();
        replica_args.extend([
            "--replicaof".into(),
            "127.0.0.1".into(),
            master.0.to_string(),
        ]);
        let replica = spawn(free_port()?, &replica_args, None)?;
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
            sentinels.push(spawn(port, &[], Some(&conf))?);
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
