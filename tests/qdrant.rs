//! Parity of the Qdrant store with the embedded one, and convergence after kills, against a
//! real Qdrant server: the one named by `PRECEDENT_QDRANT_URL` (its gRPC URL, e.g.
//! `http://127.0.0.1:6334`, REST on the port before it), or else one each test starts from
//! `../shared/bin/qdrant` (or `$PRECEDENT_QDRANT_BIN`) on free loopback ports with its
//! storage in a temp dir. A test fails when neither is there: it never skips.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::conformance;
use crate::util::{Dir, Served, TestCommand, hit_paths, samples};

/// A Qdrant server for one test: started here and killed on drop, or an outside one.
struct Qdrant {
    /// gRPC URL, what `--qdrant-url` takes.
    url: String,
    /// REST URL, for readiness and clean-up.
    rest: String,
    child: Option<Child>,
    _dir: Option<Dir>,
}

impl Drop for Qdrant {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A loopback port free now and never handed out before in this process. The kernel may give
/// a released port to the next `bind(0)`, and the tests of this binary start Qdrant nodes (3
/// ports each) in parallel: without the memory, two nodes could be told the same port, and a
/// node's gRPC URL could reach another node's cluster port ("Operation is not implemented").
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// The Qdrant binary: `$PRECEDENT_QDRANT_BIN` or `../shared/bin/qdrant`; its absence fails.
fn qdrant_bin() -> PathBuf {
    let bin = std::env::var_os("PRECEDENT_QDRANT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bin/qdrant"));
    assert!(
        bin.exists(),
        "no Qdrant server: {} is missing; set PRECEDENT_QDRANT_BIN or PRECEDENT_QDRANT_URL",
        bin.display()
    );
    bin
}

