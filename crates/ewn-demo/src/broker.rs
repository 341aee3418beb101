//! A local Tansu broker, started from the binary the caller names (the command resolves
//! it once from its flags and environment; this crate reads no environment). It runs
//! under a watchdog shell that stops it and removes its directory when this process ends,
//! however it ends, or when [`LocalBroker::stop`] asks.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::relay::LinkRelay;

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
        // The watchdog: start Tansu, then wait for this process to end (or a `stop` file)
        // and stop it.
        let script = format!(
            "'{bin}' broker --listener-url tcp://{addr} --advertised-listener-url tcp://{advertised} \
             --storage-engine {storage} >tansu.log 2>&1 & child=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $child 2>/dev/null && [ ! -e stop ]; do sleep 0.2; done; \
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
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect(&addr).is_ok() {
                return Ok(LocalBroker { addr, dir });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::Broker(format!(
            "not listening on {addr} after {} s; log: {}",
            START_TIMEOUT.as_secs(),
            log_tail(&dir.join("tansu.log"))
        )))
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
