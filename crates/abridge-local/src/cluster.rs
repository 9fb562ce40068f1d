//! A throwaway Redis Cluster: `redis-server --cluster-enabled yes` processes made one cluster
//! with `redis-cli --cluster create`, for the tests and drills that need a real one.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::child::{find_binary, server_dir, spawn_tied, wait_for_port};

/// Masters (and replicas, one per master when asked) on ports below 55000: a node also binds
/// its port + 10000 for the cluster bus. Killed on drop.
pub struct LocalRedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    _dir: tempfile::TempDir,
}

impl LocalRedisCluster {
    /// `masters` masters, with `replicas` replicas each.
    pub fn start(masters: usize, replicas: usize) -> anyhow::Result<Self> {
        let dir = server_dir("redis-cluster")?;
        let bin = find_binary("redis-server", &[])?;
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port()?;
            let child = spawn_server(
                &bin,
                dir.path(),
                port,
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
            )?;
            nodes.push((port, Some(child)));
        }
        let cluster = Self { nodes, _dir: dir };
        let cli = find_binary("redis-cli", &[])?;
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(p, _)| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new(cli)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("run redis-cli --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.nodes.iter().all(|(p, _)| {
            command(*p, "CLUSTER INFO").is_some_and(|i| i.contains("cluster_state:ok"))
        }) {
            anyhow::ensure!(Instant::now() < deadline, "the cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A replica can take over only once it has synced with its master.
        while cluster
            .nodes
            .iter()
            .filter(|(p, _)| {
                command(*p, "INFO replication").is_some_and(|i| {
                    i.contains("role:slave") && i.contains("master_link_status:up")
                })
            })
            .count()
            < masters * replicas
        {
            anyhow::ensure!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(cluster)
    }

    /// Every node's port, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|(p, _)| *p).collect()
    }

    /// `redis+cluster://` with the given nodes as seeds.
    pub fn url(&self, seeds: &[u16]) -> String {
        let seeds: Vec<String> = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    /// The port of the master that serves `key`'s slot now.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        // Asked of the first node still running.
        let asked = self.nodes.iter().find(|(_, c)| c.is_some())?.0;
        let slot = command(asked, &format!("CLUSTER KEYSLOT {key}"))?;
        let slot: u16 = slot.trim().trim_start_matches(':').parse().ok()?;
        let nodes = command(asked, "CLUSTER NODES")?;
        nodes.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 9 || !f[2].contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f[8..].iter().any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot)
                        && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>() == Ok(slot),
            });
            serves.then(|| f[1].split(['@', ':']).nth(1)?.parse().ok())?
        })
    }

    /// Moves `key`'s slot to the master on `to`, keys and all, as `redis-cli --cluster
    /// reshard` does (IMPORTING / MIGRATING, MIGRATE in rounds, then NODE everywhere), while
    /// clients keep working: they are sent ASK, then MOVED.
    pub fn migrate_slot(&self, key: &str, to: u16) -> anyhow::Result<()> {
        let from = self.master_of(key).context("the slot's master")?;
        let id = |port: u16| {
            command(port, "CLUSTER MYID")
                .map(|s| s.trim().to_owned())
                .context("CLUSTER MYID")
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let slot = command(from, &format!("CLUSTER KEYSLOT {key}"))
            .context("CLUSTER KEYSLOT")?
            .trim()
            .trim_start_matches(':')
            .to_owned();
        let ok = |port: u16, cmd: String| -> anyhow::Result<()> {
            let reply = command(port, &cmd).unwrap_or_default();
            anyhow::ensure!(reply.starts_with("+OK"), "{cmd}: {reply}");
            Ok(())
        };
        ok(to, format!("CLUSTER SETSLOT {slot} IMPORTING {from_id}"))?;
        ok(from, format!("CLUSTER SETSLOT {slot} MIGRATING {to_id}"))?;
        loop {
            let keys = command(from, &format!("CLUSTER GETKEYSINSLOT {slot} 100"))
                .context("CLUSTER GETKEYSINSLOT")?;
            let keys: Vec<&str> = keys
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with(['*', '$']))
                .collect();
            if keys.is_empty() {
                break;
            }
            ok(
                from,
                format!("MIGRATE 127.0.0.1 {to} \"\" 0 5000 KEYS {}", keys.join(" ")),
            )?;
        }
        for (port, child) in &self.nodes {
            if child.is_some() {
                // Replicas answer an error here; masters take the new owner.
                let _ = command(*port, &format!("CLUSTER SETSLOT {slot} NODE {to_id}"));
            }
        }
        Ok(())
    }

    /// Kills the node on `port` (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.nodes {
            if *p == port
                && let Some(mut c) = child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for LocalRedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A `redis-server` on `port` (`args` before the common ones; a config file first makes it a
/// sentinel with `--sentinel` among them), its files in a directory of its own under `dir`,
/// answering on its port.
pub(crate) fn spawn_server(
    bin: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    args: &[&str],
) -> anyhow::Result<Child> {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir)?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--protected-mode", "no"])
        .arg("--dir")
        .arg(&node_dir)
        .arg("--logfile")
        .arg(node_dir.join("redis.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_tied(cmd)?;
    wait_for_port(&mut child, port, "redis-server", Duration::from_secs(10))?;
    Ok(child)
}

/// A free port below 55000 whose bus port (+10000) is free too.
fn cluster_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let port = 20_000 + (rand_u16() % 25_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port pair for a cluster node")
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) as u16
}

/// One inline command's raw reply (bulk strings as their text), or `None`.
pub(crate) fn command(port: u16, cmd: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if n < buf.len() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    // A bulk string: `$N\r\n<text>\r\n`.
    Some(match text.strip_prefix('$') {
        Some(rest) => rest.split_once("\r\n").map_or(rest, |(_, t)| t).to_owned(),
        None => text,
    })
}
