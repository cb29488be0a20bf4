//! The dashboard's first-party static files, embedded in the binary and served under
//! `/static/` with a content hash in the name, so they can be cached for a year and a
//! new build is fetched at once.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

struct Asset {
    /// `app.css` becomes `app.<hash>.css`.
    stem: &'static str,
    ext: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        stem: "app",
        ext: "css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/app.css"),
    },
    Asset {
        stem: "app",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/app.js"),
    },
    Asset {
        stem: "live",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/live.js"),
    },
    Asset {
        stem: "live-worklet",
        ext: "js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/live-worklet.js"),
    },
    Asset {
        stem: "icon",
        ext: "svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../static/icon.svg"),
    },
];

/// Each file's versioned name.
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|a| {
            let hash = hex::encode(Sha256::digest(a.body));
            format!("{}.{}.{}", a.stem, &hash[..12], a.ext)
        })
        .collect()
});

fn url_of(stem: &str, ext: &str) -> String {
    FILES
        .iter()
        .zip(NAMES.iter())
        .find(|(a, _)| a.stem == stem && a.ext == ext)
        .map(|(_, n)| format!("/static/{n}"))
        .unwrap_or_default()
}

/// The URLs the layout links.
pub struct Urls {
    pub css: String,
    pub js: String,
    pub icon: String,
    /// The Playground's live microphone module and its AudioWorklet.
    pub live_js: String,
    pub live_worklet: String,
}

pub static URLS: LazyLock<Urls> = LazyLock::new(|| Urls {
    css: url_of("app", "css"),
    js: url_of("app", "js"),
    icon: url_of("icon", "svg"),
    live_js: url_of("live", "js"),
    live_worklet: url_of("live-worklet", "js"),
});

/// `GET /static/{file}`: only the current versioned names exist.
pub async fn serve(Path(file): Path<String>) -> Response {
    match NAMES.iter().position(|n| *n == file) {
        Some(i) => (
            [
                (CONTENT_TYPE, FILES[i].content_type),
                (CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            FILES[i].body,
        )
            .into_response(),
        None => super::DashError::NotFound.into_response(),
    }
}
