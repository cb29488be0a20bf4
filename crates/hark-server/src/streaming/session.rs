//! One `/v3/ws` session: authentication (API key or single-use token), the message
//! protocol (Begin, Turn, Termination; Terminate, ForceEndpoint, UpdateConfiguration,
//! KeepAlive), audio checks, the session cap and timeouts, and the close that bills it.

use super::params::{parse_client_message, ClientMessage, Encoding, MessageError, SessionParams};
use super::Standing;
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use hark_audio::{PcmEncoding, StreamResampler};
use hark_core::clock::Millis;
use hark_core::keys::{self, SecretDigest, SecretKind};
use hark_core::speech::{SpeechError, SpeechStream, StreamEvent, StreamingUpdate, Turn};
use hark_core::StreamSessionId;
use hark_store::{
    CloseStreamSession, OpenStreamSession, OpenedStreamSession, StreamCredential, StreamRefusal,
};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Close codes (reference 5.5).
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_UNAUTHORIZED: u16 = 1008;
pub const CLOSE_SERVER_ERROR: u16 = 3005;
pub const CLOSE_INVALID_MESSAGE: u16 = 3006;
pub const CLOSE_AUDIO_VIOLATION: u16 = 3007;
pub const CLOSE_SESSION_EXPIRED: u16 = 3008;
pub const CLOSE_TOO_MANY_SESSIONS: u16 = 3009;

/// Each audio frame must hold this much audio (ms, inclusive).
const FRAME_MS_RANGE: (u64, u64) = (50, 1000);
/// How often deadlines (cap, inactivity, liveness) are checked: often enough for
/// second-granular limits, rarely enough that thousands of idle sessions cost little.
const TICK: Duration = Duration::from_millis(1000);
/// How long to wait for the client's close reply before dropping the connection.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// `ForceEndpoint` is applied at most this often; one sent sooner waits for the
/// interval (several meanwhile count as one), and one with no audio since the last
/// has nothing to end and is dropped.
const FORCE_ENDPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// Engine operations a session may have waiting (audio frames, endpoints, updates);
/// beyond this the session ends (the engine is not keeping up).
const MAX_QUEUED_OPS: usize = 512;
/// How much of a frame's text is quoted back in a close reason (and stored as the
/// session's end reason).
const QUOTED_TEXT_MAX: usize = 64;

/// The credential a client presented, and whether it came in the query string.
pub(crate) struct Presented {
    secret: String,
    in_query: bool,
}

/// The credential a client presented: `?token=` first (browsers, Node SDK), else the
/// `Authorization` header (API key, or a token as the Python SDK sends it).
pub(crate) fn presented_credential(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Presented {
    if let Some(token) = query.get("token").filter(|t| !t.is_empty()) {
        return Presented {
            secret: token.trim().to_string(),
            in_query: true,
        };
    }
    let raw = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim();
    let secret = match raw.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim().to_string(),
        _ => raw.to_string(),
    };
    Presented {
        secret,
        in_query: false,
    }
}

/// Why the session ends, and what the client is told.
#[derive(Debug, Clone)]
enum Ending {
    /// `Terminate` (or inactivity): final turns, `Termination`, close 1000.
    Graceful { reason: String },
    /// A protocol or limit violation: final turns, then the close code.
    Violation { code: u16, reason: String },
    /// The client closed or vanished: nothing more can be sent.
    ClientGone { reason: String },
    /// The server is stopping.
    Shutdown,
    /// The session's key was revoked or expired, or its project or account deleted:
    /// no more results, close 1008.
    Revoked { reason: String },
}

/// Work for the engine, applied in arrival order.
enum EngineOp {
    Audio(Vec<f32>),
    ForceEndpoint,
    Update(StreamingUpdate),
    Finish,
}

type EngineResult = (Box<dyn SpeechStream>, Result<Vec<StreamEvent>, SpeechError>);

