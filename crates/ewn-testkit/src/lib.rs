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
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ewn_kafka::KafkaSettings;

pub use ewn_demo::broker::{Engine, LocalBroker as Broker};
pub use ewn_demo::relay::LinkRelay;

/// The Tansu binary: `$TANSU_BIN`, else `tansu` on `PATH`, else `~/.cargo/bin/tansu`.
pub fn tansu_bin() -> PathBuf {
    ewn_demo::broker::tansu_bin(
        std::env::var_os("TANSU_BIN").map(PathBuf::from),
        std::env::var_os("PATH").as_deref(),
        std::env::var_os("HOME").map(PathBuf::from).as_deref(),
    )
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
/// process ends. A test may kill it (`kill9`) and start it again on the same data and port
/// (`restart`): use [`Engine::Sqlite`] to keep data across restarts.
pub fn start_broker(engine: Engine) -> Result<Broker, String> {
    Broker::start(&tansu_bin(), engine).map_err(|e| e.to_string())
}

/// Starts a broker of its own behind a [`LinkRelay`] (see
/// [`ewn_demo::broker::LocalBroker::start_behind_relay`]).
pub fn start_broker_behind_relay(engine: Engine) -> Result<(Broker, LinkRelay), String> {
    Broker::start_behind_relay(&tansu_bin(), engine).map_err(|e| e.to_string())
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
