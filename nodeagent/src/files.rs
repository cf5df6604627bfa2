//! Files of a volume on this node, confined to the volume's folder. Every path is opened with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the folder, so the kernel
//! refuses `..` and symlinks that lead out of it; folders made for uploads are made one at a
//! time under the same rule. Uploads go to a hidden part file that is renamed when the whole
//! file has arrived, so an interrupted upload can be resumed from the part's size.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use serde::Serialize;

use crate::user::User;

/// A file or folder in a volume.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub name: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: &'static str,
    pub size: u64,
    /// Unix milliseconds.
    pub modified: i64,
}

/// A volume's folder, opened once.
pub struct Volume {
    root: OwnedFd,
    /// Who what it makes belongs to (the process user), when not the agent.
    owner: Option<User>,
}

const CONFINED: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// The components of a path inside a volume; empty for the volume itself.
fn components(path: &str) -> io::Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.iter().any(|p| *p == ".." || p.contains('\0')) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{path:?} leaves the volume"),
        ));
    }
    Ok(parts)
}

fn kind_of(file_type: FileType) -> &'static str {
    match file_type {
        FileType::RegularFile => "file",
        FileType::Directory => "dir",
        FileType::Symlink => "symlink",
        _ => "other",
    }
}

fn entry(name: &str, stat: &rustix::fs::Stat) -> Entry {
    Entry {
        name: name.to_string(),
        kind: kind_of(FileType::from_raw_mode(stat.st_mode)),
        size: stat.st_size as u64,
        modified: stat.st_mtime * 1000 + i64::from(stat.st_mtime_nsec as u32 / 1_000_000),
    }
}

/// Adds the entries under `fd` (reached as `prefix`) to `entries`.
fn walk_into(fd: &OwnedFd, prefix: &str, entries: &mut Vec<Entry>) -> io::Result<()> {
    let mut names = Vec::new();
    for item in rustix::fs::Dir::read_from(fd)? {
        let name = item?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." && !name.ends_with(".dora-upload") {
            names.push(name);
        }
    }
    names.sort();
    for name in names {
        let stat = rustix::fs::statat(fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        let path = format!("{prefix}{name}");
        let folder = FileType::from_raw_mode(stat.st_mode) == FileType::Directory;
        entries.push(entry(&path, &stat));
        if folder {
            let inner = subfolder(fd, &name)?;
            walk_into(&inner, &format!("{path}/"), entries)?;
        }
    }
    Ok(())
}

/// The folder `name` in `fd`, refusing a symlink.
fn subfolder(fd: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        fd,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        CONFINED | ResolveFlags::NO_SYMLINKS,
    )?)
}

/// Removes `name` from the folder `fd`; a folder's contents first when `recursive`.
fn remove_at(fd: &OwnedFd, name: &str, recursive: bool) -> io::Result<()> {
    let stat = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Ok(rustix::fs::unlinkat(fd, name, AtFlags::empty())?);
    }
    if recursive {
        let inner = subfolder(fd, name)?;
        let mut names = Vec::new();
        for item in rustix::fs::Dir::read_from(&inner)? {
            let item = item?.file_name().to_string_lossy().into_owned();
            if item != "." && item != ".." {
                names.push(item);
            }
        }
        for item in names {
            remove_at(&inner, &item, true)?;
        }
    }
    match rustix::fs::unlinkat(fd, name, AtFlags::REMOVEDIR) {
        Err(rustix::io::Errno::NOTEMPTY) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the folder {name:?} is not empty; remove it with ?recursive=true"),
        )),
        done => Ok(done?),
    }
}

fn part_name(name: &str) -> String {
    format!(".{name}.dora-upload")
}

