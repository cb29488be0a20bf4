//! The management API's route table: one list that mounts the handlers and generates
//! the OpenAPI 3 document served at `/api/v1/openapi.json`. Request and response
//! schemas are derived from the Rust types the handlers take and return (`schemars`),
//! so the document cannot drift from the router or from the bodies.

use super::error::ErrorBody;
use super::{accounts, audit, keys, mfa, sessions, usage, webhooks};
use crate::manage::accounts::{AcceptInput, AccountUpdate, InviteInput, MemberUpdate};
use crate::manage::audit::AuditQuery;
use crate::manage::mfa::ConfirmInput;
use crate::manage::projects::{KeyInput, KeyUpdate, ProjectInput, RotateInput};
use crate::manage::sessions::{PasswordChange, ReauthInput};
use crate::manage::usage::alerts::{AlertInput, AlertUpdate, AlertView};
use crate::manage::usage::balance::BalanceView;
use crate::manage::usage::statement::{StatementDocument, StatementMonths};
use crate::manage::usage::{UsageQuery, UsageReport};
use crate::manage::views::*;
use crate::manage::webhooks::{RotateSecretInput, WebhookSecret};
use crate::manage::MAX_PAGE;
use crate::AppState;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Json;
use hark_core::Permission;
use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// How an endpoint authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    Session,
}

/// Adds a type's schema to the generator's components and returns a reference to it.
type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The query parameters of a flat query type, as OpenAPI parameter objects.
type ParamsFn = fn() -> Vec<Value>;

fn query_params_of<T: JsonSchema>() -> Vec<Value> {
    let root = SchemaGenerator::new(settings()).into_root_schema_for::<T>();
    let v = serde_json::to_value(&root.schema).unwrap_or_default();
    v["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    let mut schema = schema.clone();
                    let description = schema.as_object_mut().and_then(|o| o.remove("description"));
                    let mut p = json!({"name": name, "in": "query", "schema": schema});
                    if let Some(d) = description {
                        p["description"] = d;
                    }
                    p
                })
                .collect()
        })
        .unwrap_or_default()
}

/// OpenAPI 3.0 flavour: `nullable`, components under `#/components/schemas/`.
fn settings() -> SchemaSettings {
    SchemaSettings::openapi3()
}

/// One documented endpoint.
#[derive(Clone)]
pub struct Endpoint {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// The permission the caller's role needs in the account of the path.
    pub permission: Option<Permission>,
    pub body: Option<SchemaFn>,
    pub query: Option<ParamsFn>,
    pub paginated: bool,
    pub success: u16,
    /// The success body (one page of it when `paginated`).
    pub response: Option<SchemaFn>,
}

fn ep(
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
        body: None,
        query: None,
        paginated: false,
        success: 200,
        response: None,
    }
}

