//! A project's Transcripts: the list (status, audio duration, created, the key that
//! made it; newest first, keyset pages), one transcript (text, words with timings,
//! downloads as text, SRT and VTT) and its deletion behind a confirmation (Owner and
//! Admin). Also the project picker the project pages share.

use super::error::{see_other, MessagePage};
use super::{Chrome, DashError, DashResult, FormToken, Me};
use crate::manage::projects::list_projects;
use crate::manage::transcripts::{self as core, Download};
use crate::manage::views::Instant;
use crate::manage::{authorize, ids, Authorized, PageQuery, MAX_PAGE};
use crate::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};
use hark_core::plan::role_allows;
use hark_core::Permission;
use serde::Deserialize;

/// Words shown per page of a transcript's word table.
pub const WORDS_PER_PAGE: usize = 500;

/// One project in the picker of the project pages.
#[derive(Debug, Clone)]
pub struct ProjectChoice {
    pub id: String,
    pub name: String,
    pub current: bool,
}

/// The account's projects for the picker, `current` marked.
pub async fn project_choices(
    state: &AppState,
    me: &Me,
    account: &str,
    current: &str,
) -> DashResult<Vec<ProjectChoice>> {
    let page = PageQuery {
        limit: Some(MAX_PAGE),
        cursor: None,
    };
    let projects = list_projects(state, &me.caller(), ids::account(account), &page).await?;
    let mut out: Vec<ProjectChoice> = projects
        .data
        .into_iter()
        .map(|p| ProjectChoice {
            current: p.id.to_string() == current,
            id: p.id.to_string(),
            name: p.name,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(out)
}

#[derive(Deserialize)]
pub struct PickQuery {
    pub project: Option<String>,
}

/// `GET /accounts/{account}/{section}` for a project section (`transcripts`,
/// `webhooks`): to the chosen (`?project=`) or first project's page.
pub async fn pick_project(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    section: &str,
    chosen: Option<&str>,
) -> DashResult<Response> {
    let choices = project_choices(state, me, account, "").await?;
    let target = chosen
        .and_then(|c| choices.iter().find(|p| p.id == c))
        .or(choices.first());
    match target {
        Some(p) => Ok(see_other(&format!(
            "/accounts/{account}/projects/{}/{section}",
            p.id
        ))),
        None => {
            let auth = authorize(
                state,
                &me.caller(),
                ids::account(account),
                Permission::ViewProjects,
            )
            .await?;
            let page = MessagePage {
                chrome: Chrome::signed_in(state, me, token, "No project")
                    .await?
                    .in_account(&auth.account, auth.role, &format!("/{section}")),
                heading: "No project yet".into(),
                message: "This account has no project. Create a project first.".into(),
                link: Some((format!("/accounts/{}", auth.account.id), "Overview".into())),
            };
            Ok(Html(page.render()?).into_response())
        }
    }
}

/// `GET /accounts/{account}/transcripts`.
pub async fn section(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path(account): Path<String>,
    Query(q): Query<PickQuery>,
) -> DashResult<Response> {
    pick_project(
        &state,
        &me,
        &token,
        &account,
        "transcripts",
        q.project.as_deref(),
    )
    .await
}

/// "2026-11-30 05:03:44 UTC".
pub fn when(at: Instant) -> String {
    let s = at.rfc3339();
    match (s.get(..10), s.get(11..19)) {
        (Some(day), Some(time)) => format!("{day} {time} UTC"),
        _ => s,
    }
}

/// Seconds as `m:ss` (or `h:mm:ss`), `—` when unknown.
pub fn duration(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s.is_finite() && s >= 0.0 => {
            let total = s.round() as u64;
            let (h, m, s) = (total / 3600, (total / 60) % 60, total % 60);
            if h > 0 {
                format!("{h}:{m:02}:{s:02}")
            } else {
                format!("{m}:{s:02}")
            }
        }
        _ => "—".into(),
    }
}

/// Milliseconds as `m:ss.mmm`.
pub fn timing(ms: u64) -> String {
    format!("{}:{:02}.{:03}", ms / 60_000, (ms / 1000) % 60, ms % 1000)
}

pub struct TranscriptRow {
    pub id: String,
    pub href: String,
    pub status: String,
    pub duration: String,
    pub created: String,
    pub key: String,
}

#[derive(Template)]
#[template(path = "transcripts.html")]
pub struct ListPage {
    pub chrome: Chrome,
    pub project_name: String,
    pub projects: Vec<ProjectChoice>,
    pub picker_action: String,
    pub rows: Vec<TranscriptRow>,
    pub first_href: Option<String>,
    pub next_href: Option<String>,
}

#[derive(Deserialize)]
pub struct ListQuery {
    pub cursor: Option<String>,
    pub notice: Option<String>,
}

async fn chrome_for(
    state: &AppState,
    me: &Me,
    token: &FormToken,
    account: &str,
    title: &str,
    active: &str,
) -> DashResult<(Chrome, Authorized)> {
    let auth = authorize(
        state,
        &me.caller(),
        ids::account(account),
        Permission::ViewProjects,
    )
    .await?;
    let chrome = Chrome::signed_in(state, me, token, title)
        .await?
        .in_account(&auth.account, auth.role, active);
    Ok((chrome, auth))
}

/// `GET /accounts/{account}/projects/{project}/transcripts`.
pub async fn list(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project)): Path<(String, String)>,
    Query(q): Query<ListQuery>,
) -> DashResult<Response> {
    let page = PageQuery {
        limit: None,
        cursor: q.cursor.clone(),
    };
    let listed = core::list(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::project(&project),
        &page,
    )
    .await?;
    let (chrome, auth) =
        chrome_for(&state, &me, &token, &account, "Transcripts", "/transcripts").await?;
    let base = format!(
        "/accounts/{}/projects/{}/transcripts",
        auth.account.id, listed.project.id
    );
    let rows = listed
        .transcripts
        .data
        .iter()
        .map(|t| TranscriptRow {
            id: t.summary.id.to_string(),
            href: format!("{base}/{}", t.summary.id),
            status: t.summary.status.clone(),
            duration: duration(t.summary.audio_duration),
            created: when(t.summary.created_at),
            key: t.key_name.clone().unwrap_or_else(|| "(deleted key)".into()),
        })
        .collect();
    let page = ListPage {
        chrome: chrome.with_notice(q.notice.as_deref()),
        project_name: listed.project.name.clone(),
        projects: project_choices(&state, &me, &account, &listed.project.id.to_string()).await?,
        picker_action: format!("/accounts/{}/transcripts", auth.account.id),
        rows,
        first_href: q.cursor.as_ref().map(|_| base.clone()),
        next_href: listed
            .transcripts
            .next_cursor
            .as_ref()
            .map(|c| format!("{base}?cursor={c}")),
    };
    Ok(Html(page.render()?).into_response())
}

