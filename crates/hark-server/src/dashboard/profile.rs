//! The signed-in person's profile: change the password; enrol a TOTP authenticator
//! after entering the password again (QR code drawn on the server as SVG, then ten
//! recovery codes shown once, and the person's other sessions signed out) or turn it
//! off after entering the password again.

use super::accounts::NoticeQuery;
use super::error::{human_message, see_other, status_of};
use super::forms::{on_form, reauth_with_password};
use super::{Chrome, DashResult, FormToken, Me};
use crate::manage::enrolment::pending_totp;
use crate::manage::mfa::{self, ConfirmInput};
use crate::manage::sessions::{self, PasswordChange, ReauthInput};
use crate::manage::{require_recent_reauth, Caller};
use crate::management::principal::ClientAddr;
use crate::management::MgmtError;
use crate::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::CACHE_CONTROL;
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "profile.html")]
pub struct ProfilePage {
    pub chrome: Chrome,
    pub email: String,
    pub name: String,
    pub mfa_enabled: bool,
    pub password_error: Option<String>,
    pub mfa_error: Option<String>,
}

async fn profile_page(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    notice: Option<&str>,
    password_error: Option<String>,
    mfa_error: Option<String>,
) -> DashResult<String> {
    Ok(ProfilePage {
        chrome: Chrome::signed_in(state, me, token, "Your profile")
            .await?
            .with_notice(notice),
        email: me.user.email.clone(),
        name: me.user.name.clone(),
        mfa_enabled: me.user.mfa_enabled,
        password_error,
        mfa_error,
    }
    .render()?)
}

/// `GET /profile`.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Query(q): Query<NoticeQuery>,
) -> DashResult<Response> {
    let html = profile_page(&state, &me, &token, q.notice.as_deref(), None, None).await?;
    Ok(Html(html).into_response())
}

#[derive(Deserialize)]
pub struct PasswordForm {
    pub current_password: Secret,
    pub new_password: Secret,
}

/// `POST /profile/password`: other sessions end; this one stays.
pub async fn change_password(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Form(form): Form<PasswordForm>,
) -> DashResult<Response> {
    let change = PasswordChange {
        current_password: form.current_password,
        new_password: form.new_password,
    };
    match sessions::change_password(&state, &me.caller(), &change, addr.0).await {
        Ok(_) => Ok(see_other("/profile?notice=password_changed")),
        Err(
            e @ (MgmtError::BadCredentials
            | MgmtError::WrongPassword
            | MgmtError::Invalid(_)
            | MgmtError::Throttled { .. }),
        ) => {
            let html =
                profile_page(&state, &me, &token, None, Some(human_message(&e)), None).await?;
            Ok((status_of(&e), Html(html)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Template)]
#[template(path = "mfa_enrol.html")]
pub struct EnrolPage {
    pub chrome: Chrome,
    pub required: bool,
    /// The pending enrolment: (QR code SVG, secret for typing by hand), shown only
    /// while the last re-authentication is recent (as the core asks of confirming it).
    pub pending: Option<(String, String)>,
    /// The start form asks for the password (no recent re-authentication).
    pub ask_password: bool,
    pub error: Option<String>,
}

#[derive(Deserialize)]
pub struct EnrolQuery {
    pub required: Option<String>,
}

/// The QR code of an `otpauth://` URI as an inline SVG (no script, no style).
pub fn qr_svg(uri: &str) -> Result<String, MgmtError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(MgmtError::internal)?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build();
    let start = svg.find("<svg").unwrap_or(0);
    Ok(svg[start..].replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code to scan with your authenticator app\" class=\"qr\" ",
        1,
    ))
}

async fn enrol_page(
    state: &AppState,
    caller: &Caller,
    me: &Me,
    token: &FormToken,
    required: bool,
    error: Option<(axum::http::StatusCode, String)>,
) -> DashResult<Response> {
    let recent = require_recent_reauth(state, caller).is_ok();
    let pending = match pending_totp(state, &me.user).await? {
        Some(p) if recent => Some((qr_svg(&p.uri)?, p.secret)),
        _ => None,
    };
    let (status, error) = match error {
        Some((status, message)) => (status, Some(message)),
        None => (axum::http::StatusCode::OK, None),
    };
    let page = EnrolPage {
        chrome: Chrome::signed_in(state, me, token, "Two-factor authentication").await?,
        required,
        pending,
        ask_password: !recent,
        error,
    };
    Ok((status, Html(page.render()?)).into_response())
}

/// `GET /profile/mfa`: start or finish enrolment (`?required=1` when an account of the
/// person requires MFA).
pub async fn mfa_page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Query(q): Query<EnrolQuery>,
) -> DashResult<Response> {
    if me.user.mfa_enabled {
        return Ok(see_other("/profile"));
    }
    enrol_page(
        &state,
        &me.caller(),
        &me,
        &token,
        q.required.is_some(),
        None,
    )
    .await
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    pub password: Option<Secret>,
}

