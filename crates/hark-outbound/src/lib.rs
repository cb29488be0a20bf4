//! Hark's outbound HTTP: SSRF-safe downloads of `audio_url` and webhook delivery.
//!
//! Everything that leaves the server goes through an [`OutboundClient`], whose
//! [`OutboundPolicy`] is applied to the addresses actually connected to.

pub mod client;
pub mod download;
pub mod error;
pub mod policy;
pub mod webhooks;

pub use client::OutboundClient;
pub use download::{assemblyai_download_error, download_to_blob, download_to_file, DownloadLimits};
pub use error::OutboundError;
pub use policy::OutboundPolicy;
pub use webhooks::{
    auth_header_seal_context, project_secret_seal_context, SigningSecrets, StoreSigningSecrets,
    WebhookConfig, WebhookError, WebhookSender,
};
