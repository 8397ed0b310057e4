//! What travels on the wire: tally's seam types mirrored with serde, since
//! the runtime's own types do not derive it.

use serde::{Deserialize, Serialize};
use tally::core::{EntryError, QueueError, Received, StoreError};

/// A request or a reply, with the id that pairs them.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Frame<T> {
    pub id: u64,
    pub body: T,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum WireQueueError {
    Missing {
        queue: String,
        code: String,
    },
    DeletedRecently {
        queue: String,
        retry_after_ms: u64,
        code: String,
    },
    Retryable {
        code: String,
        message: String,
    },
    Permanent {
        code: String,
        message: String,
    },
}

impl From<QueueError> for WireQueueError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Missing { queue, code } => Self::Missing { queue, code },
            QueueError::DeletedRecently {
                queue,
                retry_after_ms,
                code,
            } => Self::DeletedRecently {
                queue,
                retry_after_ms,
                code,
            },
            QueueError::Retryable { code, message } => Self::Retryable { code, message },
            QueueError::Permanent { code, message } => Self::Permanent { code, message },
        }
    }
}

impl From<WireQueueError> for QueueError {
    fn from(e: WireQueueError) -> Self {
        match e {
            WireQueueError::Missing { queue, code } => Self::Missing { queue, code },
            WireQueueError::DeletedRecently {
                queue,
                retry_after_ms,
                code,
            } => Self::DeletedRecently {
                queue,
                retry_after_ms,
                code,
            },
            WireQueueError::Retryable { code, message } => Self::Retryable { code, message },
            WireQueueError::Permanent { code, message } => Self::Permanent { code, message },
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireEntryError {
    code: String,
    message: String,
    retryable: bool,
}

pub(crate) type WireStatuses = Vec<Result<(), WireEntryError>>;

pub(crate) fn to_wire_statuses(statuses: Vec<Result<(), EntryError>>) -> WireStatuses {
    let to_wire = |e: EntryError| WireEntryError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    };
    statuses.into_iter().map(|s| s.map_err(to_wire)).collect()
}

pub(crate) fn from_wire_statuses(statuses: WireStatuses) -> Vec<Result<(), EntryError>> {
    let from_wire = |e: WireEntryError| EntryError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    };
    statuses.into_iter().map(|s| s.map_err(from_wire)).collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireReceived {
    body: String,
    handle: String,
    message_id: String,
    receive_count: u32,
}

impl From<Received> for WireReceived {
    fn from(r: Received) -> Self {
        Self {
            body: r.body,
            handle: r.handle,
            message_id: r.message_id,
            receive_count: r.receive_count,
        }
    }
}

impl From<WireReceived> for Received {
    fn from(r: WireReceived) -> Self {
        Self {
            body: r.body,
            handle: r.handle,
            message_id: r.message_id,
            receive_count: r.receive_count,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireStoreError {
    retryable: bool,
    code: String,
    message: String,
}

impl From<StoreError> for WireStoreError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Retryable { code, message } => Self {
                retryable: true,
                code,
                message,
            },
            StoreError::Permanent { code, message } => Self {
                retryable: false,
                code,
                message,
            },
        }
    }
}

impl From<WireStoreError> for StoreError {
    fn from(e: WireStoreError) -> Self {
        let WireStoreError {
            retryable,
            code,
            message,
        } = e;
        if retryable {
            Self::Retryable { code, message }
        } else {
            Self::Permanent { code, message }
        }
    }
}
