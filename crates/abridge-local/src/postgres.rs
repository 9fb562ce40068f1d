//! A throwaway PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::child::{find_binary, free_port, server_dir, spawn_tied, wait_for_port};

/// A `postgres` on a free port, its cluster in a temporary directory. Killed on drop.
///
/// When this process runs as root (CI does), the cluster is owned by and run as the
/// `postgres` user, because postgres refuses to run as root.
pub struct LocalPostgres {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    bin_dir: PathBuf,
    /// The uid/gid to run as, when we are root.
    run_as: Option<(u32, u32)>,
    /// Trade durability for speed (tests): `fsync = off`.
    fast: bool,
}

impl LocalPostgres {
    /// Initialises and starts a cluster. `fast` turns fsync off (for tests; a crash of the
    /// machine could corrupt it, which does not matter for throwaway data).
    pub fn start(fast: bool) -> anyhow::Result<Self> {
        let initdb = find_binary("initdb", &debian_bin_dirs())?;
        // PATH may hold symlinks (/usr/local/bin/initdb); the sibling tools live by the target.
        let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        let bin_dir = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        let run_as = run_as_postgres_user()?;
        let dir = server_dir("pg")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).context("create postgres data directory")?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), data.as_path()] {
                nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                    .with_context(|| format!("give {} to the postgres user", path.display()))?;
            }
        }
        let mut cmd = Command::new(&initdb);
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut cmd, run_as);
        let out = cmd
            .output()
            .with_context(|| format!("run {}", initdb.display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut pg = Self {
            child: None,
            port: free_port()?,
            dir,
            bin_dir,
            run_as,
            fast,
        };
        pg.spawn()?;
        Ok(pg)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let data = self.dir.path().join("data");
        let log = std::fs::File::create(self.dir.path().join("postgres.log"))
            .context("create postgres log")?;
        if let Some((uid, gid)) = self.run_as {
            let _ = nix::unistd::chown(
                &self.dir.path().join("postgres.log"),
                Some(uid.into()),
                Some(gid.into()),
            );
        }
        let mut cmd = Command::new(self.bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "max_connections=400"])
            .args(["-c", "shared_buffers=128MB"]);
        if self.fast {
            cmd.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        as_user(&mut cmd, self.run_as);
        let mut child = spawn_tied(cmd)?;
        wait_for_port(&mut child, self.port, "postgres", Duration::from_secs(30))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the server accepts queries (not only TCP connections).
    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let isready = self.bin_dir.join("pg_isready");
        loop {
            let ok = Command::new(&isready)
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-q",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "postgres exited during startup ({status}); see {}",
                    self.log_path().display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres on port {} not ready within {timeout:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A URL for database `db` as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server with a fast shutdown (SIGINT: disconnect everyone, checkpoint, exit).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse(); // newest major version first
    dirs
}

fn run_as_postgres_user() -> anyhow::Result<Option<(u32, u32)>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .context("look up the postgres user")?
        .context("running as root, and there is no `postgres` user to run postgres as")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_user(cmd: &mut Command, run_as: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
        // The postgres user cannot read root's working directory.
        cmd.current_dir("/");
    }
}
