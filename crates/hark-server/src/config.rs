//! Server configuration: built-in defaults, then a TOML file, then `HARK_*`
//! environment variables (nested keys with `__`), with secrets also from `*_FILE`.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// SQLite database, uploads, models and the master key live here.
    pub data_dir: PathBuf,
    /// `sqlite:...` or `postgres://...`; empty means the SQLite file in the data dir.
    pub database_url: String,
    pub bind: String,
    /// The origin the API's absolute URLs use (upload URLs, page links). Empty means
    /// `http://<bind>`.
    pub public_base_url: String,
    /// Hex AES-256 key sealing revealable secrets; empty means `<data_dir>/master.key`.
    #[serde(skip_serializing)]
    pub master_key: hark_core::keys::Secret,
    pub max_upload_bytes: u64,
    pub max_json_bytes: usize,
    pub workers: usize,
    pub job_lease_ms: i64,
    /// A job claimed this many times without finishing (its worker died each time, say
    /// on a file that crashes the process) ends in `error` instead of running again.
    pub max_job_attempts: i64,
    /// Uploads no live transcript uses are deleted this long after they arrived
    /// (0: kept for ever).
    pub upload_ttl_secs: u64,
    /// The most bytes of uploads an account may hold at once (0: no limit).
    pub upload_quota_bytes: u64,
    /// An upload whose body sends nothing for this long is refused (408).
    pub upload_idle_timeout_secs: u64,
    pub rate_limit: RateLimitConfig,
    /// How often the auth epoch is polled: the fallback bound on how long a credential
    /// change made through another node goes unseen if its notification is lost.
    pub auth_epoch_poll_ms: u64,
    /// `redis://...`: the REST rate limit is shared by every node through it. Empty
    /// means each node enforces the limit on its own (N nodes allow N times it).
    #[serde(skip_serializing)]
    pub redis_url: hark_core::keys::Secret,
    /// Where Prometheus metrics are served (`/metrics`), apart from the API; empty
    /// means not served.
    pub metrics_bind: String,
    /// The region this cluster serves (e.g. `eu`), reported by `/health`.
    pub region: String,
    /// `text` (default) or `json` (one JSON object per line).
    pub log_format: String,
    pub outbound: OutboundConfig,
    pub models: ModelConfig,
    pub streaming: StreamingSettings,
    pub tls: TlsConfig,
    pub smtp: SmtpConfig,
    /// Who may create an account from the dashboard's sign-up page: `invite_only`
    /// (default: people join through invites, the operator makes accounts) or `open`
    /// (anyone; a new account on the Free plan with its Owner and a default project).
    pub signup: SignupMode,
    /// After a project's webhook signing secret is rotated, how long (seconds) the former
    /// secret keeps signing deliveries beside the new one when the rotation does not
    /// say (default 86400: a day; 0 retires it at once; at most 7 days).
    pub webhook_secret_overlap_secs: i64,
    pub billing: BillingConfig,
    pub storage: StorageConfig,
}

/// Where uploaded audio is kept (`[storage]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `local` (default: files under `<data_dir>/uploads`, one node) or `s3` (an
    /// S3-compatible bucket every node shares).
    pub kind: StorageKind,
    pub bucket: String,
    /// The S3 API's URL, e.g. `http://127.0.0.1:3900` (requests are path-style).
    pub endpoint: String,
    pub region: String,
    /// Also from `HARK_STORAGE_ACCESS_KEY_ID_FILE`.
    pub access_key_id: String,
    /// Also from `HARK_STORAGE_SECRET_ACCESS_KEY_FILE`.
    #[serde(skip_serializing)]
    pub secret_access_key: hark_core::keys::Secret,
    /// Bytes per part of a multipart upload (at least 5 MiB); an upload holds at most
    /// two parts in memory.
    pub part_size_bytes: usize,
    /// A folder of the bucket this cluster's objects go under (empty: the root).
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    #[default]
    Local,
    S3,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Local,
            bucket: String::new(),
            endpoint: String::new(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: hark_core::keys::Secret::default(),
            part_size_bytes: 8 << 20,
            prefix: String::new(),
        }
    }
}

