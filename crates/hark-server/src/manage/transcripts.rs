//! A project's transcripts for the people of its account: browse (newest first, keyset
//! pages), open one (text and words with timings), download it as plain text, SRT or
//! VTT (the same caption formatter as `/v2/transcript/{id}/srt`), and delete one
//! (Owner and Admin, audited in the deleting transaction).

use super::projects::project_in;
use super::views::{ProjectView, TranscriptSummary};
use super::{authorize, Caller, Error, Page, PageQuery, Result};
use crate::render;
use crate::AppState;
use hark_core::speech::Word;
use hark_core::{AccountId, ApiKeyId, Permission, ProjectId, TranscriptId};
use hark_store::{Transcript, TranscriptQuery, TranscriptStatus};
use std::collections::HashMap;

/// One row of the list: the transcript and the name of the key that made it.
#[derive(Debug, Clone)]
pub struct ListedTranscript {
    pub summary: TranscriptSummary,
    /// `None` when the key was deleted with its project's history.
    pub key_name: Option<String>,
}

/// A page of a project's transcripts.
#[derive(Debug)]
pub struct TranscriptList {
    pub project: ProjectView,
    pub transcripts: Page<ListedTranscript>,
}

/// One transcript as a person reads it.
#[derive(Debug, Clone)]
pub struct TranscriptDetail {
    pub project: ProjectView,
    pub summary: TranscriptSummary,
    pub key_name: Option<String>,
    /// The text when completed and not deleted.
    pub text: Option<String>,
    pub words: Vec<Word>,
    pub error: Option<String>,
    pub deleted: bool,
    pub speech_model: Option<String>,
}

/// The download formats of a completed transcript.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Download {
    Text,
    Srt,
    Vtt,
}

impl Download {
    pub fn parse(s: &str) -> Option<Download> {
        match s {
            "txt" => Some(Download::Text),
            "srt" => Some(Download::Srt),
            "vtt" => Some(Download::Vtt),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Download::Text => "txt",
            Download::Srt => "srt",
            Download::Vtt => "vtt",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Download::Text | Download::Srt => "text/plain; charset=utf-8",
            Download::Vtt => "text/vtt; charset=utf-8",
        }
    }
}

/// The names of the keys `ids` (of `project`); only these few are read, however many
/// keys the project has.
async fn key_names(
    state: &AppState,
    project: ProjectId,
    ids: impl Iterator<Item = ApiKeyId>,
) -> Result<HashMap<ApiKeyId, String>> {
    let mut names = HashMap::new();
    for id in ids {
        if names.contains_key(&id) {
            continue;
        }
        if let Some(k) = state
            .store
            .get_api_key(id)
            .await?
            .filter(|k| k.project_id == project)
        {
            names.insert(id, k.name);
        }
    }
    Ok(names)
}

/// A page of the project's transcripts, newest first; the cursor is the last id seen
/// (the store seeks to it, so a page costs the same at any depth).
pub async fn list(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    page: &PageQuery,
) -> Result<TranscriptList> {
    let auth = authorize(state, caller, account, Permission::ViewTranscripts).await?;
    let p = project_in(state, &auth, project).await?;
    let limit = page.limit()?;
    let before = match page.cursor.as_deref().filter(|c| !c.is_empty()) {
        Some(c) => Some(
            TranscriptId::parse(c).ok_or_else(|| Error::Invalid("cursor is not valid".into()))?,
        ),
        None => None,
    };
    let mut rows = state
        .store
        .list_transcripts(
            p.id,
            &TranscriptQuery {
                limit: limit as u32 + 1,
                before_id: before,
                ..TranscriptQuery::default()
            },
        )
        .await?;
    let has_more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if has_more {
        rows.last().map(|t| t.id.to_string())
    } else {
        None
    };
    let names = key_names(state, p.id, rows.iter().map(|t| t.api_key_id)).await?;
    Ok(TranscriptList {
        project: ProjectView::from(&p),
        transcripts: Page {
            data: rows
                .iter()
                .map(|t| ListedTranscript {
                    summary: TranscriptSummary::from(t),
                    key_name: names.get(&t.api_key_id).cloned(),
                })
                .collect(),
            has_more,
            next_cursor,
        },
    })
}

async fn find(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    id: TranscriptId,
) -> Result<(ProjectView, Transcript)> {
    let auth = authorize(state, caller, account, Permission::ViewTranscripts).await?;
    let p = project_in(state, &auth, project).await?;
    let t = state
        .store
        .get_transcript(p.id, id)
        .await?
        .ok_or(Error::NotFound("transcript"))?;
    Ok((ProjectView::from(&p), t))
}

/// One transcript with its text and words.
pub async fn get(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    id: TranscriptId,
) -> Result<TranscriptDetail> {
    let (project, t) = find(state, caller, account, project, id).await?;
    let deleted = t.deleted_at.is_some();
    let result = if deleted {
        None
    } else {
        render::stored_result(&t)
    };
    let key_name = state
        .store
        .get_api_key(t.api_key_id)
        .await?
        .filter(|k| k.project_id == t.project_id)
        .map(|k| k.name);
    Ok(TranscriptDetail {
        project,
        summary: TranscriptSummary::from(&t),
        key_name,
        text: result.as_ref().map(|r| r.text.clone()),
        words: result.map(|r| r.words).unwrap_or_default(),
        error: t.error.clone(),
        deleted,
        speech_model: t.speech_model_used.clone(),
    })
}

/// A completed transcript as a file: `(file name, content type, body)`. SRT and VTT
/// come from the same formatter as the AssemblyAI API's `/srt` and `/vtt`.
pub async fn download(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    id: TranscriptId,
    format: Download,
) -> Result<(String, &'static str, String)> {
    let (_, t) = find(state, caller, account, project, id).await?;
    if t.deleted_at.is_some() {
        return Err(Error::Invalid("the transcript has been deleted".into()));
    }
    if t.status != TranscriptStatus::Completed {
        return Err(Error::Invalid(format!(
            "the transcript is not completed (status: {})",
            t.status.as_str()
        )));
    }
    let result = render::stored_result(&t)
        .ok_or_else(|| Error::internal("completed transcript without result"))?;
    let body = match format {
        Download::Text => {
            let mut text = result.text;
            text.push('\n');
            text
        }
        Download::Srt => hark_core::views::srt(&result.words, None),
        Download::Vtt => hark_core::views::vtt(&result.words, None),
    };
    Ok((
        format!("transcript-{}.{}", t.id, format.extension()),
        format.content_type(),
        body,
    ))
}

/// Deletes a transcript as `DELETE /v2/transcript/{id}` does (text scrubbed, upload
/// removed, a queued job cancelled), by an Owner or Admin; audited.
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    account: AccountId,
    project: ProjectId,
    id: TranscriptId,
) -> Result<()> {
    let auth = authorize(state, caller, account, Permission::ManageProjects).await?;
    let p = project_in(state, &auth, project).await?;
    let (_, upload) = state
        .store
        .delete_transcript_as(p.id, id, &caller.actor())
        .await?
        .ok_or(Error::NotFound("transcript"))?;
    if let Some(upload) = upload {
        crate::uploads::remove_objects(state, &[upload.path], &[]).await;
    }
    Ok(())
}