pub struct WordRow {
    pub text: String,
    pub start: String,
    pub end: String,
    pub confidence: String,
}

#[derive(Template)]
#[template(path = "transcript.html")]
pub struct DetailPage {
    pub chrome: Chrome,
    pub id: String,
    pub project_name: String,
    pub list_href: String,
    pub status: String,
    pub duration: String,
    pub created: String,
    pub completed: Option<String>,
    pub key: String,
    pub model: Option<String>,
    pub text: Option<String>,
    pub error: Option<String>,
    pub deleted: bool,
    pub words: Vec<WordRow>,
    pub word_count: usize,
    pub words_from: usize,
    pub words_prev: Option<String>,
    pub words_next: Option<String>,
    /// Download links (label, href) when completed.
    pub downloads: Vec<(&'static str, String)>,
    /// The confirmation page's address, for Owners and Admins.
    pub delete_href: Option<String>,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    pub from: Option<usize>,
}

/// `GET /accounts/{account}/projects/{project}/transcripts/{id}`.
pub async fn detail(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, id)): Path<(String, String, String)>,
    Query(q): Query<DetailQuery>,
) -> DashResult<Response> {
    let t = core::get(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::project(&project),
        ids::transcript(&id),
    )
    .await?;
    let (chrome, auth) =
        chrome_for(&state, &me, &token, &account, "Transcript", "/transcripts").await?;
    let list_href = format!(
        "/accounts/{}/projects/{}/transcripts",
        auth.account.id, t.project.id
    );
    let href = format!("{list_href}/{}", t.summary.id);
    let word_count = t.words.len();
    let from = q.from.unwrap_or(0).min(word_count);
    let words = t
        .words
        .iter()
        .skip(from)
        .take(WORDS_PER_PAGE)
        .map(|w| WordRow {
            text: w.text.clone(),
            start: timing(w.start),
            end: timing(w.end),
            confidence: format!("{:.2}", w.confidence),
        })
        .collect();
    let completed = t.text.is_some();
    let page = DetailPage {
        chrome,
        id: t.summary.id.to_string(),
        project_name: t.project.name.clone(),
        status: t.summary.status.clone(),
        duration: duration(t.summary.audio_duration),
        created: when(t.summary.created_at),
        completed: t.summary.completed_at.map(when),
        key: t.key_name.clone().unwrap_or_else(|| "(deleted key)".into()),
        model: t.speech_model.clone(),
        text: t.text.clone(),
        error: t.error.clone(),
        deleted: t.deleted,
        words,
        word_count,
        words_from: from,
        words_prev: (from > 0)
            .then(|| format!("{href}?from={}", from.saturating_sub(WORDS_PER_PAGE))),
        words_next: (from + WORDS_PER_PAGE < word_count)
            .then(|| format!("{href}?from={}", from + WORDS_PER_PAGE)),
        downloads: if completed {
            vec![
                ("Download text", format!("{href}/download/txt")),
                ("Download SRT", format!("{href}/download/srt")),
                ("Download VTT", format!("{href}/download/vtt")),
            ]
        } else {
            Vec::new()
        },
        delete_href: (!t.deleted && role_allows(auth.role, Permission::ManageProjects))
            .then(|| format!("{href}/delete")),
        list_href,
    };
    Ok(Html(page.render()?).into_response())
}

