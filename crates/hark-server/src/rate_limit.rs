//! The per-account REST request limit: shared by every node through Redis when
//! `redis_url` is set (one atomic GCRA script per check, on Redis's clock), else per
//! node. A node that cannot reach Redis falls back to its own limiter (failing open to
//! the per-node budget) and says so in its log and metrics until Redis answers again.

use crate::error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hark_core::AccountId;
use std::num::NonZeroU32;
#[cfg(feature = "redis")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
#[cfg(feature = "redis")]
use tokio::sync::Mutex;

/// A check that takes longer than this counts as Redis being unreachable.
#[cfg(feature = "redis")]
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failure, Redis is tried again no sooner than this.
#[cfg(feature = "redis")]
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// GCRA over one key: the stored value is the theoretical arrival time (µs, on Redis's
/// clock); a request is allowed while it is no further than `tolerance` ahead of now.
/// Returns `{1, 0}` when allowed, `{0, wait_µs}` when not.
#[cfg(feature = "redis")]
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
local new_tat = tat + period
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// The Redis side: a connection made on first use and remade after failures.
#[cfg(feature = "redis")]
struct Shared {
    client: redis::Client,
    connection: Mutex<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    retry_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// Whether the last check fell back to the local limiter (for the log and metrics).
    degraded: AtomicBool,
}

/// A build without the `redis` feature never shares its limit (`redis_url` is refused).
#[cfg(not(feature = "redis"))]
enum Shared {}

pub struct AccountRateLimiter {
    local: DefaultKeyedRateLimiter<AccountId>,
    shared: Option<Shared>,
    period_us: u64,
    tolerance_us: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("redis_url: {0}")]
pub struct RateLimitConfigError(String);

impl AccountRateLimiter {
    /// `requests` per `window`, per account; across nodes when `redis_url` is set.
    pub fn new(
        requests: u32,
        window: Duration,
        redis_url: Option<&str>,
    ) -> Result<Self, RateLimitConfigError> {
        let requests = NonZeroU32::new(requests.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = (window / requests.get()).max(Duration::from_micros(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(requests))
            .allow_burst(requests);
        let shared = redis_url
            .filter(|u| !u.is_empty())
            .map(Shared::open)
            .transpose()?;
        let period_us = period.as_micros().max(1) as u64;
        Ok(Self {
            local: RateLimiter::keyed(quota),
            shared,
            period_us,
            tolerance_us: period_us * u64::from(requests.get() - 1),
        })
    }

    /// Whether the limit holds across nodes (Redis configured).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Whether the last check had to fall back to this node's own limiter.
    pub fn is_degraded(&self) -> bool {
        self.shared.as_ref().is_some_and(Shared::is_degraded)
    }

    pub async fn check(&self, account: AccountId) -> Result<(), ApiError> {
        if let Some(shared) = &self.shared {
            if let Some(verdict) = shared
                .check(account, self.period_us, self.tolerance_us)
                .await
            {
                return verdict;
            }
        }
        self.check_local(account)
    }

    fn check_local(&self, account: AccountId) -> Result<(), ApiError> {
        self.local.check_key(&account).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::TooManyRequests {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
        })
    }
}

#[cfg(feature = "redis")]
impl Shared {
    fn open(url: &str) -> Result<Self, RateLimitConfigError> {
        let client = redis::Client::open(url).map_err(|e| RateLimitConfigError(e.to_string()))?;
        Ok(Self {
            client,
            connection: Mutex::new(None),
            script: redis::Script::new(GCRA_SCRIPT),
            retry_at: std::sync::Mutex::new(None),
            degraded: AtomicBool::new(false),
        })
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// The shared verdict, or `None` when Redis is resting or failed (the caller falls
    /// back to its own limiter).
    async fn check(
        &self,
        account: AccountId,
        period_us: u64,
        tolerance_us: u64,
    ) -> Option<Result<(), ApiError>> {
        if self.resting() {
            return None;
        }
        match self.ask(account, period_us, tolerance_us).await {
            Ok(verdict) => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis answers again: the rate limit is shared by all nodes");
                    crate::telemetry::rate_limit_degraded(false);
                }
                Some(verdict)
            }
            Err(e) => {
                if let Ok(mut retry_at) = self.retry_at.lock() {
                    *retry_at = Some(std::time::Instant::now() + REDIS_RETRY);
                }
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "Redis unreachable: the rate limit falls back to this node's own limiter");
                    crate::telemetry::rate_limit_degraded(true);
                }
                crate::telemetry::redis_error();
                None
            }
        }
    }

    async fn ask(
        &self,
        account: AccountId,
        period_us: u64,
        tolerance_us: u64,
    ) -> Result<Result<(), ApiError>, String> {
        let attempt = async {
            let mut slot = self.connection.lock().await;
            let connection = match slot.as_ref() {
                Some(c) => c.clone(),
                None => {
                    let c = redis::aio::ConnectionManager::new(self.client.clone())
                        .await
                        .map_err(|e| e.to_string())?;
                    *slot = Some(c.clone());
                    c
                }
            };
            drop(slot);
            let mut connection = connection;
            let (allowed, wait_us): (i64, i64) = self
                .script
                .key(format!("hark:rate:{account}"))
                .arg(period_us)
                .arg(tolerance_us)
                .invoke_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((allowed, wait_us))
        };
        let outcome = match tokio::time::timeout(REDIS_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err("Redis did not answer in time".into()),
        };
        match outcome {
            Ok((1, _)) => Ok(Ok(())),
            Ok((_, wait_us)) => Ok(Err(ApiError::TooManyRequests {
                retry_after_secs: (wait_us.max(0) as u64).div_ceil(1_000_000).max(1),
            })),
            Err(e) => Err(e),
        }
    }

    /// Whether Redis failed so recently that it is not tried yet.
    fn resting(&self) -> bool {
        self.retry_at
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|at| std::time::Instant::now() < at)
    }
}

#[cfg(not(feature = "redis"))]
impl Shared {
    fn open(_: &str) -> Result<Self, RateLimitConfigError> {
        Err(RateLimitConfigError(hark_core::not_in_this_build(
            "Redis support",
            "redis",
        )))
    }

    fn is_degraded(&self) -> bool {
        match *self {}
    }

    async fn check(&self, _: AccountId, _: u64, _: u64) -> Option<Result<(), ApiError>> {
        match *self {}
    }
}
