//! `WhisperEngine`: the shared, thread-safe engine behind Hark's `SpeechEngine` trait. It
//! loads each installed model once, runs inferences on its own thread pool sized to the
//! cores, and bounds how many inferences run at once.

use crate::decode::{transcribe_samples, DecodeOptions, LoadedModel, RawTranscript};
use crate::error::ModelError;
use crate::long_audio::{survey, SampleSpan, StreamedMel};
use crate::registry::ModelRegistry;
use crate::streaming::StreamingSession;
use crate::text::shape_word;
use hark_core::speech::{
    SpeechEngine, SpeechError, SpeechStream, StreamingConfig, TranscribeRequest, Transcription,
    Word, SAMPLE_RATE,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, RwLock};

/// How the engine uses the machine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads of the engine's compute pool (shared by all inferences).
    pub threads: usize,
    /// Inferences allowed to run at once; more wait their turn.
    pub max_concurrent: usize,
    /// Longest accepted audio, seconds.
    pub max_duration_secs: f64,
    /// Files up to this long are decoded whole into memory and transcribed in one pass;
    /// longer ones are streamed twice in bounded memory ([`crate::long_audio`]), with
    /// the same result. Bounds a batch transcription's audio buffers to about
    /// 128 KB per second of this (samples, log-mel and its work buffer).
    pub whole_file_secs: f64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        EngineOptions {
            threads: cores,
            max_concurrent: cores,
            max_duration_secs: 36_000.0,
            whole_file_secs: 300.0,
        }
    }
}

/// One file's transcription ([`WhisperEngine::transcribe_file`]).
#[derive(Debug, Clone)]
pub struct FileTranscript {
    /// Times relative to the first transcribed sample (`start_secs` into the file).
    pub raw: RawTranscript,
    pub start_secs: f64,
    /// Length of the whole decoded file, seconds (what is billed).
    pub duration_secs: f64,
    /// Whether the file was streamed (longer than [`EngineOptions::whole_file_secs`]).
    pub streamed: bool,
    /// Time spent holding an inference slot (for a streamed file this includes its
    /// decoding, which is interleaved with the inference).
    pub inference_secs: f64,
}

/// How soon an inference must run when the engine is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Batch jobs and overdue streaming partials.
    Normal,
    /// Someone is waiting on exactly this result (a live turn's final).
    Urgent,
}

/// A counting semaphore that serves waiters in order: urgent ones first, each class
/// first come, first served (a plain condvar semaphore let some sessions starve).
struct Permits {
    total: usize,
    state: Mutex<PermitState>,
    freed: Condvar,
}

struct PermitState {
    free: usize,
    next_ticket: u64,
    urgent: std::collections::VecDeque<u64>,
    normal: std::collections::VecDeque<u64>,
}

impl PermitState {
    /// The ticket whose turn it is, if any is waiting.
    fn next_in_line(&self) -> Option<u64> {
        self.urgent.front().or(self.normal.front()).copied()
    }

    /// No inference in flight (all `total` permits free) and so nobody waiting.
    fn idle(&self, total: usize) -> bool {
        self.free == total && self.next_in_line().is_none()
    }
}

struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(total: usize) -> Self {
        Permits {
            total,
            state: Mutex::new(PermitState {
                free: total,
                next_ticket: 0,
                urgent: Default::default(),
                normal: Default::default(),
            }),
            freed: Condvar::new(),
        }
    }

    fn acquire(&self, priority: Priority) -> Permit<'_> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        match priority {
            Priority::Urgent => state.urgent.push_back(ticket),
            Priority::Normal => state.normal.push_back(ticket),
        }
        while state.free == 0 || state.next_in_line() != Some(ticket) {
            state = self.freed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match priority {
            Priority::Urgent => state.urgent.pop_front(),
            Priority::Normal => state.normal.pop_front(),
        };
        state.free -= 1;
        // The next in line may be able to go too (more than one permit free).
        self.freed.notify_all();
        Permit(self)
    }

    /// Whether no inference is in flight (and so nobody is waiting).
    fn idle(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.idle(self.total)
    }

    /// A permit only when no inference is in flight (and so nobody is waiting).
    fn try_acquire_idle(&self) -> Option<Permit<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !state.idle(self.total) {
            return None;
        }
        state.free -= 1;
        Some(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.free += 1;
        self.0.freed.notify_all();
    }
}

