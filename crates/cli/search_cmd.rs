//! `precedent search QUERY...` and `precedent similar`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use precedent_core::{Card, CardItem, Embedder, Outcome, StepKind};
use precedent_index::{
    Engine, Hit, MatchQuality, Mode, SYNONYMS_FILE, SearchRequest, SearchResponse, SimilarRequest,
    SimilarSource, Store, Synonyms,
};

use crate::common::{
    FilterArgs, IndexArgs, ModelArgs, NoModel, StoreArgs, StoreKind, explain, open, print_json,
};
use crate::output::{ColorWhen, Printer, citation};

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What you are seeing or suspect, in your own words (several words need no quotes;
    /// "quoted words" match as a phrase).
    #[arg(
        required_unless_present_any = ["exact", "regex"],
        num_args = 1..,
        value_name = "QUERY"
    )]
    query: Vec<String>,
    /// Retrieval: hybrid (full text + meaning, fused), lexical (full text, needs no model),
    /// vector (meaning), exact or regex (as --exact and --regex, with QUERY as the string or
    /// pattern).
    #[arg(long, default_value = "hybrid")]
    mode: Mode,
    /// Every step containing STRING as written (ignoring case unless -s), in write-up order,
    /// with counts of matches, steps and incidents, like `rg -F`. Needs no model.
    #[arg(long, value_name = "STRING", conflicts_with_all = ["query", "regex", "mode"])]
    exact: Option<String>,
    /// Every step matching the regular expression RE (Rust regex syntax, ignoring case unless
    /// -s), in write-up order, with counts, like `rg`. Needs no model.
    #[arg(long, value_name = "RE", conflicts_with_all = ["query", "mode"])]
    regex: Option<String>,
    /// With --exact and --regex: match case as written.
    #[arg(short = 's', long)]
    case_sensitive: bool,
    /// Number of steps to return (with --group: number of incidents) [default: 10; every
    /// match, up to 1000, with --exact and --regex].
    #[arg(short)]
    k: Option<usize>,
    /// Most steps of one incident among the results (0 = no limit; --exact and --regex list
    /// every matching step unless --group).
    #[arg(long, default_value_t = 2, value_name = "N")]
    per_incident: usize,
    /// Show incidents, each with its best steps (at most --per-incident).
    #[arg(long)]
    group: bool,
    #[command(flatten)]
    filters: FilterArgs,
    /// Print citations with the absolute path of the write-up (the corpus root recorded by
    /// `precedent index`).
    #[arg(long)]
    absolute: bool,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    /// More synonym groups (TOML: `groups = [["cert", "certificate"], ...]`), added to the
    /// built-in table and the corpus root's `synonyms.toml`.
    #[arg(long, value_name = "FILE")]
    synonyms: Option<PathBuf>,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// The model, or a reason it is needed when it cannot be found.
fn load_model(
    model: &ModelArgs,
    index: &IndexArgs,
    what: &str,
) -> anyhow::Result<Arc<dyn Embedder>> {
    model
        .load_for(&index.index)
        .with_context(|| format!("{what} needs the embedding model (`--mode lexical` does not)"))
}