struct Live {
    state: AppState,
    socket: WebSocket,
    opened: OpenedStreamSession,
    params: SessionParams,
    /// `None` while a batch of work runs on a blocking thread.
    stream: Option<Box<dyn SpeechStream>>,
    inflight: Option<tokio::task::JoinHandle<EngineResult>>,
    queue: VecDeque<EngineOp>,
    /// 16 kHz samples of audio waiting in `queue`.
    queued_samples: usize,
    /// The most queued audio allowed (`streaming.max_pending_audio_secs`).
    max_queued_samples: usize,
    /// When the last `ForceEndpoint` was queued, whether one waits for the interval,
    /// and whether audio arrived since the last one.
    last_force: Option<Instant>,
    force_deferred: bool,
    audio_since_force: bool,
    resampler: StreamResampler,
    /// Audio received, by the declared sample rate.
    audio_received_ms: u64,
    first_audio_at: Option<Millis>,
    last_audio_at: Millis,
    last_client_frame: Instant,
    last_ping: Instant,
    last_progress: Instant,
    progress_saved_ms: u64,
    finals: Vec<Value>,
    finishing: bool,
    finished: bool,
    /// What the session's credential allows now (see `super::Standing`); the sender is
    /// kept so the receiver always has one.
    standing: tokio::sync::watch::Receiver<Standing>,
    _standing_sender: Arc<tokio::sync::watch::Sender<Standing>>,
    key_expires_at: Option<Millis>,
}

/// Runs a session on an upgraded socket until it ends; always bills what it opened.
pub(crate) async fn run(
    state: AppState,
    mut socket: WebSocket,
    query: HashMap<String, String>,
    presented: Presented,
    client: Option<std::net::IpAddr>,
) {
    // The credential first: nothing (query parsing, model lookup, engine) is done for
    // a caller who is not one.
    let credential = match authenticate(&state, &presented.secret, presented.in_query, client).await
    {
        Ok(c) => c,
        Err((code, reason)) => {
            close_with(&mut socket, code, &reason).await;
            return;
        }
    };
    let params = match SessionParams::parse(&query) {
        Ok(p) => p,
        Err(reason) => {
            close_with(
                &mut socket,
                CLOSE_INVALID_MESSAGE,
                &format!("Invalid Message: {reason}"),
            )
            .await;
            return;
        }
    };
    let Some(engine) = state.engine.clone() else {
        close_with(
            &mut socket,
            CLOSE_SERVER_ERROR,
            "Session Cancelled: no speech engine is running on this server",
        )
        .await;
        return;
    };
    let model = state.config.resolve_streaming_model(&params.speech_model);
    if !engine.models().contains(&model) {
        close_with(
            &mut socket,
            CLOSE_INVALID_MESSAGE,
            &format!(
                "Invalid Message: speech_model '{}' is not available on this server",
                params.speech_model
            ),
        )
        .await;
        return;
    }
    // Built before the session opens, so a failure here consumes no token.
    let encoding = match params.encoding {
        Encoding::PcmS16le => PcmEncoding::PcmS16le,
        Encoding::PcmMulaw => PcmEncoding::PcmMulaw,
    };
    let started = engine
        .clone()
        .open_stream(&model, params.engine.clone())
        .map_err(|e| e.to_string())
        .and_then(|stream| {
            StreamResampler::new(params.sample_rate, encoding)
                .map(|resampler| (stream, resampler))
                .map_err(|e| e.to_string())
        });
    let (stream, resampler) = match started {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %e, "could not start the streaming engine");
            close_with(
                &mut socket,
                CLOSE_SERVER_ERROR,
                "Session Cancelled: An error occurred",
            )
            .await;
            return;
        }
    };
    let id = StreamSessionId::random();
    let opened = state
        .store
        .open_stream_session(OpenStreamSession {
            id,
            credential,
            model: model.clone(),
            default_max_session_secs: state.config.streaming.max_session_secs,
            node_id: state.node_id.clone(),
            webhook_url: params.webhook_url.clone(),
            webhook_auth_header_name: params.webhook_auth_header_name.clone(),
            // Sealed below once the project is known.
            webhook_auth_header_sealed: None,
        })
        .await;
    let opened = match opened {
        Ok(Ok(o)) => o,
        Ok(Err(refusal)) => {
            let (code, reason) = refusal_close(&refusal);
            close_with(&mut socket, code, &reason).await;
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "could not open a streaming session");
            close_with(
                &mut socket,
                CLOSE_SERVER_ERROR,
                "Session Cancelled: An error occurred",
            )
            .await;
            return;
        }
    };
    if let Some(value) = &params.webhook_auth_header_value {
        let context = hark_outbound::auth_header_seal_context(None, opened.project_id);
        let sealed = state.master_key.seal(value.expose(), &context);
        if let Err(e) = state
            .store
            .set_stream_webhook_auth(opened.id, &sealed)
            .await
        {
            tracing::error!(error = %e, "could not store the session's webhook header");
        }
    }
    let (_tracked, standing) = state.sessions.enter(&opened);
    // Read once registered, so a revocation that landed before registration counts.
    match state.store.get_api_key(opened.api_key_id).await {
        Ok(record) => {
            standing.send_replace(Standing::of(
                record.as_ref(),
                hark_store::CredentialChange::All,
                state.clock.now_ms(),
            ));
        }
        Err(e) => tracing::warn!(error = %e, "could not read a new session's key"),
    }
    let now = state.clock.now_ms();
    let live = Live {
        state: state.clone(),
        socket,
        opened,
        params,
        stream: Some(stream),
        inflight: None,
        queue: VecDeque::new(),
        queued_samples: 0,
        max_queued_samples: (state.config.streaming.max_pending_audio_secs.max(1) as usize)
            .saturating_mul(16_000),
        last_force: None,
        force_deferred: false,
        audio_since_force: false,
        resampler,
        audio_received_ms: 0,
        first_audio_at: None,
        last_audio_at: now,
        last_client_frame: Instant::now(),
        last_ping: Instant::now(),
        last_progress: Instant::now(),
        progress_saved_ms: 0,
        finals: Vec::new(),
        finishing: false,
        finished: false,
        standing: standing.subscribe(),
        _standing_sender: standing,
        key_expires_at: None,
    };
    live.run().await;
}

