//! Signing in in two steps, as a browser form does: email and password first, then,
//! when the person has MFA, a TOTP or recovery code. Both steps are one call of
//! [`sessions::login`] (so throttling, failure records and the session are that
//! rule's): between them the browser carries a ticket, the email and password sealed
//! under the master key for a few minutes, so nothing about a half-finished sign-in is
//! stored and the password is never readable outside the server.

use super::sessions::{self, LoginInput, NewLogin};
use super::{Error, Result};
use crate::AppState;
use hark_core::keys::Secret;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// How long the second step may follow the first.
pub const TICKET_TTL_MS: i64 = 5 * 60_000;
const TICKET_CONTEXT: &str = "sign-in-second-factor-ticket";

/// The outcome of the password step.
pub enum SignIn {
    Done(Box<NewLogin>),
    /// The password was right and the person has MFA: ask for a code with this ticket.
    SecondFactor {
        ticket: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Ticket {
    email: String,
    password: String,
    expires_at: i64,
}

/// The password step.
pub async fn sign_in(
    state: &AppState,
    email: &str,
    password: &Secret,
    addr: Option<IpAddr>,
) -> Result<SignIn> {
    let input = LoginInput {
        email: email.to_string(),
        password: password.clone(),
        totp_code: None,
        recovery_code: None,
    };
    match sessions::login(state, &input, addr).await {
        Ok(login) => Ok(SignIn::Done(Box::new(login))),
        // `login` checks the password before it asks for the second factor.
        Err(Error::MfaRequired) => {
            let ticket = Ticket {
                email: email.to_string(),
                password: password.expose().to_string(),
                expires_at: state.clock.now_ms() + TICKET_TTL_MS,
            };
            let json = serde_json::to_string(&ticket).map_err(Error::internal)?;
            Ok(SignIn::SecondFactor {
                ticket: state.master_key.seal(&json, TICKET_CONTEXT),
            })
        }
        Err(e) => Err(e),
    }
}

/// The second step: a TOTP code (six digits) or a recovery code, with the ticket.
pub async fn second_factor(
    state: &AppState,
    ticket: &str,
    code: &Secret,
    addr: Option<IpAddr>,
) -> Result<NewLogin> {
    let ticket: Ticket = state
        .master_key
        .open(ticket, TICKET_CONTEXT)
        .ok()
        .and_then(|json| serde_json::from_str(&json).ok())
        .filter(|t: &Ticket| t.expires_at > state.clock.now_ms())
        .ok_or_else(|| {
            Error::Invalid("this sign-in has expired: enter your email and password again".into())
        })?;
    let given = code.expose().trim();
    let is_totp = given.len() == hark_core::totp::DIGITS as usize
        && given.chars().all(|c| c.is_ascii_digit());
    let code = Some(Secret::new(given));
    let input = LoginInput {
        email: ticket.email,
        password: Secret::new(ticket.password),
        totp_code: if is_totp { code.clone() } else { None },
        recovery_code: if is_totp { None } else { code },
    };
    sessions::login(state, &input, addr).await
}
