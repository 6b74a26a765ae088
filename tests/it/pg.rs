//! A throwaway PostgreSQL cluster for tests: `initdb` in a temporary directory,
//! `pg_ctl start` on a free loopback port with its unix socket in that directory, run
//! as the `postgres` user when the tests run as root (PostgreSQL refuses to run as
//! root). The binaries come from `HOTFRAME_PG_BIN` or the newest
//! `/usr/lib/postgresql/*/bin`. Missing PostgreSQL skips a test, or fails it under
//! `CI=true` (`.ci/run` installs it).
//!
//! A cluster is stopped (`-m immediate`) and removed when dropped; a watchdog shell
//! does the same if the test process dies first, so no postmaster outlives the tests.
//! `shared()` is one cluster for the whole test binary, in which each test takes a
//! fresh database (`fresh_database`).

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The directory of `initdb`, `pg_ctl` and `postgres`, if installed.
pub fn bin_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("HOTFRAME_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("pg_ctl").exists());
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// One running cluster.
pub struct PgCluster {
    bin: PathBuf,
    /// Owns data/, the socket and the log.
    dir: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    watchdog: Option<std::process::Child>,
}

/// Runs `program` of the PostgreSQL binaries as the postgres user (when root).
fn as_postgres(program: &Path) -> Command {
    if common::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut command: Command, what: &str) {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// Starts a new cluster, or None (after printing `skipped: ...`) when PostgreSQL is
    /// not installed outside CI.
    pub fn start() -> Option<PgCluster> {
        let bin = bin_dir();
        let usable = bin.is_some() && (!common::is_root() || Path::new("/usr/sbin/runuser").exists());
        if !common::require(
            "PostgreSQL (initdb, pg_ctl)",
            usable,
            "apt-get install postgresql (or set HOTFRAME_PG_BIN to its bin directory)",
        ) {
            return None;
        }
        let bin = bin.expect("checked");
        let dir = common::tempdir().keep();
        if common::is_root() {
            let mut chown = Command::new("chown");
            chown.arg("-R").arg("postgres:").arg(&dir);
            run(chown, "chown the cluster directory");
        }
        let mut initdb = as_postgres(&bin.join("initdb"));
        initdb.arg("-D").arg(dir.join("data")).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]);
        run(initdb, "initdb");
        let mut cluster = PgCluster { bin, dir, port: common::free_port(), watchdog: None };
        cluster.start_server();
        cluster.watchdog = Some(cluster.spawn_watchdog());
        Some(cluster)
    }

    /// `pg_ctl start` on this cluster's port, waiting until it accepts connections.
    pub fn start_server(&self) {
        let mut start = as_postgres(&self.bin.join("pg_ctl"));
        start.arg("-D").arg(self.dir.join("data")).arg("-l").arg(self.dir.join("log")).arg("-w").arg("-o").arg(
            format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200", self.port, self.dir.display()),
        );
        start.arg("start");
        run(start, "pg_ctl start");
    }

    /// `pg_ctl stop` with `mode` (`fast`: clients are disconnected, `immediate`: as a crash).
    pub fn stop_server(&self, mode: &str) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.join("data")).args(["-w", "-m", mode, "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// Stops the cluster and removes its directory if this process ends without a drop.
    fn spawn_watchdog(&self) -> std::process::Child {
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            ctl = self.bin.join("pg_ctl").display(),
            data = self.dir.join("data").display(),
            dir = self.dir.display()
        );
        let mut c = as_postgres(Path::new("sh"));
        c.arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        c.spawn().expect("start the cluster watchdog")
    }

    /// `postgres://postgres@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A client of database `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls).unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    /// Creates an empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.client("postgres").batch_execute(&format!("CREATE DATABASE {name}")).expect("create database");
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bin.join("pg_ctl"));
        stop.arg("-D").arg(self.dir.join("data")).args(["-m", "immediate", "stop"]);
        let _ = stop.stdout(Stdio::null()).stderr(Stdio::null()).status();
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One cluster for the whole test binary (stopped by its watchdog when the binary
/// exits), or None when PostgreSQL is missing outside CI.
pub fn shared() -> Option<&'static PgCluster> {
    static SHARED: OnceLock<Option<PgCluster>> = OnceLock::new();
    SHARED.get_or_init(PgCluster::start).as_ref()
}

/// Waits until the cluster accepts connections again (after a restart).
pub fn wait_ready(cluster: &PgCluster) {
    common::eventually("PostgreSQL to accept connections", Duration::from_secs(30), || {
        postgres::Client::connect(&cluster.url("postgres"), postgres::NoTls).is_ok()
    });
}