/// `POST /profile/mfa/start`: the password again (unless re-entered in the last few
/// minutes), then a new seed (replacing an unconfirmed one).
pub async fn mfa_start(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Form(form): Form<StartForm>,
) -> DashResult<Response> {
    let started = match reauth_with_password(&state, addr, &me, form.password).await {
        Ok(caller) => mfa::begin(&state, &caller).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match started {
        Ok(()) => Ok(see_other("/profile/mfa")),
        Err(e) => {
            let shown = on_form(e)?;
            enrol_page(&state, &me.caller(), &me, &token, false, Some(shown)).await
        }
    }
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub chrome: Chrome,
    pub codes: Vec<String>,
    /// What happened to the person's other sessions.
    pub signed_out: String,
}

#[derive(Deserialize)]
pub struct CodeForm {
    pub code: Secret,
}

/// `POST /profile/mfa/confirm`: the first code turns MFA on; the ten recovery codes are
/// shown on this response only (never cached).
pub async fn mfa_confirm(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Form(form): Form<CodeForm>,
) -> DashResult<Response> {
    let caller = me.caller();
    let confirmed = mfa::confirm(&state, &caller, &ConfirmInput { code: form.code }).await;
    match confirmed {
        Ok(body) => {
            let page = RecoveryCodesPage {
                chrome: Chrome::signed_in(&state, &me, &token, "Recovery codes").await?,
                codes: body.recovery_codes,
                signed_out: mfa::signed_out_note(body.other_sessions_ended),
            };
            Ok(([(CACHE_CONTROL, "no-store")], Html(page.render()?)).into_response())
        }
        Err(e @ (MgmtError::BadMfaCode | MgmtError::ReauthRequired)) => {
            let shown = (status_of(&e), human_message(&e));
            enrol_page(&state, &caller, &me, &token, false, Some(shown)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct DisableForm {
    pub password: Secret,
}

/// `POST /profile/mfa/disable`: after the password is entered again.
pub async fn mfa_disable(
    State(state): State<AppState>,
    addr: ClientAddr,
    me: Me,
    token: FormToken,
    Form(form): Form<DisableForm>,
) -> DashResult<Response> {
    let reauth = ReauthInput {
        password: Some(form.password),
        totp_code: None,
    };
    let mut caller = me.caller();
    match sessions::reauth(&state, &caller, &reauth, addr.0).await {
        Ok(_) => {}
        Err(
            e @ (MgmtError::BadCredentials
            | MgmtError::WrongPassword
            | MgmtError::Invalid(_)
            | MgmtError::Throttled { .. }),
        ) => {
            let html =
                profile_page(&state, &me, &token, None, None, Some(human_message(&e))).await?;
            return Ok((status_of(&e), Html(html)).into_response());
        }
        Err(e) => return Err(e.into()),
    }
    // The re-authentication just stored this instant on the session.
    caller.session.reauth_at = Some(state.clock.now_ms());
    mfa::disable(&state, &caller).await?;
    Ok(see_other("/profile?notice=mfa_disabled"))
}
