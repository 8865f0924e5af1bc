//! The brokers' seccomp profile (`operator/seccomp/kafscale-broker.json`): the
//! container runtimes' default allowlist plus `io_uring_setup`, `io_uring_enter`
//! and `io_uring_register` (glommio's syscalls, which the defaults block), minus
//! what a broker never calls (mounts, namespaces, ptrace, keyrings, module and
//! clock changes). `kafscale-operator seccomp install` writes it where the
//! kubelet looks for `Localhost` profiles; the chart runs that on every node.

use std::io;
use std::path::{Path, PathBuf};

/// The profile, as installed.
pub const PROFILE: &str = include_str!("../seccomp/kafscale-broker.json");
/// Its file name under the install directory (`kafscale/` under the kubelet's
/// seccomp root: `context::DEFAULT_SECCOMP_PROFILE`).
pub const FILE_NAME: &str = "kafscale-broker.json";

/// Writes the profile into `dir` (created if missing), replacing an older one
/// atomically: a kubelet starting a broker meanwhile reads either file whole.
/// Returns the profile's path; an identical file is left untouched.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE_NAME);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == PROFILE) {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    std::fs::write(&tmp, PROFILE)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_allows_io_uring_and_denies_by_default() {
        let p: serde_json::Value = serde_json::from_str(PROFILE).expect("json");
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = p["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
            .flat_map(|r| r["names"].as_array().expect("names").iter())
            .filter_map(|n| n.as_str())
            .collect();
        for s in [
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bind",
            "clone3",
        ] {
            assert!(allowed.contains(&s), "{s} is not allowed");
        }
        for s in [
            "mount", "unshare", "setns", "ptrace", "keyctl", "bpf", "socket",
        ] {
            assert!(!allowed.contains(&s), "{s} is allowed without conditions");
        }
        assert!(crate::context::DEFAULT_SECCOMP_PROFILE.ends_with(FILE_NAME));
    }

    #[test]
    fn install_writes_the_profile_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("kafscale");
        let path = install(&target).expect("install");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), PROFILE);
        std::fs::write(&path, "{}").expect("write");
        install(&target).expect("install again");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), PROFILE);
        let names: Vec<_> = std::fs::read_dir(&target)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, [FILE_NAME]);
    }
}