/// The Whisper engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct WhisperEngine {
    registry: ModelRegistry,
    /// Names of the installed models, as of the last scan (construction or
    /// [`SpeechEngine::refresh_models`]): requests read this, never the directory.
    installed: RwLock<Vec<String>>,
    models: RwLock<HashMap<String, Arc<LoadedModel>>>,
    loading: Mutex<()>,
    pool: rayon::ThreadPool,
    permits: Permits,
    options: EngineOptions,
}

impl WhisperEngine {
    /// An engine over `<data_dir>/models`. Models load lazily on first use (or via [`Self::load`]).
    pub fn new(data_dir: &Path, options: EngineOptions) -> Result<Self, ModelError> {
        Self::with_registry(ModelRegistry::new(data_dir), options)
    }

    pub fn with_registry(
        registry: ModelRegistry,
        options: EngineOptions,
    ) -> Result<Self, ModelError> {
        let threads = options.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("hark-speech-{i}"))
            .build()
            .map_err(|e| ModelError::Invalid(format!("thread pool: {e}")))?;
        let installed = RwLock::new(scan_installed(&registry));
        Ok(WhisperEngine {
            registry,
            installed,
            models: RwLock::new(HashMap::new()),
            loading: Mutex::new(()),
            pool,
            permits: Permits::new(options.max_concurrent.max(1)),
            options,
        })
    }

    pub fn registry(&self) -> &ModelRegistry {
        &self.registry
    }

    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The installed model to use when a request names none.
    pub fn default_model(&self) -> Option<String> {
        self.registry.default_model()
    }

    /// The loaded model `name`, loading it on first use (once, even under concurrency).
    pub fn load(&self, name: &str) -> Result<Arc<LoadedModel>, ModelError> {
        if let Some(m) = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(m.clone());
        }
        let _guard = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(m.clone());
        }
        let dir = self.registry.model_path(name)?;
        let model = Arc::new(self.pool.install(|| LoadedModel::load(name, &dir))?);
        self.models
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), model.clone());
        Ok(model)
    }

    /// Transcribe 16-kHz mono PCM with a loaded model (waits for a free inference slot).
    pub fn transcribe_pcm(
        &self,
        model: &LoadedModel,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<RawTranscript, ModelError> {
        self.transcribe_pcm_at(Priority::Normal, model, samples, options)
    }

    /// As [`Self::transcribe_pcm`], queued by `priority` when the engine is busy.
    pub fn transcribe_pcm_at(
        &self,
        priority: Priority,
        model: &LoadedModel,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Result<RawTranscript, ModelError> {
        let asked = std::time::Instant::now();
        let _permit = self.permits.acquire(priority);
        let waited = asked.elapsed();
        let result = self
            .pool
            .install(|| transcribe_samples(model, samples, options));
        let ran = asked.elapsed() - waited;
        trace_inference(priority_label(priority), samples, waited, ran, &result);
        result
    }

    /// As [`Self::transcribe_pcm`], but only if the engine is idle; `None` when another
    /// inference is running. For best-effort work (streaming partials) that must not
    /// delay work someone is waiting for (final turns, batch jobs).
    pub fn transcribe_pcm_if_idle(
        &self,
        model: &LoadedModel,
        samples: &[f32],
        options: &DecodeOptions,
    ) -> Option<Result<RawTranscript, ModelError>> {
        let _permit = self.permits.try_acquire_idle()?;
        let started = std::time::Instant::now();
        let result = self
            .pool
            .install(|| transcribe_samples(model, samples, options));
        let ran = started.elapsed();
        trace_inference("if-idle", samples, std::time::Duration::ZERO, ran, &result);
        Some(result)
    }

    /// Whether no inference is in flight or waiting right now: a hint for best-effort
    /// work (which still goes through [`Self::transcribe_pcm_if_idle`]).
    pub fn is_idle(&self) -> bool {
        self.permits.idle()
    }

    fn decode_limits(&self) -> hark_audio::DecodeLimits {
        hark_audio::DecodeLimits {
            max_duration_secs: self.options.max_duration_secs,
        }
    }

    /// Decode a whole file with hark-audio, within the engine's duration limit.
    pub fn decode_audio(&self, path: &Path) -> Result<hark_audio::DecodedAudio, SpeechError> {
        Ok(hark_audio::decode_file(path, &self.decode_limits())?)
    }

    /// Transcribe `span` of an audio file. A file no longer than
    /// [`EngineOptions::whole_file_secs`] is decoded whole and transcribed as PCM; a
    /// longer one is read twice, decoding as it goes (a survey of the whole file, then
    /// the windows), so its memory does not grow with its length. Both give the same
    /// words and times.
    pub fn transcribe_file(
        &self,
        model: &LoadedModel,
        path: &Path,
        span: SampleSpan,
        options: &DecodeOptions,
    ) -> Result<FileTranscript, SpeechError> {
        let limits = self.decode_limits();
        let mut stream = hark_audio::open_file(path, &limits)?;
        let whole_limit = (self.options.whole_file_secs.max(0.0) * f64::from(SAMPLE_RATE)) as usize;
        let mut head: Vec<f32> = Vec::new();
        loop {
            match stream.next_chunk()? {
                Some(chunk) => {
                    head.extend_from_slice(chunk);
                    if head.len() > whole_limit {
                        break;
                    }
                }
                None => {
                    let summary = stream.summary().cloned().ok_or_else(|| {
                        SpeechError::Engine("decoder ended without a summary".into())
                    })?;
                    let total = head.len() as u64;
                    let start = span.start.min(total);
                    let end = span.end.map_or(total, |e| e.min(total)).max(start);
                    let started = std::time::Instant::now();
                    let raw =
                        self.transcribe_pcm(model, &head[start as usize..end as usize], options)?;
                    return Ok(FileTranscript {
                        raw,
                        start_secs: start as f64 / f64::from(SAMPLE_RATE),
                        duration_secs: summary.duration_secs,
                        streamed: false,
                        inference_secs: started.elapsed().as_secs_f64(),
                    });
                }
            }
        }
        let started = std::time::Instant::now();
        let _permit = self.permits.acquire(Priority::Normal);
        self.pool.install(|| {
            let mut first_pass = WithHead {
                head,
                given: false,
                rest: &mut stream,
            };
            let surveyed = survey(&model.frontend, &mut first_pass, span)?;
            let duration_secs = stream
                .summary()
                .map(|s| s.duration_secs)
                .ok_or_else(|| SpeechError::Engine("decoder ended without a summary".into()))?;
            drop(stream);
            let mut second_pass = hark_audio::open_file(path, &limits)?;
            let mut windows = StreamedMel::new(&model.frontend, &mut second_pass, span, &surveyed);
            let raw = crate::decode::transcribe_streamed(
                model,
                &mut windows,
                &surveyed.frame_energy_db,
                options,
            )?;
            Ok(FileTranscript {
                raw,
                start_secs: surveyed.start as f64 / f64::from(SAMPLE_RATE),
                duration_secs,
                streamed: true,
                inference_secs: started.elapsed().as_secs_f64(),
            })
        })
    }

    /// The whole request path on a file: slicing, inference, shaping.
    fn transcribe_request(
        &self,
        request: &TranscribeRequest,
    ) -> Result<Transcription, SpeechError> {
        let model = self.load(&request.model)?;
        let rate = u64::from(SAMPLE_RATE);
        let span = SampleSpan {
            start: request.audio_start_from.map_or(0, |ms| ms * rate / 1000),
            end: request.audio_end_at.map(|ms| ms * rate / 1000),
        };
        let options = DecodeOptions {
            language: request.language_code.clone(),
            ..DecodeOptions::default()
        };
        let file = self.transcribe_file(&model, &request.path, span, &options)?;
        Ok(shape_transcription(
            &file.raw,
            file.start_secs * 1000.0,
            request.punctuate,
            request.format_text,
            file.duration_secs,
            &model.name,
        ))
    }
}

fn priority_label(priority: Priority) -> &'static str {
    match priority {
        Priority::Normal => "normal",
        Priority::Urgent => "urgent",
    }
}

