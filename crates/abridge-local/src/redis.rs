//! A throwaway `redis-server`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::child::{Dir, find_binary, free_port, server_dir, spawn_tied, wait_for_port};

/// A `redis-server` on a free port with no persistence (like a Redis that can lose
/// everything, which abridge must survive), or one that keeps its data in a directory of
/// ours (`abridge up`'s data directory). Killed on drop.
pub struct LocalRedis {
    child: Option<Child>,
    port: u16,
    dir: Dir,
}

impl LocalRedis {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_in(Dir::Temp(server_dir("redis")?))
    }

    /// A server whose data (an append-only file, synced each second) lives in `dir` and is
    /// loaded again by the next server started on it.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        Self::start_in(Dir::Kept(dir.to_path_buf()))
    }

    fn start_in(dir: Dir) -> anyhow::Result<Self> {
        let mut redis = Self {
            child: None,
            port: free_port()?,
            dir,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = find_binary("redis-server", &[])?;
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args([
                "--appendonly",
                if matches!(self.dir, Dir::Kept(_)) {
                    "yes"
                } else {
                    "no"
                },
            ])
            .args(["--protected-mode", "no"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_tied(cmd)?;
        wait_for_port(
            &mut child,
            self.port,
            "redis-server",
            Duration::from_secs(10),
        )?;
        self.child = Some(child);
        // Accepting connections is not enough while it loads; wait for PONG.
        for _ in 0..500 {
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        anyhow::bail!("redis-server on port {} does not answer PING", self.port)
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .map(|n| buf[..n].starts_with(b"+PONG"))
                .unwrap_or(false)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL): everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends the server `signal` (SIGSTOP and SIGCONT pause and resume it with its data: an
    /// outage that loses nothing).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    /// Shuts the server down (SIGTERM: it writes what it keeps, then exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts a new, empty one on the same port.
    pub fn restart_empty(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
