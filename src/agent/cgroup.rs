//! What a process's cgroup says about it: the systemd unit it runs in, or the container
//! (and Kubernetes pod) it belongs to. Pure parsing of `/proc/PID/cgroup` text, plus the
//! two host directories that name Kubernetes containers (`/var/log/containers`,
//! `/var/lib/kubelet/pods`).
//!
//! In: the text of /proc/PID/cgroup (cgroup v1 with a `name=systemd` hierarchy, v1 with
//! controllers only, or v2's single `0::` line) and, for a container, the host's kubelet
//! directories. Out: a `CgroupOrigin`. Must not: write anything, or fail (what cannot be
//! read names nothing).

use std::path::PathBuf;

/// Where a process runs, as its cgroup path shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupOrigin {
    /// The systemd unit (`nginx.service`), when the path's deepest named part is one.
    pub unit: Option<String>,
    /// The 64-hex container id, when the path's deepest named part holds one.
    pub container_id: Option<String>,
    /// The Kubernetes pod UID (`kubepods...pod<UID>`), with dashes.
    pub pod_uid: Option<String>,
}

impl CgroupOrigin {
    /// The unit's service name: `nginx.service` -> `nginx`, `postgresql@15-main.service`
    /// -> `postgresql@15-main`.
    pub fn unit_service(&self) -> Option<&str> {
        self.unit.as_deref().map(|u| u.strip_suffix(".service").unwrap_or(u))
    }
}

/// The origin from the text of /proc/PID/cgroup. Paths are tried in this order: the
/// `name=systemd` hierarchy (cgroup v1 under systemd), the unified `0::` line (cgroup v2,
/// or v1's hybrid mode), then every controller's path (v1 without systemd), and the
/// first that names something wins. Within a path the deepest part that names a unit or
/// a container wins (a container started under `containerd.service` is the container).
pub fn parse(text: &str) -> CgroupOrigin {
    let mut lines: Vec<(u8, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (id, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let rank = match (id, controllers) {
                (_, "name=systemd") => 0,
                ("0", "") => 1,
                _ => 2,
            };
            Some((rank, path))
        })
        .collect();
    lines.sort_by_key(|(rank, _)| *rank);
    for (_, path) in lines {
        let origin = parse_path(path);
        if origin.unit.is_some() || origin.container_id.is_some() {
            return origin;
        }
    }
    CgroupOrigin::default()
}

/// The origin one cgroup path shows.
pub fn parse_path(path: &str) -> CgroupOrigin {
    let mut origin = CgroupOrigin::default();
    for part in path.split('/').rev() {
        if origin.pod_uid.is_none() {
            origin.pod_uid = pod_uid(part);
        }
        if origin.unit.is_some() || origin.container_id.is_some() {
            continue;
        }
        if let Some(id) = container_id(part) {
            origin.container_id = Some(id.to_string());
        } else if part.ends_with(".service") && part.len() > ".service".len() {
            origin.unit = Some(part.to_string());
        }
    }
    origin
}

/// A run of exactly 64 hex digits in `part` (`<id>`, `docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>`, `libpod-<id>.scope`).
fn container_id(part: &str) -> Option<&str> {
    let bytes = part.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let len = bytes[start..].iter().take_while(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()).count();
        if len == 64 {
            return Some(&part[start..start + 64]);
        }
        start += len.max(1);
    }
    None
}

/// The pod UID in `pod<uid>` (cgroupfs driver, dashes) or `kubepods-...-pod<uid>.slice`
/// (systemd driver, underscores), with dashes.
fn pod_uid(part: &str) -> Option<String> {
    let at = part.rfind("pod")?;
    let rest = part[at + 3..].trim_end_matches(".slice");
    let uid = rest.replace('_', "-");
    let shape = uid.len() == 36
        && uid.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    shape.then_some(uid)
}

/// A Kubernetes container's names, from the kubelet's host directories.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodNames {
    /// The pod's namespace.
    pub namespace: Option<String>,
    /// The pod's name.
    pub pod: Option<String>,
    /// The container's name in the pod spec.
    pub container: Option<String>,
}

/// Where the kubelet keeps what names containers; the defaults are the kubelet's.
#[derive(Debug, Clone)]
pub struct KubeletDirs {
    /// `/var/log/containers`: `<pod>_<namespace>_<container>-<container id>.log` links.
    pub log_containers: PathBuf,
    /// `/var/lib/kubelet/pods`: `<pod uid>/volumes/kubernetes.io~projected/*/namespace`.
    pub pods: PathBuf,
}

impl Default for KubeletDirs {
    fn default() -> KubeletDirs {
        KubeletDirs { log_containers: "/var/log/containers".into(), pods: "/var/lib/kubelet/pods".into() }
    }
}