/// One PCM inference's figures at debug level (`HARK_LOG=hark_speech=debug`): where a
/// live final's latency goes (the wait for a slot, the short pass, a full-window
/// recheck). Figures only: a transcript is the customer's data and is never logged.
fn trace_inference(
    class: &str,
    samples: &[f32],
    waited: std::time::Duration,
    ran: std::time::Duration,
    result: &Result<RawTranscript, ModelError>,
) {
    match result {
        Ok(raw) => {
            let s = &raw.stats;
            tracing::debug!(
                class,
                audio_secs = samples.len() as f64 / f64::from(SAMPLE_RATE),
                waited_secs = waited.as_secs_f64(),
                ran_secs = ran.as_secs_f64(),
                context = s.audio_context,
                rechecked = s.rechecked,
                recheck_owed = s.recheck_owed,
                tokens = s.tokens,
                draft_accepted = s.draft_tokens_accepted,
                mel_secs = s.mel_secs,
                encode_secs = s.encode_secs,
                decode_secs = s.decode_secs,
                no_speech_prob = s.first_no_speech_prob,
                avg_logprob = s.first_avg_logprob,
                "speech inference"
            );
        }
        Err(e) => tracing::debug!(
            class,
            waited_secs = waited.as_secs_f64(),
            ran_secs = ran.as_secs_f64(),
            error = %e,
            "speech inference stopped"
        ),
    }
}

