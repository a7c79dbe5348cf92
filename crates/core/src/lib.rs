//! Domain types of `precedent`: an [`Incident`] is one post-incident write-up, split into
//! [`Step`]s, the units that search retrieves (a symptom seen, a hypothesis ruled out, an action
//! that helped, the mitigation, a contributing factor, a follow-up).
//!
//! This crate does no I/O. Ids are deterministic: an incident's id comes from its path relative
//! to the corpus root, a step's from its incident, ordinal and content, so re-indexing the same
//! corpus upserts rather than duplicates.
//!
//! ```
//! use precedent_core::{IncidentId, StepId, StepKind, ContentHash};
//!
//! let incident = IncidentId::from_path("2021/cert-expiry.md");
//! assert_eq!(incident, IncidentId::from_path("2021\\cert-expiry.md"));
//! let step = StepId::new(&incident, 0, &ContentHash::of(b"Certificates expired"));
//! assert_eq!(step.as_str().len(), 32);
//! assert_eq!("root_cause".parse::<StepKind>().unwrap(), StepKind::RootCause);
//! ```

mod card;
mod embed;
mod ids;
mod model;

pub use card::{Card, CardItem, RemediationClass, Span, TriggerClass};
pub use embed::{BoxError, Embedder};
pub use ids::{ContentHash, IdError, IncidentId, StepId};
pub use model::{
    At, DateRange, Diagnostic, DiagnosticCode, Incident, Level, Outcome, Parsed, Step, StepKind,
    TimelineEntry, UnknownStepKind,
};
