//! The management API's route table — one list that both mounts the handlers and
//! generates the OpenAPI 3 document served at `/api/v1/openapi.json`, so the
//! document cannot drift from the router.

use super::{accounts, audit, keys, mfa, sessions};
use crate::AppState;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Json;
use hark_core::Permission;
use serde_json::{json, Map, Value};

/// How an endpoint authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Session,
}

/// One documented endpoint.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The permission the caller's role needs in the account of the path.
    pub permission: Option<Permission>,
    /// Request body fields (name, JSON type, required).
    pub body: &'static [(&'static str, &'static str, bool)],
    pub paginated: bool,
    pub success: u16,
}

const fn ep(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    auth: Auth,
    permission: Option<Permission>,
) -> Endpoint {
    Endpoint {
        method,
        path,
        summary,
        auth,
        permission,
        body: &[],
        paginated: false,
        success: 200,
    }
}

impl Endpoint {
    const fn body(mut self, body: &'static [(&'static str, &'static str, bool)]) -> Self {
        self.body = body;
        self
    }
    const fn paged(mut self) -> Self {
        self.paginated = true;
        self
    }
    const fn status(mut self, code: u16) -> Self {
        self.success = code;
        self
    }
}

/// Every route with its handler.
pub fn endpoints() -> Vec<(Endpoint, MethodRouter<AppState>)> {
    use Auth::{None as Open, Session};
    use Permission::*;
    vec![
        (ep("get", "/openapi.json", "This OpenAPI document", Open, None), get(document)),
        (
            ep("post", "/auth/login", "Log in; returns a session token and sets the session and CSRF cookies", Open, None)
                .body(&[("email", "string", true), ("password", "string", true), ("totp_code", "string", false), ("recovery_code", "string", false)]),
            post(sessions::login),
        ),
        (ep("post", "/auth/logout", "End this session", Session, None).status(204), post(sessions::logout)),
        (
            ep("post", "/auth/reauth", "Re-enter the password or a TOTP code (opens a 5-minute window for sensitive actions)", Session, None)
                .body(&[("password", "string", false), ("totp_code", "string", false)]),
            post(sessions::reauth),
        ),
        (ep("get", "/me", "The caller, their accounts and roles, and the current account", Session, None), get(sessions::me)),
        (
            ep("post", "/me/password", "Change the password (ends other sessions)", Session, None)
                .body(&[("current_password", "string", true), ("new_password", "string", true)])
                .status(204),
            post(sessions::change_password),
        ),
        (
            ep("post", "/me/account", "Switch the current account", Session, None).body(&[("account_id", "string", true)]),
            post(sessions::switch_account),
        ),
        (ep("post", "/me/mfa/totp", "Start TOTP enrolment (seed and otpauth URI)", Session, None), post(mfa::begin)),
        (ep("delete", "/me/mfa/totp", "Disable TOTP (needs recent re-authentication)", Session, None).status(204), delete(mfa::disable)),
        (
            ep("post", "/me/mfa/totp/confirm", "Confirm TOTP with a code; returns ten recovery codes", Session, None)
                .body(&[("code", "string", true)]),
            post(mfa::confirm),
        ),
        (
            ep("post", "/invites/accept", "Accept an invite with the mailed token", Open, None)
                .body(&[("token", "string", true), ("password", "string", true)]),
            post(accounts::accept_invite),
        ),
        (ep("get", "/accounts", "The caller's accounts", Session, None).paged(), get(accounts::list_accounts)),
        (ep("get", "/accounts/{account}", "An account", Session, Some(ViewProjects)), get(accounts::get_account)),
        (
            ep("patch", "/accounts/{account}", "Rename the account or set Require MFA for all members", Session, Some(ManageSettings))
                .body(&[("name", "string", false), ("require_mfa", "boolean", false)]),
            patch(accounts::update_account),
        ),
        (
            ep("delete", "/accounts/{account}", "Delete the account and everything in it (sole Owner, recent re-authentication)", Session, Some(DeleteAccount)).status(204),
            delete(accounts::delete_account),
        ),
        (ep("get", "/accounts/{account}/billing", "Plan, limits and billing email", Session, Some(ManageBilling)), get(accounts::billing)),
        (ep("get", "/accounts/{account}/usage", "Usage summary", Session, Some(ViewUsage)), get(audit::usage)),
        (ep("get", "/accounts/{account}/members", "Members with role and MFA status", Session, Some(ViewMembers)).paged(), get(accounts::list_members)),
        (
            ep("patch", "/accounts/{account}/members/{user}", "Change a member's role", Session, Some(ManageMembers))
                .body(&[("role", "string", true)])
                .status(204),
            patch(accounts::update_member),
        ),
        (
            ep("delete", "/accounts/{account}/members/{user}", "Remove a member (ends their sessions)", Session, Some(ManageMembers)).status(204),
            delete(accounts::remove_member),
        ),
        (ep("get", "/accounts/{account}/invites", "Pending invites", Session, Some(ViewMembers)).paged(), get(accounts::list_invites)),
        (
            ep("post", "/accounts/{account}/invites", "Invite an email (role defaults to reader)", Session, Some(ManageMembers))
                .body(&[("email", "string", true), ("role", "string", false)])
                .status(201),
            post(accounts::create_invite),
        ),
        (
            ep("delete", "/accounts/{account}/invites/{invite}", "Revoke a pending invite", Session, Some(ManageMembers)).status(204),
            delete(accounts::delete_invite),
        ),
        (ep("get", "/accounts/{account}/projects", "Projects", Session, Some(ViewProjects)).paged(), get(keys::list_projects)),
        (
            ep("post", "/accounts/{account}/projects", "Create a project", Session, Some(ManageProjects))
                .body(&[("name", "string", true)])
                .status(201),
            post(keys::create_project),
        ),
        (ep("get", "/accounts/{account}/projects/{project}", "A project", Session, Some(ViewProjects)), get(keys::get_project)),
        (
            ep("patch", "/accounts/{account}/projects/{project}", "Rename a project", Session, Some(ManageProjects)).body(&[("name", "string", true)]),
            patch(keys::rename_project),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}", "Delete a project with its keys, transcripts and files", Session, Some(ManageProjects)).status(204),
            delete(keys::delete_project),
        ),
        (
            ep("get", "/accounts/{account}/projects/{project}/transcripts", "Transcripts of a project", Session, Some(ViewTranscripts)).paged(),
            get(keys::list_transcripts),
        ),
        (ep("get", "/accounts/{account}/projects/{project}/keys", "API keys (masked)", Session, Some(ViewApiKeys)).paged(), get(keys::list_keys)),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys", "Create an API key (the secret is returned once)", Session, Some(ManageApiKeys))
                .body(&[("name", "string", true), ("expires_in_seconds", "integer", false), ("scopes", "array", false)])
                .status(201),
            post(keys::create_key),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}/keys/{key}", "Revoke an API key", Session, Some(ManageApiKeys)),
            delete(keys::revoke_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/reveal", "Reveal a key (recent re-authentication; audited)", Session, Some(RevealApiKeys)),
            post(keys::reveal_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/rotate", "Rotate a key with a grace period of 0 to 86400 s", Session, Some(ManageApiKeys))
                .body(&[("grace_seconds", "integer", true), ("name", "string", false)])
                .status(201),
            post(keys::rotate_key),
        ),
        (
            ep("get", "/accounts/{account}/audit", "Audit log (filters action, actor, since, until)", Session, Some(ViewAuditLog)).paged(),
            get(audit::list),
        ),
        (
            ep("get", "/accounts/{account}/audit/export", "Audit log as NDJSON", Session, Some(ViewAuditLog)),
            get(audit::export),
        ),
    ]
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}))
        .collect()
}

