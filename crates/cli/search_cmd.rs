//! `precedent search QUERY` and `precedent similar`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use precedent_core::IncidentId;
#[cfg(not(feature = "qdrant"))]
use precedent_index::QueryStore as _;
use precedent_index::{Engine, Hit, Mode, SearchRequest, SimilarRequest, SimilarSource};

use crate::common::{FilterArgs, IndexArgs, ModelArgs, StoreArgs, StoreKind, one_line, print_json};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What you are seeing or suspect, in your own words; quotes match a phrase.
    query: String,
    /// Retrieval: hybrid (full text + meaning, fused), lexical (full text) or vector (meaning).
    #[arg(long, default_value = "hybrid")]
    mode: Mode,
    /// Number of steps to return.
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
}

pub fn search(args: SearchArgs) -> anyhow::Result<ExitCode> {
    let embedder = args.model.load()?;
    let request = SearchRequest::new(args.query)
        .with_mode(args.mode)
        .with_k(args.k)
        .with_filters(args.filters.to_filters());
    let response = match args.store.store {
        StoreKind::Embedded => open(&args.index)?.search(&request, embedder.as_ref())?,
        StoreKind::Qdrant => args
            .store
            .qdrant(embedder.as_ref())?
            .search(&request, embedder.as_ref())?,
    };
    if args.json {
        print_json(&response)?;
    } else if response.hits.is_empty() {
        println!("no matching steps");
    } else {
        for (i, hit) in response.hits.iter().enumerate() {
            print_hit(i + 1, hit, "");
        }
        println!("({} ms)", response.took_ms);
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["id", "file", "text"])))]
pub struct SimilarArgs {
    /// An indexed incident id (see `precedent search` or `precedent show`).
    id: Option<IncidentId>,
    /// A write-up that need not be indexed, e.g. the draft of the current incident.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Free text: what on-call sees right now.
    #[arg(long, value_name = "TEXT")]
    text: Option<String>,
    /// Number of incidents to return.
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
}

pub fn similar(args: SimilarArgs) -> anyhow::Result<ExitCode> {
    let source = match (args.id, args.file, args.text) {
        (Some(id), _, _) => SimilarSource::Incident(id),
        (_, Some(file), _) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let path = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("draft.md")
                .to_owned();
            SimilarSource::WriteUp { path, text }
        }
        (_, _, Some(text)) => SimilarSource::Text(text),
        _ => anyhow::bail!("give an incident id, --file or --text"),
    };
    let embedder = args.model.load()?;
    let request = SimilarRequest {
        source,
        k: args.k,
        filters: args.filters.to_filters(),
    };
    let response = match args.store.store {
        StoreKind::Embedded => open(&args.index)?.similar(&request, embedder.as_ref())?,
        StoreKind::Qdrant => args
            .store
            .qdrant(embedder.as_ref())?
            .similar(&request, embedder.as_ref())?,
    };
    if args.json {
        print_json(&response)?;
        return Ok(ExitCode::SUCCESS);
    }
    if response.incidents.is_empty() {
        println!("no similar incidents");
    }
    for (i, incident) in response.incidents.iter().enumerate() {
        let date = incident
            .date
            .map(|d| d.start.to_string())
            .unwrap_or_else(|| "undated".into());
        println!(
            "{:>2}. {}  ({date}, score {:.4})",
            i + 1,
            incident.title,
            incident.score
        );
        println!("    {}  {}", incident.incident_id, incident.path);
        for hit in &incident.steps {
            println!(
                "      - [{}] L{}-{}: {}",
                hit.kind,
                hit.citation.line_start,
                hit.citation.line_end,
                one_line(&hit.snippet, 110)
            );
        }
    }
    println!("({} ms)", response.took_ms);
    Ok(ExitCode::SUCCESS)
}

pub fn open(index: &IndexArgs) -> anyhow::Result<Engine> {
    Engine::open(&index.index).with_context(|| {
        format!(
            "cannot open the index at {} (build it with `precedent index DIR`)",
            index.index.display()
        )
    })
}

fn print_hit(rank: usize, hit: &Hit, indent: &str) {
    let c = &hit.citation;
    println!("{indent}{rank:>2}. [{}] {}", hit.kind, hit.title);
    println!("{indent}    {}:{}-{}", c.path, c.line_start, c.line_end);
    println!("{indent}    {}", one_line(&hit.snippet, 160));
    let s = &hit.score;
    let lexical = match (s.lexical_rank, s.lexical_score) {
        (Some(r), Some(v)) => format!("lexical #{r} ({v:.2})"),
        _ => "lexical -".into(),
    };
    let vector = match (s.vector_rank, s.vector_similarity) {
        (Some(r), Some(v)) => format!("vector #{r} ({v:.3})"),
        _ => "vector -".into(),
    };
    println!("{indent}    fused {:.4} · {lexical} · {vector}", s.fused);
}
