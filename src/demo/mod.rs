//! `hotframe demo`: the whole loop on one machine in one command. Starts the server in
//! this process (a fresh temporary store unless `--data` is given), starts the bundled
//! workload (`hotframe demo-workload`, a child process whose hot function is
//! `parse_json`), attaches the agent to it, prints the URL to open, and runs until
//! Ctrl-C or `--duration`.
//!
//! In: a `DemoConfig` (`cli` builds it from the flags). Out: a running server with
//! profiles in it; the URL on stdout. Must not: leave the workload running or a
//! temporary store behind.

pub mod workload;

use crate::agent::targets::TargetSpec;
use crate::agent::{AgentConfig, AgentError};
use crate::sampler::{Sampler, SamplerOptions};
use crate::server::ServeConfig;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// The service name the demo's profiles are stored under.
pub const DEMO_SERVICE: &str = "demo";

/// What `hotframe demo` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// Address of the demo server; port 0 picks a free port. Default `127.0.0.1:4040`.
    pub listen: String,
    /// Store directory; None uses a fresh temporary directory, removed at the end. Default none.
    pub data: Option<PathBuf>,
    /// Stop after this long; None runs until Ctrl-C. Default none.
    pub duration: Option<Duration>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { listen: "127.0.0.1:4040".to_string(), data: None, duration: None }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The in-process server did not come up.
    #[error("the demo server did not start: {0}")]
    Server(String),
    /// The workload child could not be started.
    #[error("could not start the demo workload: {0}")]
    Workload(std::io::Error),
    /// The store directory cannot be created.
    #[error("could not create the demo store directory {dir}: {cause}")]
    DataDir { dir: PathBuf, cause: std::io::Error },
    /// The agent failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

/// Removes the temporary store when the demo ends.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Kills the workload when the demo ends, however it ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `hotframe demo`.
pub fn run(config: DemoConfig) -> Result<(), DemoError> {
    // Before the server starts, so that one Ctrl-C stops the server and the agent alike.
    crate::signals::install();
    // Privileges first, with the agent's own message: without them the demo would start a
    // server and a workload, print its banner and only then fail in the agent.
    drop(Sampler::new(SamplerOptions::default()).map_err(AgentError::from)?);
    let (data, _temp) = match &config.data {
        Some(dir) => (dir.clone(), TempDir(None)),
        None => {
            let dir = std::env::temp_dir().join(format!("hotframe-demo-{}", std::process::id()));
            (dir.clone(), TempDir(Some(dir)))
        }
    };
    std::fs::create_dir_all(&data).map_err(|cause| DemoError::DataDir { dir: data.clone(), cause })?;
    let listen = concrete_listen_addr(&config.listen);
    let serve = ServeConfig { listen: listen.clone(), data: data.join("store"), ..ServeConfig::default() };
    let mut server = std::thread::Builder::new()
        .name("hotframe-demo-server".into())
        .spawn(move || crate::server::run_serve(serve).map_err(|e| e.to_string()))
        .map_err(|e| DemoError::Server(e.to_string()))?;
    let base = format!("http://{listen}");
    wait_until_healthy(&base, &mut server)?;

    let exe = std::env::current_exe().map_err(DemoError::Workload)?;
    let mut command = std::process::Command::new(exe);
    command.args(["demo-workload", "--mode", "service", "--threads", "1"]).stdin(std::process::Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls prctl,
    // which is async-signal safe. If the demo is killed (even SIGKILL) the workload
    // gets SIGKILL too instead of spinning on as an orphan.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let child = command.spawn().map_err(DemoError::Workload)?;
    let workload = ChildGuard(child);

    let mut agent = AgentConfig::new(&base, DEMO_SERVICE, TargetSpec::Pids(vec![workload.0.id()]));
    agent.labels.insert("env".to_string(), "demo".to_string());
    agent.upload.spool_dir = Some(data.join("spool"));
    agent.upload.spool_max_bytes = 16 << 20;
    agent.upload_interval = Duration::from_secs(5);
    agent.flush_timeout = Duration::from_secs(5);
    agent.duration = config.duration;
    println!();
    println!("hotframe demo is running:");
    println!("  server    {base}  (store in {})", data.display());
    println!("  workload  pid {}  (hot function: parse_json)", workload.0.id());
    println!("  agent     99 Hz, uploads every ~5 s as service {DEMO_SERVICE:?}");
    println!();
    println!("Open {base}/service/{DEMO_SERVICE} (the first profile arrives within ~5 s).");
    println!("Press Ctrl-C to stop.");
    crate::agent::run_config(agent, &AtomicBool::new(false))?;
    drop(workload);
    println!("demo stopped");
    Ok(())
}

/// `--listen` with port 0 resolved to a free port now, so that the URL printed and the
/// agent's server address are the real ones.
fn concrete_listen_addr(listen: &str) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(addr) if addr.port() == 0 => std::net::TcpListener::bind(addr)
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
            .unwrap_or_else(|_| listen.to_string()),
        _ => listen.to_string(),
    }
}

/// Polls `/healthz` until the server answers, or reports why its thread ended.
fn wait_until_healthy(base: &str, server: &mut std::thread::JoinHandle<Result<(), String>>) -> Result<(), DemoError> {
    let client: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(1)))
        .http_status_as_error(false)
        .build()
        .into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if server.is_finished() {
            // The thread is done: swap in a finished dummy to take the real one's result.
            let done = std::mem::replace(server, std::thread::spawn(|| Ok(())));
            let why = match done.join() {
                Ok(Err(message)) => message,
                _ => "it stopped at start-up".to_string(),
            };
            return Err(DemoError::Server(why));
        }
        if client.get(format!("{base}/healthz")).call().is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(DemoError::Server(format!("{base}/healthz did not answer within 20 s")))
}