impl Endpoint {
    fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<T>);
        self
    }
    fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(query_params_of::<T>);
        self
    }
    fn paged(mut self) -> Self {
        self.paginated = true;
        self
    }
    fn status(mut self, code: u16) -> Self {
        self.success = code;
        self
    }
    fn returns<T: JsonSchema>(mut self) -> Self {
        self.response = Some(schema_of::<T>);
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
            ep("post", "/auth/login", "Log in; returns a session token and sets the session and CSRF cookies", Open, None).returns::<LoginResult>()
                .body::<sessions::LoginRequest>(),
            post(sessions::login),
        ),
        (ep("post", "/auth/logout", "End this session", Session, None).status(204), post(sessions::logout)),
        (
            ep("post", "/auth/reauth", "Re-enter the password or a TOTP code (opens a 5-minute window for sensitive actions)", Session, None).returns::<Reauthenticated>()
                .body::<ReauthInput>(),
            post(sessions::reauth),
        ),
        (ep("get", "/me", "The caller, their accounts and roles, and the current account", Session, None).returns::<Profile>(), get(sessions::me)),
        (
            ep("post", "/me/password", "Change the password (ends other sessions)", Session, None)
                .body::<PasswordChange>()
                .status(204),
            post(sessions::change_password),
        ),
        (
            ep("post", "/me/account", "Switch the current account", Session, None).returns::<Profile>().body::<sessions::SwitchAccount>(),
            post(sessions::switch_account),
        ),
        (ep("post", "/me/mfa/totp", "Start TOTP enrolment (seed and otpauth URI; needs recent re-authentication)", Session, None).returns::<TotpEnrolment>(), post(mfa::begin)),
        (ep("delete", "/me/mfa/totp", "Disable TOTP (needs recent re-authentication)", Session, None).status(204), delete(mfa::disable)),
        (
            ep("post", "/me/mfa/totp/confirm", "Confirm TOTP with a code (needs recent re-authentication); returns ten recovery codes and ends the other sessions", Session, None).returns::<RecoveryCodes>()
                .body::<ConfirmInput>(),
            post(mfa::confirm),
        ),
        (
            ep("post", "/invites/accept", "Accept an invite with the mailed token", Open, None).returns::<InviteAccepted>()
                .body::<AcceptInput>(),
            post(accounts::accept_invite),
        ),
        (ep("get", "/accounts", "The caller's accounts", Session, None).returns::<AccountMembership>().paged(), get(accounts::list_accounts)),
        (ep("get", "/accounts/{account}", "An account", Session, Some(ViewProjects)).returns::<AccountView>(), get(accounts::get_account)),
        (
            ep("patch", "/accounts/{account}", "Rename the account or set Require MFA for all members", Session, Some(ManageSettings)).returns::<AccountView>()
                .body::<AccountUpdate>(),
            patch(accounts::update_account),
        ),
        (
            ep("delete", "/accounts/{account}", "Delete the account and everything in it (sole Owner, recent re-authentication)", Session, Some(DeleteAccount)).status(204),
            delete(accounts::delete_account),
        ),
        (ep("get", "/accounts/{account}/billing", "Plan, limits and billing email", Session, Some(ManageBilling)).returns::<Billing>(), get(accounts::billing)),
        (
            ep("get", "/accounts/{account}/usage", "Usage and spend report: buckets of hour, day or month, grouped by product, model, project or api_key, with repeatable filters, totals and as_of", Session, Some(ViewUsage)).returns::<UsageReport>().query::<UsageQuery>(),
            get(usage::usage_json),
        ),
        (
            ep("get", "/accounts/{account}/usage.csv", "The same usage report as CSV (header X-Usage-As-Of)", Session, Some(ViewUsage)).query::<UsageQuery>(),
            get(usage::usage_csv),
        ),
        (ep("get", "/accounts/{account}/balance", "Credit balance, the month's spend and the credit ledger", Session, Some(ManageBilling)).returns::<BalanceView>(), get(usage::balance_json)),
        (ep("get", "/accounts/{account}/alerts", "Usage alerts and when each last fired", Session, Some(ViewUsage)).returns::<AlertView>().paged(), get(usage::list_alerts)),
        (
            ep("post", "/accounts/{account}/alerts", "Create an alert: balance_below or month_spend_above an amount, or daily_audio_above hours for one project or key; optionally a signed webhook", Session, Some(ManageAlerts)).returns::<AlertView>()
                .body::<AlertInput>()
                .status(201),
            post(usage::create_alert),
        ),
        (
            ep("patch", "/accounts/{account}/alerts/{alert}", "Change an alert's threshold (re-arms it) or webhook (null removes it)", Session, Some(ManageAlerts)).returns::<AlertView>()
                .body::<AlertUpdate>(),
            patch(usage::update_alert),
        ),
        (ep("delete", "/accounts/{account}/alerts/{alert}", "Delete an alert", Session, Some(ManageAlerts)).status(204), delete(usage::delete_alert)),
        (ep("get", "/accounts/{account}/statements", "Months with a billing statement, newest first", Session, Some(ManageBilling)).returns::<StatementMonths>(), get(usage::list_statements)),
        (
            ep("get", "/accounts/{account}/statements/{month}", "The statement of a month (YYYY-MM): line items by product, model and project, credits, balances; frozen once the month is closed", Session, Some(ManageBilling)).returns::<StatementDocument>(),
            get(usage::statement_json),
        ),
        (ep("get", "/accounts/{account}/statements/{month}/csv", "The same statement as CSV", Session, Some(ManageBilling)), get(usage::statement_csv)),
        (ep("get", "/accounts/{account}/members", "Members with role and MFA status", Session, Some(ViewMembers)).returns::<Member>().paged(), get(accounts::list_members)),
        (
            ep("patch", "/accounts/{account}/members/{user}", "Change a member's role", Session, Some(ManageMembers))
                .body::<MemberUpdate>()
                .status(204),
            patch(accounts::update_member),
        ),
        (
            ep("delete", "/accounts/{account}/members/{user}", "Remove a member (ends their sessions)", Session, Some(ManageMembers)).status(204),
            delete(accounts::remove_member),
        ),
        (ep("get", "/accounts/{account}/invites", "Pending invites", Session, Some(ViewMembers)).returns::<InviteView>().paged(), get(accounts::list_invites)),
        (
            ep("post", "/accounts/{account}/invites", "Invite an email (role defaults to reader)", Session, Some(ManageMembers)).returns::<InviteView>()
                .body::<InviteInput>()
                .status(201),
            post(accounts::create_invite),
        ),
        (
            ep("delete", "/accounts/{account}/invites/{invite}", "Revoke a pending invite", Session, Some(ManageMembers)).status(204),
            delete(accounts::delete_invite),
        ),
        (ep("get", "/accounts/{account}/projects", "Projects", Session, Some(ViewProjects)).returns::<ProjectView>().paged(), get(keys::list_projects)),
        (
            ep("post", "/accounts/{account}/projects", "Create a project", Session, Some(ManageProjects)).returns::<ProjectView>()
                .body::<ProjectInput>()
                .status(201),
            post(keys::create_project),
        ),
        (ep("get", "/accounts/{account}/projects/{project}", "A project", Session, Some(ViewProjects)).returns::<ProjectView>(), get(keys::get_project)),
        (
            ep("patch", "/accounts/{account}/projects/{project}", "Rename a project", Session, Some(ManageProjects)).returns::<ProjectView>().body::<ProjectInput>(),
            patch(keys::rename_project),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}", "Delete a project with its keys, transcripts and files", Session, Some(ManageProjects)).status(204),
            delete(keys::delete_project),
        ),
        (
            ep("get", "/accounts/{account}/projects/{project}/transcripts", "Transcripts of a project", Session, Some(ViewTranscripts)).returns::<TranscriptSummary>().paged(),
            get(keys::list_transcripts),
        ),
        (ep("get", "/accounts/{account}/projects/{project}/keys", "API keys (masked), with last use and traffic", Session, Some(ViewApiKeys)).returns::<ListedApiKey>().paged(), get(keys::list_keys)),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys", "Create an API key (the secret is returned once)", Session, Some(ManageApiKeys)).returns::<NewApiKey>()
                .body::<KeyInput>()
                .status(201),
            post(keys::create_key),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}/keys/{key}", "Revoke an API key", Session, Some(ManageApiKeys)).returns::<ApiKeyView>(),
            delete(keys::revoke_key),
        ),
        (
            ep("patch", "/accounts/{account}/projects/{project}/keys/{key}", "Rename an API key or change its scopes (narrowed scopes hold from the next request)", Session, Some(ManageApiKeys)).returns::<ApiKeyView>()
                .body::<KeyUpdate>(),
            patch(keys::update_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/reveal", "Reveal a key (recent re-authentication; audited)", Session, Some(RevealApiKeys)).returns::<RevealedKey>(),
            post(keys::reveal_key),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/keys/{key}/rotate", "Rotate a key with a grace period of 0 to 86400 s", Session, Some(ManageApiKeys)).returns::<Rotation>()
                .body::<RotateInput>()
                .status(201),
            post(keys::rotate_key),
        ),
        (
            ep("delete", "/accounts/{account}/projects/{project}/transcripts/{transcript}", "Delete a transcript (text scrubbed, upload removed; audited)", Session, Some(ManageProjects)).status(204),
            delete(webhooks::delete_transcript),
        ),
        (
            ep("get", "/accounts/{account}/projects/{project}/webhook-secret", "The webhook signing secret, and the former one during a rotation overlap (recent re-authentication; audited)", Session, Some(RevealApiKeys)).returns::<WebhookSecret>(),
            get(webhooks::reveal),
        ),
        (
            ep("post", "/accounts/{account}/projects/{project}/webhook-secret/rotate", "Rotate the webhook signing secret; the former one also signs for overlap_seconds (recent re-authentication; audited)", Session, Some(ManageProjects)).returns::<WebhookSecret>()
                .body::<RotateSecretInput>()
                .status(201),
            post(webhooks::rotate),
        ),
        (
            ep("get", "/accounts/{account}/audit", "Audit log (filters action, actor, since, until)", Session, Some(ViewAuditLog)).returns::<AuditEntryView>().paged().query::<AuditQuery>(),
            get(audit::list),
        ),
        (
            ep("get", "/accounts/{account}/audit/export", "Audit log as NDJSON", Session, Some(ViewAuditLog)).query::<AuditQuery>(),
            get(audit::export),
        ),
    ]
}