/// The `signup` setting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignupMode {
    #[default]
    InviteOnly,
    Open,
}

/// Spend and credit: the currency, the price table and the evaluation credit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// The one currency every amount is in (a label: no conversion happens).
    pub currency: String,
    /// Prices with effective dates; empty means the built-in list prices
    /// (0.15 per hour of audio for `speech_to_text`, 0.15 per hour of session for
    /// `streaming`, every model).
    pub prices: Vec<PriceConfig>,
    /// Credit given once to every new Free account (decimal text; "0" for none).
    pub evaluation_credit: String,
}

/// One entry of `[[billing.prices]]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// `speech_to_text` or `streaming`.
    pub product: String,
    /// An installed model name, or `*` for every model without its own entry.
    #[serde(default = "any_model")]
    pub model: String,
    /// Decimal text, per hour of audio (speech-to-text) or of session (streaming).
    pub per_hour: String,
    /// RFC 3339 instant or `YYYY-MM-DD` (UTC midnight) from which the price applies;
    /// absent means always.
    #[serde(default)]
    pub effective_from: Option<String>,
}

fn any_model() -> String {
    "*".into()
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: "USD".into(),
            prices: Vec::new(),
            evaluation_credit: "50.00".into(),
        }
    }
}

/// Live `/v3/ws` sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingSettings {
    /// Session cap for sessions opened with an API key (tokens carry their own).
    pub max_session_secs: i64,
    /// How far ahead of real time a client may send audio before it is refused (3007).
    pub realtime_tolerance_ms: u64,
    /// How much received audio a session may have waiting for the engine; a session
    /// further behind ends (3005), so a slow engine cannot make memory grow.
    pub max_pending_audio_secs: u64,
    /// Ping interval; a client that answers nothing for `client_timeout_secs` is gone.
    pub ping_interval_secs: u64,
    pub client_timeout_secs: u64,
    /// Lease of this process's session rows; renewed every third of it.
    pub node_lease_secs: u64,
    /// How often a session's progress (audio, final turns) is saved while audio flows.
    pub progress_interval_secs: u64,
}

/// Built-in HTTPS/WSS (both official SDKs stream only over TLS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain; with `key`, the server speaks only TLS.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Make (once) and use a development certificate in `<data_dir>/tls/`.
    pub self_signed: bool,
}

