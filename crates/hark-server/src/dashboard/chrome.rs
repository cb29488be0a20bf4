//! The layout's data (`base.html`): title, asset URLs, the CSRF token for the header's
//! forms, the signed-in person, the account switcher and the account navigation.

use super::security::{FormToken, Signed};
use super::{NavItem, NAV};
use crate::management::MgmtResult;
use crate::AppState;
use hark_core::plan::role_allows;
use hark_core::Role;
use hark_store::Account;

#[derive(Debug, Clone)]
pub struct ChromeAccount {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub current: bool,
}

#[derive(Debug, Clone)]
pub struct NavLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

#[derive(Debug, Clone)]
pub struct Chrome {
    pub title: String,
    pub css: &'static str,
    pub js: &'static str,
    pub icon: &'static str,
    /// The CSRF token every form of the page carries.
    pub csrf: String,
    /// The signed-in person's email.
    pub user: Option<String>,
    /// Every account of the person (the switcher).
    pub accounts: Vec<ChromeAccount>,
    /// The account the page belongs to.
    pub account: Option<ChromeAccount>,
    pub nav: Vec<NavLink>,
    /// A one-line confirmation after a POST-redirect-GET (`?notice=`).
    pub notice: Option<&'static str>,
}

/// The confirmations a redirect may ask for, by key: the text never comes from the URL.
pub fn notice_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "password_changed" => "Your password was changed. Other sessions were signed out.",
        "password_set" => "Your password is set. Sign in with it.",
        "reset_sent" => {
            "If that email belongs to a login, a reset link is on its way. It works for an hour."
        }
        "mfa_disabled" => "Two-factor authentication is off.",
        "settings_saved" => "Saved.",
        "signed_out" => "You are signed out.",
        "welcome" => "Welcome! Your account is ready.",
        "joined" => "You joined the account.",
        "project_created" => "The project was created.",
        "project_renamed" => "The project was renamed.",
        "project_deleted" => "The project was deleted with its keys, transcripts and files.",
        "key_revoked" => "The key was revoked. The next request with it is refused.",
        "key_deleted" => "The key was deleted.",
        "invite_sent" => "The invite is on its way. It works for 7 days.",
        "invite_deleted" => "The invite was deleted; its link no longer works.",
        "role_changed" => "The role was changed.",
        "member_removed" => "The member was removed; their sessions ended.",
        "alert_saved" => "The alert is saved.",
        "alert_deleted" => "The alert was deleted.",
        "account_deleted" => "The account was deleted with everything in it.",
        "transcript_deleted" => "The transcript was deleted.",
        _ => return None,
    })
}

impl Chrome {
    /// A page for someone who is not signed in.
    pub fn public(title: &str) -> Self {
        let urls = &*super::assets::URLS;
        Chrome {
            title: title.to_string(),
            css: urls.css.as_str(),
            js: urls.js.as_str(),
            icon: urls.icon.as_str(),
            csrf: String::new(),
            user: None,
            accounts: Vec::new(),
            account: None,
            nav: Vec::new(),
            notice: None,
        }
    }

    /// With the token for the page's forms.
    pub fn with_token(mut self, token: &FormToken) -> Self {
        self.csrf = token.0.clone();
        self
    }

    pub fn with_notice(mut self, key: Option<&str>) -> Self {
        self.notice = key.and_then(notice_text);
        self
    }

    /// A page of a signed-in person: their accounts for the switcher.
    pub async fn signed_in(
        state: &AppState,
        me: &Signed,
        token: &FormToken,
        title: &str,
    ) -> MgmtResult<Self> {
        let mut chrome = Chrome::public(title).with_token(token);
        chrome.user = Some(me.user.email.clone());
        chrome.accounts = state
            .store
            .accounts_of_user(me.user.id)
            .await?
            .into_iter()
            .map(|a| ChromeAccount {
                current: me.session.current_account == Some(a.account_id),
                id: a.account_id.to_string(),
                name: a.account_name,
                role: a.role.as_str(),
            })
            .collect();
        Ok(chrome)
    }

    /// A page of `account`: its navigation as `role` may see it, `active` marking the
    /// entry whose `path` this page is.
    pub fn in_account(mut self, account: &Account, role: Role, active: &str) -> Self {
        let id = account.id.to_string();
        for a in &mut self.accounts {
            a.current = a.id == id;
        }
        self.account = Some(ChromeAccount {
            id: id.clone(),
            name: account.name.clone(),
            role: role.as_str(),
            current: true,
        });
        self.nav = NAV
            .iter()
            .filter(|item: &&NavItem| role_allows(role, item.permission))
            .map(|item| NavLink {
                label: item.label,
                href: format!("/accounts/{id}{}", item.path),
                active: item.path == active,
            })
            .collect();
        self
    }
}
