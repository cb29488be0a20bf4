//! Errors of the dashboard: the same [`MgmtError`] the JSON API answers with, rendered
//! as an HTML page (or, for "sign in first" and "enrol MFA first", a redirect to the
//! page that fixes it). Server faults are logged with their cause and shown only as a
//! generic text.

use super::chrome::Chrome;
use crate::management::MgmtError;
use askama::Template;
use axum::http::header::LOCATION;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum DashError {
    #[error(transparent)]
    Mgmt(#[from] MgmtError),
    /// Not signed in: go to the sign-in page, then back to `next`.
    #[error("sign in first")]
    SignIn { next: String },
    #[error("This form has expired or did not come from this site. Go back, reload the page and try again.")]
    Csrf,
    #[error("There is no such page.")]
    NotFound,
}

pub type DashResult<T> = Result<T, DashError>;

impl From<hark_store::StoreError> for DashError {
    fn from(e: hark_store::StoreError) -> Self {
        DashError::Mgmt(e.into())
    }
}

impl From<askama::Error> for DashError {
    fn from(e: askama::Error) -> Self {
        DashError::Mgmt(MgmtError::internal(format!("template: {e}")))
    }
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub message: String,
    /// A link onward: (href, label).
    pub link: Option<(String, String)>,
}

/// The HTTP status of a core error: the same as the JSON API's.
pub fn status_of(e: &MgmtError) -> StatusCode {
    crate::management::error::status(e)
}

/// A 303 to a local path (POST-redirect-GET).
pub fn see_other(path: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, path.to_string())]).into_response()
}

/// What a person is told for a management error (the JSON messages name API calls).
pub fn human_message(e: &MgmtError) -> String {
    match e {
        MgmtError::Unauthenticated => "Please sign in.".into(),
        MgmtError::BadCredentials => "The email or password is not right.".into(),
        MgmtError::WrongPassword => "The password is not right.".into(),
        MgmtError::MfaRequired | MgmtError::BadMfaCode | MgmtError::TotpCodeUsed => {
            "That code is not right, or was already used. Try the next code from your app.".into()
        }
        MgmtError::Throttled { .. } => {
            "Too many failed attempts. Wait a quarter of an hour and try again.".into()
        }
        MgmtError::Csrf => DashError::Csrf.to_string(),
        MgmtError::Forbidden { permission, role } => format!(
            "Your role ({}) does not allow this ({}).",
            role.as_str(),
            permission.as_str().replace('_', " ")
        ),
        MgmtError::MfaEnrollmentRequired => {
            "This account requires MFA for all members: set up an authenticator first.".into()
        }
        MgmtError::MfaSignInRequired => {
            "This account requires two-factor authentication, and this session signed in without it. Sign out, then sign in again with a code from your authenticator app.".into()
        }
        MgmtError::ReauthRequired => "Enter your password again to continue.".into(),
        MgmtError::NotFound(what) => format!("This {what} does not exist or is no longer valid."),
        MgmtError::MethodNotAllowed => "This page does not accept that request.".into(),
        MgmtError::Invalid(m) | MgmtError::Conflict(m) | MgmtError::LimitReached(m) => {
            let mut m = m.clone();
            if let Some(first) = m.get(..1) {
                let upper = first.to_uppercase();
                m.replace_range(..1, &upper);
            }
            m
        }
        MgmtError::Internal(_) => "Something went wrong on the server. Please try again.".into(),
    }
}

fn page(status: StatusCode, heading: &str, message: String) -> Response {
    page_with_link(status, heading, message, ("/", "Go to the start page"))
}

fn page_with_link(
    status: StatusCode,
    heading: &str,
    message: String,
    (href, label): (&str, &str),
) -> Response {
    let body = MessagePage {
        chrome: Chrome::public(heading),
        heading: heading.to_string(),
        message,
        link: Some((href.into(), label.into())),
    }
    .render();
    match body {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the error page failed");
            (status, "error").into_response()
        }
    }
}

impl IntoResponse for DashError {
    fn into_response(self) -> Response {
        match self {
            DashError::SignIn { next } => {
                let mut to = String::from("/signin");
                if next != "/" {
                    to.push_str("?next=");
                    to.push_str(
                        &url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>(),
                    );
                }
                see_other(&to)
            }
            DashError::Mgmt(MgmtError::Unauthenticated) => see_other("/signin"),
            DashError::Mgmt(MgmtError::MfaEnrollmentRequired) => {
                see_other("/profile/mfa?required=1")
            }
            // The profile page carries the sign-out button.
            DashError::Mgmt(e @ MgmtError::MfaSignInRequired) => page_with_link(
                status_of(&e),
                "Sign in again",
                human_message(&e),
                ("/profile", "Go to your profile to sign out"),
            ),
            DashError::Csrf => page(
                StatusCode::FORBIDDEN,
                "Form refused",
                DashError::Csrf.to_string(),
            ),
            DashError::NotFound => page(
                StatusCode::NOT_FOUND,
                "Not found",
                DashError::NotFound.to_string(),
            ),
            DashError::Mgmt(e) => {
                if let MgmtError::Internal(cause) = &e {
                    tracing::error!(%cause, "dashboard request failed");
                }
                let heading = match status_of(&e) {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::TOO_MANY_REQUESTS => "Slow down",
                    StatusCode::INTERNAL_SERVER_ERROR => "Server error",
                    _ => "That did not work",
                };
                page(status_of(&e), heading, human_message(&e))
            }
        }
    }
}
