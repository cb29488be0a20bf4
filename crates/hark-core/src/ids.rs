//! Typed identifiers, so an account id can never be passed where a project id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn parse(s: &str) -> Option<Self> {
                Uuid::parse_str(s).ok().map(Self)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s).ok_or_else(|| format!("'{s}' is not a valid {}", stringify!($name)))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.as_hyphenated().fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    )*};
}

id_type!(
    AccountId,
    UserId,
    ProjectId,
    ApiKeyId,
    /// Transcript ids are random (v4) like AssemblyAI's, so they reveal nothing.
    TranscriptId,
    UploadId,
    AuditId,
    StreamTokenId,
    /// Streaming session ids are random (v4): clients see them in `Begin`.
    StreamSessionId,
);

impl TranscriptId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl StreamSessionId {
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}
id_type!(
    /// A login session of a person (management API / dashboard).
    LoginSessionId,
    InviteId,
);
