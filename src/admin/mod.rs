//! Operator commands that prepare and verify a server without serving:
//! [`check`] (`flow-store check`), [`keys`] (`flow-store keys import`,
//! `flow-store keys list`) and [`migrate`] (`flow-store migrate`, which
//! copies the states from one database to another); and the local admin
//! channel to a running one: [`socket`] (the Unix socket, its peer check and
//! its client), [`api`] (what the daemon answers there) and [`status`]
//! (`flow-store status`).
//!
//! This file owns what both need from the host: who we run as and the
//! `flow-store` service account, read from `/proc/self/status`,
//! `/etc/passwd` and `/etc/group` (no libc calls, the crate forbids
//! `unsafe`), and the permission arithmetic that says whether that account
//! can read a file. Nothing here serves requests.

use std::fs::Metadata;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::config::{Config, ConfigError};

pub mod api;
pub mod check;
pub mod keys;
pub mod migrate;
pub mod socket;
pub mod status;

/// The system user and group the packaged service runs as.
pub const SERVICE_USER: &str = "flow-store";

/// The service account as the host's user and group databases describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    /// The user's uid, if a user of that name exists.
    pub uid: Option<u32>,
    /// The gid of the group of that name, if one exists.
    pub gid: Option<u32>,
    /// Every gid the user belongs to: its primary group and the groups
    /// listing it as a member.
    pub groups: Vec<u32>,
}

impl ServiceAccount {
    /// Looks up [`SERVICE_USER`] in `/etc/passwd` and `/etc/group`; `None`
    /// when neither a user nor a group of that name exists.
    pub fn lookup() -> Option<ServiceAccount> {
        // A missing or unreadable database is the same as "no such account".
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Self::parse(&passwd, &group, SERVICE_USER)
    }

    /// Finds `name` in the text of a passwd and a group file.
    pub fn parse(passwd: &str, group: &str, name: &str) -> Option<ServiceAccount> {
        let fields = |line: &str| line.split(':').map(str::to_string).collect::<Vec<_>>();
        let user = passwd
            .lines()
            .map(fields)
            .find(|f| f.len() >= 4 && f[0] == name);
        let uid = user.as_ref().and_then(|f| f[2].parse::<u32>().ok());
        let primary = user.as_ref().and_then(|f| f[3].parse::<u32>().ok());
        let mut gid = None;
        let mut groups: Vec<u32> = primary.into_iter().collect();
        for f in group.lines().map(fields).filter(|f| f.len() >= 3) {
            let Ok(id) = f[2].parse::<u32>() else {
                continue;
            };
            if f[0] == name {
                gid = Some(id);
            }
            let member = f
                .get(3)
                .is_some_and(|m| m.split(',').any(|m| m.trim() == name));
            if user.is_some() && member && !groups.contains(&id) {
                groups.push(id);
            }
        }
        if uid.is_none() && gid.is_none() {
            return None;
        }
        Some(ServiceAccount { uid, gid, groups })
    }

    /// Whether this account may read (`want = 0o4`) or write (`want = 0o2`)
    /// a file with these owner, group and mode bits. Root-only capabilities
    /// play no part: the service runs without them.
    pub fn may(&self, meta: &Metadata, want: u32) -> bool {
        let mode = meta.permissions().mode();
        if self.uid == Some(meta.uid()) {
            return mode & (want << 6) != 0;
        }
        if self.groups.contains(&meta.gid()) {
            return mode & (want << 3) != 0;
        }
        mode & want != 0
    }
}

/// [`Config::load`] with an explicit environment: a missing file is
/// [`ConfigError::Missing`] (with its advice), not a figment I/O message.
pub fn load_config(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
    if !path.is_file() {
        return Err(ConfigError::Missing(path.to_path_buf()));
    }
    Config::load_with_env(path, env)
}

/// The effective uid of this process, from `/proc/self/status`, or, where
/// /proc is not mounted (a bare chroot), from the owner of a file it creates.
pub fn effective_uid() -> Option<u32> {
    if let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_effective_uid(&status))
    {
        return Some(uid);
    }
    let probe = std::env::temp_dir().join(format!(".flow-store-uid-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .ok()?;
    let uid = std::fs::metadata(&probe).ok().map(|m| m.uid());
    let _ = std::fs::remove_file(&probe);
    uid
}

fn parse_effective_uid(status: &str) -> Option<u32> {
    // "Uid:\treal\teffective\tsaved\tfilesystem"
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether this process runs as root (and so may hand files to the service
/// account, and must check on its behalf what it can read).
pub fn running_as_root() -> bool {
    effective_uid() == Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        flow-store:x:998:997::/var/lib/flow-store:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:syslog,flow-store\nflow-store:x:997:\n";

    #[test]
    fn parses_the_account() {
        let account = ServiceAccount::parse(PASSWD, GROUP, "flow-store").unwrap();
        assert_eq!(account.uid, Some(998));
        assert_eq!(account.gid, Some(997));
        assert_eq!(account.groups, vec![997, 4]);
        assert_eq!(ServiceAccount::parse(PASSWD, GROUP, "nobody"), None);
        let group_only = ServiceAccount::parse("", GROUP, "flow-store").unwrap();
        assert_eq!((group_only.uid, group_only.gid), (None, Some(997)));
    }

    #[test]
    fn effective_uid_is_the_second_field() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t1\t1\t1\t1\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn permission_bits_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "x").unwrap();
        let meta_with = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::metadata(&path).unwrap()
        };
        let (uid, gid) = {
            let m = std::fs::metadata(&path).unwrap();
            (m.uid(), m.gid())
        };
        let owner = ServiceAccount {
            uid: Some(uid),
            gid: None,
            groups: vec![],
        };
        let member = ServiceAccount {
            uid: Some(uid.wrapping_add(1)),
            gid: Some(gid),
            groups: vec![gid],
        };
        let other = ServiceAccount {
            uid: Some(uid.wrapping_add(1)),
            gid: None,
            groups: vec![],
        };
        let m = meta_with(0o600);
        assert!(owner.may(&m, 0o4) && !member.may(&m, 0o4) && !other.may(&m, 0o4));
        let m = meta_with(0o640);
        assert!(member.may(&m, 0o4) && !member.may(&m, 0o2) && !other.may(&m, 0o4));
        let m = meta_with(0o044);
        assert!(!owner.may(&m, 0o4) && other.may(&m, 0o4));
    }
}
