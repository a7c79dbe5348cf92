//! Hostile corpora written by the tests themselves: links out of the corpus, FIFOs, devices,
//! broken and looping links, paths over PATH_MAX, unreadable directories, edits that keep size
//! and mtime, files that parse into too many steps. Indexing never reads outside the corpus
//! root, never aborts on one bad entry, and reports every entry it leaves out with a reason.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::common::{embedder, options, steps_of, sync};
use precedent_index::{Engine, Error, IndexSummary, IndexWriter, Mode, NoProgress, SearchRequest};

const WRITE_UP: &str = "# Disk full on the log host\n\n## Root cause\n\nThe disk filled up with debug logs after a release turned on verbose logging.\n";

fn reason_of<'a>(summary: &'a IndexSummary, path: &str) -> &'a str {
    summary
        .skipped
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("{path} not reported as skipped: {:?}", summary.skipped))
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else if let Ok(bytes) = fs::read(entry.path()) {
                out.extend(bytes);
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn lexical(engine: &Engine, query: &str) -> usize {
    let request = SearchRequest::new(query).with_mode(Mode::Lexical);
    engine.search(&request, &*embedder()).unwrap().hits.len()
}

#[test]
fn nothing_outside_the_corpus_root_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus, outside) = (
        tmp.path().join("index"),
        tmp.path().join("corpus"),
        tmp.path().join("outside"),
    );
    fs::create_dir_all(corpus.join("sub")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    let secret =
        "# Outside\n\n## Root cause\n\nThe zanzibarquux credential lives outside the corpus.\n";
    fs::write(outside.join("secret.md"), secret).unwrap();
    fs::write(corpus.join("good.md"), WRITE_UP).unwrap();
    fs::write(
        corpus.join("sub/inner.md"),
        WRITE_UP.replace("log host", "db host"),
    )
    .unwrap();
    symlink(outside.join("secret.md"), corpus.join("secret.md")).unwrap();
    symlink("../../outside/secret.md", corpus.join("sub/relative.md")).unwrap();
    symlink("/etc/passwd", corpus.join("passwd.txt")).unwrap();
    symlink("/proc/self/environ", corpus.join("environ.txt")).unwrap();
    symlink(&outside, corpus.join("outdir")).unwrap();
    // A link that stays inside is followed.
    symlink("sub/inner.md", corpus.join("alias.md")).unwrap();

    let summary = sync(&index, &corpus, options());
    assert_eq!(summary.added, 3, "{summary:?}");
    for path in ["secret.md", "sub/relative.md", "passwd.txt", "environ.txt"] {
        assert!(
            reason_of(&summary, path).contains("outside the corpus root"),
            "{path}: {}",
            reason_of(&summary, path)
        );
    }
    assert!(reason_of(&summary, "outdir").contains("outside the corpus root"));
    let engine = Engine::open(&index).unwrap();
    assert_eq!(lexical(&engine, "zanzibarquux"), 0);
    assert_eq!(
        lexical(&engine, "nologin daemon"),
        0,
        "no /etc/passwd line is indexed"
    );
    let bytes = all_bytes(&index);
    assert!(!contains(&bytes, "zanzibarquux"));
    assert!(!contains(&bytes, "/bin/bash") && !contains(&bytes, "nologin"));

    // An indexed file replaced by a link to the outside is dropped on the next run.
    fs::remove_file(corpus.join("good.md")).unwrap();
    symlink(outside.join("secret.md"), corpus.join("good.md")).unwrap();
    let summary = sync(&index, &corpus, options());
    assert_eq!(summary.removed, 1, "{summary:?}");
    assert!(reason_of(&summary, "good.md").contains("outside the corpus root"));
    let engine = Engine::open(&index).unwrap();
    assert_eq!(lexical(&engine, "zanzibarquux"), 0);
    let steps = steps_of(&index);
    assert!(!steps.is_empty(), "the other write-ups stay indexed");
    assert!(steps.iter().all(|(_, _, p)| p != "good.md"));
}

