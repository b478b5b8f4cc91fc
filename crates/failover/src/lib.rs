//! The cluster layer: where each vserver runs and where it is copied (placement), the copies a standby
//! holds (store), and the rsync runs that make them (rsync, fileflags). The agent drives them; takeover
//! builds on them.
#![warn(missing_docs)]

pub mod changes;
pub mod fileflags;
pub mod ownership;
pub mod placement;
pub mod rsync;
pub mod store;