fn stopping(shutdown: &tokio::sync::watch::Receiver<bool>) -> bool {
    *shutdown.borrow()
}

/// The caller's credential, or the close that refuses it. A token is checked without
/// being redeemed (it is redeemed when the session opens).
async fn authenticate(
    state: &AppState,
    presented: &str,
    in_query: bool,
    client: Option<std::net::IpAddr>,
) -> Result<StreamCredential, (u16, String)> {
    let unauthorized = |reason: &str| (CLOSE_UNAUTHORIZED, reason.to_string());
    if presented.is_empty() {
        return Err(unauthorized(
            "Unauthorized Connection: Missing Authorization header",
        ));
    }
    // Query strings end up in proxy and access logs: only single-use tokens belong
    // there. An API key sent that way is refused without being looked up.
    if in_query && !keys::is_well_formed(SecretKind::TempToken, presented) {
        return Err(unauthorized(
            if keys::is_well_formed(SecretKind::ApiKey, presented) {
                "Unauthorized Connection: API keys are not accepted in the query string; send the key in the Authorization header or use a temporary token"
            } else {
                "Unauthorized Connection: Invalid temporary token"
            },
        ));
    }
    if keys::is_well_formed(SecretKind::TempToken, presented) {
        let digest_hex = SecretDigest::of(presented).to_hex();
        return match state.store.check_stream_token(&digest_hex).await {
            Ok(None) => Ok(StreamCredential::Token { digest_hex }),
            Ok(Some(refusal)) => Err(refusal_close(&refusal)),
            Err(e) => {
                tracing::error!(error = %e, "could not check a streaming token");
                Err(unauthorized(
                    "Unauthorized Connection: credentials could not be checked",
                ))
            }
        };
    }
    match state
        .auth
        .verify(
            presented,
            client,
            state.store.as_ref(),
            state.clock.as_ref(),
        )
        .await
    {
        Ok(principal) if !principal.allows(hark_core::scope::Scope::Streaming) => Err(
            unauthorized("Unauthorized Connection: this API key's scopes do not include streaming"),
        ),
        Ok(principal) => Ok(StreamCredential::ApiKey {
            account_id: principal.account_id,
            project_id: principal.project_id,
            api_key_id: principal.key_id,
        }),
        Err(crate::error::ApiError::Unauthorized) => Err(unauthorized(
            "Unauthorized Connection: Invalid API key or temporary token",
        )),
        Err(crate::error::ApiError::TooManyRequests { .. }) => Err(unauthorized(
            "Unauthorized Connection: too many unknown API keys from this address; try again later",
        )),
        Err(e) => {
            tracing::error!(error = ?e, "could not verify a streaming credential");
            Err(unauthorized(
                "Unauthorized Connection: credentials could not be checked",
            ))
        }
    }
}

