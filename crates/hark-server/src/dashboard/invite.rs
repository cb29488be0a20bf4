//! Invite acceptance from the mailed link: a new person sets a name and password; a
//! person who already has a login signs in and joins. Both land in the account.

use super::error::{human_message, see_other, status_of};
use super::signin::signed_in_redirect;
use super::{Chrome, DashError, DashResult, FormToken, MaybeMe};
use crate::manage::onboarding::{self as signup, InviteView};
use crate::manage::sessions::open_session;
use crate::management::MgmtError;
use crate::AppState;

/// How the new session's audit entry says the person proved who they are.
const LINK_AUDIT: &str = "invite";
use askama::Template;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use hark_core::keys::Secret;
use hark_store::SignInMethod;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "invite.html")]
pub struct InvitePage {
    pub chrome: Chrome,
    pub action: String,
    pub account_name: String,
    pub email: String,
    pub role: &'static str,
    /// Signed in as the invited person: one "Join" button.
    pub can_join: bool,
    /// Signed in as someone else: their email.
    pub other_user: Option<String>,
    /// Not signed in, and the email has a login: sign in first.
    pub sign_in_first: bool,
    pub name: String,
    pub error: Option<String>,
}

fn invite_gone() -> DashError {
    DashError::Mgmt(MgmtError::Invalid(
        "This invitation was already used, was withdrawn, or has expired. Ask for a new one."
            .into(),
    ))
}

fn render(
    chrome: Chrome,
    link: &str,
    view: InviteView,
    me: Option<&super::security::Signed>,
    name: String,
    error: Option<String>,
) -> DashResult<String> {
    let signed_email = me.map(|m| m.user.email.clone());
    let is_invitee =
        signed_email.as_deref() == Some(hark_store::normalize_email(&view.email).as_str());
    Ok(InvitePage {
        chrome,
        action: format!("/invite/{link}"),
        account_name: view.account_name,
        email: view.email,
        role: view.role.as_str(),
        can_join: is_invitee,
        other_user: signed_email.filter(|_| !is_invitee),
        sign_in_first: me.is_none() && view.existing_user,
        name,
        error,
    }
    .render()?)
}

/// `GET /invite/{token}`.
pub async fn page(
    State(state): State<AppState>,
    MaybeMe(me): MaybeMe,
    token: FormToken,
    Path(link): Path<String>,
) -> DashResult<Response> {
    let view = signup::invite_view(&state, &link)
        .await
        .map_err(|_| invite_gone())?;
    let chrome = match &me {
        Some(m) => Chrome::signed_in(&state, m, &token, "Invitation").await?,
        None => Chrome::public("Invitation").with_token(&token),
    };
    Ok(Html(render(
        chrome,
        &link,
        view,
        me.as_ref(),
        String::new(),
        None,
    )?)
    .into_response())
}

#[derive(Deserialize)]
pub struct AcceptForm {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub password: Secret,
}

/// `POST /invite/{token}`: join as the signed-in invitee, or create the login.
pub async fn submit(
    State(state): State<AppState>,
    MaybeMe(me): MaybeMe,
    token: FormToken,
    Path(link): Path<String>,
    Form(form): Form<AcceptForm>,
) -> DashResult<Response> {
    if let Some(me) = &me {
        let account = signup::accept_signed_in(&state, &me.user, &link).await?;
        state
            .store
            .set_session_account(me.session.id, account)
            .await?;
        return Ok(see_other(&format!("/accounts/{account}?notice=joined")));
    }
    match signup::accept_as_new_user(&state, &link, &form.name, &form.password).await {
        Ok((account, user)) => {
            let user = state
                .store
                .get_user(user)
                .await?
                .ok_or(MgmtError::NotFound("user"))?;
            let login = open_session(
                &state,
                &user,
                &format!("{}:{}", LINK_AUDIT, user.email),
                SignInMethod::Password,
            )
            .await?;
            state
                .store
                .set_session_account(login.session.id, account)
                .await?;
            signed_in_redirect(
                &state,
                &login,
                &format!("/accounts/{account}?notice=joined"),
            )
            .await
        }
        Err(e @ MgmtError::Invalid(_)) => {
            let view = signup::invite_view(&state, &link)
                .await
                .map_err(|_| invite_gone())?;
            let chrome = Chrome::public("Invitation").with_token(&token);
            let html = render(
                chrome,
                &link,
                view,
                None,
                form.name,
                Some(human_message(&e)),
            )?;
            Ok((status_of(&e), Html(html)).into_response())
        }
        Err(MgmtError::NotFound(_)) => Err(invite_gone()),
        Err(e) => Err(e.into()),
    }
}
