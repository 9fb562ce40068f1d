//! Domain types every abridge crate shares, and nothing that talks to an outside system.
//!
//! - [`ids`]: `BatchId`, `ItemId`, `LeaseToken`, `WorkerId`.
//! - [`status`]: item and batch states and priorities, with their string forms as stored.
//! - [`video`]: YouTube URL normalisation to an 11-character video id.
//! - [`input`]: parsing, validating and de-duplicating a batch's input lines.
//! - [`lists`]: playlist and channel lines, which a caller expands into their videos.
//! - [`options`]: per-batch processing options (backend, model, length, language).
//! - [`error`]: `ItemError`, whose variant decides whether an item is retried.
//! - [`settings`]: configuration (defaults < `abridge.toml` < `ABRIDGE_*` environment).

pub mod backoff;
pub mod error;
pub mod ids;
pub mod input;
pub mod lists;
pub mod options;
pub mod settings;
pub mod status;
pub mod video;

pub use error::{ErrorKind, ItemError, public_message};
pub use ids::{BatchId, Claim, ItemId, LeaseToken, WorkerId};
pub use options::{Allowed, Backend, BatchOptions, SummaryLength};
pub use settings::Settings;
pub use status::{BatchStatus, ItemStatus, Priority};
pub use video::VideoId;