fn refusal_close(refusal: &StreamRefusal) -> (u16, String) {
    match refusal {
        StreamRefusal::TokenUnknown => (
            CLOSE_UNAUTHORIZED,
            "Unauthorized Connection: Invalid temporary token".into(),
        ),
        StreamRefusal::TokenExpired => (
            CLOSE_UNAUTHORIZED,
            "Unauthorized Connection: Temporary token has expired".into(),
        ),
        StreamRefusal::TokenUsed => (
            CLOSE_UNAUTHORIZED,
            "Unauthorized Connection: Temporary token has already been used".into(),
        ),
        StreamRefusal::KeyUnusable => (
            CLOSE_UNAUTHORIZED,
            "Unauthorized Connection: The API key is revoked or expired".into(),
        ),
        StreamRefusal::BalanceNegative => (
            CLOSE_UNAUTHORIZED,
            crate::error::BALANCE_NEGATIVE.into(),
        ),
        StreamRefusal::RateLimited { per_minute } => (
            CLOSE_TOO_MANY_SESSIONS,
            format!("Too many concurrent sessions: this account may start {per_minute} sessions per minute"),
        ),
    }
}

/// A client's text as quoted back to it: at most [`QUOTED_TEXT_MAX`] characters, so a
/// large invalid frame is not echoed (nor stored as the end reason) at length.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_TEXT_MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// `later` applied over `earlier`: the values `later` sets win.
fn merge_update(earlier: &mut StreamingUpdate, later: StreamingUpdate) {
    earlier.vad_threshold = later.vad_threshold.or(earlier.vad_threshold);
    earlier.min_turn_silence_ms = later.min_turn_silence_ms.or(earlier.min_turn_silence_ms);
    earlier.max_turn_silence_ms = later.max_turn_silence_ms.or(earlier.max_turn_silence_ms);
    earlier.end_of_turn_confidence_threshold = later
        .end_of_turn_confidence_threshold
        .or(earlier.end_of_turn_confidence_threshold);
}

/// Sends a close frame (reason cut to the protocol's 123 bytes), then waits briefly for
/// the client's reply so the frame is not lost to a connection reset.
async fn close_with(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut reason = reason.to_string();
    while reason.len() > 123 {
        reason.pop();
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// The words of a turn as the wire shows them.
fn words_json(turn: &Turn, formatted: bool, stable_before_ms: Option<u64>) -> Vec<Value> {
    turn.words
        .iter()
        .map(|w| {
            let text = if formatted {
                w.text.clone()
            } else {
                unformat(&w.text)
            };
            json!({
                "start": w.start,
                "end": w.end,
                "text": text,
                "confidence": w.confidence,
                "word_is_final": stable_before_ms.is_none_or(|s| w.end <= s),
            })
        })
        .collect()
}

/// A word as an unformatted turn shows it: lowercase, no punctuation.
fn unformat(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'' || *c == '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn turn_message(
    turn: &Turn,
    end_of_turn: bool,
    formatted: bool,
    partial_stable: Option<u64>,
) -> Value {
    let words = words_json(turn, formatted, partial_stable);
    let transcript = words
        .iter()
        .filter_map(|w| w["text"].as_str())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "type": "Turn",
        "turn_order": turn.turn_order,
        "turn_is_formatted": formatted,
        "end_of_turn": end_of_turn,
        "transcript": transcript,
        "utterance": if end_of_turn { transcript.clone() } else { String::new() },
        "end_of_turn_confidence": turn.end_of_turn_confidence,
        "words": words,
    })
}

impl Live {
    async fn run(mut self) {
        let begin = json!({
            "type": "Begin",
            "id": self.opened.id.to_string(),
            "expires_at": self.opened.expires_at / 1000,
        });
        let ending = if self.send(&begin).await {
            self.serve().await
        } else {
            Ending::ClientGone {
                reason: "client gone before Begin".into(),
            }
        };
        self.end(ending).await;
    }

    async fn send(&mut self, message: &Value) -> bool {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .is_ok()
    }

