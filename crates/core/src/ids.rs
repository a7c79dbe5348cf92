//! Deterministic identifiers.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest slug kept from a file name in an [`IncidentId`].
const MAX_SLUG: usize = 48;

/// A rejected identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdError {
    kind: &'static str,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} id: expected lowercase letters, digits and '-', at most 80 characters",
            self.kind
        )
    }
}

impl std::error::Error for IdError {}

/// blake3 of some bytes, as 64 lowercase hex digits.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct ContentHash(String);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(blake3::hash(bytes).to_hex().to_string())
    }

    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stable id of an incident: a slug of its file name plus 8 hex digits of the hash of its path
/// relative to the corpus root, e.g. `2021-09-30-cert-expiry-1a2b3c4d`. Opaque to callers, safe
/// in URLs, and the same on every machine for the same relative path.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct IncidentId(String);

impl IncidentId {
    /// Derives the id from a path relative to the corpus root (either separator).
    pub fn from_path(relative_path: &str) -> Self {
        let normalised = normalise_path(relative_path);
        let file = normalised.rsplit('/').next().unwrap_or(&normalised);
        let stem = match file.rfind('.') {
            Some(dot) if dot > 0 => &file[..dot],
            _ => file,
        };
        let mut slug = String::with_capacity(MAX_SLUG + 9);
        let mut dash = false;
        for c in stem.chars() {
            if slug.len() >= MAX_SLUG {
                break;
            }
            if c.is_ascii_alphanumeric() {
                slug.push(c.to_ascii_lowercase());
                dash = false;
            } else if !dash && !slug.is_empty() {
                slug.push('-');
                dash = true;
            }
        }
        while slug.ends_with('-') {
            slug.pop();
        }
        if slug.is_empty() {
            slug.push_str("incident");
        }
        let hash = blake3::hash(normalised.as_bytes()).to_hex();
        slug.push('-');
        slug.push_str(&hash[..8]);
        Self(slug)
    }

    /// Validates an id received from outside (a request, the command line).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 80
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError { kind: "incident" })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IncidentId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Stable id of a step: 32 hex digits of blake3(incident id, ordinal, content hash).
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    /// Derives the id of the `ordinal`-th step of `incident`, whose text hashes to `content`.
    pub fn new(incident: &IncidentId, ordinal: u32, content: &ContentHash) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(incident.as_str().as_bytes());
        hasher.update(&[0]);
        hasher.update(&ordinal.to_le_bytes());
        hasher.update(content.as_str().as_bytes());
        Self(hasher.finalize().to_hex()[..32].to_string())
    }

    /// Validates an id received from outside.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError { kind: "step" })
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `a\b/./c` -> `a/b/c`: the form ids and citations use.
pub(crate) fn normalise_path(path: &str) -> String {
    path.replace('\\', "/")
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incident_id_is_slug_plus_path_hash() {
        let id = IncidentId::from_path("dfds/PM2021-004 ADFS outage.md");
        assert!(id.as_str().starts_with("pm2021-004-adfs-outage-"), "{id}");
        assert_eq!(
            id,
            IncidentId::from_path("./dfds\\PM2021-004 ADFS outage.md")
        );
        assert_ne!(id, IncidentId::from_path("other/PM2021-004 ADFS outage.md"));
        assert_eq!(
            IncidentId::from_path("...").as_str().len(),
            "incident-".len() + 8
        );
    }

    #[test]
    fn parse_rejects_paths_and_junk() {
        for bad in ["", "../etc/passwd", "a/b", "UPPER", "a b", &"a".repeat(81)] {
            assert!(IncidentId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StepId::parse("0123456789abcdef0123456789abcdef").is_ok());
        assert!(StepId::parse("0123456789abcdef0123456789abcdeg").is_err());
    }

    proptest! {
        #[test]
        fn derived_ids_always_parse(path in "\\PC{0,120}") {
            let id = IncidentId::from_path(&path);
            prop_assert_eq!(IncidentId::parse(id.as_str()), Ok(id.clone()));
            let step = StepId::new(&id, 3, &ContentHash::of(path.as_bytes()));
            prop_assert_eq!(StepId::parse(step.as_str()), Ok(step.clone()));
        }
    }
}
