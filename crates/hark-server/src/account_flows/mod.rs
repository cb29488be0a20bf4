//! Sign-in and onboarding operations behind the dashboard (and usable by any other
//! front door): two-step sign-in with throttling, one-time links (first-run setup,
//! the Owner's set-password link, mailed password resets), invite acceptance,
//! self-service sign-up and TOTP enrolment views. Transport-free: typed inputs,
//! typed results, [`MgmtError`](crate::management::MgmtError) for every refusal.

pub mod links;
pub mod mfa;
pub mod signin;
pub mod signup;

/// Email addresses people type into forms: trimmed, with an `@`, no spaces.
pub fn valid_email(email: &str) -> bool {
    let email = email.trim();
    !email.is_empty()
        && email.len() <= 254
        && email.contains('@')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}