/// Outgoing mail (invites, notices). With no `host`, mail waits in the database
/// outbox for the operator (`hark admin outbox`); it is never dropped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `starttls` (default), `tls` (implicit TLS, usually port 465), or `none`
    /// (plain text: only for a relay on the same host).
    pub security: String,
    pub username: String,
    #[serde(skip_serializing)]
    pub password: hark_core::keys::Secret,
    /// The sender address, e.g. `Hark <hark@example.com>`.
    pub from: String,
    /// Seconds between outbox sweeps.
    pub interval_secs: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            security: "starttls".into(),
            username: String::new(),
            password: hark_core::keys::Secret::default(),
            from: String::new(),
            interval_secs: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// REST requests per account per window.
    pub requests: u32,
    pub window_secs: u64,
    /// Database lookups of API keys that turn out unknown, per client address (IPv6 per
    /// /64) and `unknown_keys_window_secs`, per node; past it the address's uncached
    /// keys are answered 429 without a lookup. 0 turns the budget off.
    pub unknown_keys_per_address: u32,
    pub unknown_keys_window_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Allow `audio_url` and webhook targets on loopback/private/link-local addresses.
    pub allow_private: bool,
    /// CIDRs that are always allowed (e.g. an internal media server).
    pub allowlist: Vec<String>,
    /// Host names that are always allowed, whatever they resolve to.
    pub allowed_hosts: Vec<String>,
    pub max_download_bytes: u64,
    pub download_timeout_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The installed model used when a request names none.
    pub default: String,
    /// AssemblyAI model names mapped to installed model names; unmapped AssemblyAI
    /// names fall back to `default`.
    pub aliases: BTreeMap<String, String>,
    /// Longest audio accepted, in seconds.
    pub max_audio_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./hark-data"),
            database_url: String::new(),
            bind: "127.0.0.1:8080".into(),
            public_base_url: String::new(),
            master_key: hark_core::keys::Secret::default(),
            max_upload_bytes: 2_200_000_000,
            max_json_bytes: 1 << 20,
            workers: 2,
            job_lease_ms: 30_000,
            max_job_attempts: 3,
            upload_ttl_secs: 86_400,
            upload_quota_bytes: 0,
            upload_idle_timeout_secs: 60,
            rate_limit: RateLimitConfig::default(),
            auth_epoch_poll_ms: 250,
            redis_url: hark_core::keys::Secret::default(),
            metrics_bind: String::new(),
            region: String::new(),
            log_format: "text".into(),
            outbound: OutboundConfig::default(),
            models: ModelConfig::default(),
            streaming: StreamingSettings::default(),
            tls: TlsConfig::default(),
            smtp: SmtpConfig::default(),
            signup: SignupMode::default(),
            webhook_secret_overlap_secs: 86_400,
            billing: BillingConfig::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Default for StreamingSettings {
    fn default() -> Self {
        Self {
            max_session_secs: 10_800,
            realtime_tolerance_ms: 5_000,
            max_pending_audio_secs: 30,
            ping_interval_secs: 10,
            client_timeout_secs: 30,
            node_lease_secs: 30,
            progress_interval_secs: 15,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            requests: 20_000,
            window_secs: 300,
            // A working client presents one key, or a few old ones while rotating:
            // a hundred distinct unknown keys a minute is guessing, not a mistake.
            unknown_keys_per_address: 100,
            unknown_keys_window_secs: 60,
        }
    }
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private: false,
            allowlist: Vec::new(),
            allowed_hosts: Vec::new(),
            max_download_bytes: 5_000_000_000,
            download_timeout_secs: 600,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            default: "whisper-tiny.en".into(),
            aliases: BTreeMap::new(),
            max_audio_secs: 36_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Config {
    /// Layers defaults < `file` < `HARK_*` environment, then resolves `*_FILE` secrets.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // HARK_* variables that are not configuration: log filter, kernel path, secret-file
        // pointers (read below), and the scripts', benchmarks' and tests' own settings.
        let env = Env::prefixed("HARK_").split("__").filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            !NOT_CONFIG_ENV.contains(&k.as_str())
                && !NOT_CONFIG_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
        });
        figment = figment.merge(env);
        let mut config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(v) = read_secret_file("HARK_MASTER_KEY_FILE")? {
            config.master_key = hark_core::keys::Secret::new(v);
        }
        if let Some(v) = read_secret_file("HARK_DATABASE_URL_FILE")? {
            config.database_url = v;
        }
        if let Some(v) = read_secret_file("HARK_REDIS_URL_FILE")? {
            config.redis_url = hark_core::keys::Secret::new(v);
        }
        if !matches!(config.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be \"text\" or \"json\", not \"{}\"",
                config.log_format
            )));
        }
        if let Some(v) = read_secret_file("HARK_SMTP_PASSWORD_FILE")? {
            config.smtp.password = hark_core::keys::Secret::new(v);
        }
        if let Some(v) = read_secret_file("HARK_STORAGE_ACCESS_KEY_ID_FILE")? {
            config.storage.access_key_id = v;
        }
        if let Some(v) = read_secret_file("HARK_STORAGE_SECRET_ACCESS_KEY_FILE")? {
            config.storage.secret_access_key = hark_core::keys::Secret::new(v);
        }
        Ok(config)
    }

    /// The outbound policy for `audio_url` downloads and webhooks.
    pub fn outbound_policy(&self) -> Result<hark_outbound::OutboundPolicy, ConfigError> {
        let allowlist = self
            .outbound
            .allowlist
            .iter()
            .map(|c| {
                c.parse::<ipnet::IpNet>()
                    .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "outbound.allowlist: '{c}' is not a CIDR or address"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(hark_outbound::OutboundPolicy {
            allow_private: self.outbound.allow_private,
            allowlist,
            allowed_hosts: self.outbound.allowed_hosts.clone(),
        })
    }

    /// The price table `[[billing.prices]]` describes (the built-in one when empty).
    pub fn price_table(&self) -> Result<hark_core::money::PriceTable, ConfigError> {
        use hark_core::money::{parse_amount, Price, PriceTable, PRODUCTS};
        if self.billing.prices.is_empty() {
            return Ok(PriceTable::builtin());
        }
        let prices = self
            .billing
            .prices
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let bad =
                    |what: String| ConfigError::Invalid(format!("billing.prices[{i}]: {what}"));
                if !PRODUCTS.contains(&p.product.as_str()) {
                    return Err(bad(format!(
                        "product '{}' is not one of {}",
                        p.product,
                        PRODUCTS.join(", ")
                    )));
                }
                let per_hour = parse_amount(&p.per_hour).map_err(|e| bad(e.to_string()))?;
                if per_hour < 0 {
                    return Err(bad("per_hour must not be negative".into()));
                }
                let effective_from = match &p.effective_from {
                    None => 0,
                    Some(text) => crate::manage::usage::parse_instant(text).map_err(bad)?,
                };
                Ok(Price {
                    product: p.product.clone(),
                    model: p.model.clone(),
                    per_hour,
                    effective_from,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PriceTable::new(prices))
    }

    /// `billing.evaluation_credit` in micro-units.
    pub fn evaluation_credit(&self) -> Result<hark_core::money::Micros, ConfigError> {
        match hark_core::money::parse_amount(&self.billing.evaluation_credit) {
            Ok(m) if m >= 0 => Ok(m),
            Ok(_) => Err(ConfigError::Invalid(
                "billing.evaluation_credit must not be negative".into(),
            )),
            Err(e) => Err(ConfigError::Invalid(format!(
                "billing.evaluation_credit: {e}"
            ))),
        }
    }

    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("hark.db").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn effective_public_base_url(&self, bound: Option<std::net::SocketAddr>) -> String {
        if !self.public_base_url.is_empty() {
            return self.public_base_url.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls_enabled() { "https" } else { "http" };
        match bound {
            Some(addr) => format!("{scheme}://{addr}"),
            None => format!("{scheme}://{}", self.bind),
        }
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.self_signed || self.tls.cert.is_some()
    }

    /// The installed model a streaming model name refers to: the alias table, then
    /// AssemblyAI's streaming names (the default model), then installed names as given.
    pub fn resolve_streaming_model(&self, requested: &str) -> String {
        if let Some(m) = self.models.aliases.get(requested) {
            return m.clone();
        }
        if crate::streaming::params::STREAMING_MODELS.contains(&requested) {
            return self.models.default.clone();
        }
        self.resolve_model(requested)
    }

    /// The installed model an AssemblyAI (or local) model name refers to.
    pub fn resolve_model(&self, requested: &str) -> String {
        self.models
            .aliases
            .get(requested)
            .cloned()
            .unwrap_or_else(|| {
                if KNOWN_ASSEMBLYAI_MODELS.contains(&requested) {
                    self.models.default.clone()
                } else {
                    requested.to_string()
                }
            })
    }
}

/// AssemblyAI's published pre-recorded model names; each runs on the default model
/// unless the alias table says otherwise.
pub const KNOWN_ASSEMBLYAI_MODELS: &[&str] = &[
    "universal-3-pro",
    "universal-2",
    "universal",
    "best",
    "nano",
    "slam-1",
    "default",
];

const NOT_CONFIG_ENV: &[&str] = &[
    "log",
    // The speech engine's kernel path (hark-speech reads it).
    "simd",
    // The speech encoder's weight precision (hark-speech reads it).
    "encoder_precision",
    "master_key_file",
    "smtp_password_file",
    "database_url_file",
    "redis_url_file",
    "storage_access_key_id_file",
    "storage_secret_access_key_file",
    "venv",
    "fw_venv",
    "node_dir",
    "model_cache",
    "fixtures_force",
    "bin",
    "binary",
    "contract",
    "screenshots_dir",
];

/// Families of the scripts', benchmarks' and tests' own HARK_* settings.
const NOT_CONFIG_ENV_PREFIXES: &[&str] = &[
    "test_",
    "bench_",
    "fuzz_",
    "ci_",
    "contract_",
    "garage_",
    "tools_",
];

fn read_secret_file(var: &str) -> Result<Option<String>, ConfigError> {
    let Ok(path) = std::env::var(var) else {
        return Ok(None);
    };
    let path = PathBuf::from(path);
    std::fs::read_to_string(&path)
        .map(|s| Some(s.trim().to_string()))
        .map_err(|source| ConfigError::Io { path, source })
}

#[cfg(test)]
// figment::Jail's closures must return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_and_env() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hark.toml",
                "workers = 7\nbind = \"0.0.0.0:9\"\n[rate_limit]\nrequests = 5\n",
            )?;
            jail.set_env("HARK_BIND", "127.0.0.1:1");
            jail.set_env("HARK_RATE_LIMIT__WINDOW_SECS", "9");
            jail.create_file("key", "ab".repeat(32).as_str())?;
            jail.set_env("HARK_MASTER_KEY_FILE", "key");
            jail.set_env("HARK_LOG", "debug");
            jail.set_env("HARK_VENV", "/tmp/venv");
            // Read by the speech engine and the benchmarks, not configuration.
            jail.set_env("HARK_SIMD", "avx2");
            jail.set_env("HARK_BENCH_PATHS", "avx512 avx2");
            let c = Config::load(Some(Path::new("hark.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.workers, 7);
            assert_eq!(c.bind, "127.0.0.1:1");
            assert_eq!((c.rate_limit.requests, c.rate_limit.window_secs), (5, 9));
            assert_eq!(c.master_key.expose(), "ab".repeat(32));
            assert_eq!(c.max_upload_bytes, 2_200_000_000);
            assert_eq!(c.storage.kind, StorageKind::Local);
            Ok(())
        });
    }

    #[test]
    fn storage_from_file_env_and_secret_files() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hark.toml",
                "[storage]\nkind = \"s3\"\nbucket = \"audio\"\nendpoint = \"http://127.0.0.1:3900\"\n",
            )?;
            jail.set_env("HARK_STORAGE__REGION", "garage");
            jail.create_file("id", "GK123\n")?;
            jail.create_file("secret", "s3cr3t\n")?;
            jail.set_env("HARK_STORAGE_ACCESS_KEY_ID_FILE", "id");
            jail.set_env("HARK_STORAGE_SECRET_ACCESS_KEY_FILE", "secret");
            let c = Config::load(Some(Path::new("hark.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.storage.kind, StorageKind::S3);
            assert_eq!(c.storage.bucket, "audio");
            assert_eq!(c.storage.region, "garage");
            assert_eq!(c.storage.access_key_id, "GK123");
            assert_eq!(c.storage.secret_access_key.expose(), "s3cr3t");
            assert!(!format!("{:?}", c.storage).contains("s3cr3t"));
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hark.toml", "wrokers = 7\n")?;
            assert!(Config::load(Some(Path::new("hark.toml"))).is_err());
            Ok(())
        });
    }

    #[test]
    fn model_aliases() {
        let mut c = Config::default();
        assert_eq!(c.resolve_model("universal-3-pro"), "whisper-tiny.en");
        c.models
            .aliases
            .insert("universal-2".into(), "whisper-base".into());
        assert_eq!(c.resolve_model("universal-2"), "whisper-base");
        assert_eq!(c.resolve_model("whisper-small"), "whisper-small");
    }
}
