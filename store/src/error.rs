/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No row under that key.
    #[error("not found")]
    NotFound,
    /// A create found the row already there.
    #[error("already exists")]
    AlreadyExists,
    /// A compare-and-set found another version than expected.
    #[error("version conflict: expected {expected}, found {actual}")]
    Conflict { expected: u64, actual: u64 },
    /// The writer's lease epoch is no longer current: another holder took over.
    #[error("lease epoch {epoch} is no longer current")]
    Fenced { epoch: u64 },
    /// A change-feed cursor older than the feed's retention; re-list and watch again.
    #[error("cursor {0} is older than the change feed's retention; list again")]
    Expired(String),
    /// A change-feed cursor past the feed's newest position: not one this store gave out.
    #[error("cursor {cursor} is ahead of the change feed's newest position {head}")]
    Ahead { cursor: String, head: String },
    /// A cursor or continue token the backend did not make.
    #[error("invalid cursor or continue token {0:?}")]
    BadCursor(String),
    /// The backend failed or cannot be reached.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write the rules of the data refuse, such as a finalizer added to a row being deleted.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}