/// Makes a directory tree under `base` whose deepest file has a path longer than PATH_MAX,
/// without ever naming a long path (each step renames a short one).
fn deep_tree(base: &Path) -> usize {
    let name = "d".repeat(200);
    fs::create_dir_all(base.join("cur")).unwrap();
    fs::write(base.join("cur/deep.md"), WRITE_UP).unwrap();
    let levels = 25;
    for _ in 0..levels {
        fs::create_dir(base.join("wrap")).unwrap();
        fs::rename(base.join("cur"), base.join("wrap").join(&name)).unwrap();
        fs::rename(base.join("wrap"), base.join("cur")).unwrap();
    }
    levels * 201
}

#[test]
fn odd_entries_are_skipped_with_reasons_and_never_abort() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    fs::create_dir_all(&corpus).unwrap();
    fs::write(corpus.join("good.md"), WRITE_UP).unwrap();
    fs::write(corpus.join("README.md"), "# About this folder\n").unwrap();
    fs::write(corpus.join("LICENSE"), "MIT").unwrap();
    fs::write(corpus.join("diagram.png"), b"\x89PNG").unwrap();
    fs::write(corpus.join(".notes.md"), WRITE_UP).unwrap();
    let mkfifo = Command::new("mkfifo")
        .arg(corpus.join("pipe.md"))
        .status()
        .unwrap();
    assert!(mkfifo.success());
    symlink("/dev/zero", corpus.join("zero.md")).unwrap();
    symlink("missing.md", corpus.join("dangling.md")).unwrap();
    symlink("loop-b.md", corpus.join("loop-a.md")).unwrap();
    symlink("loop-a.md", corpus.join("loop-b.md")).unwrap();
    symlink(".", corpus.join("self")).unwrap();
    let depth = deep_tree(&corpus.join("deep"));
    assert!(depth > 4096);
    // A character device inside the corpus (we may not be allowed to make one).
    let device = Command::new("mknod")
        .arg(corpus.join("null.md"))
        .args(["c", "1", "3"])
        .status()
        .is_ok_and(|s| s.success());

    let summary = sync(&index, &corpus, options());
    assert_eq!(
        (summary.added, summary.steps_total > 0),
        (1, true),
        "{summary:?}"
    );
    let check = |path: &str, words: &str| {
        let reason = reason_of(&summary, path);
        assert!(reason.contains(words), "{path}: {reason}");
    };
    check("README.md", "furniture");
    check("LICENSE", "not a write-up format");
    check("diagram.png", "not a write-up format");
    check(".notes.md", "hidden");
    check("pipe.md", "FIFO");
    check("zero.md", "outside the corpus root");
    check("dangling.md", "broken or looping");
    check("loop-a.md", "broken or looping");
    check("loop-b.md", "broken or looping");
    check("self", "directory (not followed)");
    if device {
        check("null.md", "character device");
    }
    let long = summary
        .skipped
        .iter()
        .find(|(p, _)| p.starts_with("deep/"))
        .unwrap_or_else(|| panic!("nothing under deep/ reported: {:?}", summary.skipped));
    assert!(long.1.to_lowercase().contains("too long"), "{long:?}");
    // The count matches: every entry not indexed is in the list once.
    let mut paths: Vec<_> = summary.skipped.iter().map(|(p, _)| p.clone()).collect();
    paths.dedup();
    assert_eq!(paths.len(), summary.skipped.len());
}

const CHILD_ENV: &str = "PRECEDENT_UNREADABLE_CHILD";

/// The test below, as libtest names it: the parent re-executes this binary to run only it, with
/// `PRECEDENT_UNREADABLE_CHILD` set, which makes it the child.
const UNREADABLE_TEST: &str = "hostile::an_unreadable_directory_is_skipped_and_keeps_what_it_held";

/// The child of `an_unreadable_directory_is_skipped_and_keeps_what_it_held`: syncs and prints the
/// summary on one line.
fn unreadable_child(spec: &str) {
    let (index, corpus) = spec.split_once('\n').unwrap();
    let mut writer = IndexWriter::open(Path::new(index), embedder(), options()).unwrap();
    let summary = writer.sync_dir(Path::new(corpus), &NoProgress).unwrap();
    println!("SUMMARY {}", serde_json_summary(&summary));
}