    /// The session loop: returns why it ended (the engine may still hold work).
    async fn serve(&mut self) -> Ending {
        let mut shutdown = self.state.shutdown.clone();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.finished {
                return Ending::Graceful {
                    reason: "terminated by the client".into(),
                };
            }
            if stopping(&shutdown) {
                return Ending::Shutdown;
            }
            match &*self.standing.borrow_and_update() {
                Standing::Revoked(reason) => {
                    return Ending::Revoked {
                        reason: reason.clone(),
                    }
                }
                Standing::Valid { key_expires_at } => self.key_expires_at = *key_expires_at,
            }
            tokio::select! {
                msg = self.socket.recv() => {
                    self.last_client_frame = Instant::now();
                    let ending = match msg {
                        None | Some(Err(_)) => Some(Ending::ClientGone { reason: "connection lost".into() }),
                        Some(Ok(Message::Close(_))) => Some(Ending::ClientGone { reason: "closed by the client without Terminate".into() }),
                        Some(Ok(Message::Binary(bytes))) => self.on_audio(&bytes),
                        Some(Ok(Message::Text(text))) => self.on_text(text.as_str()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    };
                    if let Some(ending) = ending {
                        return ending;
                    }
                }
                done = async {
                    match self.inflight.as_mut() {
                        Some(handle) => handle.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.inflight = None;
                    if let Some(ending) = self.on_engine_done(done).await {
                        return ending;
                    }
                }
                _ = ticker.tick() => {
                    if let Some(ending) = self.on_tick().await {
                        return ending;
                    }
                }
                // The sender lives as long as `self`, so this never fails; the standing
                // is read at the top of the loop.
                _ = self.standing.changed() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || stopping(&shutdown) {
                        return Ending::Shutdown;
                    }
                }
            }
            self.dispatch();
        }
    }

