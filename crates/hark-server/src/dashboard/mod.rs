//! The web dashboard served at `/`: server-rendered HTML (askama templates in
//! `templates/`), first-party CSS and ES modules embedded from `static/`, plain forms
//! that work without JavaScript (POST, redirect, GET). Handlers stay thin: extract the
//! form, call the management core (`crate::manage`), render a template or redirect.
//!
//! How to add a page (see also `docs/dashboard.md`):
//! 1. a file here with its handlers and an askama struct whose first field is
//!    `chrome: Chrome` (the layout's data) and a template `templates/<page>.html` that
//!    `{% extends "base.html" %}`;
//! 2. its routes in [`router`];
//! 3. for an account page, an entry in [`NAV`] (shown only to roles with its
//!    permission, and only because the page exists).
//!
//! Every route gets the security layer ([`security::guard`]): the strict CSP and other
//! headers, the session, and the CSRF check of every unsafe request.

pub mod account;
pub mod accounts;
pub mod alerts;
pub mod assets;
pub mod audit;
pub mod billing;
pub mod chrome;
pub mod error;
pub mod forms;
pub mod invite;
pub mod keys;
pub mod members;
pub mod password;
pub mod playground;
pub mod profile;
pub mod projects;
pub mod security;
pub mod settings;
pub mod setup;
pub mod signin;
pub mod signup;
pub mod transcripts;
pub mod usage;
pub mod webhooks;

use crate::AppState;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use hark_core::Permission;

pub use chrome::Chrome;
pub use error::{DashError, DashResult};
pub use security::{FormToken, MaybeMe, Me};

/// One entry of an account's navigation: `path` is relative to `/accounts/{id}`.
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    pub label: &'static str,
    pub path: &'static str,
    /// Roles without it do not see the entry (the page refuses them anyway).
    pub permission: Permission,
}

/// The account navigation, in order. Add a page's entry here when the page exists; a
/// link to a page that does not exist must never be shown.
pub const NAV: &[NavItem] = &[
    NavItem {
        label: "Overview",
        path: "",
        permission: Permission::ViewProjects,
    },
    NavItem {
        label: "Projects",
        path: "/projects",
        permission: Permission::ViewProjects,
    },
    NavItem {
        label: "API Keys",
        path: "/keys",
        permission: Permission::ViewApiKeys,
    },
    NavItem {
        label: "Members",
        path: "/members",
        permission: Permission::ViewMembers,
    },
    NavItem {
        label: "Security",
        path: "/security",
        permission: Permission::ManageSettings,
    },
    NavItem {
        label: "Account",
        path: "/settings",
        permission: Permission::ViewProjects,
    },
    NavItem {
        label: "Usage",
        path: "/usage",
        permission: Permission::ViewUsage,
    },
    NavItem {
        label: "Alerts",
        path: "/alerts",
        permission: Permission::ViewUsage,
    },
    NavItem {
        label: "Billing",
        path: "/billing",
        permission: Permission::ManageBilling,
    },
    NavItem {
        label: "Playground",
        path: "/playground",
        permission: Permission::RevealApiKeys,
    },
    NavItem {
        label: "Transcripts",
        path: "/transcripts",
        permission: Permission::ViewTranscripts,
    },
    NavItem {
        label: "Webhooks",
        path: "/webhooks",
        permission: Permission::ViewProjects,
    },
    NavItem {
        label: "Audit log",
        path: "/audit",
        permission: Permission::ViewAuditLog,
    },
];

