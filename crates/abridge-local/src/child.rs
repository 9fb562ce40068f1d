//! Spawning children that die with this process.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where a server keeps its files: a temporary directory removed on drop, or one kept.
pub(crate) enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    pub(crate) fn path(&self) -> &Path {
        match self {
            Dir::Temp(t) => t.path(),
            Dir::Kept(p) => p,
        }
    }
}

/// A temporary directory for a throwaway server, named with this process's id so that later
/// runs can tell it is orphaned. Servers kept for a process's whole life (the test kit's
/// shared ones live in statics, which Rust never drops) leave their directory behind; the next
/// process to start a server removes the directories of processes that no longer exist.
pub(crate) fn server_dir(kind: &str) -> anyhow::Result<tempfile::TempDir> {
    sweep_orphans();
    tempfile::Builder::new()
        .prefix(&format!("abridge-{kind}-{}-", std::process::id()))
        .tempdir()
        .with_context(|| format!("create {kind} directory"))
}

/// Removes `abridge-{pg,redis}-PID-*` directories whose process is gone.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name
            .strip_prefix("abridge-pg-")
            .or_else(|| name.strip_prefix("abridge-redis-"))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

type Request = (Command, mpsc::Sender<std::io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not the process.
/// Test threads come and go, so every child is forked from this one long-lived thread.
fn spawner() -> &'static Mutex<mpsc::Sender<Request>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("abridge-local-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    set_parent_death_signal(&mut cmd);
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the child-spawner thread");
        Mutex::new(tx)
    })
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which
    // is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
}

/// Spawns `cmd` so that it is killed if this process dies.
pub fn spawn_tied(cmd: Command) -> anyhow::Result<Child> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .context("child-spawner thread is gone")?;
    reply_rx
        .recv()
        .context("child-spawner thread is gone")?
        .with_context(|| format!("start {program}"))
}

/// Waits until something accepts TCP connections on `port`, or `child` exits.
pub(crate) fn wait_for_port(
    child: &mut Child,
    port: u16,
    what: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited during startup ({status})");
        }
        if Instant::now() > deadline {
            bail!("{what} did not accept connections on port {port} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Finds a server binary on PATH or in the usual Debian location.
pub(crate) fn find_binary(
    name: &str,
    extra_dirs: &[std::path::PathBuf],
) -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path).chain(extra_dirs.iter().cloned()) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "{name} not found on PATH or in {extra_dirs:?}; install it (Debian: apt-get install redis-server postgresql)"
    )
}