    /// Starts the queued engine work on a blocking thread if the engine is free.
    fn dispatch(&mut self) {
        if self.force_deferred && !self.finishing && self.force_allowed_now() {
            self.force_deferred = false;
            self.queue_force_endpoint();
        }
        if self.inflight.is_some() || self.queue.is_empty() {
            return;
        }
        self.queued_samples = 0;
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let mut ops: Vec<EngineOp> = self.queue.drain(..).collect();
        // Adjacent audio goes to the engine as one piece.
        let mut merged: Vec<EngineOp> = Vec::with_capacity(ops.len());
        for op in ops.drain(..) {
            match (merged.last_mut(), op) {
                (Some(EngineOp::Audio(prev)), EngineOp::Audio(more)) => prev.extend(more),
                (_, op) => merged.push(op),
            }
        }
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            let mut events = Vec::new();
            for op in merged {
                let result = match op {
                    EngineOp::Audio(pcm) => stream.push_audio(&pcm),
                    EngineOp::ForceEndpoint => stream.force_endpoint(),
                    EngineOp::Update(u) => {
                        stream.update(&u);
                        Ok(Vec::new())
                    }
                    EngineOp::Finish => stream.finish(),
                };
                match result {
                    Ok(mut e) => events.append(&mut e),
                    Err(e) => return (stream, Err(e)),
                }
            }
            (stream, Ok(events))
        }));
    }

    fn on_audio(&mut self, bytes: &[u8]) -> Option<Ending> {
        if self.finishing {
            return None;
        }
        let samples = bytes.len() / self.params.encoding.bytes_per_sample();
        let ms = samples as u64 * 1000 / u64::from(self.params.sample_rate);
        if ms < FRAME_MS_RANGE.0 || ms > FRAME_MS_RANGE.1 {
            return Some(Ending::Violation {
                code: CLOSE_AUDIO_VIOLATION,
                reason: format!(
                    "Input duration violation: {ms} ms. Expected between {} and {} ms",
                    FRAME_MS_RANGE.0, FRAME_MS_RANGE.1
                ),
            });
        }
        let now = self.state.clock.now_ms();
        let first = *self.first_audio_at.get_or_insert(now);
        self.audio_received_ms += ms;
        self.last_audio_at = now;
        let elapsed_ms = (now - first).max(0) as u64;
        // The first frame may arrive whole; after that audio may run ahead of the clock
        // by the tolerance only.
        if self.audio_received_ms
            > elapsed_ms
                + ms.max(FRAME_MS_RANGE.1)
                + self.state.config.streaming.realtime_tolerance_ms
        {
            return Some(Ending::Violation {
                code: CLOSE_AUDIO_VIOLATION,
                reason: format!(
                    "Audio Transmission Rate Exceeded: Received {:.1} sec. audio in {:.1} sec",
                    self.audio_received_ms as f64 / 1000.0,
                    elapsed_ms as f64 / 1000.0
                ),
            });
        }
        let pcm = self.resampler.push(bytes);
        if !pcm.is_empty() {
            self.audio_since_force = true;
            return self.enqueue(EngineOp::Audio(pcm));
        }
        None
    }

    /// Queues engine work, ending the session when the engine is this far behind.
    fn enqueue(&mut self, op: EngineOp) -> Option<Ending> {
        if let EngineOp::Audio(pcm) = &op {
            self.queued_samples += pcm.len();
        }
        if self.queued_samples > self.max_queued_samples || self.queue.len() >= MAX_QUEUED_OPS {
            tracing::warn!(
                queued_ms = self.queued_samples / 16,
                queued_ops = self.queue.len(),
                "a streaming session fell too far behind; ending it"
            );
            return Some(Ending::Violation {
                code: CLOSE_SERVER_ERROR,
                reason: "Session Cancelled: the server could not keep up with the audio".into(),
            });
        }
        self.queue.push_back(op);
        None
    }

    fn force_allowed_now(&self) -> bool {
        self.last_force
            .is_none_or(|at| at.elapsed() >= FORCE_ENDPOINT_INTERVAL)
    }

    /// Queues a `ForceEndpoint` if audio arrived since the last one (else there is no
    /// turn to end).
    fn queue_force_endpoint(&mut self) {
        if !self.audio_since_force {
            return;
        }
        self.audio_since_force = false;
        self.last_force = Some(Instant::now());
        // Bounded: at most one per interval, and audio between them is bounded.
        self.queue.push_back(EngineOp::ForceEndpoint);
    }

    fn on_text(&mut self, text: &str) -> Option<Ending> {
        let invalid = |reason: String| {
            Some(Ending::Violation {
                code: CLOSE_INVALID_MESSAGE,
                reason,
            })
        };
        let message = match parse_client_message(text) {
            Ok(message) => message,
            Err(MessageError::InvalidJson) => {
                return invalid(format!("Invalid JSON: {}", quoted(text)))
            }
            Err(MessageError::NotAMessage) => {
                return invalid(format!("Invalid Message: {}", quoted(text)))
            }
            Err(MessageError::UnknownType(other)) => {
                return invalid(format!("Invalid Message Type: {}", quoted(&other)))
            }
            Err(MessageError::InvalidUpdate(reason)) => {
                return invalid(format!("Invalid Message: {}", quoted(&reason)))
            }
        };
        match message {
            ClientMessage::Terminate => {
                self.begin_finishing();
                None
            }
            ClientMessage::ForceEndpoint => {
                if self.finishing {
                    // Terminate's flush ends the turn anyway.
                } else if self.force_allowed_now() {
                    self.queue_force_endpoint();
                } else {
                    self.force_deferred = true;
                }
                None
            }
            ClientMessage::KeepAlive => None,
            ClientMessage::UpdateConfiguration(update) => {
                // Checked against the settings in force, as the query string's are at
                // the start: each value may be in range while the pair is not.
                let mut merged = self.params.engine.clone();
                merged.apply(&update.0);
                if merged.min_turn_silence_ms > merged.max_turn_silence_ms {
                    return invalid(format!(
                        "Invalid Message: min_turn_silence ({} ms) must not exceed max_turn_silence ({} ms)",
                        merged.min_turn_silence_ms, merged.max_turn_silence_ms
                    ));
                }
                self.params.engine = merged;
                // Updates in a row are one update (the later values win).
                if let Some(EngineOp::Update(last)) = self.queue.back_mut() {
                    merge_update(last, update.0);
                    None
                } else {
                    self.enqueue(EngineOp::Update(update.0))
                }
            }
        }
    }

    /// Queues the end of the audio: the resampler's tail, then the engine's flush.
    fn begin_finishing(&mut self) {
        if self.finishing {
            return;
        }
        self.finishing = true;
        let tail = self.resampler.flush();
        if !tail.is_empty() {
            self.queue.push_back(EngineOp::Audio(tail));
        }
        self.queue.push_back(EngineOp::Finish);
    }

    async fn on_engine_done(
        &mut self,
        done: Result<EngineResult, tokio::task::JoinError>,
    ) -> Option<Ending> {
        let (stream, result) = match done {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "streaming engine task failed");
                return Some(Ending::Violation {
                    code: CLOSE_SERVER_ERROR,
                    reason: "Session Cancelled: An error occurred".into(),
                });
            }
        };
        self.stream = Some(stream);
        let events = match result {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "streaming engine failed");
                return Some(Ending::Violation {
                    code: CLOSE_SERVER_ERROR,
                    reason: "Session Cancelled: An error occurred".into(),
                });
            }
        };
        let mut had_final = false;
        for event in events {
            had_final |= matches!(event, StreamEvent::Final(_));
            for message in self.messages_for(&event) {
                if !self.send(&message).await {
                    return Some(Ending::ClientGone {
                        reason: "connection lost".into(),
                    });
                }
            }
        }
        if had_final {
            self.save_progress().await;
        }
        if self.finishing && self.queue.is_empty() {
            self.finished = true;
        }
        None
    }

    /// The wire messages for one engine event; remembers finals for the webhook.
    fn messages_for(&mut self, event: &StreamEvent) -> Vec<Value> {
        match event {
            StreamEvent::Partial(turn) => {
                // Words that ended a second before the audio decoded so far are settled.
                let stable = turn.end_ms.saturating_sub(1000);
                vec![turn_message(turn, false, false, Some(stable))]
            }
            StreamEvent::Final(turn) => {
                let mut out = vec![turn_message(turn, true, false, None)];
                if self.params.format_turns {
                    out.push(turn_message(turn, true, true, None));
                }
                if let Some(last) = out.last() {
                    self.finals.push(last.clone());
                }
                out
            }
        }
    }

    async fn save_progress(&mut self) {
        self.last_progress = Instant::now();
        self.progress_saved_ms = self.audio_received_ms;
        let finals = Value::Array(self.finals.clone()).to_string();
        if let Err(e) = self
            .state
            .store
            .record_stream_progress(self.opened.id, self.audio_received_ms as i64, &finals)
            .await
        {
            tracing::warn!(error = %e, "could not save streaming progress");
        }
    }

    async fn on_tick(&mut self) -> Option<Ending> {
        let now = self.state.clock.now_ms();
        let settings = &self.state.config.streaming;
        if self.key_expires_at.is_some_and(|at| now >= at) {
            return Some(Ending::Revoked {
                reason: "the API key expired".into(),
            });
        }
        if now >= self.opened.expires_at {
            return Some(Ending::Violation {
                code: CLOSE_SESSION_EXPIRED,
                reason: "Session Expired: Maximum session duration exceeded".into(),
            });
        }
        if let Some(secs) = self.params.inactivity_timeout_secs {
            if !self.finishing && now - self.last_audio_at >= secs as i64 * 1000 {
                return Some(Ending::Graceful {
                    reason: format!("no audio for {secs} s (inactivity_timeout)"),
                });
            }
        }
        if self.last_client_frame.elapsed() >= Duration::from_secs(settings.client_timeout_secs) {
            return Some(Ending::ClientGone {
                reason: "client stopped answering".into(),
            });
        }
        if self.last_ping.elapsed() >= Duration::from_secs(settings.ping_interval_secs) {
            self.last_ping = Instant::now();
            if self
                .socket
                .send(Message::Ping(Vec::new().into()))
                .await
                .is_err()
            {
                return Some(Ending::ClientGone {
                    reason: "connection lost".into(),
                });
            }
        }
        if self.audio_received_ms > self.progress_saved_ms
            && self.last_progress.elapsed() >= Duration::from_secs(settings.progress_interval_secs)
        {
            self.save_progress().await;
        }
        None
    }

    /// Finishes the engine's work where the client can still hear it, tells the client
    /// how the session ended, and closes the session row (billing it) exactly once.
    async fn end(mut self, ending: Ending) {
        // A revoked session gets no more results; a gone client cannot.
        let can_send = !matches!(ending, Ending::ClientGone { .. } | Ending::Revoked { .. });
        if can_send {
            // The open turn is finalised so the client (and webhook) get its text.
            self.begin_finishing();
            let drain = async {
                loop {
                    self.dispatch();
                    let Some(handle) = self.inflight.as_mut() else {
                        break;
                    };
                    let done = handle.await;
                    self.inflight = None;
                    if self.on_engine_done(done).await.is_some() {
                        break;
                    }
                }
            };
            // Bounded: a stuck engine must not hold the close (or shutdown) forever.
            if tokio::time::timeout(Duration::from_secs(30), drain)
                .await
                .is_err()
            {
                tracing::warn!(session = %self.opened.id, "engine did not finish in time");
            }
        } else if let Some(handle) = self.inflight.take() {
            // Nobody is listening; let the engine finish in the background.
            drop(handle);
        }
        let now = self.state.clock.now_ms();
        let session_ms = (now - self.opened.started_at).max(0);
        let reason = match &ending {
            Ending::Graceful { reason } | Ending::ClientGone { reason } => reason.clone(),
            Ending::Violation { code, reason } => format!("{code}: {reason}"),
            Ending::Revoked { reason } => format!("{CLOSE_UNAUTHORIZED}: {reason}"),
            Ending::Shutdown => "server shutdown".into(),
        };
        let close = CloseStreamSession {
            audio_ms: self.audio_received_ms as i64,
            final_turns_json: Value::Array(std::mem::take(&mut self.finals)).to_string(),
            reason,
            ended_at: Some(now),
        };
        let closed = self
            .state
            .store
            .close_stream_session(self.opened.id, close.clone())
            .await;
        if let Err(e) = closed {
            tracing::warn!(error = %e, session = %self.opened.id, "could not close a streaming session; retrying");
            tokio::spawn(close_after_error(self.state.clone(), self.opened.id, close));
        }
        match ending {
            Ending::Graceful { reason } => {
                let termination = json!({
                    "type": "Termination",
                    "audio_duration_seconds": (self.audio_received_ms as f64 / 1000.0).round() as u64,
                    "session_duration_seconds": (session_ms as f64 / 1000.0).round() as u64,
                });
                self.send(&termination).await;
                let reason = if reason == "terminated by the client" {
                    String::new()
                } else {
                    format!("Session ended: {reason}")
                };
                close_with(&mut self.socket, CLOSE_NORMAL, &reason).await;
            }
            Ending::Violation { code, reason } => {
                close_with(&mut self.socket, code, &reason).await;
            }
            Ending::Shutdown => {
                close_with(
                    &mut self.socket,
                    CLOSE_GOING_AWAY,
                    "Session ended: the server is shutting down",
                )
                .await;
            }
            Ending::Revoked { reason } => {
                close_with(
                    &mut self.socket,
                    CLOSE_UNAUTHORIZED,
                    &format!("Unauthorized Connection: {reason}"),
                )
                .await;
            }
            Ending::ClientGone { .. } => {}
        }
    }
}