// Without the `qdrant` feature the Qdrant arm ends at `StoreArgs::qdrant`, which then always
// fails: what follows it is unreachable there, by design.
#[cfg_attr(
    not(feature = "qdrant"),
    allow(unreachable_code, unused_variables, unused_assignments)
)]
pub fn search(args: SearchArgs, color: ColorWhen) -> anyhow::Result<ExitCode> {
    let (mode, query) = match (args.exact, args.regex) {
        (Some(string), _) => (Mode::Exact, string),
        (None, Some(pattern)) => (Mode::Regex, pattern),
        (None, None) => (args.mode, args.query.join(" ")),
    };
    let k = args.k.unwrap_or(if mode.scans() {
        precedent_index::MAX_K
    } else {
        10
    });
    let mut request = SearchRequest::new(query)
        .with_mode(mode)
        .with_k(k)
        .with_per_incident(args.per_incident)
        .with_group(args.group)
        .with_case_sensitive(args.case_sensitive);
    // Exact and regex search scan the step texts of the embedded index, whatever the store.
    let store = if mode.scans() {
        StoreKind::Embedded
    } else {
        args.store.store
    };
    let (response, root) = match store {
        StoreKind::Embedded => {
            let engine = open(&args.index)?;
            if let Some(file) = &args.synonyms {
                engine.use_synonyms(file)?;
            }
            let embedder: Arc<dyn Embedder> = if mode.embeds() {
                load_model(&args.model, &args.index, "hybrid and vector search")?
            } else {
                Arc::new(NoModel)
            };
            request = request.with_filters(args.filters.to_filters(&engine)?);
            let response = engine
                .search(&request, embedder.as_ref())
                .map_err(|e| explain(e.into(), &args.model, &args.index))?;
            (response, engine.corpus_root())
        }
        StoreKind::Qdrant => {
            let embedder = load_model(&args.model, &args.index, "search in Qdrant")?;
            let root = recorded_root(&args.index);
            let store = args
                .store
                .qdrant(embedder.as_ref())?
                .with_synonyms(qdrant_synonyms(root.as_deref(), args.synonyms.as_deref())?);
            request = request.with_filters(args.filters.to_filters(&store)?);
            let response = store.search(&request, embedder.as_ref())?;
            (response, root)
        }
    };
    let found = !response.hits.is_empty();
    if args.json {
        print_json(&response)?;
    } else {
        print_hits(
            &response,
            color,
            args.absolute.then_some(root).flatten().as_deref(),
        )?;
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The synonym table for a Qdrant search: built in, the corpus root's `synonyms.toml` and
/// `--synonyms`, as the embedded store loads it.
fn qdrant_synonyms(root: Option<&Path>, extra: Option<&Path>) -> anyhow::Result<Synonyms> {
    let mut table = Synonyms::builtin();
    if let Some(file) = root.map(|r| r.join(SYNONYMS_FILE))
        && file.is_file()
    {
        table.add_file(&file)?;
    }
    if let Some(extra) = extra {
        table.add_file(extra)?;
    }
    Ok(table)
}

/// The corpus root recorded in the embedded index, if it can be read.
fn recorded_root(index: &IndexArgs) -> Option<PathBuf> {
    Engine::open(&index.index).ok()?.corpus_root()
}

fn print_hits(
    response: &SearchResponse,
    color: ColorWhen,
    root: Option<&Path>,
) -> anyhow::Result<()> {
    if response.hits.is_empty() {
        eprintln!("no matching steps");
        return Ok(());
    }
    let mut p = Printer::stdout(color);
    let scanned = response.counts.is_some();
    if response.match_quality == MatchQuality::None && !scanned {
        p.line(&p.dim(NO_CLOSE_PRECEDENT))?;
    }
    match &response.groups {
        Some(groups) => {
            for (i, group) in groups.iter().enumerate() {
                p.line(&format!(
                    "{:>2}. {}  {}",
                    i + 1,
                    p.title(&group.title),
                    p.path(&shown_path(&group.path, root))
                ))?;
                for hit in &group.hits {
                    print_hit(&mut p, 0, hit, root, scanned)?;
                }
            }
        }
        None => {
            for (i, hit) in response.hits.iter().enumerate() {
                print_hit(&mut p, i + 1, hit, root, scanned)?;
            }
        }
    }
    let took = match response.counts {
        Some(c) => format!(
            "{} in {} of {} ({} shown; {} ms)",
            plural(c.matches, "match", "matches"),
            plural(c.steps, "step", "steps"),
            plural(c.incidents, "incident", "incidents"),
            response.hits.len(),
            response.took_ms
        ),
        None => format!("({} ms)", response.took_ms),
    };
    p.line(&p.dim(&took))?;
    p.finish()?;
    Ok(())
}

/// `1 match`, `3 matches`.
fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `path` as given, or under `root` when `--absolute` found one.
pub fn shown_path(path: &str, root: Option<&Path>) -> String {
    match root {
        Some(root) => root.join(path).display().to_string(),
        None => path.to_owned(),
    }
}

/// Said when match quality is `none`.
pub(crate) const NO_CLOSE_PRECEDENT: &str =
    "no close precedent: nothing below matches the query closely (match quality: none)";

/// Prints a hit; `rank` 0 prints it as a step of a group, without a number.
/// `scanned`: the hit comes from an exact or regex search (its score is a match count).
fn print_hit(
    p: &mut Printer,
    rank: usize,
    hit: &Hit,
    root: Option<&Path>,
    scanned: bool,
) -> std::io::Result<()> {
    let c = &hit.citation;
    let cite = citation(&shown_path(&c.path, root), c.line_start, c.line_end);
    let kind = kind_label(hit.kind, hit.outcome);
    let number = if rank == 0 {
        "  ".to_owned()
    } else {
        format!("{rank:>2}")
    };
    let dot = if rank == 0 { " " } else { "." };
    let lead = format!(
        "{number}{dot} {}  {}  ",
        p.path(&cite),
        p.kind(&format!("[{kind}]")),
    );
    let lead_width = 4 + cite.chars().count() + 2 + kind.chars().count() + 4;
    p.wrapped_title(&lead, lead_width, "    ", &hit.title)?;
    p.wrapped("    ", 4, "    ", &hit.snippet)?;
    let s = &hit.score;
    let lexical = match (s.lexical_rank, s.lexical_score) {
        (Some(r), Some(v)) => format!("lexical #{r} ({v:.2})"),
        _ => "lexical -".into(),
    };
    let vector = match (s.vector_rank, s.vector_similarity) {
        (Some(r), Some(v)) => format!("vector #{r} ({v:.3})"),
        _ => "vector -".into(),
    };
    let whole = match s.incident_rank {
        Some(r) => format!(" · write-up #{r}"),
        None => String::new(),
    };
    let date = hit
        .date
        .map_or_else(|| "undated".to_owned(), |d| d.start.to_string());
    let detail = if scanned {
        format!("{date} · {}", plural(s.fused as u64, "match", "matches"))
    } else {
        format!(
            "{date} · fused {:.4} · {lexical} · {vector}{whole}",
            s.fused
        )
    };
    p.line(&format!("    {}", p.dim(&detail)))
}

/// `action: did not help`, or the kind alone when the outcome says nothing.
pub fn kind_label(kind: StepKind, outcome: Option<Outcome>) -> String {
    match outcome {
        Some(Outcome::Unknown) | None => kind.to_string(),
        Some(o) => format!("{kind}: {}", o.as_str().replace('_', " ")),
    }
}

/// The card of a similar incident, a line per field that has something to say.
pub fn print_card(p: &mut Printer, card: &Card, indent: &str) -> std::io::Result<()> {
    let field = |p: &mut Printer, label: &str, item: &CardItem| {
        let lead = format!("{indent}{} ", p.heading(&format!("{label}:")));
        let width = indent.len() + label.len() + 2;
        let text = format!("{} (line {})", item.text, item.line_start);
        p.wrapped(&lead, width, &format!("{indent}  "), &text)
    };
    if let Some(item) = card.trigger.as_ref().or(card.root_cause.as_ref()) {
        field(p, "cause", item)?;
    }
    for item in card.restored_by.iter().take(2) {
        field(p, "restored by", item)?;
    }
    for item in card.did_not_help.iter().take(2) {
        field(p, "did not help", item)?;
    }
    for item in card.ruled_out.iter().take(2) {
        field(p, "ruled out", item)?;
    }
    let mut times = Vec::new();
    if let Some(t) = card.time_to_detect {
        times.push(format!("detected after {} min", t.minutes));
    }
    if let Some(t) = card.time_to_mitigate {
        times.push(format!("mitigated after {} min", t.minutes));
    }
    times.push(format!(
        "trigger {} · remediation {}",
        card.trigger_class, card.remediation_class
    ));
    p.line(&format!("{indent}{}", p.dim(&times.join(" · "))))
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["source", "file", "text"])))]
pub struct SimilarArgs {
    /// An indexed incident (id, unique id prefix, or path relative to the corpus root), or a
    /// description of what on-call sees (several words need no quotes).
    #[arg(value_name = "ID|TEXT", num_args = 1..)]
    source: Vec<String>,
    /// A draft write-up (Markdown or plain text) or notes, read as HTTP and MCP read `text`:
    /// several paragraphs are a draft whose situation steps are compared one by one; at most
    /// 64 KiB are read. An indexed write-up given this way is left out of the answer.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
    /// Free text, even when it looks like an id.
    #[arg(long, value_name = "TEXT")]
    text: Option<String>,
    /// Number of incidents to return.
    #[arg(short, default_value_t = 10)]
    k: usize,
    #[command(flatten)]
    filters: FilterArgs,
    /// Print citations with the absolute path of the write-up.
    #[arg(long)]
    absolute: bool,
    /// Print the response as JSON.
    #[arg(long)]
    json: bool,
    /// More synonym groups (TOML: `groups = [["cert", "certificate"], ...]`), added to the
    /// built-in table and the corpus root's `synonyms.toml`.
    #[arg(long, value_name = "FILE")]
    synonyms: Option<PathBuf>,
    #[command(flatten)]
    index: IndexArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    store: StoreArgs,
}