fn path_params(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| match name {
            "month" => json!({"name": name, "in": "path", "required": true, "description": "A calendar month, YYYY-MM",
                "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}),
            _ => json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}),
        })
        .collect()
}

fn to_value(schema: &Schema) -> Value {
    serde_json::to_value(schema).unwrap_or_default()
}

/// Builds the OpenAPI 3.0 document from [`endpoints`].
pub fn build() -> Value {
    let mut generator = SchemaGenerator::new(settings());
    let error = to_value(&generator.subschema_for::<ErrorBody>());
    let mut paths: Map<String, Value> = Map::new();
    for (e, _) in endpoints() {
        let mut params = path_params(e.path);
        if e.paginated && e.query.is_none() {
            params.push(json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}}));
            params.push(json!({"name": "cursor", "in": "query", "schema": {"type": "string"}}));
        }
        if let Some(query) = e.query {
            params.extend(query());
        }
        let mut success = json!({"description": "Success"});
        if let Some(schema) = e.response {
            let item = to_value(&schema(&mut generator));
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
                "default": {"description": "Error", "content": {"application/json": {"schema": error.clone()}}},
            },
        });
        if let Some(p) = e.permission {
            op["x-permission"] = json!(p.as_str());
        }
        if e.auth == Auth::None {
            op["security"] = json!([]);
        }
        if let Some(body) = e.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {
                "schema": to_value(&body(&mut generator))}}});
        }
        let entry = paths
            .entry(format!("/api/v1{}", e.path))
            .or_insert_with(|| json!({}));
        entry[e.method] = op;
    }
    let schemas: Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(name, schema)| (name.clone(), to_value(schema)))
        .collect();
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Hark management API", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "session": {"type": "http", "scheme": "bearer", "description": "A hark_ses_ session token from /api/v1/auth/login"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": super::SESSION_COOKIE, "description": "Browsers; unsafe methods need the X-CSRF-Token header"},
            },
            "schemas": schemas,
        },
        "security": [{"session": []}, {"cookie": []}],
    })
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> Json<Value> {
    Json(build())
}