/// The samples read before a file turned out to be long, then the rest of its stream.
struct WithHead<'a> {
    head: Vec<f32>,
    given: bool,
    rest: &'a mut hark_audio::AudioStream,
}

impl crate::long_audio::PcmSource for WithHead<'_> {
    fn next_chunk(&mut self) -> Result<Option<&[f32]>, ModelError> {
        if !self.given {
            self.given = true;
            if !self.head.is_empty() {
                return Ok(Some(&self.head));
            }
        }
        // Handed out once; released as soon as the reader moves on.
        self.head = Vec::new();
        crate::long_audio::PcmSource::next_chunk(self.rest)
    }
}

/// Turn the decoder's words into AssemblyAI's shape: ms times offset into the original
/// audio, text switches applied, mean confidence.
pub fn shape_transcription(
    raw: &RawTranscript,
    offset_ms: f64,
    punctuate: bool,
    format_text: bool,
    audio_duration_secs: f64,
    model: &str,
) -> Transcription {
    let words: Vec<Word> = raw
        .words
        .iter()
        .filter_map(|w| {
            shape_word(&w.text, punctuate, format_text).map(|text| Word {
                text,
                start: (offset_ms + w.start * 1000.0).round().max(0.0) as u64,
                end: (offset_ms + w.end * 1000.0).round().max(0.0) as u64,
                confidence: w.probability.clamp(0.0, 1.0),
            })
        })
        .collect();
    let confidence = if words.is_empty() {
        0.0
    } else {
        words.iter().map(|w| w.confidence).sum::<f64>() / words.len() as f64
    };
    Transcription {
        text: words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        words,
        confidence,
        audio_duration_secs,
        language_code: Some(raw.language.clone()),
        language_confidence: raw.language_probability,
        model: model.to_string(),
    }
}

/// The names of the models installed in `registry`'s directory now.
fn scan_installed(registry: &ModelRegistry) -> Vec<String> {
    registry
        .list()
        .map(|l| l.into_iter().map(|m| m.name).collect())
        .unwrap_or_default()
}

