//! Injected time, so expiry and lease logic is tested without sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch; the storage representation of every instant.
pub type Millis = i64;

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> Millis;

    fn now(&self) -> OffsetDateTime {
        from_millis(self.now_ms())
    }
}

/// Converts stored milliseconds to a UTC date-time (clamped to the representable range).
pub fn from_millis(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as Millis
    }
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start_ms: Millis) -> Self {
        Self(AtomicI64::new(start_ms))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
    pub fn set_ms(&self, ms: Millis) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The starts of the UTC calendar month holding `ms` and of the month after it.
pub fn month_bounds(ms: Millis) -> (Millis, Millis) {
    use time::{Date, Month, PrimitiveDateTime, Time};
    let t = from_millis(ms);
    let first = |y: i32, m: Month| {
        let d = Date::from_calendar_date(y, m, 1).unwrap_or(t.date());
        let at = PrimitiveDateTime::new(d, Time::MIDNIGHT).assume_utc();
        (at.unix_timestamp_nanos() / 1_000_000) as Millis
    };
    let (ny, nm) = match t.month() {
        Month::December => (t.year() + 1, Month::January),
        m => (t.year(), m.next()),
    };
    (first(t.year(), t.month()), first(ny, nm))
}

#[cfg(test)]
mod tests {
    #[test]
    fn month_bounds_follow_the_calendar() {
        // 2027-01-15T08:00:00Z; January 2027 starts 1 798 761 600 s after the epoch.
        let (start, next) = super::month_bounds(1_800_000_000_000);
        assert_eq!(start, 1_798_761_600_000);
        assert_eq!(next, start + 31 * 86_400_000);
        let (dec, jan) = super::month_bounds(start - 1);
        assert_eq!((jan, start - dec), (start, 31 * 86_400_000));
    }
}
