//! What a row keeps for controllers beside its labels: annotations, owner references,
//! finalizers, and when a delete was asked for while finalizers remained. They are written
//! with the spec column group (by the api server) and stored together as one JSON text
//! column, `meta`, the same in every backend.

use std::collections::BTreeMap;

use dora_crds::{Metadata, OwnerReference};
use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The `meta` column of a row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RowMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Unix milliseconds when a delete was asked for while finalizers remained; once set, it
    /// stays until the row is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<i64>,
}

/// How a spec write changes a row's [`RowMeta`]; a `None` field keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaWrite {
    pub annotations: Option<BTreeMap<String, String>>,
    pub owner_references: Option<Vec<OwnerReference>>,
    pub finalizers: Option<Vec<String>>,
    /// Marks the row as being deleted: sets `deletion_timestamp`, unless it is set already.
    pub delete: bool,
}

impl RowMeta {
    /// The meta of an object as the API returns it, given its deletion time in Unix
    /// milliseconds.
    pub fn of(metadata: &Metadata, deletion_timestamp: Option<i64>) -> RowMeta {
        RowMeta {
            annotations: metadata.annotations.clone().unwrap_or_default(),
            owner_references: metadata.owner_references.clone().unwrap_or_default(),
            finalizers: metadata.finalizers.clone().unwrap_or_default(),
            deletion_timestamp,
        }
    }

    /// Whether a delete was asked for and waits on finalizers.
    pub fn terminating(&self) -> bool {
        self.deletion_timestamp.is_some()
    }

    /// Whether the row waited on finalizers and none remain: it is to be deleted now.
    pub fn finalized(&self) -> bool {
        self.terminating() && self.finalizers.is_empty()
    }

    /// The metadata after `write` at `now` (Unix milliseconds). A row being deleted takes no
    /// new finalizer: controllers may only remove theirs.
    pub fn after(&self, write: &MetaWrite, now: i64) -> Result<RowMeta, StoreError> {
        let finalizers = write.finalizers.as_ref().unwrap_or(&self.finalizers);
        if self.terminating()
            && let Some(added) = finalizers.iter().find(|f| !self.finalizers.contains(f))
        {
            return Err(StoreError::Invalid {
                field: "metadata.finalizers".into(),
                message: format!(
                    "cannot add finalizer {added:?}: the object is being deleted; finalizers can only be removed now"
                ),
            });
        }
        Ok(RowMeta {
            annotations: write
                .annotations
                .clone()
                .unwrap_or_else(|| self.annotations.clone()),
            owner_references: write
                .owner_references
                .clone()
                .unwrap_or_else(|| self.owner_references.clone()),
            finalizers: finalizers.clone(),
            deletion_timestamp: self.deletion_timestamp.or(write.delete.then_some(now)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_finalizers(finalizers: &[&str]) -> RowMeta {
        RowMeta {
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            ..RowMeta::default()
        }
    }

    #[test]
    fn left_out_fields_are_kept_and_given_ones_replace() {
        let stored = RowMeta {
            annotations: [("a".to_string(), "1".to_string())].into(),
            ..with_finalizers(&["x/one"])
        };
        let kept = stored.after(&MetaWrite::default(), 5).unwrap();
        assert_eq!(kept, stored);
        let write = MetaWrite {
            annotations: Some(BTreeMap::new()),
            finalizers: Some(vec![]),
            ..MetaWrite::default()
        };
        assert_eq!(stored.after(&write, 5).unwrap(), RowMeta::default());
    }

    #[test]
    fn a_deletion_stays_and_only_removes_finalizers() {
        let stored = with_finalizers(&["x/one", "x/two"]);
        let marked = stored
            .after(
                &MetaWrite {
                    delete: true,
                    ..MetaWrite::default()
                },
                7,
            )
            .unwrap();
        assert_eq!(marked.deletion_timestamp, Some(7));
        assert!(marked.terminating() && !marked.finalized());
        let again = marked
            .after(
                &MetaWrite {
                    delete: true,
                    ..MetaWrite::default()
                },
                9,
            )
            .unwrap();
        assert_eq!(
            again.deletion_timestamp,
            Some(7),
            "the first request counts"
        );
        let added = marked.after(
            &MetaWrite {
                finalizers: Some(vec!["x/one".into(), "x/three".into()]),
                ..MetaWrite::default()
            },
            9,
        );
        assert!(
            matches!(added, Err(StoreError::Invalid { ref field, .. }) if field == "metadata.finalizers"),
            "{added:?}"
        );
        let released = marked
            .after(
                &MetaWrite {
                    finalizers: Some(vec!["x/two".into()]),
                    ..MetaWrite::default()
                },
                9,
            )
            .unwrap();
        assert!(!released.finalized());
        let done = released
            .after(
                &MetaWrite {
                    finalizers: Some(vec![]),
                    ..MetaWrite::default()
                },
                9,
            )
            .unwrap();
        assert!(done.finalized());
        assert_eq!(done.deletion_timestamp, Some(7));
    }
}
