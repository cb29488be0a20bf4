//! The errors of outbound requests; none of them carries a URL's path, query or
//! credentials, so they are safe to log and to store.

/// Why an outbound request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// The target (or a redirect's target) resolves to an address the SSRF policy refuses.
    #[error("forbidden address: {0}")]
    Forbidden(String),
    /// The URL cannot be used: unparsable, no host, or not http/https.
    #[error("bad URL: {0}")]
    BadUrl(String),
    /// The server answered with a status other than 2xx.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body is larger than the limit allows.
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The request did not finish in time.
    #[error("timed out")]
    Timeout,
    /// More redirects than allowed.
    #[error("too many redirects (at most {0})")]
    TooManyRedirects(usize),
    /// Connecting, resolving, TLS or the transfer failed.
    #[error("network error: {0}")]
    Network(String),
    /// Writing the local file failed.
    #[error("local I/O error: {0}")]
    Io(String),
}

impl OutboundError {
    /// Maps a reqwest error, recovering this crate's own errors raised inside reqwest
    /// (by the resolver or the redirect policy) and never keeping the URL.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if let Some(own) = find_own(&err) {
            return own;
        }
        if err.is_timeout() {
            return Self::Timeout;
        }
        if err.is_builder() {
            return Self::BadUrl(describe(&err.without_url()));
        }
        Self::Network(describe(&err.without_url()))
    }
}

fn find_own(err: &(dyn std::error::Error + 'static)) -> Option<OutboundError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(own) = e.downcast_ref::<OutboundError>() {
            return Some(own.clone());
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(own) = inner.downcast_ref::<OutboundError>() {
                    return Some(own.clone());
                }
            }
        }
        current = e.source();
    }
    None
}

/// The error and its causes on one line.
fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
