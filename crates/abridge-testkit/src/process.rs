//! `abridge` processes under a test's control.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A running `abridge` process. Its output goes to a log file that [`Proc::logs`] reads (tests
/// print it when they fail). Killed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Proc {
    /// Starts `bin args...` with `vars` added to a clean `ABRIDGE_*`-free environment.
    pub fn spawn(name: &str, bin: &Path, args: &[&str], vars: &[(String, String)]) -> Self {
        let log = tempfile::Builder::new()
            .prefix(&format!("abridge-{name}-"))
            .suffix(".log")
            .tempfile()
            .expect("create process log");
        let mut cmd = Command::new(bin);
        cmd.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("ABRIDGE_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(vars.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                std::env::var("ABRIDGE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("log file"))
            .stderr(log.reopen().expect("log file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        let _ = kill(self.pid(), sig);
    }

    /// The exit code once exited, or `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Everything the process printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.logs());
        }
    }
}