impl Volume {
    /// Opens the volume's folder, creating it first when `create`. What it makes (that
    /// folder, folders and files of uploads) belongs to `owner` when given.
    pub fn open(root: &Path, create: bool, owner: Option<User>) -> io::Result<Volume> {
        let owner = owner.filter(|user| !user.is_root());
        if create && !root.exists() {
            std::fs::create_dir_all(root)?;
            if let Some(owner) = &owner {
                std::os::unix::fs::chown(root, Some(owner.uid), Some(owner.gid))?;
            }
        }
        let root = rustix::fs::open(
            root,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Volume { root, owner })
    }

    /// Gives what `fd` opens to the volume's owner.
    fn own(&self, fd: &OwnedFd) -> io::Result<()> {
        if let Some(owner) = &self.owner {
            rustix::fs::fchown(
                fd,
                Some(rustix::fs::Uid::from_raw(owner.uid)),
                Some(rustix::fs::Gid::from_raw(owner.gid)),
            )?;
        }
        Ok(())
    }

    fn resolve(&self, path: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        let parts = components(path)?;
        let relative = if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        };
        Ok(rustix::fs::openat2(
            &self.root,
            relative.as_str(),
            flags | OFlags::CLOEXEC,
            mode,
            CONFINED,
        )?)
    }

    /// Details of one path.
    pub fn stat(&self, path: &str) -> io::Result<Entry> {
        let fd = self.resolve(path, OFlags::PATH, Mode::empty())?;
        let stat = rustix::fs::fstat(&fd)?;
        let name = components(path)?.last().copied().unwrap_or(".");
        Ok(entry(name, &stat))
    }

    /// The entries of a folder, by name (hidden upload parts left out).
    pub fn list(&self, path: &str) -> io::Result<Vec<Entry>> {
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut entries = Vec::new();
        for item in rustix::fs::Dir::read_from(&fd)? {
            let item = item?;
            let name = item.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." || name.ends_with(".dora-upload") {
                continue;
            }
            let stat = rustix::fs::statat(&fd, item.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
            entries.push(entry(&name, &stat));
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Every file and folder under a folder, depth first, named by their path from it. Symlinks
    /// are listed, never followed.
    pub fn walk(&self, path: &str) -> io::Result<Vec<Entry>> {
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        let mut entries = Vec::new();
        walk_into(&fd, "", &mut entries)?;
        Ok(entries)
    }

    /// Removes a file, a symlink or an empty folder; with `recursive`, a folder and all it
    /// holds. The volume itself cannot be removed.
    pub fn remove(&self, path: &str, recursive: bool) -> io::Result<()> {
        let parts = components(path)?;
        let Some((name, folders)) = parts.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "name a file or folder inside the volume; the volume itself stays",
            ));
        };
        let folder = self.resolve(
            &folders.join("/"),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        remove_at(&folder, name, recursive)
    }

    /// Opens a file for reading.
    pub fn read(&self, path: &str) -> io::Result<File> {
        let fd = self.resolve(path, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path:?} is not a file"),
            ));
        }
        Ok(file)
    }

    /// The folder holding `path`, made when missing, and the file's name.
    fn parent(&self, path: &str) -> io::Result<(OwnedFd, String)> {
        let parts = components(path)?;
        let Some((name, folders)) = parts.split_last() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "name a file inside the volume",
            ));
        };
        let mut folder = self.resolve("", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())?;
        for part in folders {
            let made = match rustix::fs::mkdirat(&folder, *part, Mode::from_raw_mode(0o755)) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => return Err(e.into()),
            };
            folder = rustix::fs::openat2(
                &folder,
                *part,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                CONFINED | ResolveFlags::NO_SYMLINKS,
            )?;
            if made {
                self.own(&folder)?;
            }
        }
        Ok((folder, name.to_string()))
    }

    /// How many bytes of an interrupted upload of `path` arrived.
    pub fn uploaded(&self, path: &str) -> io::Result<u64> {
        let (folder, name) = self.parent(path)?;
        match rustix::fs::statat(
            &folder,
            part_name(&name).as_str(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(stat.st_size as u64),
            Err(rustix::io::Errno::NOENT) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// The part file of an upload of `path`, positioned at `offset`, which must be what has
    /// arrived so far (0 starts over).
    pub fn upload(&self, path: &str, offset: u64) -> io::Result<(File, Upload)> {
        let (folder, name) = self.parent(path)?;
        let part = part_name(&name);
        let fd = rustix::fs::openat2(
            &folder,
            part.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
            CONFINED | ResolveFlags::NO_SYMLINKS,
        )?;
        self.own(&fd)?;
        let file = File::from(fd);
        let arrived = file.metadata()?.len();
        if offset == 0 {
            file.set_len(0)?;
        } else if offset != arrived {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the upload can resume at byte {arrived}, not {offset}"),
            ));
        }
        use std::io::Seek;
        let mut file = file;
        file.seek(io::SeekFrom::Start(offset))?;
        Ok((file, Upload { folder, name, part }))
    }
}