/// Closes (and so bills) a session whose close failed, typically because the database
/// was restarting: retried with backoff for as long as this process runs, since its
/// own streaming lease keeps other processes from reaping the row. The close applies
/// only to an open row, so an attempt that did commit before its answer was lost is
/// not billed again; if this process stops first, a later one reaps the row.
async fn close_after_error(state: AppState, id: StreamSessionId, close: CloseStreamSession) {
    let mut delay = Duration::from_millis(250);
    loop {
        tokio::time::sleep(delay).await;
        match state.store.close_stream_session(id, close.clone()).await {
            Ok(_) => {
                tracing::info!(session = %id, "closed a streaming session after a database error");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, session = %id, "closing a streaming session failed again")
            }
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark_core::speech::Word;

    fn turn() -> Turn {
        Turn {
            turn_order: 2,
            text: "Hello, World.".into(),
            words: vec![
                Word {
                    text: "Hello,".into(),
                    start: 0,
                    end: 400,
                    confidence: 0.9,
                },
                Word {
                    text: "World.".into(),
                    start: 500,
                    end: 2000,
                    confidence: 0.8,
                },
            ],
            start_ms: 0,
            end_ms: 2000,
            confidence: 0.85,
            end_of_turn_confidence: 0.9,
        }
    }

    #[test]
    fn final_turns_formatted_and_not() {
        let raw = turn_message(&turn(), true, false, None);
        assert_eq!(raw["transcript"], "hello world");
        assert_eq!(raw["utterance"], "hello world");
        assert_eq!(raw["turn_is_formatted"], false);
        assert_eq!(raw["words"][1]["word_is_final"], true);
        let formatted = turn_message(&turn(), true, true, None);
        assert_eq!(formatted["transcript"], "Hello, World.");
        assert_eq!(formatted["turn_order"], 2);
        assert_eq!(formatted["type"], "Turn");
    }

    #[test]
    fn partial_turns_mark_only_settled_words_final() {
        let partial = turn_message(&turn(), false, false, Some(1000));
        assert_eq!(partial["end_of_turn"], false);
        assert_eq!(partial["utterance"], "");
        assert_eq!(partial["words"][0]["word_is_final"], true);
        assert_eq!(partial["words"][1]["word_is_final"], false);
    }

    #[test]
    fn credential_from_query_then_header() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        let mut query = HashMap::new();
        let header = presented_credential(&headers, &query);
        assert_eq!((header.secret.as_str(), header.in_query), ("abc", false));
        query.insert("token".to_string(), "tok".to_string());
        let in_query = presented_credential(&headers, &query);
        assert_eq!((in_query.secret.as_str(), in_query.in_query), ("tok", true));
    }
}
