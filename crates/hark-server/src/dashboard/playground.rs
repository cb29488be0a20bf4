//! The Playground page: upload a file and watch its transcript complete, or speak into
//! the microphone (`static/live.js`) and see the turns as they come, acting as a chosen
//! live API key of a project. The rules are `manage::playground`'s; the work is the data
//! plane's own (`/v2/upload`, `/v2/transcript`, `/v3/token`), called with that key's
//! principal, so usage counts against the chosen key.

use super::error::{human_message, see_other, status_of};
use super::{Chrome, DashResult, FormToken, Me};
use crate::auth::{self, ApiPrincipal};
use crate::error::ApiError;
use crate::manage::ids;
use crate::manage::playground::{self, PlaygroundTranscript};
use crate::management::MgmtError;
use crate::{data_plane, streaming, AppState};
use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

/// How long a live token may wait for its WebSocket (the page connects at once).
const LIVE_TOKEN_SECS: i64 = 60;
/// The longest live session the playground opens.
const LIVE_SESSION_SECS: i64 = 600;
/// How often a pending transcript's page reloads itself.
const REFRESH_SECS: &str = "2";

/// A choice of a `<select>`.
#[derive(Debug, Clone)]
pub struct Choice {
    pub id: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Template)]
#[template(path = "playground.html")]
pub struct PlaygroundPage {
    pub chrome: Chrome,
    pub page_action: String,
    pub upload_action: String,
    pub token_action: String,
    pub live_js: &'static str,
    pub worklet_js: &'static str,
    pub projects: Vec<Choice>,
    /// The chosen project's id (empty when the account has none).
    pub project_id: String,
    pub keys: Vec<Choice>,
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "playground_transcript.html")]
pub struct TranscriptPage {
    pub chrome: Chrome,
    pub back: String,
    pub project_name: String,
    pub id: String,
    pub status: String,
    pub pending: bool,
    pub text: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PlayQuery {
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
}

async fn render(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    query: &PlayQuery,
    error: Option<String>,
) -> DashResult<String> {
    let view = playground::overview(
        state,
        &me.caller(),
        ids::account(account),
        query.project.as_deref().map(ids::project),
    )
    .await?;
    let chosen = view.project.as_ref().map(|p| p.id);
    let id = view.auth.account.id;
    let urls = &*super::assets::URLS;
    let page = PlaygroundPage {
        chrome: Chrome::signed_in(state, me, token, "Playground")
            .await?
            .in_account(&view.auth.account, view.auth.role, "/playground"),
        page_action: format!("/accounts/{id}/playground"),
        upload_action: format!("/accounts/{id}/playground/upload"),
        token_action: format!("/accounts/{id}/playground/token"),
        live_js: urls.live_js.as_str(),
        worklet_js: urls.live_worklet.as_str(),
        projects: view
            .projects
            .iter()
            .map(|p| Choice {
                id: p.id.to_string(),
                label: p.name.clone(),
                selected: Some(p.id) == chosen,
            })
            .collect(),
        project_id: chosen.map(|p| p.to_string()).unwrap_or_default(),
        keys: view
            .keys
            .iter()
            .map(|k| Choice {
                id: k.id.to_string(),
                label: format!("{} ({})", k.name, k.masked),
                selected: query.key.as_deref() == Some(k.id.to_string().as_str()),
            })
            .collect(),
        error,
    };
    Ok(page.render()?)
}

/// `GET /accounts/{account}/playground?project=`.
pub async fn page(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<PlayQuery>,
) -> DashResult<Response> {
    let html = render(&state, &me, &token, &account, &q, None).await?;
    Ok(Html(html).into_response())
}

/// Why the data plane did not do what the playground asked.
enum Refusal {
    Mgmt(MgmtError),
    Api(ApiError),
}

impl From<MgmtError> for Refusal {
    fn from(e: MgmtError) -> Self {
        Refusal::Mgmt(e)
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl Refusal {
    /// The status and what the person is told; a server fault is logged, not shown.
    fn explain(&self) -> (StatusCode, String) {
        match self {
            Refusal::Mgmt(e) => (status_of(e), human_message(e)),
            Refusal::Api(ApiError::Internal(cause)) => {
                tracing::error!(%cause, "playground request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on the server. Try again.".into(),
                )
            }
            Refusal::Api(e) => (e.status(), e.to_string()),
        }
    }
}

fn invalid(message: &str) -> Refusal {
    Refusal::Mgmt(MgmtError::Invalid(message.to_string()))
}

/// The upload form's fields before the file (`csrf` first, then `project` and `key`).
#[derive(Default)]
struct UploadTarget {
    project: Option<String>,
    key: Option<String>,
}

/// `POST /accounts/{account}/playground/upload` (multipart/form-data; the security
/// layer has checked its leading `csrf` field): stores the file and creates its
/// transcript as the chosen key, then shows the transcript.
pub async fn upload(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> DashResult<Response> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut target = UploadTarget::default();
    let outcome = match multer::parse_boundary(content_type) {
        Ok(boundary) => {
            let form = multer::Multipart::new(body.into_data_stream(), boundary);
            receive(&state, &me, &account, form, &mut target).await
        }
        Err(_) => Err(invalid("Send the upload form as multipart/form-data.")),
    };
    match outcome {
        Ok(id) => {
            let project = target.project.unwrap_or_default();
            Ok(see_other(&format!(
                "/accounts/{account}/playground/transcripts/{id}?project={}",
                urlencode(&project)
            )))
        }
        // Not a member, not allowed, no such account: the usual error page.
        Err(Refusal::Mgmt(
            e @ (MgmtError::Forbidden { .. }
            | MgmtError::NotFound("account")
            | MgmtError::MfaEnrollmentRequired
            | MgmtError::MfaSignInRequired),
        )) => Err(e.into()),
        Err(refusal) => {
            let (status, message) = refusal.explain();
            let query = PlayQuery {
                project: target.project,
                key: target.key,
            };
            let html = render(&state, &me, &token, &account, &query, Some(message)).await?;
            Ok((status, Html(html)).into_response())
        }
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Reads the form up to its file, which goes to the data plane as it arrives.
async fn receive(
    state: &AppState,
    me: &Me,
    account: &str,
    mut form: multer::Multipart<'static>,
    target: &mut UploadTarget,
) -> Result<String, Refusal> {
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Err(invalid("Choose an audio file to upload.")),
            Err(e) => return Err(invalid(&format!("The form could not be read: {e}"))),
        };
        match field.name() {
            Some("project") => target.project = field.text().await.ok(),
            Some("key") => target.key = field.text().await.ok(),
            Some("file") => {
                if field.file_name().is_none_or(str::is_empty) {
                    return Err(invalid("Choose an audio file to upload."));
                }
                let (Some(project), Some(key)) = (&target.project, &target.key) else {
                    return Err(invalid("Choose an API key of the project."));
                };
                let who = playground::acting_key(
                    state,
                    &me.caller(),
                    ids::account(account),
                    ids::project(project),
                    ids::api_key(key),
                )
                .await?;
                return transcribe(state, who, Body::from_stream(field)).await;
            }
            // The CSRF field (checked by the security layer) and anything else.
            _ => {}
        }
    }
}

/// `POST /v2/upload` then `POST /v2/transcript` as `who`; the new transcript's id.
async fn transcribe(
    state: &AppState,
    who: hark_store::KeyPrincipal,
    audio: Body,
) -> Result<String, Refusal> {
    auth::admit(state, &who, &Method::POST, "/v2/upload").await?;
    let Json(uploaded) =
        data_plane::upload(State(state.clone()), Ok(ApiPrincipal(who.clone())), audio).await?;
    let url = uploaded
        .get("upload_url")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::internal("the upload answered without an upload_url"))?;
    auth::admit(state, &who, &Method::POST, "/v2/transcript").await?;
    let request = Bytes::from(json!({ "audio_url": url }).to_string());
    let Json(created) =
        data_plane::create(State(state.clone()), ApiPrincipal(who), Ok(request)).await?;
    created
        .get("id")
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .ok_or_else(|| ApiError::internal("the transcript answered without an id").into())
}

/// `GET /accounts/{account}/playground/transcripts/{id}?project=`: the status, and the
/// text once completed; the page reloads itself (`Refresh`) while the status can change.
pub async fn transcript(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, id)): Path<(String, String)>,
    Query(q): Query<PlayQuery>,
) -> DashResult<Response> {
    let t: PlaygroundTranscript = playground::transcript(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::project(q.project.as_deref().unwrap_or_default()),
        ids::transcript(&id),
    )
    .await?;
    let pending = t.pending();
    let page = TranscriptPage {
        chrome: Chrome::signed_in(&state, &me, &token, "Transcript")
            .await?
            .in_account(&t.auth.account, t.auth.role, "/playground"),
        back: format!(
            "/accounts/{}/playground?project={}",
            t.auth.account.id, t.project.id
        ),
        project_name: t.project.name.clone(),
        id: t.id.to_string(),
        status: t.status.clone(),
        pending,
        text: t.text.clone(),
        error: t.error.clone(),
    };
    let mut response = Html(page.render()?).into_response();
    if pending {
        response
            .headers_mut()
            .insert("refresh", HeaderValue::from_static(REFRESH_SECS));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    pub project: String,
    pub key: String,
}

/// `POST /accounts/{account}/playground/token` (from `live.js`, with the CSRF header):
/// a temporary streaming token minted as the chosen key, as `GET /v3/token` mints it,
/// and the WebSocket URL to use it on. Answers JSON, errors as `{"error": "..."}`.
pub async fn live_token(
    State(state): State<AppState>,
    me: Me,
    Path(account): Path<String>,
    Form(form): Form<TokenForm>,
) -> Response {
    match mint(&state, &me, &account, &form).await {
        Ok(body) => Json(body).into_response(),
        Err(refusal) => {
            let (status, message) = refusal.explain();
            (status, Json(json!({ "error": message }))).into_response()
        }
    }
}

async fn mint(
    state: &AppState,
    me: &Me,
    account: &str,
    form: &TokenForm,
) -> Result<serde_json::Value, Refusal> {
    let who = playground::acting_key(
        state,
        &me.caller(),
        ids::account(account),
        ids::project(&form.project),
        ids::api_key(&form.key),
    )
    .await?;
    auth::admit(state, &who, &Method::GET, "/v3/token").await?;
    let query = format!(
        "expires_in_seconds={LIVE_TOKEN_SECS}&max_session_duration_seconds={LIVE_SESSION_SECS}"
    );
    let Json(minted) = streaming::token(
        State(state.clone()),
        ApiPrincipal(who),
        RawQuery(Some(query)),
    )
    .await?;
    let token = minted
        .get("token")
        .and_then(|v| v.as_str())
        .ok_or_else(|| ApiError::internal("/v3/token answered without a token"))?;
    Ok(json!({
        "token": token,
        "expires_in_seconds": LIVE_TOKEN_SECS,
        "max_session_duration_seconds": LIVE_SESSION_SECS,
        "ws_url": format!("{}/v3/ws", ws_base(&state.public_base_url)),
    }))
}

/// The WebSocket origin of the public base URL (the one the CSP's `connect-src` allows).
fn ws_base(public_base_url: &str) -> String {
    public_base_url
        .replacen("https://", "wss://", 1)
        .replacen("http://", "ws://", 1)
        .trim_end_matches('/')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_origin_follows_the_scheme() {
        assert_eq!(ws_base("https://hark.example"), "wss://hark.example");
        assert_eq!(ws_base("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080");
    }
}
