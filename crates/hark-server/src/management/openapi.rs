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
    /// The component schema of the success body (a page of it when `paginated`).
    pub response: Option<&'static str>,
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
        response: None,
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
    const fn returns(mut self, schema: &'static str) -> Self {
        self.response = Some(schema);
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
            ep("post", "/auth/login", "Log in; returns a session token and sets the session and CSRF cookies", Open, None).returns("LoginResult")
                .body(&[("email", "string", true), ("password", "string", true), ("totp_code", "string", false), ("recovery_code", "string", false), ("return_token", "boolean", false)]),
            post(sessions::login),
        ),
        (ep("post", "/auth/logout", "End this session", Session, None).status(204), post(sessions::logout)),
        (
            ep("post", "/auth/reauth", "Re-enter the password or a TOTP code (opens a 5-minute window for sensitive actions)", Session, None).returns("Reauthenticated")
                .body(&[("password", "string", false), ("totp_code", "string", false)]),
            post(sessions::reauth),
        ),
        (ep("get", "/me", "The caller, their accounts and roles, and the current account", Session, None).returns("Profile"), get(sessions::me)),
        (
            ep("post", "/me/password", "Change the password (ends other sessions)", Session, None)
                .body(&[("current_password", "string", true), ("new_password", "string", true)])
                .status(204),
            post(sessions::change_password),
        ),
        (
            ep("post", "/me/account", "Switch the current account", Session, None).returns("Profile").body(&[("account_id", "string", true)]),
            post(sessions::switch_account),
        ),
        (ep("post", "/me/mfa/totp", "Start TOTP enrolment (seed and otpauth URI)", Session, None).returns("TotpEnrolment"), post(mfa::begin)),
        (ep("delete", "/me/mfa/totp", "Disable TOTP (needs recent re-authentication)", Session, None).status(204), delete(mfa::disable)),
        (
            ep("post", "/me/mfa/totp/confirm", "Confirm TOTP with a code; returns ten recovery codes", Session, None).returns("RecoveryCodes")
                .body(&[("code", "string", true)]),
            post(mfa::confirm),
        ),
        (
            ep("post", "/invites/accept", "Accept an invite with the mailed token", Open, None).returns("InviteAccepted")
                .body(&[("token", "string", true), ("password", "string", true)]),
            post(accounts::accept_invite),
        ),
        (ep("get", "/accounts", "The caller's accounts", Session, None).returns("AccountMembership").paged(), get(accounts::list_accounts)),
        (ep("get", "/accounts/{account}", "An account", Session, Some(ViewProjects)).returns("Account"), get(accounts::get_account)),
        (
            ep("patch", "/accounts/{account}", "Rename the account or set Require MFA for all members", Session, Some(ManageSettings)).returns("Account")
                .body(&[("name", "string", false), ("require_mfa", "boolean", false)]),
            patch(accounts::update_account),
        ),
        (
            ep("delete", "/accounts/{account}", "Delete the account and everything in it (sole Owner, recent re-authentication)", Session, Some(DeleteAccount)).status(204),
            delete(accounts::delete_account),
        ),
        (ep("get", "/accounts/{account}/billing", "Plan, limits and billing email", Session, Some(ManageBilling)).returns("Billing"), get(accounts::billing)),
        (ep("get", "/accounts/{account}/usage", "Usage and spend report: ?from=&to=&granularity=hour|day|month&group_by=product|model|project|api_key, repeatable project, api_key, model, product filters", Session, Some(ViewUsage)).returns("UsageReport"), get(crate::usage::api::usage_json)),
        (ep("get", "/accounts/{account}/usage.csv", "The same usage report as CSV", Session, Some(ViewUsage)), get(crate::usage::api::usage_csv)),
        (ep("get", "/accounts/{account}/alerts", "Usage alerts and when each last fired", Session, Some(ViewUsage)).returns("Alert").paged(), get(crate::usage::api::list_alerts)),
        (
            ep("post", "/accounts/{account}/alerts", "Create an alert: balance_below or month_spend_above an amount, or daily_audio_above hours for one project or key; optionally a signed webhook", Session, Some(ManageAlerts)).returns("Alert").status(201)
                .body(&[("kind", "string", true), ("threshold", "string", true), ("project_id", "string", false), ("api_key_id", "string", false), ("webhook_url", "string", false)]),
            post(crate::usage::api::create_alert),
        ),
        (
            ep("patch", "/accounts/{account}/alerts/{alert}", "Change an alert's threshold (re-arms it) or webhook", Session, Some(ManageAlerts)).returns("Alert")
                .body(&[("threshold", "string", false), ("webhook_url", "string", false)]),
            patch(crate::usage::api::update_alert),
        ),
        (ep("delete", "/accounts/{account}/alerts/{alert}", "Delete an alert", Session, Some(ManageAlerts)).status(204), delete(crate::usage::api::delete_alert)),
        (ep("get", "/accounts/{account}/statements", "Months with a billing statement, newest first", Session, Some(ManageBilling)).returns("StatementMonths"), get(crate::usage::api::list_statements)),
        (ep("get", "/accounts/{account}/statements/{month}", "The statement of a month (YYYY-MM): line items by product, model and project, credits, balances; frozen once the month is closed", Session, Some(ManageBilling)).returns("IssuedStatement"), get(crate::usage::api::statement_json)),
        (ep("get", "/accounts/{account}/statements/{month}/csv", "The same statement as CSV", Session, Some(ManageBilling)), get(crate::usage::api::statement_csv)),
        (ep("get", "/accounts/{account}/balance", "Credit balance, the month's spend and the credit ledger", Session, Some(ManageBilling)).returns("Balance"), get(crate::usage::api::balance_json)),
        (ep("get", "/accounts/{account}/members", "Members with role and MFA status", Session, Some(ViewMembers)).returns("Member").paged(), get(accounts::list_members)),
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
        (ep("get", "/accounts/{account}/invites", "Pending invites", Session, Some(ViewMembers)).returns("Invite").paged(), get(accounts::list_invites)),
        (
            ep("post", "/accounts/{account}/invites", "Invite an email (role defaults to reader)", Session, Some(ManageMembers)).returns("Invite")
                .body(&[("email", "string", true), ("role", "string", false)])
                .status(201),
            post(accounts::create_invite),
        ),
        (
            ep("delete", "/accounts/{account}/invites/{invite}", "Revoke a pending invite", Session, Some(ManageMembers)).status(204),
            delete(accounts::delete_invite),
        ),
        (ep("get", "/accounts/{account}/projects", "Projects", Session, Some(ViewProjects)).returns("Project").paged(), get(keys::list_projects)),
        (
            ep("post", "/accounts/{account}/projects", "Create a project", Session, Some(ManageProjects)).returns("Project")
                .body(&[("name", "string", true)])
                .status(201),
            post(keys::create_project),
        ),
        (ep("get", "/accounts/{account}/projects/{project}", "A project", Session, Some(ViewProjects)).returns("Project"), get(keys::get_project)),
        (
            ep("patch", "/accounts/{account}/projects/{project}", "Rename a project", Session, Some(ManageProjects)).returns("Project").body(&[("name", "string", true)]),
            patch(keys::rename_project),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}", "Delete a project with its keys, transcripts and files", Session, Some(ManageProjects)).status(204),
            delete(keys::delete_project),
        ),
        (
            ep("get", "/accounts/{account}/projects/{project}/transcripts", "Transcripts of a project", Session, Some(ViewTranscripts)).returns("TranscriptSummary").paged(),
            get(keys::list_transcripts),
        ),
        (ep("get", "/accounts/{account}/projects/{project}/keys", "API keys (masked), with last use and traffic", Session, Some(ViewApiKeys)).returns("ListedApiKey").paged(), get(keys::list_keys)),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys", "Create an API key (the secret is returned once)", Session, Some(ManageApiKeys)).returns("NewApiKey")
                .body(&[("name", "string", true), ("expires_in_seconds", "integer", false), ("scopes", "array", false)])
                .status(201),
            post(keys::create_key),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}/keys/{key}", "Revoke an API key", Session, Some(ManageApiKeys)).returns("ApiKey"),
            delete(keys::revoke_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/reveal", "Reveal a key (recent re-authentication; audited)", Session, Some(RevealApiKeys)).returns("RevealedKey"),
            post(keys::reveal_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/rotate", "Rotate a key with a grace period of 0 to 86400 s", Session, Some(ManageApiKeys)).returns("Rotation")
                .body(&[("grace_seconds", "integer", true), ("name", "string", false)])
                .status(201),
            post(keys::rotate_key),
        ),
        (
            ep("get", "/accounts/{account}/audit", "Audit log (filters action, actor, since, until)", Session, Some(ViewAuditLog)).returns("AuditEntry").paged(),
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
        let mut success = json!({"description": "Success"});
        if let Some(schema) = e.response {
            let item = json!({"$ref": format!("#/components/schemas/{schema}")});
            let body = if e.paginated {
                json!({"type": "object", "required": ["data", "has_more", "next_cursor"], "properties": {
                    "data": {"type": "array", "items": item},
                    "has_more": {"type": "boolean"},
                    "next_cursor": {"type": "string", "nullable": true}}})
            } else {
                item
            };
            success["content"] = json!({"application/json": {"schema": body}});
        }
        let mut op = json!({
            "summary": e.summary,
            "operationId": format!("{}_{}", e.method, e.path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": {
                e.success.to_string(): success,
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
            "schemas": schemas(),
        },
        "security": [{"session": []}, {"cookie": []}],
    })
}

/// An object schema whose listed properties are all present in every response.
fn object(props: &[(&str, Value)]) -> Value {
    let mut p = Map::new();
    for (k, v) in props {
        p.insert((*k).to_string(), v.clone());
    }
    let required: Vec<&str> = props.iter().map(|(k, _)| *k).collect();
    json!({"type": "object", "required": required, "properties": p})
}

/// The response bodies, as the handlers build them (a test compares live responses).
pub fn schemas() -> Value {
    let s = || json!({"type": "string"});
    let ns = || json!({"type": "string", "nullable": true});
    let t = || json!({"type": "string", "format": "date-time"});
    let nt = || json!({"type": "string", "format": "date-time", "nullable": true});
    let b = || json!({"type": "boolean"});
    let i = || json!({"type": "integer"});
    let role = || json!({"type": "string", "enum": ["owner", "admin", "reader"]});
    let r = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let api_key = [
        ("id", s()),
        ("project_id", s()),
        ("name", s()),
        ("masked_key", s()),
        ("created_by", s()),
        ("created_at", t()),
        ("last_used_at", nt()),
        ("expires_at", nt()),
        ("revoked_at", nt()),
        (
            "scopes",
            json!({"type": "array", "items": {"type": "string", "enum": ["transcripts:read", "transcripts:write", "streaming"]}}),
        ),
        ("replaced_by", ns()),
        (
            "status",
            json!({"type": "string", "enum": ["active", "rotating", "expired", "revoked"]}),
        ),
    ];
    let mut new_key = api_key.to_vec();
    new_key.push(("key", s()));
    let mut listed_key = api_key.to_vec();
    listed_key.push((
        "traffic",
        object(&[
            ("transcripts", i()),
            ("audio_seconds", json!({"type": "number"})),
        ]),
    ));
    let profile = [
        (
            "user",
            object(&[
                ("id", s()),
                ("email", s()),
                ("mfa_enabled", b()),
                ("created_at", t()),
            ]),
        ),
        (
            "accounts",
            json!({"type": "array", "items": r("AccountMembership")}),
        ),
        ("current_account_id", ns()),
        ("mfa_enrollment_required", b()),
    ];
    let mut login = profile.to_vec();
    login.extend([
        ("csrf_token", s()),
        ("session_id", s()),
        ("expires_at", t()),
    ]);
    let mut login = object(&login);
    // Present only when the request set `return_token`.
    login["properties"]["token"] = s();
    json!({
        "Error": {"type": "object", "required": ["error", "code"], "properties": {
            "error": s(), "code": s(), "permission": s()}},
        "AccountMembership": object(&[("id", s()), ("name", s()), ("role", role()), ("require_mfa", b())]),
        "Profile": object(&profile),
        "LoginResult": login,
        "Reauthenticated": object(&[("reauthenticated_at", t()), ("valid_until", t())]),
        "TotpEnrolment": object(&[("secret", s()), ("otpauth_uri", s()), ("digits", i()), ("period", i())]),
        "RecoveryCodes": object(&[("mfa_enabled", b()), ("recovery_codes", json!({"type": "array", "items": s()}))]),
        "InviteAccepted": object(&[("account_id", s()), ("user_id", s()), ("role", role()), ("created_user", b()), ("accepted_at", t())]),
        "Account": object(&[
            ("id", s()), ("name", s()), ("plan", s()), ("require_mfa", b()), ("your_role", role()),
            ("limits", object(&[("projects", i()), ("api_keys", i()), ("members", i())])),
            ("created_at", t()),
        ]),
        "Billing": object(&[("plan", s()), ("limits", json!({"type": "object"})), ("billing_email", ns())]),
        "Alert": object(&[
            ("id", s()), ("kind", json!({"type": "string", "enum": ["balance_below", "month_spend_above", "daily_audio_above"]})),
            ("threshold", s()), ("currency", ns()), ("project_id", ns()), ("api_key_id", ns()), ("webhook_url", ns()),
            ("last_fired_at", nt()), ("fired_this_period", b()), ("created_by", s()), ("created_at", t()),
        ]),
        "StatementMonths": object(&[("months", json!({"type": "array", "items": s()}))]),
        "IssuedStatement": object(&[
            ("billing_email", ns()),
            ("statement", object(&[
                ("account_id", s()), ("account_name", ns()), ("month", s()), ("period_start", t()), ("period_end", t()),
                ("status", json!({"type": "string", "enum": ["open", "closed"]})), ("currency", s()),
                ("opening_balance", s()),
                ("line_items", json!({"type": "array", "items": object(&[
                    ("product", s()), ("model", s()), ("project_id", s()), ("project_name", ns()), ("unit", s()),
                    ("quantity_seconds", s()), ("transcripts", i()), ("sessions", i()), ("amount", s()), ("amount_micros", i()),
                ])})),
                ("usage_total", s()),
                ("credits", json!({"type": "array", "items": object(&[
                    ("created_at", t()), ("kind", s()), ("note", s()), ("amount", s()), ("amount_micros", i()),
                ])})),
                ("credits_total", s()), ("closing_balance", s()),
            ])),
        ]),
        "Balance": object(&[
            ("account_id", s()), ("currency", s()), ("plan", s()),
            ("billing", json!({"type": "string", "enum": ["prepaid", "invoiced"]})),
            ("balance", s()), ("balance_micros", i()), ("month_spend", s()), ("month_spend_micros", i()),
            ("refused_for_balance", b()),
            ("credits", json!({"type": "array", "items": object(&[
                ("id", s()), ("amount", s()), ("amount_micros", i()), ("kind", s()), ("note", s()), ("created_at", t()),
            ])})),
        ]),
        "UsageReport": usage_report_schema(),
        "Member": object(&[("user_id", s()), ("email", s()), ("role", role()), ("mfa_enabled", b()), ("joined_at", t())]),
        "Invite": object(&[
            ("id", s()), ("email", s()), ("role", role()), ("invited_by", s()), ("created_at", t()),
            ("expires_at", t()), ("status", json!({"type": "string", "enum": ["pending"]})),
        ]),
        "Project": object(&[("id", s()), ("account_id", s()), ("name", s()), ("created_at", t())]),
        "TranscriptSummary": object(&[
            ("id", s()), ("status", s()), ("audio_url", s()), ("audio_duration", json!({"type": "number", "nullable": true})),
            ("created_at", t()), ("completed_at", nt()), ("api_key_id", s()),
        ]),
        "ApiKey": object(&api_key),
        "ListedApiKey": object(&listed_key),
        "NewApiKey": object(&new_key),
        "RevealedKey": object(&[("id", s()), ("key", s())]),
        "Rotation": object(&[("old", r("ApiKey")), ("new", r("NewApiKey"))]),
        "AuditEntry": object(&[
            ("seq", i()), ("actor", s()), ("action", s()), ("target", s()),
            ("details", json!({"type": "object"})), ("created_at", t()), ("hash", s()),
        ]),
    })
}

/// The usage report's schema (figures repeat per group, bucket and range).
fn usage_report_schema() -> Value {
    let s = || json!({"type": "string"});
    let i = || json!({"type": "integer"});
    let t = || json!({"type": "string", "format": "date-time"});

    let figures = [
        ("audio_seconds", json!({"type": "number"})),
        ("session_seconds", json!({"type": "number"})),
        ("transcripts", i()),
        ("sessions", i()),
        ("cost", s()),
        ("cost_micros", i()),
    ];
    let mut group = figures.to_vec();
    group.push(("key", s()));
    object(&[
        ("account_id", s()),
        ("from", t()),
        ("to", t()),
        (
            "granularity",
            json!({"type": "string", "enum": ["hour", "day", "month"]}),
        ),
        (
            "group_by",
            json!({"type": "string", "nullable": true, "enum": ["product", "model", "project", "api_key"]}),
        ),
        ("currency", s()),
        ("as_of", t()),
        (
            "buckets",
            json!({"type": "array", "items": object(&[
                ("start", t()), ("end", t()),
                ("groups", json!({"type": "array", "items": object(&group)})),
                ("totals", object(&figures)),
            ])}),
        ),
        ("totals", object(&figures)),
    ])
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(build())
}
