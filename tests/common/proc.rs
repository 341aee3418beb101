//! `ewn` as a child process of a test: killed with SIGKILL when dropped, so a failing test
//! leaves nothing behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    child: std::process::Child,
}

impl Proc {
    /// Starts `ewn ARGS` with `envs`, stdout and stderr appended to `log` (or inherited when
    /// `None`).
    pub fn ewn(args: &[String], envs: &[(String, String)], log: Option<&Path>) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ewn"));
        cmd.args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match log {
            Some(path) => {
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap();
                cmd.stdout(out.try_clone().unwrap()).stderr(out);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
            }
        }
        Proc {
            child: cmd.spawn().unwrap(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `within` for a clean exit (status 0); SIGKILL after.
    pub fn terminate(&mut self, within: Duration) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + within;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("pid {pid} exited with {status}")),
                Ok(None) if Instant::now() >= deadline => {
                    self.sigkill();
                    return Err(format!("pid {pid} still running {within:?} after SIGTERM"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => return Err(format!("pid {pid}: {e}")),
            }
        }
    }

    /// Peak resident memory (VmHWM) of the process, in MiB, while it runs.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sigkill();
    }
}