/// Builds the OpenAPI 3.0 document from [`endpoints`].
pub fn build() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (e, _) in endpoints() {
        let mut params = path_params(e.path);
        if e.paginated {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": super::MAX_PAGE}}));
            params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}));
        }
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{}_{}", e.method, e.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                e.success.to_string(): {"description": "Success"},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(p) = e.permission {
            op["x-permission"] = json!(p.as_str());
        }
        if e.auth == Auth::None {
            op["security"] = json!([]);
        }
        if !e.body.is_empty() {
            let mut props = Map::new();
            let mut required = Vec::new();
            for (name, ty, req) in e.body {
                let schema = if *ty == "array" {
                    json!({"type": "array", "items": {"type": "string"}})
                } else {
                    json!({"type": ty})
                };
                props.insert((*name).to_string(), schema);
                if *req {
                    required.push(*name);
                }
            }
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {
                "type": "object", "properties": props, "required": required}}}});
        }
        let entry = paths
            .entry(format!("/api/v1{}", e.path))
            .or_insert_with(|| json!({}));
        entry[e.method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Hark management API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "A hark_ses_ session token from /api/v1/auth/login"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE, "description": "Browsers; unsafe methods need the X-CSRF-Token header"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error", "code"], "properties": {
                "error": {"type": "string"}, "code": {"type": "string"}, "permission": {"type": "string"}}}},
        },
        "security": [{"session": []}, {"cookie": []}],
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(build())
}
