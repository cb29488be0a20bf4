//! The per-client-address budget of unknown API keys: each well-formed key the key
//! cache cannot answer costs a database query, so a client presenting many distinct
//! unknown keys (guessing, or flooding the database) may spend only so many such
//! lookups per window; past that its uncached keys are refused with 429 without a
//! query. Addresses are counted as the sign-in throttle counts them (IPv6 per /64);
//! time is the injected clock's.

use crate::client_addr::address_key;
use hark_core::clock::Millis;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Above this many counted addresses the budget forgets finished windows first, then
/// starts over, bounding its memory.
const MAX_ADDRESSES: usize = 100_000;

/// One address's lookups in its current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Millis,
    spent: u32,
}

/// How many database lookups of keys that turn out unknown each client address may
/// cause per window. A lookup is charged *before* the query, so concurrent requests
/// cannot together pass the limit, and refunded when the key turns out to exist: keys
/// that work never use up the budget.
pub struct UnknownKeyBudget {
    /// Unknown-key lookups allowed per address and window; 0 turns the budget off.
    limit: u32,
    window_ms: Millis,
    windows: Mutex<HashMap<String, Window>>,
}

/// A lookup charged to an address (see [`UnknownKeyBudget::charge`]).
#[derive(Debug)]
pub struct Charge {
    address: String,
    window_started: Millis,
}

impl UnknownKeyBudget {
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self {
            limit,
            window_ms: (window_secs.max(1) as Millis).saturating_mul(1000),
            windows: Mutex::default(),
        }
    }

    /// Charges one lookup to `client`'s address. `Ok(None)` when nothing is counted
    /// (the budget is off, or the address is unknown); `Err(retry_after_secs)` when
    /// the address has spent its budget for this window (nothing is charged then).
    pub fn charge(&self, client: Option<IpAddr>, now: Millis) -> Result<Option<Charge>, u64> {
        let Some(client) = client.filter(|_| self.limit > 0) else {
            return Ok(None);
        };
        let address = address_key(client);
        let Ok(mut windows) = self.windows.lock() else {
            return Ok(None);
        };
        if windows.len() >= MAX_ADDRESSES && !windows.contains_key(&address) {
            let window_ms = self.window_ms;
            windows.retain(|_, w| now - w.started < window_ms);
            if windows.len() >= MAX_ADDRESSES {
                windows.clear();
            }
        }
        let window = windows.entry(address.clone()).or_insert(Window {
            started: now,
            spent: 0,
        });
        if now - window.started >= self.window_ms || now < window.started {
            *window = Window {
                started: now,
                spent: 0,
            };
        }
        if window.spent >= self.limit {
            let left_ms = (window.started + self.window_ms - now).max(1000);
            return Err((left_ms as u64).div_ceil(1000));
        }
        window.spent += 1;
        Ok(Some(Charge {
            address,
            window_started: window.started,
        }))
    }

    /// The key looked up existed: its lookup does not count.
    pub fn refund(&self, charge: Charge) {
        if let Ok(mut windows) = self.windows.lock() {
            if let Some(w) = windows.get_mut(&charge.address) {
                if w.started == charge.window_started {
                    w.spent = w.spent.saturating_sub(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("address"))
    }

    #[test]
    fn an_address_spends_its_budget_per_window_and_refunds_keys_that_exist() {
        let budget = UnknownKeyBudget::new(3, 60);
        let t = 1_000_000;
        for _ in 0..3 {
            assert!(budget.charge(ip("192.0.2.1"), t).expect("within").is_some());
        }
        assert_eq!(budget.charge(ip("192.0.2.1"), t + 1_500).err(), Some(59));
        // Another address has its own budget; an unknown address is not counted.
        assert!(budget.charge(ip("192.0.2.2"), t).is_ok());
        assert!(matches!(budget.charge(None, t), Ok(None)));
        // The next window starts afresh.
        let next = budget
            .charge(ip("192.0.2.1"), t + 60_000)
            .expect("new window");
        // A key that existed gives its lookup back.
        budget.refund(next.expect("charged"));
        for _ in 0..3 {
            assert!(budget.charge(ip("192.0.2.1"), t + 60_001).is_ok());
        }
        assert!(budget.charge(ip("192.0.2.1"), t + 60_002).is_err());
    }

    #[test]
    fn ipv6_clients_share_the_budget_of_their_64_and_zero_turns_it_off() {
        let budget = UnknownKeyBudget::new(1, 60);
        assert!(budget.charge(ip("2001:db8:1:2::1"), 0).is_ok());
        assert!(budget.charge(ip("2001:db8:1:2:ffff::9"), 0).is_err());
        assert!(budget.charge(ip("2001:db8:1:3::1"), 0).is_ok());
        let off = UnknownKeyBudget::new(0, 60);
        for _ in 0..1000 {
            assert!(matches!(off.charge(ip("192.0.2.1"), 0), Ok(None)));
        }
    }
}