fn serde_json_summary(summary: &IndexSummary) -> String {
    let skipped: Vec<String> = summary
        .skipped
        .iter()
        .map(|(p, r)| format!("{p}\t{r}"))
        .collect();
    format!(
        "{}|{}|{}",
        summary.added,
        summary.unchanged,
        skipped.join("|")
    )
}

#[test]
fn an_unreadable_directory_is_skipped_and_keeps_what_it_held() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return unreadable_child(&spec);
    }
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    fs::create_dir_all(corpus.join("locked")).unwrap();
    fs::write(corpus.join("good.md"), WRITE_UP).unwrap();
    fs::write(
        corpus.join("locked/kept.md"),
        WRITE_UP.replace("log host", "queue host"),
    )
    .unwrap();
    let first = sync(&index, &corpus, options());
    assert_eq!(first.added, 2, "{first:?}");

    fs::write(
        corpus.join("new.md"),
        WRITE_UP.replace("log host", "cache host"),
    )
    .unwrap();
    set_mode(&corpus.join("locked"), 0o000);
    // Root reads anything; run the sync in a child without the capabilities that allow it.
    let exe = std::env::current_exe().unwrap();
    let spec = format!("{}\n{}", index.display(), corpus.display());
    let mut command = if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--bounding-set=-dac_override,-dac_read_search", "--"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let output = command
        .args([
            "--exact",
            UNREADABLE_TEST,
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, spec)
        .output()
        .unwrap();
    set_mode(&corpus.join("locked"), 0o755);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("SUMMARY ").map(|(_, s)| s))
        .unwrap_or_else(|| panic!("no summary in {stdout}"));
    let fields: Vec<&str> = line.split('|').collect();
    assert_eq!(fields[0], "1", "new.md added: {line}");
    assert_eq!(
        fields[1], "2",
        "good.md and locked/kept.md unchanged: {line}"
    );
    assert!(
        fields[2..]
            .iter()
            .any(|s| s.starts_with("locked\tcannot list directory")),
        "{line}"
    );
    let paths: Vec<String> = steps_of(&index).into_iter().map(|(_, _, p)| p).collect();
    assert!(paths.iter().any(|p| p == "locked/kept.md"), "{paths:?}");
    assert!(paths.iter().any(|p| p == "new.md"), "{paths:?}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn set_mtime(path: &Path, at: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(at)
        .unwrap();
}

#[test]
fn an_edit_keeping_size_and_mtime_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    fs::create_dir_all(&corpus).unwrap();
    let path = corpus.join("a.md");
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let original = WRITE_UP;
    let edited = WRITE_UP.replace("debug logs", "trace logs");
    assert_eq!(original.len(), edited.len());

    // Timestamps trusted at once (no racy window): only ctime and inode can tell.
    let trusting = || options().with_racy_window(Duration::ZERO);
    fs::write(&path, original).unwrap();
    set_mtime(&path, hour_ago);
    assert_eq!(sync(&index, &corpus, trusting()).added, 1);
    assert_eq!(sync(&index, &corpus, trusting()).unchanged, 1);
    fs::write(&path, &edited).unwrap();
    set_mtime(&path, hour_ago);
    let summary = sync(&index, &corpus, trusting());
    assert_eq!(summary.updated, 1, "same size, same mtime: {summary:?}");
    assert!(
        steps_of(&index)
            .iter()
            .any(|(_, t, _)| t.contains("trace logs"))
    );

    // Replaced by another file (rename over it) with the same size and mtime.
    let other = corpus.join(".tmp");
    fs::write(&other, original).unwrap();
    set_mtime(&other, hour_ago);
    fs::rename(&other, &path).unwrap();
    let summary = sync(&index, &corpus, trusting());
    assert_eq!(summary.updated, 1, "replaced file: {summary:?}");

    // Within the default racy window a rewrite in the same timestamp tick is caught by hashing.
    let recent = SystemTime::now();
    fs::write(&path, &edited).unwrap();
    set_mtime(&path, recent);
    assert_eq!(sync(&index, &corpus, options()).updated, 1);
    fs::write(&path, original).unwrap();
    set_mtime(&path, recent);
    let summary = sync(&index, &corpus, options());
    assert_eq!(summary.updated, 1, "rewrite in the same tick: {summary:?}");
}

