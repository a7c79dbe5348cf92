//! Options shared by several commands: where the index and the model are, and search filters.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use chrono::NaiveDate;
use precedent_core::{Embedder, IncidentId, StepKind};
use precedent_embed::{BertEmbedder, EmbedderOptions, resolve_model_dir};
use precedent_index::Filters;

/// `--index`: where the index lives.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Index directory.
    #[arg(
        long,
        env = "PRECEDENT_INDEX",
        default_value = ".precedent",
        value_name = "PATH"
    )]
    pub index: PathBuf,
}

/// `--model-dir`: which embedding model to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Sentence-transformers model directory [default: the cache filled by scripts/fetch-model].
    #[arg(long, env = "PRECEDENT_MODEL_DIR", value_name = "PATH")]
    pub model_dir: Option<PathBuf>,
}

impl ModelArgs {
    /// Loads the model (about a second for all-MiniLM-L6-v2).
    pub fn load(&self) -> anyhow::Result<Arc<dyn Embedder>> {
        let dir = resolve_model_dir(self.model_dir.as_deref())?;
        let embedder = BertEmbedder::load(&dir, EmbedderOptions::default())
            .with_context(|| format!("cannot load the embedding model from {}", dir.display()))?;
        Ok(Arc::new(embedder))
    }
}

/// Filters on the steps a search may return.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only steps of this kind (repeatable): summary, impact, detection, investigation, action,
    /// mitigation, root_cause, lesson, follow_up, timeline_event, other.
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<StepKind>,
    /// Only incidents that affected this service (repeatable).
    #[arg(long = "service", value_name = "SERVICE")]
    pub services: Vec<String>,
    /// Only incidents of this severity as written, e.g. SEV1 (repeatable).
    #[arg(long = "severity", value_name = "SEVERITY")]
    pub severities: Vec<String>,
    /// Only incidents with this tag (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only incidents that started on or after this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub since: Option<NaiveDate>,
    /// Only incidents that started on or before this day (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub until: Option<NaiveDate>,
    /// Only steps of this incident (repeatable).
    #[arg(long = "incident", value_name = "ID")]
    pub incidents: Vec<IncidentId>,
}

impl FilterArgs {
    pub fn to_filters(&self) -> Filters {
        Filters {
            kinds: self.kinds.clone(),
            services: self.services.clone(),
            severities: self.severities.clone(),
            since: self.since,
            until: self.until,
            tags: self.tags.clone(),
            incident_ids: self.incidents.clone(),
        }
    }
}

/// Writes `value` as pretty JSON on stdout.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    use std::io::Write;
    writeln!(out)?;
    Ok(())
}

/// Shortens `text` to about `max` characters on a word boundary, on one line.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    let end = cut.rfind(' ').unwrap_or(cut.len());
    format!("{}…", &cut[..end])
}
