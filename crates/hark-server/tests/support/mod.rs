//! Small HTTP helpers shared by the API integration tests (api_routes, tenancy,
//! bad_input, limits), on top of the server harness in `common`.
#![allow(dead_code)]

use super::common::TestServer;
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const AUTH_ERROR: &str = "Authentication error, API token missing/invalid";
pub const NOT_FOUND_TRANSCRIPT: &str = "Transcript lookup error, transcript id not found";
pub const UPLOAD_FORBIDDEN: &str = "Cannot access uploaded file";

/// A response read to the end.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text))
    }

    /// Asserts `status` and the one-key error envelope `{"error": <string>}`;
    /// returns the message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(
            self.status, status,
            "unexpected status; body: {}",
            self.text
        );
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(
            obj.len(),
            1,
            "error envelope has only 'error': {}",
            self.text
        );
        obj["error"]
            .as_str()
            .unwrap_or_else(|| panic!("error is a string: {}", self.text))
            .to_string()
    }

    /// Asserts an exact error envelope.
    pub fn exact_error(&self, status: u16, message: &str) {
        assert_eq!(self.error(status), message, "body: {}", self.text);
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> Resp {
    let r = req.send().await.expect("request sent");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.expect("body read");
    Resp {
        status,
        headers,
        text,
    }
}

pub async fn get(ts: &TestServer, key: &str, path: &str) -> Resp {
    send(ts.http.get(ts.url(path)).header("authorization", key)).await
}

pub async fn delete(ts: &TestServer, key: &str, path: &str) -> Resp {
    send(ts.http.delete(ts.url(path)).header("authorization", key)).await
}

pub async fn post_json(ts: &TestServer, key: &str, path: &str, body: &Value) -> Resp {
    send(
        ts.http
            .post(ts.url(path))
            .header("authorization", key)
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

pub async fn post_raw(ts: &TestServer, key: &str, path: &str, body: Vec<u8>) -> Resp {
    send(
        ts.http
            .post(ts.url(path))
            .header("authorization", key)
            .body(body),
    )
    .await
}

/// Uploads `bytes` and returns the upload URL (asserting 200 and the one-field body).
pub async fn upload(ts: &TestServer, key: &str, bytes: Vec<u8>) -> String {
    let r = post_raw(ts, key, "/v2/upload", bytes).await;
    assert_eq!(r.status, 200, "upload: {}", r.text);
    let v = r.json();
    assert_eq!(v.as_object().unwrap().len(), 1, "only upload_url: {v}");
    v["upload_url"].as_str().expect("upload_url").to_string()
}

/// Creates a transcript (asserting 200) and returns its object.
pub async fn create(ts: &TestServer, key: &str, body: Value) -> Value {
    let r = post_json(ts, key, "/v2/transcript", &body).await;
    assert_eq!(r.status, 200, "create: {}", r.text);
    r.json()
}

/// Uploads a script of `words` and creates a transcript from it; returns the id.
pub async fn transcribe(ts: &TestServer, key: &str, words: &[&str]) -> String {
    let url = upload(ts, key, super::common::script(words)).await;
    let t = create(ts, key, serde_json::json!({ "audio_url": url })).await;
    t["id"].as_str().unwrap().to_string()
}

/// `GET /v2/transcript?<query>` (asserting 200).
pub async fn list(ts: &TestServer, key: &str, query: &str) -> Value {
    let r = get(ts, key, &format!("/v2/transcript?{query}")).await;
    assert_eq!(r.status, 200, "list {query}: {}", r.text);
    r.json()
}

/// The ids of a list body, in order.
pub fn ids(list: &Value) -> Vec<String> {
    list["transcripts"]
        .as_array()
        .expect("transcripts array")
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every regular file below `dir` (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

pub fn uploads_dir(ts: &TestServer) -> PathBuf {
    ts.config.data_dir.join("uploads")
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff`, no timezone.
pub fn is_aai_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 26
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            _ => c.is_ascii_digit(),
        })
}

/// The upload id at the end of an upload URL.
pub fn upload_id(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}