/// An upload in progress: its part file becomes the file when complete.
pub struct Upload {
    folder: OwnedFd,
    name: String,
    part: String,
}

impl Upload {
    /// Renames the part file to its name, replacing what was there.
    pub fn complete(self) -> io::Result<()> {
        Ok(rustix::fs::renameat(
            &self.folder,
            self.part.as_str(),
            &self.folder,
            self.name.as_str(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn paths_stay_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        let volume = Volume::open(&root, true, None).unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        assert!(volume.read("../secret").is_err());
        assert!(volume.read("a/../../secret").is_err());
        assert!(volume.read("link").is_err(), "a symlink out is refused");
        assert!(volume.list("etc").is_err());
        assert!(volume.upload("etc/passwd", 0).is_err());
        assert!(volume.upload("../escape", 0).is_err());
        assert!(!dir.path().join("escape").exists());
        let names: Vec<String> = volume
            .list("")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["etc", "link"]);
    }

    #[test]
    fn walks_and_removes_inside_the_volume_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        let volume = Volume::open(&root, true, None).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/c.txt"), "c").unwrap();
        std::fs::write(root.join("top"), "t").unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/keep"), "k").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("a/out")).unwrap();
        let paths: Vec<(String, &str)> = volume
            .walk("")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        let expected = [
            ("a", "dir"),
            ("a/b", "dir"),
            ("a/b/c.txt", "file"),
            ("a/out", "symlink"),
            ("top", "file"),
        ];
        assert_eq!(paths, expected.map(|(p, k)| (p.to_string(), k)));
        assert!(volume.remove("../outside/keep", false).is_err());
        assert!(volume.remove("a/out/keep", false).is_err());
        assert!(volume.remove("", true).is_err());
        assert!(volume.remove("a", false).is_err(), "a full folder stays");
        volume.remove("a", true).unwrap();
        volume.remove("top", false).unwrap();
        assert!(volume.list("").unwrap().is_empty());
        assert!(
            dir.path().join("outside/keep").exists(),
            "a symlink is not followed"
        );
    }

    #[test]
    fn uploads_resume_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let volume = Volume::open(&dir.path().join("vol"), true, None).unwrap();
        let (mut file, _) = volume.upload("data/part.bin", 0).unwrap();
        file.write_all(b"hello ").unwrap();
        drop(file);
        assert_eq!(volume.uploaded("data/part.bin").unwrap(), 6);
        assert!(
            volume.upload("data/part.bin", 3).is_err(),
            "a gap is refused"
        );
        let (mut file, upload) = volume.upload("data/part.bin", 6).unwrap();
        file.write_all(b"world").unwrap();
        drop(file);
        upload.complete().unwrap();
        let mut text = String::new();
        volume
            .read("data/part.bin")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(volume.uploaded("data/part.bin").unwrap(), 0);
        let listed = volume.list("data").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].kind, listed[0].size), ("file", 11));
        assert_eq!(volume.stat("data").unwrap().kind, "dir");
    }
}
