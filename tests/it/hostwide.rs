//! `hotframe agent --all` end to end (root): services started in cgroups that look like
//! systemd units and a container, named from their cgroups, each one's CPU against the
//! kernel's per-cgroup accounting (cpuacct.usage); and the packaged systemd unit checked
//! by `systemd-analyze verify`.

use crate::agent::{assert_cpu_matches_kernel, metric};
use crate::common::{
    build_workload, eventually, free_addr, get_json, require, require_root, tempdir, ChildGuard, Server, BIN,
};
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The cgroup v1 hierarchies the test uses: CPU accounting, and systemd's own.
const CPUACCT: &str = "/sys/fs/cgroup/cpuacct";
const SYSTEMD: &str = "/sys/fs/cgroup/systemd";

/// Cgroups this test made (in every hierarchy given), emptied and removed when dropped.
struct CgroupGuard {
    dirs: Vec<PathBuf>,
}

impl CgroupGuard {
    /// Creates `relative` (e.g. `system.slice/x.service`) under each hierarchy root.
    fn create(roots: &[&Path], relative: &str) -> CgroupGuard {
        let dirs: Vec<PathBuf> = roots.iter().map(|r| r.join(relative)).collect();
        for dir in &dirs {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        CgroupGuard { dirs }
    }

    /// The `cgroup.procs` files a process writes itself into.
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// CPU seconds the kernel accounted to the cgroup (cpuacct.usage), if it has one.
    fn cpu_seconds(&self) -> f64 {
        let dir = self.dirs.iter().find(|d| d.starts_with(CPUACCT)).expect("a cpuacct cgroup");
        let text = std::fs::read_to_string(dir.join("cpuacct.usage")).expect("cpuacct.usage");
        text.trim().parse::<f64>().expect("cpuacct.usage is a number") / 1e9
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // Processes still inside go back to the hierarchy's root; then the leaf and the
            // parents this test made (empty ones only: rmdir refuses the others).
            let root = dir.ancestors().find(|a| a.parent() == Some(Path::new("/sys/fs/cgroup"))).map(Path::to_path_buf);
            if let (Ok(pids), Some(root)) = (std::fs::read_to_string(dir.join("cgroup.procs")), root) {
                for pid in pids.lines() {
                    let _ = std::fs::write(root.join("cgroup.procs"), pid);
                }
            }
            for d in dir.ancestors().take_while(|a| a.components().count() > 5) {
                if std::fs::remove_dir(d).is_err() {
                    break;
                }
            }
        }
    }
}

/// Starts `command` with the child in `cgroups` (it writes its own pid into each
/// `cgroup.procs` between fork and exec, as systemd and runc do).
fn spawn_in(command: &mut Command, cgroups: &CgroupGuard) -> ChildGuard {
    let files: Vec<CString> =
        cgroups.procs_files().iter().map(|p| CString::new(p.to_str().unwrap()).unwrap()).collect();
    // SAFETY: between fork and exec the closure only calls getpid/open/write/close on
    // memory prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut pid = libc::getpid() as u64;
            loop {
                at -= 1;
                digits[at] = b'0' + (pid % 10) as u8;
                pid /= 10;
                if pid == 0 {
                    break;
                }
            }
            for file in &files {
                let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let written = libc::write(fd, digits[at..].as_ptr().cast(), digits.len() - at);
                libc::close(fd);
                if written < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    ChildGuard::spawn(command.stdout(Stdio::null()))
}

/// Whether /sys/fs/cgroup/systemd is a `name=systemd` cgroup v1 hierarchy.
fn systemd_hierarchy_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(SYSTEMD) && l.contains("name=systemd"))
}

