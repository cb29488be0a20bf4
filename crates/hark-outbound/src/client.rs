//! The outbound HTTP client: every connection, including those of redirects, goes
//! through a resolver that vets the addresses it returns against the SSRF policy.
//!
//! reqwest skips its resolver for URLs whose host is an IP literal, so those are
//! checked before each request ([`OutboundClient::check_url`]) and in the redirect
//! policy. System proxies are never used: a proxy would make the policy judge the
//! proxy's address instead of the target's.

use crate::error::OutboundError;
use crate::policy::OutboundPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::sync::Arc;
use std::time::Duration;
use url::{Host, Url};

/// At most this many redirects are followed (downloads only; webhooks follow none).
pub const MAX_REDIRECTS: usize = 5;

/// The default time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const USER_AGENT: &str = concat!("hark/", env!("CARGO_PKG_VERSION"));

/// An SSRF-safe HTTP client; cheap to clone.
#[derive(Clone)]
pub struct OutboundClient {
    policy: Arc<OutboundPolicy>,
    following: reqwest::Client,
    direct: reqwest::Client,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client under `policy` with the default connect timeout.
    pub fn new(policy: OutboundPolicy) -> Result<Self, OutboundError> {
        Self::with_connect_timeout(policy, DEFAULT_CONNECT_TIMEOUT)
    }

    /// A client under `policy` that gives up connecting after `connect_timeout`.
    pub fn with_connect_timeout(
        policy: OutboundPolicy,
        connect_timeout: Duration,
    ) -> Result<Self, OutboundError> {
        let policy = Arc::new(policy);
        let resolver = Arc::new(PolicyResolver {
            policy: policy.clone(),
        });
        let redirect_policy = policy.clone();
        let following = base_builder(resolver.clone(), connect_timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(OutboundError::TooManyRedirects(MAX_REDIRECTS));
                }
                match check_url_with(&redirect_policy, attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .build()
            .map_err(|e| OutboundError::Network(format!("cannot build HTTP client: {e}")))?;
        let direct = base_builder(resolver, connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| OutboundError::Network(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            policy,
            following,
            direct,
        })
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// Parses `url` and checks what can be checked before connecting: the scheme, the
    /// host, and the address when the host is an IP literal.
    pub fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        let parsed =
            Url::parse(url).map_err(|e| OutboundError::BadUrl(format!("cannot parse: {e}")))?;
        check_url_with(&self.policy, &parsed)?;
        Ok(parsed)
    }

    /// The client that follows up to [`MAX_REDIRECTS`] redirects, each re-checked.
    pub(crate) fn following(&self) -> &reqwest::Client {
        &self.following
    }

    /// The client that follows no redirect.
    pub(crate) fn direct(&self) -> &reqwest::Client {
        &self.direct
    }
}

fn base_builder(
    resolver: Arc<PolicyResolver>,
    connect_timeout: Duration,
) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .dns_resolver(resolver)
        .connect_timeout(connect_timeout)
        .user_agent(USER_AGENT)
}

fn check_url_with(policy: &OutboundPolicy, url: &Url) -> Result<(), OutboundError> {
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(OutboundError::BadUrl(format!(
                "scheme {other:?} is not allowed (only http and https)"
            )))
        }
    }
    let host = url
        .host()
        .ok_or_else(|| OutboundError::BadUrl("the URL has no host".into()))?;
    let host_text = url.host_str().unwrap_or_default();
    if policy.is_allowed_host(host_text) {
        return Ok(());
    }
    match host {
        Host::Ipv4(ip) => policy.check_ip(ip.into()),
        Host::Ipv6(ip) => policy.check_ip(ip.into()),
        // Names are vetted by the resolver, on the addresses actually connected to.
        Host::Domain(_) => Ok(()),
    }
}

/// The host of `url` for logs and messages (never its path, query or credentials).
pub fn log_host(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => "<no host>".into(),
        },
        Err(_) => "<unparsable URL>".into(),
    }
}

/// reqwest's resolver, refusing names that resolve to a forbidden address.
struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match policy.resolve(&host, 0).await {
                Ok(addrs) => {
                    let addrs: Addrs = Box::new(addrs.into_iter());
                    Ok(addrs)
                }
                Err(e) => {
                    tracing::warn!(host = %host, error = %e, "outbound connection refused");
                    Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}