impl SpeechEngine for WhisperEngine {
    fn models(&self) -> Vec<String> {
        self.installed
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn refresh_models(&self) {
        let now = scan_installed(&self.registry);
        *self.installed.write().unwrap_or_else(|p| p.into_inner()) = now;
    }

    fn transcribe(&self, request: &TranscribeRequest) -> Result<Transcription, SpeechError> {
        // Check the model first so a missing model is reported before decoding a large file.
        self.registry.model_path(&request.model)?;
        self.transcribe_request(request)
    }

    fn open_stream(
        self: Arc<Self>,
        model: &str,
        config: StreamingConfig,
    ) -> Result<Box<dyn SpeechStream>, SpeechError> {
        let loaded = self.load(model)?;
        Ok(Box::new(StreamingSession::new(self, loaded, config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits until `n` tickets are queued (the waiters are blocked in `acquire`).
    fn wait_queued(permits: &Permits, n: usize) {
        for _ in 0..2_000 {
            let state = permits.state.lock().unwrap_or_else(|p| p.into_inner());
            if state.urgent.len() + state.normal.len() == n {
                return;
            }
            drop(state);
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("waiters did not queue");
    }

    /// Requests read the installed models from memory: a model appearing on disk is
    /// seen after a rescan, not by scanning the directory on every call.
    #[test]
    fn installed_models_come_from_memory_until_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let install = |name: &str| {
            let path = dir.path().join("models").join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("model.bin"), b"").unwrap();
        };
        install("first");
        let engine = WhisperEngine::new(dir.path(), EngineOptions::default()).unwrap();
        assert_eq!(engine.models(), vec!["first".to_string()]);
        install("second");
        assert_eq!(engine.models(), vec!["first".to_string()]);
        engine.refresh_models();
        assert_eq!(
            engine.models(),
            vec!["first".to_string(), "second".to_string()]
        );
    }

    #[test]
    fn permits_go_to_urgent_waiters_first_then_in_arrival_order() {
        let permits = Arc::new(Permits::new(1));
        let held = permits.acquire(Priority::Normal);
        assert!(permits.try_acquire_idle().is_none());
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        let order = [
            ("n1", Priority::Normal),
            ("n2", Priority::Normal),
            ("u1", Priority::Urgent),
            ("n3", Priority::Normal),
            ("u2", Priority::Urgent),
        ];
        for (i, (name, priority)) in order.into_iter().enumerate() {
            let (mine, tx) = (permits.clone(), tx.clone());
            threads.push(std::thread::spawn(move || {
                let _permit = mine.acquire(priority);
                tx.send(name).unwrap_or(());
                std::thread::sleep(Duration::from_millis(5));
            }));
            // Queue them one at a time so arrival order is known.
            wait_queued(&permits, i + 1);
        }
        drop(held);
        let served: Vec<&str> = (0..order.len())
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .unwrap_or("timeout")
            })
            .collect();
        assert_eq!(served, ["u1", "u2", "n1", "n2", "n3"]);
        for t in threads {
            t.join().unwrap_or(());
        }
        // Idle again: a best-effort caller gets a permit.
        assert!(permits.try_acquire_idle().is_some());
    }

    #[test]
    fn several_permits_serve_several_waiters_at_once() {
        let permits = Arc::new(Permits::new(2));
        let a = permits.acquire(Priority::Normal);
        let b = permits.acquire(Priority::Urgent);
        let (tx, rx) = mpsc::channel();
        let mut threads = Vec::new();
        let mut releases = Vec::new();
        for i in 0..2 {
            let (mine, tx) = (permits.clone(), tx.clone());
            let (release_tx, release_rx) = mpsc::channel::<()>();
            releases.push(release_tx);
            threads.push(std::thread::spawn(move || {
                let _permit = mine.acquire(Priority::Normal);
                tx.send(i).unwrap_or(());
                // Held until both waiters are in: the two free permits must be handed
                // out together, not one after the other.
                release_rx
                    .recv_timeout(Duration::from_secs(10))
                    .unwrap_or(());
            }));
        }
        wait_queued(&permits, 2);
        drop((a, b));
        let mut got: Vec<i32> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap_or(9))
            .collect();
        got.sort();
        assert_eq!(got, [0, 1]);
        for release in releases {
            release.send(()).unwrap_or(());
        }
        for t in threads {
            t.join().unwrap_or(());
        }
    }
}
