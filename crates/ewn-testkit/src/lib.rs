//! Test harness: one real Tansu broker per test binary, started on a free loopback port
//! with the durable sqlite engine, and a unique topic prefix per test.
//!
//! Tests never skip silently: when the broker cannot start, they fail and say why.
//! The broker dies with the test process (a watchdog shell polls the parent pid), and its
//! directory is removed then.
//!
//! The broker process itself is `ewn_demo::broker` (the demo starts its local broker the
//! same way); this kit finds the binary for the tests (`TANSU_BIN`, `PATH`, `~/.cargo/bin`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ewn_kafka::KafkaSettings;

pub use ewn_demo::broker::{Engine, LocalBroker as Broker};
pub use ewn_demo::relay::LinkRelay;

/// The Tansu binary: `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return PathBuf::from(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file());
    on_path.unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
            .join(".cargo/bin/tansu")
    })
}

/// The Python interpreter of the test environment, which has the packages pinned in
/// `tests/requirements.txt`: `$EWN_PYTHON` (`make test` sets it to the project's `.venv`),
/// else the project's `.venv/bin/python` when `make test-deps` has built it. An error names
/// what is missing and how to get it; tests fail with it, they never skip.
pub fn python() -> Result<PathBuf, String> {
    const HOW: &str = "run `make test-deps` (make test does), which builds .venv from \
                       tests/requirements.txt, or set EWN_PYTHON to an interpreter that has them";
    if let Some(p) = std::env::var_os("EWN_PYTHON").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("EWN_PYTHON={} does not exist: {HOW}", p.display()))
        };
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.is_file() {
        Ok(venv)
    } else {
        Err(format!(
            "EWN_PYTHON is not set and {} does not exist: {HOW}",
            venv.display()
        ))
    }
}

/// A loopback port nobody listens on at the moment of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot find a free loopback port: {e}"))
}

/// The broker shared by every test of this binary.
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let mut last = String::new();
        for _ in 0..3 {
            match start_broker(Engine::Sqlite) {
                Ok(b) => return b,
                Err(e) => last = e,
            }
        }
        panic!("Tansu broker did not start: {last}")
    })
}

/// Starts a broker of its own (not the shared one) with `engine`; it stops when this
/// process ends.
pub fn start_broker(engine: Engine) -> Result<Broker, String> {
    Broker::start(&tansu_bin(), engine).map_err(|e| e.to_string())
}

/// Starts a broker of its own behind a [`LinkRelay`] (see
/// [`ewn_demo::broker::LocalBroker::start_behind_relay`]).
pub fn start_broker_behind_relay(engine: Engine) -> Result<(Broker, LinkRelay), String> {
    Broker::start_behind_relay(&tansu_bin(), engine).map_err(|e| e.to_string())
}

/// A broker that a test can kill (`kill -9`) and start again on the same data directory
/// and port, to see what clients make of a broker crash. The watchdog shell keeps the
/// directory while Tansu is down; it stops Tansu and removes the directory when this
/// process ends (or on [`RestartableBroker::stop`]).
pub struct RestartableBroker {
    /// `127.0.0.1:PORT`, the same across restarts.
    pub addr: String,
    pub dir: PathBuf,
}

impl RestartableBroker {
    /// Starts a broker of its own with `engine` (use [`Engine::Sqlite`] to keep data across
    /// restarts) on a free port.
    pub fn start(engine: Engine) -> Result<RestartableBroker, String> {
        let bin = tansu_bin();
        if !bin.is_file() {
            return Err(format!(
                "{} not found: run `make broker` (installs Tansu 0.6.0) or set TANSU_BIN",
                bin.display()
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("ewn-tansu-restart-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?
            .keep();
        let addr = format!("127.0.0.1:{}", free_port());
        // The watchdog: runs Tansu (pid in `tansu.pid`); a `start` file asks for a new
        // Tansu (after a kill -9 from the test, the old one is reaped first); it ends when
        // this process ends or a `stop` file appears, and removes the directory then.
        let script = format!(
            "run() {{ '{bin}' broker --listener-url tcp://{addr} --advertised-listener-url tcp://{addr} \
             --storage-engine {storage} >>tansu.log 2>&1 & child=$!; echo $child >tansu.pid.new; \
             mv tansu.pid.new tansu.pid; }}; \
             run; \
             while kill -0 {parent} 2>/dev/null && [ ! -e stop ]; do \
               if [ -e start ]; then kill -9 $child 2>/dev/null; wait $child 2>/dev/null; \
                 echo '--- restarted ---' >>tansu.log; run; rm -f start; fi; \
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
            .map_err(|e| format!("spawn sh: {e}"))?;
        let broker = RestartableBroker { addr, dir };
        broker.wait_listening(Duration::from_secs(30))?;
        Ok(broker)
    }

    /// The pid of the running Tansu.
    pub fn pid(&self) -> Result<u32, String> {
        let path = self.dir.join("tansu.pid");
        std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .trim()
            .parse()
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Kills Tansu with SIGKILL and waits until its port is closed (up to 10 s). Its data
    /// directory stays.
    pub fn kill9(&self) -> Result<(), String> {
        let pid = self.pid()?;
        let status = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .map_err(|e| format!("kill -9 {pid}: {e}"))?;
        if !status.success() {
            return Err(format!("kill -9 {pid}: {status}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&self.addr).is_ok() {
            if Instant::now() >= deadline {
                return Err(format!("{} still listening 10 s after kill -9", self.addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts Tansu again on the same directory and port (killing the running one first,
    /// if any) and waits until it listens, up to 30 s.
    pub fn restart(&self) -> Result<(), String> {
        let old = self.pid()?;
        std::fs::write(self.dir.join("start"), b"").map_err(|e| format!("start file: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.dir.join("start").exists() || self.pid().ok() == Some(old) {
            if Instant::now() >= deadline {
                return Err("the watchdog did not start Tansu again within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.wait_listening(deadline.saturating_duration_since(Instant::now()))
    }

    fn wait_listening(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "not listening on {} after {timeout:?}; log: {}",
            self.addr,
            self.log()
        ))
    }

    /// The end of Tansu's log (every run of it).
    pub fn log(&self) -> String {
        log_tail(&self.dir.join("tansu.log"))
    }

    /// Stops the broker and its watchdog now, removing the directory (waits up to 10 s).
    pub fn stop(&self) -> Result<(), String> {
        std::fs::write(self.dir.join("stop"), b"").map_err(|e| format!("stop file: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_err() && !self.dir.exists() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the broker at {} did not stop within 10 s",
            self.addr
        ))
    }
}

fn log_tail(path: &Path) -> String {
    ewn_demo::broker::log_tail(path)
}

/// A topic prefix no other test of any run shares: `t<pid>-<n>-<name>.ewn.`.
pub fn unique_prefix(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(24)
        .collect();
    format!(
        "t{}-{}-{}.ewn.",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        clean
    )
}

/// Kafka settings for the shared broker under `prefix`.
pub fn kafka_settings(prefix: &str) -> KafkaSettings {
    KafkaSettings {
        brokers: broker().addr.clone(),
        topic_prefix: prefix.to_string(),
        partitions: 3,
        statistics_interval_ms: 0,
        ..KafkaSettings::default()
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `text` to `path` (creating parent directories).
pub fn write_file(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    }
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
