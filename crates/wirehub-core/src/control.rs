//! Orders for every node of a cluster (e.g. "close this user's connections"), as opaque
//! bytes: the seam is [`ControlBus`], which delivers a payload to every other node. The
//! payload's format belongs to whoever sends it (the server encodes protocol types).

use std::fmt;
use std::sync::Arc;

use crate::broker::{BoxFuture, BrokerError};

/// What a node runs for each order another node broadcast.
pub type ControlHandler = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// Carries orders to the other nodes.
pub trait ControlBus: Send + Sync + fmt::Debug + 'static {
    /// Sends `payload` to every other node (the sender acts on it itself). At most once:
    /// a node that is disconnected from the bus when it is sent does not get it.
    fn broadcast(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>>;
}
