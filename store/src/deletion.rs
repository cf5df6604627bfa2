//! Deletes that honour finalizers: a row with finalizers is only marked as being deleted, and
//! goes once controllers have removed them all.

use std::sync::Arc;

use crate::{MetaWrite, ObjectKey, Precondition, Row, SpecWrite, Store, StoreError};

/// Reads and writes a delete tries before it reports that the row keeps changing.
const ATTEMPTS: usize = 8;

/// What a delete did.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// The row is gone; this is what it held.
    Deleted(Arc<Row>),
    /// The row has finalizers: it is marked as being deleted and stays, as it is now, until
    /// they are removed.
    Pending(Arc<Row>),
}

/// Deletes the row of `key` if its version meets `precondition`; a row with finalizers is only
/// marked (its `deletion_timestamp` set, once). Writes of others in between are read again,
/// unless the caller asked for one version.
pub(crate) async fn delete_or_finalize<S: Store + ?Sized>(
    store: &S,
    key: &ObjectKey,
    precondition: Precondition,
) -> Result<Deletion, StoreError> {
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let row = store.get(key).await?.ok_or(StoreError::NotFound)?;
        precondition.check(Some(&row))?;
        let at = Precondition::Version(row.version);
        let done = if row.meta.finalizers.is_empty() {
            store
                .delete(key, at)
                .await
                .map(|row| Deletion::Deleted(Arc::new(row)))
        } else if row.meta.terminating() {
            return Ok(Deletion::Pending(Arc::new(row)));
        } else {
            store
                .put_spec(mark(row, at))
                .await
                .map(|outcome| Deletion::Pending(outcome.row().clone()))
        };
        match done {
            Err(e @ StoreError::Conflict { .. }) if precondition == Precondition::None => {
                last = Some(e);
            }
            done => return done,
        }
    }
    Err(last.unwrap_or(StoreError::NotFound))
}

/// The write that marks `row` as being deleted and changes nothing else.
fn mark(row: Row, at: Precondition) -> SpecWrite {
    SpecWrite {
        key: row.key,
        precondition: at,
        owner: row.owner,
        labels: row.labels,
        meta: MetaWrite {
            delete: true,
            ..MetaWrite::default()
        },
        spec: Arc::unwrap_or_clone(row.resource),
        spec_hash: row.spec_hash,
        desired: Arc::unwrap_or_clone(row.desired),
        computed: None,
        fence: None,
    }
}

/// Deletes `row` if it was being deleted and its last finalizer is gone; `None` when it was
/// not, or when it changed or went meanwhile (whoever changed it sees it in turn).
pub(crate) async fn delete_if_finalized<S: Store + ?Sized>(
    store: &S,
    row: &Row,
) -> Result<Option<Row>, StoreError> {
    if !row.meta.finalized() {
        return Ok(None);
    }
    match store
        .delete(&row.key, Precondition::Version(row.version))
        .await
    {
        Ok(deleted) => Ok(Some(deleted)),
        Err(StoreError::NotFound | StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
