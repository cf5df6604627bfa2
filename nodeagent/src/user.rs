//! The user a root agent runs Process containers as, and whether that user can reach a folder.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A local user: what a Process container runs as when the agent is root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// As given: a name, or a uid.
    pub name: String,
    pub uid: u32,
    /// Its primary group; a container gets no supplementary groups.
    pub gid: u32,
}

impl User {
    /// The user named `spec`: a name from the user database, `UID`, or `UID:GID` (a uid with
    /// no entry gets its own number as group).
    pub fn lookup(spec: &str) -> anyhow::Result<User> {
        let (user, group) = match spec.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (spec, None),
        };
        let gid = group
            .map(|g| {
                g.parse::<u32>()
                    .with_context(|| format!("--process-user {spec:?}: the group must be a number"))
            })
            .transpose()?;
        if let Ok(uid) = user.parse::<u32>() {
            let primary = entry_by_uid(uid).map(|(_, gid)| gid).unwrap_or(uid);
            return Ok(User {
                name: user.to_string(),
                uid,
                gid: gid.unwrap_or(primary),
            });
        }
        let Some((uid, primary)) = entry_by_name(user)? else {
            bail!(
                "--process-user {user:?}: no such user on this machine; name one that exists \
                 (such as nobody), or give UID[:GID]"
            );
        };
        Ok(User {
            name: user.to_string(),
            uid,
            gid: gid.unwrap_or(primary),
        })
    }

    /// Whether this is the superuser, which keeps the agent's own identity.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The first folder on the way to `path` (itself included) that this user may not search,
    /// so that no path below it opens for them; `None` when every one may be.
    pub fn blocked_at(&self, path: &Path) -> Option<PathBuf> {
        if self.is_root() {
            return None;
        }
        path.ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .find(|folder| match std::fs::metadata(folder) {
                Ok(meta) => !self.may_search(&meta),
                // A folder not made yet is made by the agent, searchable.
                Err(_) => false,
            })
            .map(Path::to_path_buf)
    }

    fn may_search(&self, meta: &std::fs::Metadata) -> bool {
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & 0o100 != 0
        } else if meta.gid() == self.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// Gives `path` to this user.
    pub fn own(&self, path: &Path) -> anyhow::Result<()> {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .with_context(|| format!("cannot give {} to {}", path.display(), self.name))
    }
}

/// The uid and primary gid of the user named `name`, from the system's user database
/// (files, LDAP, whatever NSS is set up with).
fn entry_by_name(name: &str) -> anyhow::Result<Option<(u32, u32)>> {
    let name = CString::new(name).context("--process-user: a user name holds no NUL")?;
    Ok(passwd(|entry, buffer, found| {
        // SAFETY: every pointer is valid for the call, `buffer` for its length.
        unsafe {
            libc::getpwnam_r(
                name.as_ptr(),
                entry,
                buffer.as_mut_ptr(),
                buffer.len(),
                found,
            )
        }
    }))
}

/// The user database's uid and primary gid of `uid`, when it has an entry.
fn entry_by_uid(uid: u32) -> Option<(u32, u32)> {
    passwd(|entry, buffer, found| {
        // SAFETY: as in `entry_by_name`.
        unsafe { libc::getpwuid_r(uid, entry, buffer.as_mut_ptr(), buffer.len(), found) }
    })
}

/// Runs a `getpw*_r` call with a buffer that grows until the entry fits.
fn passwd(
    call: impl Fn(*mut libc::passwd, &mut [libc::c_char], *mut *mut libc::passwd) -> libc::c_int,
) -> Option<(u32, u32)> {
    let mut buffer = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: `passwd` is plain old data; all zeroes is a valid value.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found = std::ptr::null_mut();
        match call(&mut entry, &mut buffer, &mut found) {
            libc::ERANGE if buffer.len() < 1 << 20 => buffer.resize(buffer.len() * 2, 0),
            0 if !found.is_null() => return Some((entry.pw_uid, entry.pw_gid)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn users_are_found_by_name_and_number() {
        let root = User::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        let numbered = User::lookup("4321:99").unwrap();
        assert_eq!((numbered.uid, numbered.gid), (4321, 99));
        assert_eq!(User::lookup("54321").unwrap().gid, 54321);
        let error = User::lookup("no-such-user-here").unwrap_err().to_string();
        assert!(error.contains("no such user"), "{error}");
        assert!(User::lookup("1:x").is_err());
    }

    #[test]
    fn a_folder_closed_to_others_blocks_what_is_below() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        let closed = open.join("closed");
        std::fs::create_dir_all(closed.join("below")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let stranger = User {
            name: "stranger".into(),
            uid: 4321,
            gid: 4321,
        };
        assert_eq!(stranger.blocked_at(&closed.join("below")), Some(closed));
        assert_eq!(stranger.blocked_at(&open.join("later")), None);
    }
}
