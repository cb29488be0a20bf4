//! The revocation bus: every credential change is published with the transaction that
//! makes it (PostgreSQL `NOTIFY` on [`CHANNEL`], delivered at commit to every node's
//! listener; in-process on SQLite, where there is one node), so each node drops what it
//! cached for that credential at once. A node whose listener is down knows it, and must
//! not trust its cache until the listener is back.

use hark_core::clock::Millis;
use hark_core::{AccountId, ApiKeyId, ProjectId, UserId};
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "postgres")]
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The PostgreSQL notification channel of credential changes.
pub const CHANNEL: &str = "hark_credentials";

/// What changed. Nodes drop their cached state for it (everything for `All`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialChange {
    /// A key was created, revoked, rotated (its expiry moved to the grace end) or deleted.
    Key(ApiKeyId),
    /// A project was deleted with its keys.
    Project(ProjectId),
    /// An account was deleted, or its plan (carried by cached principals) changed.
    Account(AccountId),
    /// A person's sessions ended or membership changed.
    User(UserId),
    /// Unknown, or possibly missed: drop everything.
    All,
}

impl CredentialChange {
    /// The notification payload (`key:<id>`, `project:<id>`, ...).
    pub fn to_payload(&self) -> String {
        match self {
            Self::Key(id) => format!("key:{id}"),
            Self::Project(id) => format!("project:{id}"),
            Self::Account(id) => format!("account:{id}"),
            Self::User(id) => format!("user:{id}"),
            Self::All => "all".into(),
        }
    }

    /// Reads a payload; anything unreadable is `All`, so nothing is ever kept by mistake.
    pub fn from_payload(payload: &str) -> Self {
        let parsed = match payload.split_once(':') {
            Some(("key", id)) => ApiKeyId::parse(id).map(Self::Key),
            Some(("project", id)) => ProjectId::parse(id).map(Self::Project),
            Some(("account", id)) => AccountId::parse(id).map(Self::Account),
            Some(("user", id)) => UserId::parse(id).map(Self::User),
            _ => None,
        };
        parsed.unwrap_or(Self::All)
    }
}

/// A change as a node heard it, with when it was committed (by the committing node's
/// clock), for the propagation lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heard {
    pub change: CredentialChange,
    pub committed_at: Option<Millis>,
}

/// The notification payload: the change, `@`, and when it was sent.
pub fn notification(change: CredentialChange, sent_at: Millis) -> String {
    format!("{}@{sent_at}", change.to_payload())
}

/// Reads a notification payload (see [`notification`]).
pub fn read_notification(payload: &str) -> Heard {
    let (change, at) = match payload.rsplit_once('@') {
        Some((change, at)) => (change, at.parse().ok()),
        None => (payload, None),
    };
    Heard {
        change: CredentialChange::from_payload(change),
        committed_at: at,
    }
}

/// One node's end of the bus: local subscribers, and whether the node currently hears
/// every change (its listener connection is up).
pub struct CredentialBus {
    sender: broadcast::Sender<Heard>,
    connected: watch::Sender<bool>,
    published: AtomicU64,
}

impl std::fmt::Debug for CredentialBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialBus")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl CredentialBus {
    /// A bus; `connected` says whether it hears every change from the start (true for
    /// an in-process bus, false until a listener has connected).
    pub fn new(connected: bool) -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self {
            sender,
            connected: watch::Sender::new(connected),
            published: AtomicU64::new(0),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Heard> {
        self.sender.subscribe()
    }

    /// Delivers a change to this node's subscribers.
    pub fn publish(&self, change: CredentialChange) {
        self.deliver(Heard {
            change,
            committed_at: None,
        });
    }

    /// Delivers a change heard with its commit time.
    pub fn deliver(&self, heard: Heard) {
        self.published.fetch_add(1, Ordering::SeqCst);
        let _ = self.sender.send(heard);
    }

    /// How many changes this node has heard (a generation for race checks).
    pub fn heard(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Whether every change reaches this node now; when false, caches must not be trusted.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    #[cfg(any(feature = "postgres", test))]
    pub(crate) fn set_connected(&self, up: bool) {
        self.connected.send_if_modified(|now| {
            let changed = *now != up;
            *now = up;
            changed
        });
    }
}

#[cfg(feature = "postgres")]
/// Listens on PostgreSQL for credential changes and publishes them on `bus`, forever.
/// While the connection is down the bus says so; after every (re)connection `All` is
/// published, since changes made meanwhile were not heard.
pub(crate) async fn listen_postgres(url: String, bus: std::sync::Arc<CredentialBus>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    bus.set_connected(true);
                    bus.publish(CredentialChange::All);
                    tracing::info!("listening for credential changes");
                    loop {
                        match listener.try_recv().await {
                            Ok(Some(note)) => bus.deliver(read_notification(note.payload())),
                            Ok(None) => {
                                tracing::warn!("credential listener lost its connection; not trusting cached keys until it is back");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "credential listener failed; not trusting cached keys until it is back");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not listen for credential changes"),
            },
            Err(e) => tracing::warn!(error = %e, "could not connect the credential listener"),
        }
        bus.set_connected(false);
        bus.publish(CredentialChange::All);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_garbage_means_everything() {
        let key = ApiKeyId::new();
        let project = ProjectId::new();
        let account = AccountId::new();
        for change in [
            CredentialChange::Key(key),
            CredentialChange::Project(project),
            CredentialChange::Account(account),
            CredentialChange::User(UserId::new()),
            CredentialChange::All,
        ] {
            assert_eq!(CredentialChange::from_payload(&change.to_payload()), change);
        }
        assert_eq!(
            CredentialChange::from_payload("key:not-an-id"),
            CredentialChange::All
        );
        assert_eq!(CredentialChange::from_payload(""), CredentialChange::All);
        let heard = read_notification(&notification(CredentialChange::Key(key), 42));
        assert_eq!(heard.change, CredentialChange::Key(key));
        assert_eq!(heard.committed_at, Some(42));
    }

    #[test]
    fn publish_reaches_subscribers_and_counts() {
        let bus = CredentialBus::new(true);
        let mut rx = bus.subscribe();
        bus.publish(CredentialChange::All);
        assert_eq!(
            rx.try_recv().ok().map(|h| h.change),
            Some(CredentialChange::All)
        );
        assert_eq!(bus.heard(), 1);
        bus.set_connected(false);
        assert!(!bus.is_connected());
    }
}