/// Whether a single word that names no incident was meant as one: it has the shape of a path
/// or of a full id (ending in the 8-hex-digit hash).
fn looks_like_a_reference(word: &str) -> bool {
    if word.contains('/') || word.ends_with(".md") || word.ends_with(".txt") {
        return true;
    }
    word.rsplit_once('-')
        .is_some_and(|(_, tail)| tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What `similar` compares with, from its arguments.
fn similar_source(args: &SimilarArgs, store: &dyn Store) -> anyhow::Result<SimilarSource> {
    // A file's text is sent as HTTP and MCP send theirs: the engine reads several paragraphs
    // as a draft, and leaves out the incident of a write-up that is itself indexed.
    if let Some(file) = &args.file {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        return Ok(SimilarSource::Text(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
    }
    if let Some(text) = &args.text {
        return Ok(SimilarSource::Text(text.clone()));
    }
    if let [word] = args.source.as_slice() {
        return match store.resolve_incident(word) {
            Ok(id) => Ok(SimilarSource::Incident(id)),
            Err(
                err @ precedent_index::Error::IncidentRef {
                    ambiguous: true, ..
                },
            ) => Err(err.into()),
            Err(err) if looks_like_a_reference(word) => Err(anyhow::Error::from(err)
                .context("pass --text to search for it as a description instead")),
            Err(_) => Ok(SimilarSource::Text(word.clone())),
        };
    }
    Ok(SimilarSource::Text(args.source.join(" ")))
}

// Without the `qdrant` feature the Qdrant arm ends at `StoreArgs::qdrant`, which then always
// fails: what follows it is unreachable there, by design.
#[cfg_attr(
    not(feature = "qdrant"),
    allow(unreachable_code, unused_variables, unused_assignments)
)]
pub fn similar(args: SimilarArgs, color: ColorWhen) -> anyhow::Result<ExitCode> {
    let (response, root) = match args.store.store {
        StoreKind::Embedded => {
            let engine = open(&args.index)?;
            if let Some(file) = &args.synonyms {
                engine.use_synonyms(file)?;
            }
            let request = SimilarRequest {
                source: similar_source(&args, &engine)?,
                k: args.k,
                filters: args.filters.to_filters(&engine)?,
            };
            // An indexed incident's own vectors are the query: no model needed.
            let embedder: Arc<dyn Embedder> = match request.source {
                SimilarSource::Incident(_) => Arc::new(NoModel),
                _ => load_model(&args.model, &args.index, "similar to a text or file")?,
            };
            let response = engine
                .similar(&request, embedder.as_ref())
                .map_err(|e| explain(e.into(), &args.model, &args.index))?;
            (response, engine.corpus_root())
        }
        StoreKind::Qdrant => {
            let embedder = load_model(&args.model, &args.index, "similar in Qdrant")?;
            let root = Engine::open(&args.index.index)
                .ok()
                .as_ref()
                .and_then(Engine::corpus_root);
            let store = args
                .store
                .qdrant(embedder.as_ref())?
                .with_synonyms(qdrant_synonyms(root.as_deref(), args.synonyms.as_deref())?);
            // The collection resolves ids, prefixes and paths.
            let request = SimilarRequest {
                source: similar_source(&args, &store)?,
                k: args.k,
                filters: args.filters.to_filters(&store)?,
            };
            let response = store.similar(&request, embedder.as_ref())?;
            (response, root)
        }
    };
    let found = !response.incidents.is_empty();
    if args.json {
        print_json(&response)?;
    } else if !found {
        eprintln!("no similar incidents");
    } else {
        let root = args.absolute.then_some(root).flatten();
        let mut p = Printer::stdout(color);
        if response.match_quality == MatchQuality::None {
            p.line(&p.dim(NO_CLOSE_PRECEDENT))?;
        }
        for (i, incident) in response.incidents.iter().enumerate() {
            let mut facts = vec![
                incident
                    .date
                    .map(|d| d.start.to_string())
                    .unwrap_or_else(|| "undated".into()),
            ];
            facts.extend(incident.severity.clone());
            if !incident.services.is_empty() {
                facts.push(incident.services.join(", "));
            }
            facts.push(format!("score {:.4}", incident.score));
            p.line(&format!(
                "{:>2}. {}  {}",
                i + 1,
                p.title(&incident.title),
                p.dim(&format!("({})", facts.join(", ")))
            ))?;
            p.line(&format!(
                "    {}  {}",
                incident.incident_id,
                p.path(&shown_path(&incident.path, root.as_deref()))
            ))?;
            print_card(&mut p, &incident.card, "    ")?;
            for hit in &incident.steps {
                let c = &hit.citation;
                let cite = citation(
                    &shown_path(&c.path, root.as_deref()),
                    c.line_start,
                    c.line_end,
                );
                let kind = kind_label(hit.kind, hit.outcome);
                let lead = format!("      {}  {} ", p.path(&cite), p.kind(&format!("[{kind}]")));
                let lead_width = 6 + cite.chars().count() + 2 + kind.chars().count() + 3;
                p.wrapped(&lead, lead_width, "        ", &hit.snippet)?;
            }
        }
        p.line(&p.dim(&format!("({} ms)", response.took_ms)))?;
        p.finish()?;
    }
    Ok(if found {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
