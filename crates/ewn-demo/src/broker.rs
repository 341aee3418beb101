//! A local Tansu broker, started from the binary the caller names (the command resolves
//! it once from its flags and environment; this crate reads no environment). It runs
//! under a watchdog shell that stops it and removes its directory when this process ends,
//! however it ends, or when [`LocalBroker::stop`] asks; the watchdog also starts it again
//! on the same data and port when asked ([`LocalBroker::restart`]), so a test can kill the
//! broker with SIGKILL ([`LocalBroker::kill9`]) and see what clients make of a crash.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::relay::LinkRelay;

/// The line the watchdog writes to Tansu's log before each restart.
const RESTARTED: &str = "--- restarted ---";

/// Where the Tansu binary is: `explicit` (a flag, or `TANSU_BIN`), else `tansu` in one of
/// the directories of `search_path` (the caller's `PATH`), else `<home>/.cargo/bin/tansu`
/// (where `make broker` installs it; `/root` without a home). The caller reads the
/// environment and hands it over.
pub fn tansu_bin(
    explicit: Option<PathBuf>,
    search_path: Option<&std::ffi::OsStr>,
    home: Option<&Path>,
) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    let on_path = search_path
        .into_iter()
        .flat_map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| home.unwrap_or(Path::new("/root")).join(".cargo/bin/tansu"))
}

/// How long a broker may take to listen, and to stop.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Tansu's storage engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// `sqlite://broker.db`: durable; for anything that restarts or resumes.
    Sqlite,
    /// `memory://tansu/`: fast, not durable; for benchmarks.
    Memory,
}

impl Engine {
    /// The `--storage-engine` URL. Tansu 0.6.0 opens a sqlite path relative to its working
    /// directory (DESIGN.md), so the broker runs in its own directory.
    pub fn url(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite://broker.db",
            Engine::Memory => "memory://tansu/",
        }
    }
}

pub struct LocalBroker {
    /// `127.0.0.1:PORT`, its listener.
    pub addr: String,
    pub dir: PathBuf,
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Broker(format!("no free loopback port: {e}")))
}

impl LocalBroker {
    /// Starts Tansu from `bin` with `engine` on a free loopback port, and waits until it
    /// listens (up to 30 s).
    pub fn start(bin: &Path, engine: Engine) -> Result<LocalBroker> {
        let port = free_port()?;
        LocalBroker::start_advertising(bin, engine, port, &format!("127.0.0.1:{port}"))
    }

    /// Starts a broker behind a [`LinkRelay`]: the broker advertises the relay, so every
    /// client connects through it and the relay can cut chosen clients' links. Clients get
    /// the relay's `addr`; the broker's own `addr` is its listener.
    pub fn start_behind_relay(bin: &Path, engine: Engine) -> Result<(LocalBroker, LinkRelay)> {
        let port = free_port()?;
        let relay = LinkRelay::start(format!("127.0.0.1:{port}")).map_err(Error::Broker)?;
        let broker = LocalBroker::start_advertising(bin, engine, port, &relay.addr)?;
        Ok((broker, relay))
    }

    /// Starts a broker listening on `port` and advertising `advertised` (`host:port`).
    fn start_advertising(
        bin: &Path,
        engine: Engine,
        port: u16,
        advertised: &str,
    ) -> Result<LocalBroker> {
        if !bin.is_file() {
            return Err(Error::Broker(format!(
                "{} not found: run `make broker` (installs Tansu 0.6.0) or set TANSU_BIN",
                bin.display()
            )));
        }
        let dir = tempfile::Builder::new()
            .prefix("ewn-tansu-")
            .tempdir()
            .map_err(|e| Error::Broker(format!("temp dir: {e}")))?
            .keep();
        let addr = format!("127.0.0.1:{port}");
        // The watchdog: runs Tansu (pid in `tansu.pid`); a `start` file asks for a new
        // Tansu (the running one, if any, is killed and reaped first); it ends when this
        // process ends or a `stop` file appears, and removes the directory then.
        let script = format!(
            "run() {{ '{bin}' broker --listener-url tcp://{addr} --advertised-listener-url tcp://{advertised} \
             --storage-engine {storage} >>tansu.log 2>&1 & child=$!; echo $child >tansu.pid.new; \
             mv tansu.pid.new tansu.pid; }}; \
             run; \
             while kill -0 {parent} 2>/dev/null && [ ! -e stop ]; do \
               if [ -e start ]; then kill -9 $child 2>/dev/null; wait $child 2>/dev/null; \
                 echo '{RESTARTED}' >>tansu.log; run; rm -f start; fi; \
               sleep 0.1; \
             done; \
             kill $child 2>/dev/null; wait $child 2>/dev/null; cd /; rm -rf '{dir}'",
            bin = bin.display(),
            storage = engine.url(),
            parent = std::process::id(),
            dir = dir.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Broker(format!("spawn sh: {e}")))?;
        let broker = LocalBroker { addr, dir };
        broker.wait_listening(START_TIMEOUT)?;
        Ok(broker)
    }

