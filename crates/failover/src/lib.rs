//! The cluster layer: where each vserver runs and where it is copied (placement), the copies a standby
//! holds (store), and the rsync runs that make them (rsync, fileflags). The agent drives them; takeover
//! builds on them.
#![warn(missing_docs)]

pub mod alerts;
pub mod changes;
pub mod credential;
pub mod evacuate;
pub mod events;
pub mod fileflags;
pub mod lease;
pub mod maintenance;
pub mod membership;
pub mod migrate;
pub mod ownership;
pub mod peer;
pub mod placement;
pub mod points;
pub mod promote;
pub mod reconcile;
pub mod rsync;
pub mod session;
pub mod store;
pub mod sync;
pub mod table;
pub mod takeover;
pub mod whole;
pub mod wire;