/// The dashboard's routes, merged at `/` into the server's router.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/", get(accounts::home))
        .route("/accounts", get(accounts::list))
        .route("/accounts/switch", post(accounts::switch))
        .route("/accounts/{account}", get(accounts::overview))
        .route(
            "/accounts/{account}/security",
            get(settings::security).post(settings::set_require_mfa),
        )
        .route(
            "/accounts/{account}/projects",
            get(projects::list).post(projects::create),
        )
        .route(
            "/accounts/{account}/projects/{project}/rename",
            post(projects::rename),
        )
        .route(
            "/accounts/{account}/projects/{project}/delete",
            get(projects::delete_page).post(projects::delete),
        )
        .route("/accounts/{account}/keys", get(keys::list))
        .route(
            "/accounts/{account}/projects/{project}/keys",
            post(keys::create),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}",
            get(keys::show),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}/edit",
            post(keys::edit),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}/rotate",
            post(keys::rotate),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}/reveal",
            get(keys::reveal_page).post(keys::reveal),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}/revoke",
            get(keys::revoke_page).post(keys::revoke),
        )
        .route(
            "/accounts/{account}/projects/{project}/keys/{key}/delete",
            get(keys::delete_page).post(keys::delete),
        )
        .route("/accounts/{account}/members", get(members::list))
        .route("/accounts/{account}/members/invite", post(members::invite))
        .route(
            "/accounts/{account}/members/{user}/role",
            post(members::change_role),
        )
        .route(
            "/accounts/{account}/members/{user}/remove",
            get(members::remove_page).post(members::remove),
        )
        .route(
            "/accounts/{account}/invites/{invite}/delete",
            post(members::delete_invite),
        )
        .route(
            "/accounts/{account}/settings",
            get(account::page).post(account::rename),
        )
        .route(
            "/accounts/{account}/delete",
            get(account::delete_page).post(account::delete),
        )
        .route("/accounts/{account}/usage", get(usage::page))
        .route(
            "/accounts/{account}/alerts",
            get(alerts::page).post(alerts::create),
        )
        .route("/accounts/{account}/alerts/{id}/edit", post(alerts::update))
        .route(
            "/accounts/{account}/alerts/{id}/delete",
            post(alerts::delete),
        )
        .route("/accounts/{account}/billing", get(billing::page))
        .route(
            "/accounts/{account}/billing/statements/{month}",
            get(billing::statement),
        )
        .route("/accounts/{account}/playground", get(playground::page))
        .route(
            "/accounts/{account}/playground/upload",
            post(playground::upload),
        )
        .route(
            "/accounts/{account}/playground/token",
            post(playground::live_token),
        )
        .route(
            "/accounts/{account}/playground/transcripts/{id}",
            get(playground::transcript),
        )
        .route("/accounts/{account}/transcripts", get(transcripts::section))
        .route(
            "/accounts/{account}/projects/{project}/transcripts",
            get(transcripts::list),
        )
        .route(
            "/accounts/{account}/projects/{project}/transcripts/{id}",
            get(transcripts::detail),
        )
        .route(
            "/accounts/{account}/projects/{project}/transcripts/{id}/download/{format}",
            get(transcripts::download),
        )
        .route(
            "/accounts/{account}/projects/{project}/transcripts/{id}/delete",
            get(transcripts::confirm_delete).post(transcripts::delete),
        )
        .route("/accounts/{account}/webhooks", get(webhooks::section))
        .route(
            "/accounts/{account}/projects/{project}/webhooks",
            get(webhooks::page),
        )
        .route(
            "/accounts/{account}/projects/{project}/webhooks/reveal",
            post(webhooks::reveal),
        )
        .route(
            "/accounts/{account}/projects/{project}/webhooks/rotate",
            post(webhooks::rotate),
        )
        .route("/accounts/{account}/audit", get(audit::page))
        .route(
            "/accounts/{account}/audit/export.ndjson",
            get(audit::export_ndjson),
        )
        .route(
            "/accounts/{account}/audit/export.csv",
            get(audit::export_csv),
        )
        .route("/signin", get(signin::page).post(signin::submit))
        .route("/signin/code", post(signin::submit_code))
        .route("/signout", post(signin::sign_out))
        .route(
            "/forgot-password",
            get(password::forgot_page).post(password::forgot_submit),
        )
        .route(
            "/password/{token}",
            get(password::link_page).post(password::link_submit),
        )
        .route("/setup/{token}", get(setup::page).post(setup::submit))
        .route("/invite/{token}", get(invite::page).post(invite::submit))
        .route("/signup", get(signup::page).post(signup::submit))
        .route("/profile", get(profile::page))
        .route("/profile/password", post(profile::change_password))
        .route("/profile/mfa", get(profile::mfa_page))
        .route("/profile/mfa/start", post(profile::mfa_start))
        .route("/profile/mfa/confirm", post(profile::mfa_confirm))
        .route("/profile/mfa/disable", post(profile::mfa_disable))
        .route("/static/{file}", get(assets::serve))
        .layer(middleware::from_fn_with_state(state, security::guard))
}

/// A local path to go to after signing in: only same-site paths (`/...`, never
/// `//host` or a scheme), else the home page.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(char::is_control) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_site() {
        assert_eq!(safe_next(Some("/accounts/x")), "/accounts/x");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