#[test]
fn all_names_services_from_cgroups_and_their_cpu_matches_cpuacct() {
    if !require_root("perf_event_open and cgroups") {
        return;
    }
    let v1 = Path::new(CPUACCT).join("cpuacct.usage").exists();
    if !require("cgroup v1 cpuacct", v1, "mount -t cgroup -o cpuacct cgroup /sys/fs/cgroup/cpuacct") {
        return;
    }
    let mut roots = vec![Path::new(CPUACCT)];
    if systemd_hierarchy_mounted() {
        roots.push(Path::new(SYSTEMD));
    }
    let data = tempdir();
    let duty = build_workload("cc", "duty.c", &["-O1", "-g"], data.path(), "duty");
    let tag = std::process::id();
    let (web, api) = (format!("hf-web-{tag}"), format!("hf-api-{tag}"));
    let id = format!("{:0>64x}", 0xfeed_0000_0000u64 + u64::from(tag));
    let web_cg = CgroupGuard::create(&roots, &format!("system.slice/{web}.service"));
    let api_cg = CgroupGuard::create(&roots, &format!("system.slice/{api}.service"));
    let box_cg = CgroupGuard::create(&roots, &format!("docker/{id}"));
    let server = Server::start(&data.path().join("store"), &[]);
    let url = server.url.clone();

    // One service exists before the agent (a shell that waits for `go`, then becomes the
    // workload: the kernel's count starts at `go`, when the agent surely follows it);
    // the other two start after the agent.
    let seconds = "8";
    let go = data.path().join("go");
    let script =
        format!("while [ ! -e {} ]; do sleep 0.1; done; exec {} 0.3 {seconds} web", go.display(), duty.display());
    let mut web_proc = spawn_in(Command::new("sh").args(["-c", &script]), &web_cg);
    let metrics = free_addr().to_string();
    let log = std::fs::File::create(data.path().join("agent.log")).unwrap();
    let mut agent = ChildGuard::spawn(
        Command::new(BIN)
            .args(["agent", "--all", "--server", &url, "--upload-interval", "1s", "--metrics-listen", &metrics])
            // Other engineers' compilers on a shared machine are not what this test is about.
            .args(["--exclude", "^(rustc|cargo|cc1|cc1plus|ld|collect2|as|clippy-driver|rustdoc)$"])
            .arg("--spool-dir")
            .arg(data.path().join("spool"))
            .env("HOTFRAME_LOG", "info,hotframe::sampler=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log),
    );
    eventually("the agent to follow the host's processes", Duration::from_secs(30), || {
        metric(&metrics, "hotframe_agent_targets").is_some_and(|t| t >= 1.0)
    });
    // What the kernel counted for the service that ran before the agent, from `go` on.
    let web_before = web_cg.cpu_seconds();
    std::fs::write(&go, b"").unwrap();
    let mut api_proc = spawn_in(Command::new(&duty).args(["0.3", seconds, "api"]), &api_cg);
    let mut box_proc = spawn_in(Command::new(&duty).args(["0.3", seconds, "box"]), &box_cg);
    for work in [&mut web_proc, &mut api_proc, &mut box_proc] {
        assert!(work.wait_exit(Duration::from_secs(60)).success());
    }
    let kernel = [
        (web.as_str(), web_cg.cpu_seconds() - web_before),
        (api.as_str(), api_cg.cpu_seconds()),
        ("duty", box_cg.cpu_seconds()),
    ];
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(60));
    let stderr = std::fs::read_to_string(data.path().join("agent.log")).unwrap_or_default();
    let tail: String = stderr.lines().rev().take(30).collect::<Vec<_>>().join("\n");
    assert!(status.success(), "{status}\n{tail}");

    let services = get_json(&format!("{url}/api/v1/services"));
    let listed = services["services"].as_array().cloned().unwrap_or_default();
    let labels_of =
        |name: &str| listed.iter().find(|s| s["name"] == name).map(|s| s["labels"].clone()).unwrap_or_default();
    let has = |labels: &serde_json::Value, key: &str, value: &str| {
        labels[key].as_array().is_some_and(|vs| vs.iter().any(|v| v == value))
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    for (service, unit) in [(&web, format!("{web}.service")), (&api, format!("{api}.service"))] {
        let labels = labels_of(service);
        eprintln!("{service}: {labels}");
        assert!(has(&labels, "unit", &unit), "{service}: {labels}\n{tail}");
        assert!(has(&labels, "host", &host) && has(&labels, "exe", duty.to_str().unwrap()), "{service}: {labels}");
    }
    let labels = labels_of("duty");
    assert!(has(&labels, "container_id", &id), "the container's service: {labels}\n{tail}");
    for (service, kernel_s) in kernel {
        // Other tests may run `duty` outside any cgroup: the container's is the one with its id.
        let filter = if service == "duty" { format!("&label.container_id={id}") } else { String::new() };
        let flame = get_json(&format!("{url}/api/v1/flamegraph?service={service}&from=now-10m&states=cpu{filter}"));
        eprintln!("{service}: cpuacct {kernel_s:.3} CPU s");
        assert_cpu_matches_kernel(&flame, kernel_s, &Default::default(), &format!("{service} (cpuacct)\n{tail}"));
    }
}

#[test]
fn the_packaged_systemd_unit_verifies() {
    let analyze = Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !require("systemd-analyze", analyze, "apt-get install -y systemd") {
        return;
    }
    let dir = tempdir();
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/hotframe-agent.service"))
        .expect("packaging/hotframe-agent.service");
    assert!(unit.contains("ExecStart=/usr/bin/hotframe agent --all"), "{unit}");
    // verify checks that ExecStart's binary exists: point it at this build's.
    let verify = |text: &str| {
        let path = dir.path().join("hotframe-agent.service");
        std::fs::write(&path, text.replace("/usr/bin/hotframe", BIN)).unwrap();
        let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, complaints) = verify(&unit);
    assert!(ok && complaints.trim().is_empty(), "systemd-analyze verify: {complaints}");
    // It does complain about a unit with a mistake (this check can fail).
    let (_, complaints) = verify(&unit.replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"));
    assert!(complaints.contains("Restartt"), "a misspelt key went unnoticed: {complaints}");
    for needed in ["Restart=on-failure", "StateDirectory=hotframe-agent", "DynamicUser=yes", "CAP_PERFMON"] {
        assert!(unit.contains(needed), "{needed} missing from the unit");
    }
    assert!(!unit.contains("CAP_SYS_ADMIN"), "not full root");
}