impl KubeletDirs {
    /// What the kubelet's directories say of `container_id` in pod `pod_uid`: names from
    /// the container's log link, else the namespace from the pod's service-account
    /// volume. Nothing when neither exists (not Kubernetes, or the kubelet is elsewhere).
    pub fn names(&self, container_id: Option<&str>, pod_uid: Option<&str>) -> PodNames {
        let mut names = PodNames::default();
        if let Some(id) = container_id {
            let suffix = format!("-{id}.log");
            if let Ok(entries) = std::fs::read_dir(&self.log_containers) {
                for entry in entries.flatten() {
                    let file = entry.file_name();
                    let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(&suffix)) else { continue };
                    let mut parts = stem.splitn(3, '_');
                    names.pod = parts.next().map(str::to_string);
                    names.namespace = parts.next().map(str::to_string);
                    names.container = parts.next().map(str::to_string);
                    return names;
                }
            }
        }
        if let Some(uid) = pod_uid {
            let projected = self.pods.join(uid).join("volumes").join("kubernetes.io~projected");
            if let Ok(volumes) = std::fs::read_dir(projected) {
                for volume in volumes.flatten() {
                    if let Ok(ns) = std::fs::read_to_string(volume.path().join("namespace")) {
                        names.namespace = Some(ns.trim().to_string());
                        break;
                    }
                }
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8c2a9b1d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

    #[test]
    fn systemd_units_from_v1_and_v2() {
        let v1 = "12:cpu,cpuacct:/system.slice/nginx.service\n1:name=systemd:/system.slice/nginx.service\n";
        assert_eq!(parse(v1).unit.as_deref(), Some("nginx.service"));
        assert_eq!(parse(v1).unit_service(), Some("nginx"));
        let v2 = "0::/system.slice/postgresql@15-main.service\n";
        assert_eq!(parse(v2).unit_service(), Some("postgresql@15-main"));
        // Delegated sub-groups below the unit still name the unit.
        assert_eq!(parse("0::/system.slice/app.service/workers/3\n").unit_service(), Some("app"));
        // name=systemd wins over a controller's path; v1 without systemd uses the controllers.
        let both = "4:cpu,cpuacct:/system.slice/other.service\n1:name=systemd:/system.slice/redis.service\n";
        assert_eq!(parse(both).unit_service(), Some("redis"));
        assert_eq!(parse("4:cpu,cpuacct:/system.slice/redis.service\n3:memory:/\n").unit_service(), Some("redis"));
        // Sessions, slices and the root name nothing.
        assert_eq!(parse("0::/user.slice/user-1000.slice/session-2.scope\n"), CgroupOrigin::default());
        assert_eq!(parse("0::/\n"), CgroupOrigin::default());
        assert_eq!(parse("0::/system.slice/.service\n"), CgroupOrigin::default());
    }

    #[test]
    fn containers_and_pods() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/system.slice/containerd.service/kubepods-besteffort-pod1.slice:cri-containerd:{ID}"),
        ] {
            let origin = parse(&format!("0::{path}\n"));
            assert_eq!(origin.container_id.as_deref(), Some(ID), "{path}");
            assert_eq!(origin.unit, None, "{path}: the container is deeper than the unit");
        }
        let cgroupfs = format!("4:cpu,cpuacct:/kubepods/burstable/pod0a1b2c3d-0000-4000-8000-00000000abcd/{ID}\n");
        let origin = parse(&cgroupfs);
        assert_eq!(origin.pod_uid.as_deref(), Some("0a1b2c3d-0000-4000-8000-00000000abcd"));
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_00000000abcd.slice/cri-containerd-{ID}.scope\n"
        );
        let origin = parse(&systemd);
        assert_eq!(origin.container_id.as_deref(), Some(ID));
        assert_eq!(origin.pod_uid.as_deref(), Some("0a1b2c3d-0000-4000-8000-00000000abcd"));
        // 63 or 65 hex digits, or upper case, are not ids.
        assert_eq!(parse_path(&format!("/docker/{}", &ID[1..])).container_id, None);
        assert_eq!(parse_path(&format!("/docker/{ID}0")).container_id, None);
        assert_eq!(parse_path(&format!("/docker/{}", ID.to_uppercase())).container_id, None);
    }

    #[test]
    fn kubelet_directories_name_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = KubeletDirs { log_containers: dir.path().join("logs"), pods: dir.path().join("pods") };
        let uid = "0a1b2c3d-0000-4000-8000-00000000abcd";
        assert_eq!(dirs.names(Some(ID), Some(uid)), PodNames::default(), "no kubelet: nothing");
        let volume = dirs.pods.join(uid).join("volumes/kubernetes.io~projected/kube-api-access-x7k2p");
        std::fs::create_dir_all(&volume).unwrap();
        std::fs::write(volume.join("namespace"), "shop\n").unwrap();
        let names = dirs.names(Some(ID), Some(uid));
        assert_eq!(names.namespace.as_deref(), Some("shop"));
        assert_eq!(names.container, None);
        std::fs::create_dir_all(&dirs.log_containers).unwrap();
        std::fs::write(dirs.log_containers.join(format!("checkout-7d9f_shop_server-{ID}.log")), "").unwrap();
        let names = dirs.names(Some(ID), Some(uid));
        assert_eq!(
            names,
            PodNames {
                namespace: Some("shop".into()),
                pod: Some("checkout-7d9f".into()),
                container: Some("server".into())
            }
        );
    }
}
