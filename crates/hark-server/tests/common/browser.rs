//! A browser-like HTTP client for the dashboard's tests: no redirects followed, cookies
//! kept by hand, pages with their status, headers and body, and the form token read
//! from a page.

use super::TestServer;
use reqwest::header::{AsHeaderName, HeaderMap, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;

pub struct Browser<'a> {
    pub ts: &'a TestServer,
    pub http: reqwest::Client,
    pub cookies: Vec<(String, String)>,
}

pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.header(LOCATION)
    }

    /// A response header as text (empty when absent).
    pub fn header(&self, name: impl AsHeaderName) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The value of the hidden CSRF field of the page's first form.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = self
            .body
            .find(marker)
            .unwrap_or_else(|| panic!("no csrf field in: {}", self.body));
        let rest = &self.body[at + marker.len()..];
        rest[..rest.find('"').expect("end of value")].to_string()
    }
}

impl<'a> Browser<'a> {
    pub fn new(ts: &'a TestServer) -> Self {
        Self {
            ts,
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            cookies: Vec::new(),
        }
    }

    /// A browser holding the session of someone signed in through the JSON API.
    pub fn signed_in(ts: &'a TestServer, who: &super::mgmt::Person) -> Self {
        let mut b = Browser::new(ts);
        b.cookies.push(("hark_session".into(), who.token.clone()));
        b.cookies.push(("hark_csrf".into(), who.csrf.clone()));
        b
    }

    fn keep_cookies(&mut self, headers: &HeaderMap) {
        for v in headers.get_all(SET_COOKIE) {
            let text = v.to_str().expect("ascii cookie");
            let pair = text.split(';').next().expect("pair");
            let (k, val) = pair.split_once('=').expect("k=v");
            self.cookies.retain(|(name, _)| name != k);
            if !val.is_empty() && !text.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), val.to_string()));
            }
        }
    }

    pub async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            let jar = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req.header("cookie", jar)
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        self.keep_cookies(&headers);
        let body = r.text().await.expect("body");
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let req = self.http.get(self.ts.url(path));
        self.send(req).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.http.post(self.ts.url(path)).form(form);
        self.send(req).await
    }

    /// Signs in through the dashboard's form.
    pub async fn sign_in(&mut self, email: &str, password: &str) {
        let csrf = self.get("/signin").await.csrf();
        let done = self
            .post(
                "/signin",
                &[("csrf", &csrf), ("email", email), ("password", password)],
            )
            .await;
        assert_eq!(done.status, 303, "sign-in: {}", done.body);
    }
}