/// `GET url` as JSON, or `None` while the server does not answer.
fn get_json(url: &str) -> Option<serde_json::Value> {
    let out = Command::new("curl").args(["-sf", url]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Polls `check` every 200 ms until it holds, failing after `secs` with `what`.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {secs} s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn qdrant() -> Qdrant {
    if let Some(url) = std::env::var("PRECEDENT_QDRANT_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let port: u16 = url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap();
        let rest = format!("http://127.0.0.1:{}", port - 1);
        return Qdrant {
            url,
            rest,
            child: None,
            _dir: None,
        };
    }
    let bin = qdrant_bin();
    let dir = Dir::new();
    let (http, grpc) = (free_port(), free_port());
    let config = dir.create(
        "config.yaml",
        format!(
            "storage:\n  storage_path: {root}/storage\n  snapshots_path: {root}/snapshots\n\
             service:\n  host: 127.0.0.1\n  http_port: {http}\n  grpc_port: {grpc}\n\
             telemetry_disabled: true\n",
            root = dir.join("").display()
        ),
    );
    let log_path = dir.join("qdrant.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(&bin)
        .arg("--config-path")
        .arg(&config)
        .current_dir(dir.join(""))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let server = Qdrant {
        url: format!("http://127.0.0.1:{grpc}"),
        rest: format!("http://127.0.0.1:{http}"),
        child: Some(child),
        _dir: Some(dir),
    };
    // Ready when /readyz answers 200; the first start unpacks the binary (a few seconds).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", &format!("{}/readyz", server.rest)])
            .status()
            .unwrap();
        if status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Qdrant did not get ready in 120 s: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

fn collection(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{nanos}", std::process::id())
}

fn qdrant_args(url: &str, collection: &str) -> Vec<String> {
    [
        "--store",
        "qdrant",
        "--qdrant-url",
        url,
        "--collection",
        collection,
        "--qdrant-exact",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn run(args: &[String]) -> serde_json::Value {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestCommand::new(&refs).json()
}

/// `precedent index corpus-samples --json --index INDEX` with the store flags `q`.
fn sync_samples(index: &std::path::Path, q: &[String]) -> serde_json::Value {
    let mut args: Vec<String> = ["index", samples().to_str().unwrap(), "--json", "--index"]
        .map(str::to_owned)
        .to_vec();
    args.push(index.display().to_string());
    args.extend(q.iter().cloned());
    run(&args)
}

/// `precedent serve --index INDEX` with the store flags `q`, taking writes with the token in
/// `token_file` when one is given.
fn serve_with(
    index: &std::path::Path,
    q: &[String],
    token_file: Option<&std::path::Path>,
) -> Served {
    let mut cmd = TestCommand::new(&["serve", "--index"])
        .arg(index)
        .args(q.iter());
    if let Some(file) = token_file {
        cmd = cmd.arg("--allow-writes").arg("--token-file").arg(file);
    }
    cmd.serve()
}

fn drop_collection(server: &Qdrant, name: &str) {
    // Best effort, over REST.
    let _ = Command::new("curl")
        .args([
            "-s",
            "-X",
            "DELETE",
            &format!("{}/collections/{name}", server.rest),
        ])
        .stdout(Stdio::null())
        .status();
}

const QUERIES: &[&str] = &[
    "certificate expired and logins failed",
    "disk full no space left on device",
    "DNS resolution failures after a config change",
    "database failover and replication lag",
    "OOMKilled pods after memory limits change",
    "rollback of a bad deploy",
    "queue consumers fell behind",
    "leap second caused high CPU",
    "alert did not fire, customers reported it first",
    "power loss in a rack",
];

fn step_ids(v: &serde_json::Value) -> Vec<String> {
    v["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["step_id"].as_str().unwrap().to_owned())
        .collect()
}

fn incident_ids(v: &serde_json::Value) -> Vec<String> {
    v["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["incident_id"].as_str().unwrap().to_owned())
        .collect()
}

fn overlap(a: &[String], b: &[String]) -> f64 {
    let a: HashSet<&String> = a.iter().collect();
    let n = a.len().max(b.len()).max(1);
    b.iter().filter(|x| a.contains(x)).count() as f64 / n as f64
}

#[test]
fn qdrant_store_agrees_with_the_embedded_store() {
    let server = qdrant();
    let url = server.url.clone();
    let dir = Dir::new();
    let index = dir.join("index");
    let name = collection("parity");
    let q = qdrant_args(&url, &name);
    let summary = sync_samples(&index, &q);
    assert_eq!(
        summary["qdrant"]["points_total"], summary["steps_total"],
        "{summary}"
    );

    let filters: [&[&str]; 3] = [
        &[],
        &["--kind", "mitigation", "--kind", "action"],
        &["--since", "2020-01-01"],
    ];
    let (mut hybrid, mut similar, mut n) = (0.0, 0.0, 0);
    for query in QUERIES {
        for filter in filters {
            let base = |cmd: &str, mode: &str| -> Vec<String> {
                let mut a: Vec<String> =
                    [cmd, query, "--json", "-k", "10", "--mode", mode, "--index"]
                        .map(str::to_owned)
                        .to_vec();
                a.push(index.to_str().unwrap().to_owned());
                a.extend(filter.iter().map(|s| (*s).to_owned()));
                a
            };
            // Pure vector search, exact on both sides: the same steps.
            let embedded = step_ids(&run(&base("search", "vector")));
            let mut with_q = base("search", "vector");
            with_q.extend(q.clone());
            let remote = step_ids(&run(&with_q));
            let (a, b): (HashSet<_>, HashSet<_>) =
                (embedded.iter().collect(), remote.iter().collect());
            assert_eq!(a, b, "vector hits differ for {query:?} {filter:?}");

            let embedded = step_ids(&run(&base("search", "hybrid")));
            let mut with_q = base("search", "hybrid");
            with_q.extend(q.clone());
            let remote = step_ids(&run(&with_q));
            let o = overlap(&embedded, &remote);
            eprintln!("hybrid overlap@10 {o:.2}  {query:?} {filter:?}");
            hybrid += o;

            let mut s: Vec<String> = ["similar", "--text", query, "--json", "-k", "10", "--index"]
                .map(str::to_owned)
                .to_vec();
            s.push(index.to_str().unwrap().to_owned());
            s.extend(filter.iter().map(|x| (*x).to_owned()));
            let embedded = incident_ids(&run(&s));
            s.extend(q.clone());
            let remote = incident_ids(&run(&s));
            let o = overlap(&embedded, &remote);
            eprintln!("similar overlap@10 {o:.2}  {query:?} {filter:?}");
            similar += o;
            n += 1;
        }
    }
    serve_answers_from_qdrant(&index, &q);
    let (hybrid, similar) = (hybrid / n as f64, similar / n as f64);
    eprintln!("mean overlap@10 over {n} queries: hybrid search {hybrid:.3}, similar {similar:.3}");
    drop_collection(&server, &name);
    assert!(hybrid >= 0.8, "hybrid overlap@10 {hybrid:.3} < 0.8");
    assert!(similar >= 0.8, "similar overlap@10 {similar:.3} < 0.8");
}

#[test]
fn killed_qdrant_runs_converge() {
    let server = qdrant();
    let url = server.url.clone();
    let dir = Dir::new();
    let corpus = dir.copy_samples("corpus");
    let index = dir.join("index");
    let name = collection("kill");
    let q = qdrant_args(&url, &name);
    let base = |extra: &[&str]| -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_precedent"));
        cmd.arg("index")
            .arg(&corpus)
            .arg("--json")
            .arg("--index")
            .arg(&index)
            .args(&q)
            .args(extra)
            .env("PRECEDENT_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd
    };
    let files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    for (trial, delay_ms) in [300u64, 900, 1500, 2500, 4000, 6000]
        .into_iter()
        .enumerate()
    {
        // Change the corpus between kills: edit one file, delete another.
        let edit = &files[trial % files.len()];
        if edit.exists() {
            let mut text = std::fs::read_to_string(edit).unwrap();
            text.push_str(&format!(
                "\n## Follow-up {trial}\n\nAdd an alert for trial {trial}.\n"
            ));
            std::fs::write(edit, text).unwrap();
        }
        let _ = std::fs::remove_file(&files[(trial * 7 + 3) % files.len()]);
        let mut child = base(&[]).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = base(&[]).stderr(Stdio::piped()).output().unwrap();
    assert!(
        out.status.success(),
        "final run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["qdrant"]["points_total"], summary["steps_total"],
        "{summary}"
    );
    // Converged: a further run has nothing to do.
    let again: serde_json::Value =
        serde_json::from_slice(&base(&[]).output().unwrap().stdout).unwrap();
    assert_eq!(again["qdrant"]["incidents_upserted"], 0, "{again}");
    assert_eq!(again["qdrant"]["revisions_deleted"], 0, "{again}");
    assert_eq!(again["qdrant"]["points_total"], again["steps_total"]);
    // And it answers like the embedded index on the same corpus.
    for query in &QUERIES[..3] {
        let mut a: Vec<String> = ["search", query, "--json", "--mode", "vector", "--index"]
            .map(str::to_owned)
            .to_vec();
        a.push(index.to_str().unwrap().to_owned());
        let embedded: HashSet<String> = step_ids(&run(&a)).into_iter().collect();
        a.extend(q.clone());
        let remote: HashSet<String> = step_ids(&run(&a)).into_iter().collect();
        assert_eq!(embedded, remote, "{query}");
    }
    drop_collection(&server, &name);
}

/// `precedent serve --store qdrant` answers `/v1/search` as `precedent search --store qdrant`.
fn serve_answers_from_qdrant(index: &std::path::Path, q: &[String]) {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_precedent"))
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--index"])
        .arg(index)
        .args(q)
        .env("PRECEDENT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let request = |method: &str, path: &str, body: &str| -> Option<String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    let mut up = false;
    for _ in 0..120 {
        if request("GET", "/healthz", "").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(up, "server did not come up");
    for query in &QUERIES[..3] {
        let body = serde_json::json!({"query": query, "k": 10, "mode": "vector"}).to_string();
        let response = request("POST", "/v1/search", &body).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let json: serde_json::Value =
            serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let mut a: Vec<String> = ["search", query, "--json", "--mode", "vector", "--index"]
            .map(str::to_owned)
            .to_vec();
        a.push(index.to_str().unwrap().to_owned());
        a.extend(q.iter().cloned());
        assert_eq!(step_ids(&json), step_ids(&run(&a)), "{query}");
    }
    // Ranked in the one pipeline: Qdrant's hybrid hits say which retriever found them, and the
    // incident-level leg re-weighs them as on the embedded store.
    let body = serde_json::json!({"query": QUERIES[0], "k": 10, "mode": "hybrid"}).to_string();
    let response = request("POST", "/v1/search", &body).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let json: serde_json::Value =
        serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let scores: Vec<&serde_json::Value> = json["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["score"])
        .collect();
    assert!(!scores.is_empty(), "{json}");
    assert!(
        scores
            .iter()
            .all(|s| s["lexical_rank"].is_u64() || s["vector_rank"].is_u64()),
        "{json}"
    );
    for field in ["lexical_rank", "vector_rank", "incident_rank"] {
        assert!(
            scores.iter().any(|s| s[field].is_u64()),
            "no {field}: {json}"
        );
    }
    // An incident id in the filters that the store does not hold: 404, as on the embedded store.
    let body = serde_json::json!({
        "query": QUERIES[0],
        "filters": {"incident_ids": ["no-such-incident-0000"]},
    })
    .to_string();
    let response = request("POST", "/v1/search", &body).unwrap();
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(
        response.contains("unknown incident id no-such-incident-0000"),
        "{response}"
    );
    let _ = server.kill();
    let _ = server.wait();
}

/// No server behind the URL: the client retries with backoff, then gives up well within its
/// budget with an error that says the store is unavailable (a transient failure), not a hang.
#[test]
fn an_unreachable_server_is_a_transient_error_within_the_budget() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let dir = Dir::new();
    let started = Instant::now();
    let err = TestCommand::new(&["search", "--store", "qdrant", "--qdrant-url", &url])
        .arg("--index")
        .arg(dir.join("idx"))
        .arg("disk full")
        .fails();
    let took = started.elapsed();
    assert!(err.contains("qdrant unavailable"), "{err}");
    assert!(err.contains("cannot reach Qdrant"), "{err}");
    assert!(took < Duration::from_secs(30), "gave up after {took:?}");
}

/// One node of a loopback cluster.
struct Node {
    http: u16,
    grpc: u16,
    p2p: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(root: &Dir, name: &str) -> Node {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let (http, grpc, p2p) = (free_port(), free_port(), free_port());
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "storage:\n  storage_path: {d}/storage\n  snapshots_path: {d}/snapshots\n\
                 service:\n  host: 127.0.0.1\n  http_port: {http}\n  grpc_port: {grpc}\n\
                 cluster:\n  enabled: true\n  p2p:\n    port: {p2p}\n\
                 telemetry_disabled: true\n",
                d = dir.display()
            ),
        )
        .unwrap();
        Node {
            http,
            grpc,
            p2p,
            dir,
            child: None,
        }
    }

    /// Starts the node (joining the cluster of `bootstrap` the first time) and waits until it
    /// is ready.
    fn start(&mut self, bootstrap: Option<u16>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("qdrant.log"))
            .unwrap();
        let mut cmd = Command::new(qdrant_bin());
        cmd.arg("--config-path")
            .arg(self.dir.join("config.yaml"))
            .arg("--uri")
            .arg(format!("http://127.0.0.1:{}", self.p2p))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(port) = bootstrap {
            cmd.arg("--bootstrap")
                .arg(format!("http://127.0.0.1:{port}"));
        }
        self.child = Some(cmd.spawn().unwrap());
        let ready = format!("{}/readyz", self.rest());
        eventually(120, "the node gets ready", || {
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &ready])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// kill -9.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn rest(&self) -> String {
        format!("http://127.0.0.1:{}", self.http)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// (shard id, points, state) of the shards this node holds for `collection`.
    fn local_shards(&self, collection: &str) -> Vec<(u64, u64, String)> {
        let Some(v) = get_json(&format!("{}/collections/{collection}/cluster", self.rest())) else {
            return Vec::new();
        };
        v["result"]["local_shards"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                (
                    s["shard_id"].as_u64().unwrap(),
                    s["points_count"].as_u64().unwrap(),
                    s["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three Qdrant nodes on loopback, started here: the collection keeps two copies of each
/// shard by default, so after a kill -9 of one node search, similar and avenues answer as
/// before; an edit indexed while it is down reaches it when it is back, and the collection
/// converges (every replica of a shard holds the same points, none missing or stale).
#[test]
fn a_three_node_cluster_keeps_answering_after_losing_a_node() {
    let root = Dir::new();
    let mut nodes: Vec<Node> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| Node::new(&root, n))
        .collect();
    nodes[0].start(None);
    let first = nodes[0].p2p;
    for node in &mut nodes[1..] {
        node.start(Some(first));
    }
    let cluster = format!("{}/cluster", nodes[0].rest());
    eventually(60, "three peers join", || {
        get_json(&cluster).is_some_and(|v| {
            v["result"]["peers"]
                .as_object()
                .is_some_and(|p| p.len() == 3)
        })
    });

    let corpus = root.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    for entry in std::fs::read_dir(samples()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, corpus.join(path.file_name().unwrap())).unwrap();
    }
    let index = root.join("index");
    let name = collection("cluster");
    let via = |node: &Node| -> Vec<String> {
        [
            "--store",
            "qdrant",
            "--qdrant-url",
            &node.url(),
            "--collection",
            &name,
        ]
        .map(str::to_owned)
        .into_iter()
        .chain(["--index".to_owned(), index.display().to_string()])
        .collect()
    };
    let sync = |node: &Node| -> serde_json::Value {
        let mut args = vec![
            "index".to_owned(),
            corpus.display().to_string(),
            "--json".to_owned(),
        ];
        args.extend(via(node));
        run(&args)
    };
    let first_sync = sync(&nodes[0]);
    assert!(
        first_sync["qdrant"]["points_total"].as_u64().unwrap() > 500,
        "{first_sync}"
    );
    let params = get_json(&format!("{}/collections/{name}", nodes[0].rest())).unwrap();
    assert_eq!(
        params["result"]["config"]["params"]["replication_factor"], 2,
        "{params}"
    );

    // What search, similar and avenues answer, through one node.
    let answers = |node: &Node| -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for query in [
            "certificate expired and logins failed",
            "disk full no space left on device",
        ] {
            let mut args = vec!["search".to_owned(), query.to_owned(), "--json".to_owned()];
            args.extend(via(node));
            out.push(step_ids(&run(&args)));
            let mut args = vec!["avenues".to_owned(), query.to_owned(), "--json".to_owned()];
            args.extend(via(node));
            let avenues = run(&args);
            let steps: Vec<String> = avenues["avenues"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|a| a["evidence"].as_array().unwrap().iter())
                .map(|e| e["step_id"].as_str().unwrap().to_owned())
                .collect();
            out.push(steps);
        }
        let mut args = vec![
            "similar".to_owned(),
            "2021-09-30-tls-cert-expiry.md".to_owned(),
            "--json".to_owned(),
        ];
        args.extend(via(node));
        out.push(incident_ids(&run(&args)));
        out
    };
    let before = answers(&nodes[0]);
    assert!(before.iter().all(|a| !a.is_empty()), "{before:?}");
    assert_eq!(answers(&nodes[1]), before, "two query nodes answer alike");

    // kill -9 one node: the same answers, through either survivor.
    nodes[2].kill();
    assert_eq!(answers(&nodes[0]), before, "after losing a node");
    assert_eq!(
        answers(&nodes[1]),
        before,
        "after losing a node, through another"
    );

    // An edit indexed while it is down.
    let cron = corpus.join("cron-job-ran-twice.md");
    let mut text = std::fs::read_to_string(&cron).unwrap();
    text.push_str("\n\nAddendum: restarting the zorblax scheduler did not help.\n");
    std::fs::write(&cron, text).unwrap();
    std::fs::remove_file(corpus.join("runaway-autoscaler.md")).unwrap();
    let edited = sync(&nodes[0]);
    assert_eq!(
        (edited["updated"].as_u64(), edited["removed"].as_u64()),
        (Some(1), Some(1)),
        "{edited}"
    );
    // One point per step and one per incident (its whole text, for the incident-level leg).
    let incidents: u64 = ["added", "updated", "unchanged", "api_documents"]
        .iter()
        .map(|k| edited[k].as_u64().unwrap())
        .sum();
    let expected = edited["steps_total"].as_u64().unwrap() + incidents;

    // Back: the collection converges.
    nodes[2].start(None);
    eventually(
        120,
        "every replica of every shard holds the same points",
        || {
            let mut by_shard: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
            for node in &nodes {
                for (shard, points, state) in node.local_shards(&name) {
                    if state != "Active" {
                        return false;
                    }
                    by_shard.entry(shard).or_default().push(points);
                }
            }
            !by_shard.is_empty()
                && by_shard.values().all(|p| p.len() == 2 && p[0] == p[1])
                && by_shard.values().map(|p| p[0]).sum::<u64>() == expected
        },
    );
    let again = sync(&nodes[2]);
    assert_eq!(
        again["qdrant"]["incidents_upserted"], 0,
        "nothing missing or stale: {again}"
    );
    assert_eq!(
        again["qdrant"]["points_total"].as_u64(),
        edited["steps_total"].as_u64(),
        "{again}"
    );
    let mut args = vec![
        "search".to_owned(),
        "zorblax".to_owned(),
        "--mode".to_owned(),
        "lexical".to_owned(),
        "--json".to_owned(),
    ];
    args.extend(via(&nodes[2]));
    assert!(
        !step_ids(&run(&args)).is_empty(),
        "the edit is searchable through the node that missed it"
    );

    // Asking for another layout than the collection has is refused with what it has.
    let refs: Vec<String> = args
        .iter()
        .cloned()
        .chain(["--qdrant-replication".to_owned(), "3".to_owned()])
        .collect();
    let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
    let err = TestCommand::new(&refs).fails();
    assert!(
        err.contains("was created with replication factor 2, and 3 is asked for"),
        "{err}"
    );
}

/// Two query servers on one collection, each with its own copy of the local index: they give
/// the same answers; a write through one reaches the collection, so the other finds it at
/// once, and `precedent index` afterwards keeps it; `/healthz` says when the store is gone.
#[test]
fn a_write_through_one_server_is_found_through_another() {
    let mut server = qdrant();
    let dir = Dir::new();
    let name = collection("servers");
    let q = qdrant_args(&server.url, &name);
    let (a, b) = (dir.join("a"), dir.join("b"));
    let sync = |index: &std::path::Path| sync_samples(index, &q);
    sync(&a);
    sync(&b);
    let token = "a-token-for-the-qdrant-write-test";
    let token_file = dir.create("token", token);
    let (writer, reader) = (
        serve_with(&a, &q, Some(&token_file)),
        serve_with(&b, &q, None),
    );
    // The writer wants its token on every route; the reader has none.
    let search = |served: &Served, query: &str| -> serde_json::Value {
        let body = serde_json::json!({"query": query, "mode": "lexical", "k": 5}).to_string();
        let auth = (served.addr == writer.addr).then_some(token);
        let (status, text) = served.request_as(auth, "POST", "/v1/search", Some(&body));
        assert_eq!(status, 200, "{text}");
        serde_json::from_str(&text).unwrap()
    };
    for query in ["certificate expired and logins failed", "disk full"] {
        let (x, y) = (
            step_ids(&search(&writer, query)),
            step_ids(&search(&reader, query)),
        );
        assert!(!x.is_empty());
        assert_eq!(x, y, "{query}: both servers answer alike");
    }
    let (status, health) = reader.json("GET", "/healthz", None);
    assert_eq!(status, 200, "{health}");
    assert_eq!(
        (health["store"].as_str(), health["store_status"].as_str()),
        (Some("qdrant"), Some("ok"))
    );

    let doc = "# Zorblax queue wedged\n\n## Summary\n\nThe zorblax dispatch queue stopped after a quokka migration.\n\n## Resolution\n\nRestarting the zorblax workers restored service.\n";
    let body = serde_json::json!({"path": "api/zorblax.md", "markdown": doc}).to_string();
    let (status, put) = writer.request_as(Some(token), "PUT", "/v1/incidents", Some(&body));
    assert_eq!(status, 201, "{put}");
    let found = search(&reader, "zorblax quokka");
    let paths = hit_paths(&found);
    assert!(
        paths.contains(&"api/zorblax.md"),
        "the write is found through the other server: {found}"
    );

    // `precedent index` of the corpus afterwards keeps the API's document, in the collection too.
    let again = sync(&a);
    assert_eq!(again["api_documents"], 1, "{again}");
    assert!(!step_ids(&search(&reader, "zorblax quokka")).is_empty());

    // Without its store the server says so: 503, degraded.
    if let Some(mut child) = server.child.take() {
        child.kill().unwrap();
        child.wait().unwrap();
        let (status, health) = reader.json("GET", "/healthz", None);
        assert_eq!(status, 503, "{health}");
        assert_eq!(health["status"], "degraded", "{health}");
        assert_eq!(health["store_status"], "unavailable", "{health}");
    }
}

/// Query servers with no local index (`serve --store qdrant`, nothing at `--index`): every read
/// (search, similar, avenues, incidents, facets, stats) comes from the collection and matches
/// an embedded server on the index it was synced from; two of them answer alike; a `PUT`
/// through one is seen through the other at once and survives a later `precedent index`; a
/// `DELETE` removes it everywhere; corpus incidents cannot be deleted through the API.
#[test]
fn stateless_servers_answer_everything_from_qdrant() {
    let server = qdrant();
    let dir = Dir::new();
    let name = collection("stateless");
    let q = qdrant_args(&server.url, &name);
    let index = dir.join("index");
    let sync = || sync_samples(&index, &q);
    sync();
    let token = "a-token-for-the-stateless-test";
    let token_file = dir.create("token", token);
    let nowhere = dir.join("no-index-here");
    let (writer, reader) = (
        serve_with(&nowhere, &q, Some(&token_file)),
        serve_with(&nowhere, &q, None),
    );
    let embedded = serve_with(&index, &[], None);
    assert!(!nowhere.exists(), "a stateless server creates no index");
    let ask = |served: &Served, method: &str, path: &str, body: Option<&serde_json::Value>| {
        let body = body.map(|b| b.to_string());
        let auth = (served.addr == writer.addr).then_some(token);
        let (status, text) = served.request_as(auth, method, path, body.as_deref());
        let json: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, json)
    };
    let ok = |served: &Served, method: &str, path: &str, body: Option<&serde_json::Value>| {
        let (status, json) = ask(served, method, path, body);
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    };

    // Health and stats come from the collection.
    let health = ok(&reader, "GET", "/healthz", None);
    let local = ok(&embedded, "GET", "/healthz", None);
    assert_eq!(health["store"], "qdrant", "{health}");
    assert!(local["incidents"].as_u64().unwrap() > 0, "{local}");
    assert_eq!(health["incidents"], local["incidents"], "{health} {local}");
    assert_eq!(health["steps"], local["steps"], "{health} {local}");

    // Facets: the same values and counts as the embedded index's.
    let facets = ok(&reader, "GET", "/v1/facets", None);
    let local_facets = ok(&embedded, "GET", "/v1/facets", None);
    assert!(!local_facets["kinds"].as_array().unwrap().is_empty());
    for field in [
        "kinds",
        "services",
        "severities",
        "tags",
        "trigger_classes",
        "remediation_classes",
        "date_min",
        "date_max",
        "incidents",
        "steps",
    ] {
        assert_eq!(facets[field], local_facets[field], "facet {field}");
    }

    // Search, similar and avenues: both stateless servers alike, and near the embedded one.
    for query in QUERIES[..4].iter() {
        let body = serde_json::json!({"query": query, "k": 10});
        let (a, b) = (
            ok(&writer, "POST", "/v1/search", Some(&body)),
            ok(&reader, "POST", "/v1/search", Some(&body)),
        );
        let here = ok(&embedded, "POST", "/v1/search", Some(&body));
        assert!(!step_ids(&a).is_empty(), "{query}");
        assert_eq!(step_ids(&a), step_ids(&b), "{query}");
        assert!(
            overlap(&step_ids(&a), &step_ids(&here)) >= 0.7,
            "{query}: {:?} vs {:?}",
            step_ids(&a),
            step_ids(&here)
        );
        let body = serde_json::json!({"query": query, "k": 5});
        let (a, b) = (
            ok(&writer, "POST", "/v1/avenues", Some(&body)),
            ok(&reader, "POST", "/v1/avenues", Some(&body)),
        );
        assert_eq!(a["avenues"], b["avenues"], "{query}");
    }
    let body = serde_json::json!({"query": "certificate expired", "k": 5});
    let avenues = ok(&reader, "POST", "/v1/avenues", Some(&body));
    assert!(
        !avenues["avenues"].as_array().unwrap().is_empty(),
        "avenues read the incidents from Qdrant: {avenues}"
    );

    // Incidents: by id, by id prefix and by path, the same record as the embedded index's.
    let hit = &ok(
        &embedded,
        "POST",
        "/v1/search",
        Some(&serde_json::json!({"query": QUERIES[0]})),
    )["hits"][0];
    let (id, path) = (
        hit["incident_id"].as_str().unwrap(),
        hit["citation"]["path"].as_str().unwrap(),
    );
    let mine = ok(&embedded, "GET", &format!("/v1/incidents/{id}"), None);
    for reference in [id.to_owned(), id[..10].to_owned(), path.to_owned()] {
        let theirs = ok(
            &reader,
            "GET",
            &format!("/v1/incidents/{}", reference.replace('/', "%2F")),
            None,
        );
        assert_eq!(theirs, mine, "{reference}");
    }
    let body = serde_json::json!({"incident_id": id, "k": 5});
    let (a, b) = (
        ok(&writer, "POST", "/v1/similar", Some(&body)),
        ok(&reader, "POST", "/v1/similar", Some(&body)),
    );
    assert!(!incident_ids(&a).is_empty());
    assert_eq!(incident_ids(&a), incident_ids(&b));
    let (status, unknown) = ask(&reader, "GET", "/v1/incidents/no-such-incident", None);
    assert_eq!(status, 404, "{unknown}");
    // Exact search scans step texts, which only a local index holds: a clear 400.
    let exact = serde_json::json!({"query": "certificate", "mode": "exact"});
    let (status, error) = ask(&reader, "POST", "/v1/search", Some(&exact));
    assert_eq!(status, 400, "{error}");

    // A write through one stateless server is found through the other at once.
    let doc = "# Zorblax queue wedged\n\n## Summary\n\nThe zorblax dispatch queue stopped after a quokka migration.\n\n## Resolution\n\nRestarting the zorblax workers restored service.\n";
    let put = serde_json::json!({"path": "api/zorblax.md", "markdown": doc});
    let (status, created) = ask(&writer, "PUT", "/v1/incidents", Some(&put));
    assert_eq!(status, 201, "{created}");
    let new_id = created["incident_id"].as_str().unwrap().to_owned();
    let probe = serde_json::json!({"query": "zorblax quokka", "mode": "lexical", "k": 5});
    let found = ok(&reader, "POST", "/v1/search", Some(&probe));
    assert!(hit_paths(&found).contains(&"api/zorblax.md"), "{found}");
    let record = ok(&reader, "GET", &format!("/v1/incidents/{new_id}"), None);
    assert_eq!(record["path"], "api/zorblax.md", "{record}");
    // A corpus file's incident is the corpus's: the API cannot delete it.
    let (status, refused) = ask(&writer, "DELETE", &format!("/v1/incidents/{id}"), None);
    assert_eq!(status, 409, "{refused}");

    // `precedent index` of the corpus afterwards leaves the API's document alone.
    let again = sync();
    assert_eq!(again["qdrant"]["revisions_deleted"], 0, "{again}");
    let found = ok(&reader, "POST", "/v1/search", Some(&probe));
    assert!(hit_paths(&found).contains(&"api/zorblax.md"), "{found}");
    let health = ok(&reader, "GET", "/healthz", None);
    assert_eq!(
        health["incidents"].as_u64(),
        local["incidents"].as_u64().map(|n| n + 1),
        "{health}"
    );

    // A delete through one is gone through the other.
    let (status, deleted) = ask(&writer, "DELETE", &format!("/v1/incidents/{new_id}"), None);
    assert_eq!(status, 200, "{deleted}");
    let found = ok(&reader, "POST", "/v1/search", Some(&probe));
    assert!(!hit_paths(&found).contains(&"api/zorblax.md"), "{found}");
    let (status, gone) = ask(&reader, "GET", &format!("/v1/incidents/{new_id}"), None);
    assert_eq!(status, 404, "{gone}");
    drop_collection(&server, &name);
}

/// The store conformance suite (`tests/conformance`) on a stateless Qdrant server (no local
/// index), on a collection synced from `corpus-samples/`, as `tests/cli.rs` runs it on the
/// embedded index.
#[test]
fn the_qdrant_store_passes_the_conformance_suite() {
    let server = qdrant();
    let dir = Dir::new();
    let name = collection("conformance");
    let q = qdrant_args(&server.url, &name);
    sync_samples(&dir.join("staging"), &q);
    let token = "a-token-for-the-qdrant-conformance-run";
    let token_file = dir.create("token", token);
    let served = serve_with(&dir.join("none"), &q, Some(&token_file));
    conformance::run(&conformance::Subject {
        served: &served,
        token,
        store: "qdrant",
    });
    drop_collection(&server, &name);
}
