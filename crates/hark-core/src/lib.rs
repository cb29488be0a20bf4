//! Hark's domain: identifiers, roles and permissions, plans and their limits, key and
//! token formats, secret sealing, the clock, and the speech-engine contract. No I/O.

pub mod clock;
pub mod ids;
pub mod keys;
pub mod money;
pub mod password;
pub mod plan;
pub mod scope;
pub mod seal;
pub mod speech;
pub mod totp;
pub mod units;
pub mod views;
pub mod webhook_sign;

#[cfg(test)]
mod proptests;

pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::*;
pub use plan::{Permission, Plan, PlanLimits, Role};

/// Why a build refuses a configuration that needs an optional Cargo feature it was built
/// without (`postgres`, `s3`, `redis`: the many-nodes stack, which `scripts/serve.sh`
/// leaves out). `what` names the missing support, e.g. "PostgreSQL support".
pub fn not_in_this_build(what: &str, feature: &str) -> String {
    format!(
        "this build of Hark has no {what}: build it with the `{feature}` feature (the \
         default; scripts/serve.sh leaves it out unless HARK_FEATURES names it)"
    )
}