    fn wait_listening(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Broker(format!(
            "not listening on {} after {timeout:?}; log: {}",
            self.addr,
            self.log()
        )))
    }

    /// The pid of the running Tansu.
    pub fn pid(&self) -> Result<u32> {
        let path = self.dir.join("tansu.pid");
        std::fs::read_to_string(&path)
            .map_err(|e| Error::Broker(format!("{}: {e}", path.display())))?
            .trim()
            .parse()
            .map_err(|e| Error::Broker(format!("{}: {e}", path.display())))
    }

    /// Kills Tansu with SIGKILL and waits until its port is closed (up to
    /// [`STOP_TIMEOUT`]). Its data directory stays, for [`LocalBroker::restart`].
    pub fn kill9(&self) -> Result<()> {
        let pid = self.pid()?;
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .map_err(|e| Error::Broker(format!("kill -9 {pid}: {e}")))?;
        if !status.success() {
            return Err(Error::Broker(format!("kill -9 {pid}: {status}")));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while TcpStream::connect(&self.addr).is_ok() {
            if Instant::now() >= deadline {
                return Err(Error::Broker(format!(
                    "{} still listening {STOP_TIMEOUT:?} after kill -9",
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts Tansu again on the same directory and port (killing the running one first,
    /// if any) and waits until it listens (up to [`START_TIMEOUT`]).
    pub fn restart(&self) -> Result<()> {
        let old = self.pid()?;
        std::fs::write(self.dir.join("start"), b"")
            .map_err(|e| Error::Broker(format!("start file: {e}")))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while self.dir.join("start").exists() || self.pid().ok() == Some(old) {
            if Instant::now() >= deadline {
                return Err(Error::Broker(format!(
                    "the watchdog did not start Tansu again within {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_listening(deadline.saturating_duration_since(Instant::now()))
    }

    /// The end of Tansu's log (every run of it).
    pub fn log(&self) -> String {
        log_tail(&self.dir.join("tansu.log"))
    }

    /// How many panics the running Tansu's log reports (since its last restart). Tansu
    /// 0.6.0's storage can panic under load ("more or less than one row" on a produce) and
    /// then answers nothing but errors while its process lives on: a [`Supervisor`]
    /// restarts it.
    pub fn panics_since_restart(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        let run = text
            .rsplit_once(RESTARTED)
            .map_or(text.as_str(), |(_, run)| run);
        run.lines().filter(|l| l.contains("panicked at")).count()
    }

    /// The first `n` lines of the broker's log that report an error or a panic: where a
    /// failure began, which the tail no longer shows once the broker repeats it.
    pub fn first_errors(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("ERROR") || l.contains("panicked"))
            .take(n)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A thread that restarts this broker on its data whenever the running broker's log
    /// reports a panic (Tansu 0.6.0's storage: see [`LocalBroker::panics_since_restart`]),
    /// as a liveness probe would, checking every `every`; `on_restart` hears the number of
    /// each restart, or the error of one that failed. It stops when the [`Supervisor`] is
    /// dropped.
    pub fn supervise(
        &self,
        every: Duration,
        on_restart: impl Fn(std::result::Result<usize, String>) + Send + 'static,
    ) -> Supervisor {
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicUsize::new(0));
        let lock = Arc::new(Mutex::new(()));
        let broker = LocalBroker {
            addr: self.addr.clone(),
            dir: self.dir.clone(),
        };
        let thread = {
            let (stop, restarts, lock) = (stop.clone(), restarts.clone(), lock.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(every);
                    let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
                    // only the running broker's panics: one restarted meanwhile (by this
                    // thread or by whoever held it off) is not restarted again for the last
                    if stop.load(Ordering::Acquire) || broker.panics_since_restart() == 0 {
                        continue;
                    }
                    let result = broker.kill9().and_then(|()| broker.restart());
                    on_restart(match result {
                        Ok(()) => Ok(restarts.fetch_add(1, Ordering::AcqRel) + 1),
                        Err(e) => Err(e.to_string()),
                    });
                }
            })
        };
        Supervisor {
            stop,
            restarts,
            lock,
            thread: Some(thread),
        }
    }

    /// Stops the broker now (rather than when this process ends) and waits until its port
    /// is closed and its directory removed, up to 10 s.
    pub fn stop(&self) -> Result<()> {
        std::fs::write(self.dir.join("stop"), b"")
            .map_err(|e| Error::Broker(format!("stop file: {e}")))?;
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_err() && !self.dir.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Broker(format!(
            "the broker at {} did not stop within {} s",
            self.addr,
            STOP_TIMEOUT.as_secs()
        )))
    }
}

/// See [`LocalBroker::supervise`].
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    restarts: Arc<AtomicUsize>,
    lock: Arc<Mutex<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// How many times it restarted the broker.
    pub fn restarts(&self) -> usize {
        self.restarts.load(Ordering::Acquire)
    }

    /// Holds the supervisor off while the caller kills or restarts the broker itself.
    pub fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The last 2000 characters of a log file (empty when unreadable).
pub fn log_tail(path: &Path) -> String {
    let mut text = String::new();
    let _ = std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    text.chars()
        .rev()
        .take(2000)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_named_with_the_way_to_get_it() {
        let Err(e) = LocalBroker::start(Path::new("/nonexistent/tansu"), Engine::Memory) else {
            panic!("started without a binary");
        };
        let text = e.to_string();
        assert!(text.contains("/nonexistent/tansu not found"), "{text}");
        assert!(text.contains("make broker"), "{text}");
    }
}
