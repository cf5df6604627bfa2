//! The output of each container's run before its current one, which `dora logs --previous`
//! shows: when a new run replaces a container's copy on this node, the agent keeps the old
//! copy's output here before the driver removes it (a Docker container's logs go with it).
//! One file per container, replaced at each restart and removed with the container:
//!
//! ```text
//! <root>/<zone>/<workspace>/<name>.log
//! ```

use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use dora_store::ObjectKey;

use crate::driver::{Driver, Instance, LogStream, logfile};

/// The previous runs' output of a node's containers.
pub struct PreviousRuns {
    root: PathBuf,
}

impl PreviousRuns {
    /// Keeps them under `root`, which only the agent's user may read.
    pub fn new(root: impl Into<PathBuf>) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let root = root.into();
        std::fs::create_dir_all(&root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
        Ok(PreviousRuns { root })
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root
            .join(&key.zone)
            .join(&key.workspace)
            .join(format!("{}.log", key.name))
    }

    /// Keeps the output of `instance`, which a new run of its container replaces, in place of
    /// the run before it.
    pub async fn keep(&self, driver: &dyn Driver, instance: &Instance) -> anyhow::Result<()> {
        let path = self.path(&instance.key);
        if let Some(folder) = path.parent() {
            tokio::fs::create_dir_all(folder)
                .await
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        let saving = path.with_extension("saving");
        let saved = match driver.save_output(instance, &saving).await {
            Ok(()) => tokio::fs::rename(&saving, &path).await.map_err(Into::into),
            Err(e) => Err(e),
        };
        if saved.is_err() {
            let _ = tokio::fs::remove_file(&saving).await;
        }
        saved
    }

    /// The output of `key`'s previous run (its last `tail` lines), when one is kept.
    pub async fn read(
        &self,
        key: &ObjectKey,
        tail: Option<usize>,
    ) -> anyhow::Result<Option<LogStream>> {
        match logfile::open(&self.path(key), tail).await {
            Ok((_, text)) => {
                let chunk: std::io::Result<Bytes> = Ok(Bytes::from(text));
                Ok(Some(Box::pin(futures::stream::once(async { chunk }))))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("cannot read the previous run's output"),
        }
    }

    /// Removes what is kept of `key`, a container gone from this node.
    pub async fn forget(&self, key: &ObjectKey) {
        let path = self.path(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                // Folders go with their last file (remove_dir keeps a non-empty one).
                let mut folder = path.parent();
                while let Some(dir) = folder.filter(|dir| *dir != self.root) {
                    if tokio::fs::remove_dir(dir).await.is_err() {
                        break;
                    }
                    folder = dir.parent();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot remove the previous run's output")
            }
        }
    }

    /// Every container whose previous run is kept.
    pub fn keys(&self) -> Vec<ObjectKey> {
        let mut keys = Vec::new();
        let Ok(zones) = std::fs::read_dir(&self.root) else {
            return keys;
        };
        for zone in zones.flatten() {
            let Ok(workspaces) = std::fs::read_dir(zone.path()) else {
                continue;
            };
            for workspace in workspaces.flatten() {
                let Ok(files) = std::fs::read_dir(workspace.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let name = file.file_name().to_string_lossy().into_owned();
                    if let Some(name) = name.strip_suffix(".log") {
                        keys.push(ObjectKey::new(
                            dora_crds::Kind::Container,
                            &zone.file_name().to_string_lossy(),
                            &workspace.file_name().to_string_lossy(),
                            name,
                        ));
                    }
                }
            }
        }
        keys
    }
}
