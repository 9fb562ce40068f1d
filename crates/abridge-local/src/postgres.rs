//! A throwaway PostgreSQL cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::child::{Dir, find_binary, free_port, server_dir, spawn_tied, wait_for_port};

/// A `postgres` on a free port, its cluster in a temporary directory. Killed on drop.
///
/// When this process runs as root (CI does), the cluster is owned by and run as the
/// `postgres` user, because postgres refuses to run as root.
pub struct LocalPostgres {
    child: Option<Child>,
    port: u16,
    dir: Dir,
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
        let dir = server_dir("pg")?;
        Self::start_in(Dir::Temp(dir), fast)
    }

    /// Starts the cluster kept in `dir`, making it first if `dir` holds none: a cluster that
    /// outlives this process (`abridge up`'s data directory). Fsync stays on, so a crash of
    /// this process or the machine leaves a cluster that recovers on the next start. Call
    /// [`LocalPostgres::stop`] to shut it down cleanly; dropping it kills the server.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let dir = std::fs::canonicalize(dir).with_context(|| format!("find {}", dir.display()))?;
        Self::start_in(Dir::Kept(dir), false)
    }

    fn start_in(dir: Dir, fast: bool) -> anyhow::Result<Self> {
        let initdb = find_binary("initdb", &debian_bin_dirs())?;
        // PATH may hold symlinks (/usr/local/bin/initdb); the sibling tools live by the target.
        let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        let bin_dir = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        let run_as = run_as_postgres_user()?;
        if run_as.is_some() {
            reachable_by_others(dir.path())?;
        }
        let data = dir.path().join("data");
        if data.join("PG_VERSION").exists() {
            wait_for_old_server(&data)?;
        } else {
            // No cluster, or one whose initdb was cut short: make it (again).
            if data.exists() {
                std::fs::remove_dir_all(&data)
                    .with_context(|| format!("remove the unfinished cluster {}", data.display()))?;
            }
            std::fs::create_dir(&data).context("create postgres data directory")?;
            if let Some((uid, gid)) = run_as {
                for path in [dir.path(), data.as_path()] {
                    nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
                        .with_context(|| format!("give {} to the postgres user", path.display()))?;
                }
            }
            // A kept cluster is synced once made; a throwaway one need not be.
            initdb_at(&initdb, &data, run_as, matches!(dir, Dir::Kept(_)))?;
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
            // TCP only: a socket path under a long data directory can pass the 107-byte limit.
            .args(["-c", "unix_socket_directories="])
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

fn initdb_at(
    initdb: &Path,
    data: &Path,
    run_as: Option<(u32, u32)>,
    sync: bool,
) -> anyhow::Result<()> {
    let mut cmd = Command::new(initdb);
    cmd.arg("-D")
        .arg(data)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C"]);
    if !sync {
        cmd.arg("--no-sync");
    }
    cmd.stdin(Stdio::null())
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
    Ok(())
}

/// Makes way for a start after a crash. The postgres a killed `up` left on this cluster (its
/// postmaster, then its backends) may take a moment to go: wait for every live process
/// working in the data directory to be gone (a few seconds at most, else an error). Then a
/// lock file whose pid still exists can only name a dead postmaster not yet reaped (a
/// zombie, which Postgres would take for a live one): with no process left on the cluster,
/// it is stale, and goes. Any other lock file is left to Postgres, which checks it better.
fn wait_for_old_server(data: &Path) -> anyhow::Result<()> {
    let file = data.join("postmaster.pid");
    let Ok(text) = std::fs::read_to_string(&file) else {
        return Ok(());
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let users = working_in(data);
        if users.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "postgres processes (pids {users:?}) still run on {}; stop them first",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok());
    if pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
        std::fs::remove_file(&file).with_context(|| format!("remove {}", file.display()))?;
    }
    Ok(())
}

/// Live (not zombie) processes whose working directory is `data`: a postgres of this cluster.
fn working_in(data: &Path) -> Vec<u32> {
    let Ok(data) = std::fs::canonicalize(data) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data)
                && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
                })
        })
        .collect()
}

/// Postgres runs as the `postgres` user when we are root: it must be able to walk down to
/// its cluster (a directory under /root is out of its reach).
fn reachable_by_others(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o755);
        if mode & 0o001 == 0 {
            bail!(
                "postgres runs as the postgres user (this process is root) and cannot reach {}: \
                 {} is closed to other users; choose a data directory it can reach, e.g. under \
                 /var/lib or /tmp",
                dir.display(),
                ancestor.display()
            );
        }
    }
    Ok(())
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