#[test]
fn a_file_with_too_many_steps_is_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    fs::create_dir_all(&corpus).unwrap();
    fs::write(corpus.join("good.md"), WRITE_UP).unwrap();
    // Sections never merge, so each becomes at least one step.
    let mut table = String::from("# Many sections\n\n");
    for i in 0..80 {
        table.push_str(&format!(
            "## Action {i}\n\nWe restarted replica {i} of shard {i} after probe number {i} failed.\n\n"
        ));
    }
    fs::write(corpus.join("table.md"), &table).unwrap();
    let capped = || options().with_max_steps(50);
    let summary = sync(&index, &corpus, capped());
    assert_eq!(summary.added, 1, "{summary:?}");
    let reason = reason_of(&summary, "table.md");
    assert!(reason.contains("over the cap of 50 steps"), "{reason}");
    assert!(summary.steps_total <= 50);

    let mut writer = IndexWriter::open(&index, embedder(), capped()).unwrap();
    match writer.upsert("other/table.md", table.as_bytes()) {
        Err(Error::InvalidWriteUp { reason, .. }) => assert!(reason.contains("steps"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // With the default cap it is indexed.
    drop(writer);
    let summary = sync(&index, &corpus, options());
    assert_eq!(summary.added, 1, "{summary:?}");
    assert!(summary.steps_total > 50, "{summary:?}");
}

#[test]
fn a_secret_in_a_file_name_never_reaches_the_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, corpus) = (tmp.path().join("index"), tmp.path().join("corpus"));
    let planted = precedent_parse::testing::planted_secrets();
    let named: Vec<_> = planted
        .secrets
        .iter()
        .filter(|s| s.form == "file-name")
        .collect();
    assert!(named.len() >= 3, "{named:?}");
    let files: Vec<&(String, String)> = planted
        .files
        .iter()
        .filter(|(path, _)| named.iter().any(|s| s.leaks_in(path).is_some()))
        .collect();
    assert_eq!(files.len(), named.len());
    for (path, content) in &files {
        let full = corpus.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(full, content).unwrap();
    }
    // Two names that differ only in their secret redact to one path: the second is left out
    // with a reason instead of replacing the first.
    let (first, content) = files[0];
    let secret = &named[0].secret;
    assert!(first.contains(secret.as_str()), "{first} {secret}");
    let last = secret.chars().last().unwrap();
    let other = format!(
        "{}{}",
        &secret[..secret.len() - last.len_utf8()],
        if last == '7' { '8' } else { '7' }
    );
    let twin = first.replace(secret.as_str(), &other);
    fs::write(corpus.join(&twin), content).unwrap();

    let summary = sync(&index, &corpus, options());
    assert_eq!(summary.added, files.len(), "{summary:?}");
    let shown = serde_json_summary(&summary);
    let bytes = all_bytes(&index);
    assert!(contains(&bytes, "[REDACTED:"), "redacted paths are stored");
    for secret in named.iter().copied() {
        for needle in &secret.needles {
            assert!(
                !contains(&bytes, needle),
                "{} leaked: {needle}",
                secret.kind
            );
        }
        assert!(
            secret.leaks_in(&shown).is_none(),
            "{} in the summary",
            secret.kind
        );
    }
    assert!(
        !contains(&bytes, &other) && !shown.contains(&other),
        "{shown}"
    );
    assert!(
        summary
            .skipped
            .iter()
            .any(|(_, reason)| reason.contains("that of another file")),
        "{summary:?}"
    );

    // The paths served are the redacted ones, and the path as typed still finds its incident.
    let engine = Engine::open(&index).unwrap();
    let steps = steps_of(&index);
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|(_, _, path)| path.contains("[REDACTED:")));
    let id = engine.resolve_incident(first).unwrap();
    let path = engine.incident(&id).unwrap().unwrap().path;
    assert!(path.contains("[REDACTED:"), "{path}");
    assert!(steps.iter().any(|(_, _, p)| *p == path), "{path}");

    // Unchanged files stay unchanged on the next run (the key is found again).
    let again = sync(&index, &corpus, options());
    assert_eq!(again.added + again.updated + again.removed, 0, "{again:?}");
    assert_eq!(again.unchanged, files.len(), "{again:?}");
}
