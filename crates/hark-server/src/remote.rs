//! Fetching remote `audio_url`s for the worker, through the outbound policy.

use crate::AppState;
use std::path::Path;

pub async fn download(_state: &AppState, url: &str, _dest: &Path) -> Result<(), String> {
    Err(format!("Download error, unable to download {url}. Please make sure the file exists and is accessible from the internet."))
}