/// `GET .../transcripts/{id}/download/{txt|srt|vtt}`: an attachment.
pub async fn download(
    State(state): State<AppState>,
    me: Me,
    Path((account, project, id, format)): Path<(String, String, String, String)>,
) -> DashResult<Response> {
    let format = Download::parse(&format).ok_or(DashError::NotFound)?;
    let (name, content_type, body) = core::download(
        &state,
        &me.caller(),
        ids::account(&account),
        ids::project(&project),
        ids::transcript(&id),
        format,
    )
    .await?;
    Ok((
        [
            (CONTENT_TYPE, content_type.to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(Template)]
#[template(path = "transcript_delete.html")]
pub struct DeletePage {
    pub chrome: Chrome,
    pub id: String,
    pub action: String,
    pub back: String,
}

/// `GET .../transcripts/{id}/delete`: the confirmation (Owner and Admin).
pub async fn confirm_delete(
    State(state): State<AppState>,
    me: Me,
    token: FormToken,
    Path((account, project, id)): Path<(String, String, String)>,
) -> DashResult<Response> {
    let auth = authorize(
        &state,
        &me.caller(),
        ids::account(&account),
        Permission::ManageProjects,
    )
    .await?;
    let t = core::get(
        &state,
        &me.caller(),
        auth.account.id,
        ids::project(&project),
        ids::transcript(&id),
    )
    .await?;
    let href = format!(
        "/accounts/{}/projects/{}/transcripts/{}",
        auth.account.id, t.project.id, t.summary.id
    );
    let page = DeletePage {
        chrome: Chrome::signed_in(&state, &me, &token, "Delete transcript")
            .await?
            .in_account(&auth.account, auth.role, "/transcripts"),
        id: t.summary.id.to_string(),
        action: format!("{href}/delete"),
        back: href,
    };
    Ok(Html(page.render()?).into_response())
}

/// `POST .../transcripts/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    me: Me,
    Path((account, project, id)): Path<(String, String, String)>,
) -> DashResult<Response> {
    let (a, p) = (ids::account(&account), ids::project(&project));
    core::delete(&state, &me.caller(), a, p, ids::transcript(&id)).await?;
    Ok(see_other(&format!(
        "/accounts/{a}/projects/{p}/transcripts?notice=transcript_deleted"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(duration(Some(75.4)), "1:15");
        assert_eq!(duration(Some(3725.0)), "1:02:05");
        assert_eq!(duration(None), "—");
        assert_eq!(timing(61_230), "1:01.230");
        assert_eq!(when(Instant(0)), "1970-01-01 00:00:00 UTC");
    }
}
