//! Test support shared by the workspace's test suites; not part of the API.
//!
//! [`planted_secrets`] writes a small corpus of write-ups with synthetic secrets of many kinds in
//! every place a secret can hide (prose, tables, front matter, headings, code blocks, Markdown
//! escapes and entities, file names). Tests parse, index or serve it and then check, with
//! [`Planted::leaks_in`], that no secret survives in any output.

/// One planted secret.
#[derive(Debug, Clone)]
pub struct Planted {
    /// Kind of secret, e.g. `github-pat`.
    pub kind: &'static str,
    /// Where it was planted: `plain`, `table`, `front-matter`, `heading`, `escaped`, `code`,
    /// `file-name`.
    pub form: &'static str,
    /// The secret as a consumer of the output would see it if it leaked (Markdown unescaped).
    pub secret: String,
    /// Substrings any of which, found in an output, means the secret leaked: the secret and its
    /// distinctive parts (each word of a multi-word password, the random tail of a token).
    pub needles: Vec<String>,
}

impl Planted {
    /// The first needle found in `haystack`, compared case-insensitively (ids lowercase).
    pub fn leaks_in(&self, haystack: &str) -> Option<&str> {
        let haystack = haystack.to_ascii_lowercase();
        self.needles
            .iter()
            .find(|n| haystack.contains(&n.to_ascii_lowercase()))
            .map(String::as_str)
    }
}

/// A corpus of write-ups with planted secrets.
#[derive(Debug, Clone)]
pub struct PlantedCorpus {
    /// `(relative path, content)` of each file.
    pub files: Vec<(String, String)>,
    /// Every secret planted in `files`.
    pub secrets: Vec<Planted>,
    /// Lines of ordinary prose placed right after a truncated PEM block, which redaction must
    /// keep.
    pub bystanders: Vec<String>,
}

impl PlantedCorpus {
    /// Kinds of secret planted.
    pub fn kinds(&self) -> std::collections::BTreeSet<&'static str> {
        self.secrets.iter().map(|s| s.kind).collect()
    }

    /// Every secret with a needle in `haystack`, with the needle found.
    pub fn leaks_in<'a>(&'a self, haystack: &str) -> Vec<(&'a Planted, &'a str)> {
        self.secrets
            .iter()
            .filter_map(|s| s.leaks_in(haystack).map(|n| (s, n)))
            .collect()
    }

    /// Writes the files under `dir`, creating subdirectories.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        for (path, content) in &self.files {
            let full = dir.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(full, content)?;
        }
        Ok(())
    }
}

/// A deterministic generator of random-looking text (xorshift).
struct Random(u64);

const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
const DIGITS: &[u8] = b"0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` characters from `alphabet`, with at least one digit when the alphabet has digits
    /// (so a token never reads as a word).
    fn string(&mut self, alphabet: &[u8], n: usize) -> String {
        let mut s: Vec<u8> = (0..n)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect();
        if n > 2 && alphabet.iter().any(u8::is_ascii_digit) && !s.iter().any(u8::is_ascii_digit) {
            s[n / 2] = DIGITS[(self.next() % 10) as usize];
        }
        String::from_utf8(s).expect("ascii")
    }

    /// A password-like word: letters, a digit and a symbol, e.g. `kq7Vz!m`.
    fn word(&mut self, n: usize) -> String {
        let mut w = self.string(LOWER, n.saturating_sub(3));
        w.push_str(&self.string(UPPER, 1));
        w.push_str(&self.string(DIGITS, 1));
        w.push(['!', '#', '%', '^'][(self.next() % 4) as usize]);
        w
    }
}

/// How one secret is written into a document.
struct Secret {
    kind: &'static str,
    /// Text to put in the document (may carry its context, e.g. `DB_PASSWORD=...`).
    text: String,
    /// The secret value itself.
    value: String,
    /// Parts that must not appear on their own.
    parts: Vec<String>,
}

fn needles(value: &str, parts: &[String]) -> Vec<String> {
    let mut out = vec![value.to_owned()];
    out.extend(parts.iter().filter(|p| p.len() >= 4).cloned());
    out
}

/// Generates the planted-secrets corpus: at least 60 secrets of at least 25 kinds.
pub fn planted_secrets() -> PlantedCorpus {
    let mut r = Random(0x5eed_1234_abcd_ef01);
    let mut secrets: Vec<Planted> = Vec::new();
    let mut files = Vec::new();

    // Each generator makes a fresh secret of its kind; `tail` is the random part to look for.
    let make = |kind: &'static str, r: &mut Random| -> Secret {
        let tail;
        let (text, value) = match kind {
            "aws-access-key" => {
                tail = r.string(BASE32, 16);
                let v = format!("AKIA{tail}");
                (v.clone(), v)
            }
            "aws-secret-key" => {
                tail = r.string(BASE64, 40);
                (format!("aws_secret_access_key = {tail}"), tail.clone())
            }
            "github-pat" => {
                tail = r.string(ALNUM, 36);
                let v = format!("ghp_{tail}");
                (v.clone(), v)
            }
            "github-oauth" => {
                tail = r.string(ALNUM, 36);
                let v = format!("gho_{tail}");
                (v.clone(), v)
            }
            "github-fine-grained-pat" => {
                tail = r.string(ALNUM, 82);
                let v = format!("github_pat_{tail}");
                (v.clone(), v)
            }
            "gitlab-pat" => {
                tail = r.string(ALNUM, 20);
                let v = format!("glpat-{tail}");
                (v.clone(), v)
            }
            "slack-bot-token" => {
                tail = r.string(ALNUM, 24);
                let v = format!(
                    "xoxb-{}-{}-{tail}",
                    r.string(DIGITS, 11),
                    r.string(DIGITS, 12)
                );
                (v.clone(), v)
            }
            "slack-webhook" => {
                tail = r.string(ALNUM, 24);
                let v = format!(
                    "https://hooks.slack.com/services/T{}/B{}/{tail}",
                    r.string(UPPER, 8),
                    r.string(UPPER, 10)
                );
                (v.clone(), v)
            }
            "stripe-key" => {
                tail = r.string(ALNUM, 24);
                let v = format!("sk_live_{tail}");
                (v.clone(), v)
            }
            "gcp-api-key" => {
                tail = r.string(ALNUM, 35);
                let v = format!("AIza{tail}");
                (v.clone(), v)
            }
            "npm-token" => {
                tail = r.string(ALNUM, 36);
                let v = format!("npm_{tail}");
                (v.clone(), v)
            }
            "sendgrid-key" => {
                tail = r.string(ALNUM, 43);
                let v = format!("SG.{}.{tail}", r.string(ALNUM, 22));
                (v.clone(), v)
            }
            "openai-key" => {
                tail = r.string(ALNUM, 48);
                let v = format!("sk-proj-{tail}");
                (v.clone(), v)
            }
            "jwt" => {
                tail = r.string(ALNUM, 43);
                let v = format!(
                    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ{}.{tail}",
                    r.string(ALNUM, 40)
                );
                (v.clone(), v)
            }
            "private-key" => {
                let lines: Vec<String> = (0..4).map(|_| r.string(BASE64, 64)).collect();
                tail = lines[1].clone();
                let v = format!(
                    "-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----",
                    lines.join("\n")
                );
                (v.clone(), lines.join("\n"))
            }
            "azure-account-key" => {
                tail = r.string(BASE64, 86);
                (
                    format!(
                        "DefaultEndpointsProtocol=https;AccountName=store{};AccountKey={tail}==;EndpointSuffix=core.windows.net",
                        r.string(DIGITS, 3)
                    ),
                    format!("{tail}=="),
                )
            }
            "azure-sas" => {
                tail = r.string(ALNUM, 40);
                (
                    format!(
                        "https://store.blob.core.windows.net/logs?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01&sig={tail}%3D"
                    ),
                    tail.clone(),
                )
            }
            "azure-shared-access-key" => {
                tail = r.string(BASE64, 44);
                (
                    format!(
                        "Endpoint=sb://bus.servicebus.windows.net/;SharedAccessKeyName=root;SharedAccessKey={tail}"
                    ),
                    tail.clone(),
                )
            }
            "basic-auth" => {
                tail = r.string(ALNUM, 28);
                (format!("Authorization: Basic {tail}="), format!("{tail}="))
            }
            "bearer-token" => {
                tail = r.string(ALNUM, 40);
                (format!("Authorization: Bearer {tail}"), tail.clone())
            }
            "db-password-env" => {
                tail = r.word(9);
                (format!("DB_PASSWORD={tail}"), tail.clone())
            }
            "mysql-root-password" => {
                tail = r.word(10);
                (format!("MYSQL_ROOT_PASSWORD={tail}"), tail.clone())
            }
            "datadog-api-key" => {
                tail = r.string(HEX, 32);
                (format!("DATADOG_API_KEY={tail}"), tail.clone())
            }
            "x-api-key" => {
                tail = r.string(ALNUM, 32);
                (format!("x-api-key: {tail}"), tail.clone())
            }
            "short-password" => {
                tail = r.word(6);
                (format!("password: {tail}"), tail.clone())
            }
            "multi-word-password" => {
                let words: Vec<String> = (0..3).map(|_| r.word(6)).collect();
                tail = words.join(" ");
                (format!("password: \"{tail}\""), tail.clone())
            }
            "redis-url" => {
                tail = r.word(12);
                (
                    format!("redis://:{tail}@cache.internal:6379/0"),
                    tail.clone(),
                )
            }
            "mysql-url" => {
                tail = format!("p@ss{}@{}", r.word(6), r.word(5));
                (
                    format!("mysql://root:{tail}@db.internal:3306/app"),
                    tail.clone(),
                )
            }
            "postgres-url" => {
                tail = r.word(10);
                (
                    format!("postgres://app:{tail}@pg.internal/app"),
                    tail.clone(),
                )
            }
            "entropy-token" => {
                tail = r.string(ALNUM, 32);
                (format!("the signing secret was {tail} until"), tail.clone())
            }
            other => unreachable!("no generator for {other}"),
        };
        let parts = match kind {
            "multi-word-password" => tail.split(' ').map(str::to_owned).collect(),
            "private-key" => value.lines().map(str::to_owned).collect(),
            "mysql-url" => tail.split('@').map(str::to_owned).collect(),
            _ => vec![tail[tail.len().saturating_sub(16)..].to_owned()],
        };
        Secret {
            kind,
            text,
            value,
            parts,
        }
    };
    let plant = |form: &'static str, s: &Secret, secrets: &mut Vec<Planted>| {
        secrets.push(Planted {
            kind: s.kind,
            form,
            secret: s.value.clone(),
            needles: needles(&s.value, &s.parts),
        });
    };

    let all = [
        "aws-access-key",
        "aws-secret-key",
        "github-pat",
        "github-oauth",
        "github-fine-grained-pat",
        "gitlab-pat",
        "slack-bot-token",
        "slack-webhook",
        "stripe-key",
        "gcp-api-key",
        "npm-token",
        "sendgrid-key",
        "openai-key",
        "jwt",
        "azure-account-key",
        "azure-sas",
        "azure-shared-access-key",
        "basic-auth",
        "bearer-token",
        "db-password-env",
        "mysql-root-password",
        "datadog-api-key",
        "x-api-key",
        "short-password",
        "multi-word-password",
        "redis-url",
        "mysql-url",
        "postgres-url",
        "entropy-token",
    ];

    // 1. Plain prose, one secret per paragraph, every kind.
    let mut doc = String::from("# Credentials pasted during the outage\n\n## Timeline\n\n");
    for kind in all {
        let s = make(kind, &mut r);
        doc.push_str(&format!(
            "While debugging we pasted {} into the channel.\n\n",
            s.text
        ));
        plant("plain", &s, &mut secrets);
    }
    let pem = make("private-key", &mut r);
    doc.push_str(&format!(
        "The deploy key:\n\n{}\n\nIt was rotated.\n",
        pem.text
    ));
    plant("plain", &pem, &mut secrets);
    files.push(("2024-03-01-pasted-credentials.md".to_owned(), doc));

    // 2. A table, a code block and a heading.
    let mut doc = String::from("# Config leak\n\n## Timeline\n\n| Time | Event |\n|---|---|\n");
    for kind in [
        "github-pat",
        "stripe-key",
        "x-api-key",
        "db-password-env",
        "jwt",
        "slack-bot-token",
    ] {
        let s = make(kind, &mut r);
        doc.push_str(&format!(
            "| 10:0{} | found {} in a log |\n",
            secrets.len() % 10,
            s.text
        ));
        plant("table", &s, &mut secrets);
    }
    let heading = make("aws-access-key", &mut r);
    doc.push_str(&format!(
        "\n## Key {} exposed\n\nWe revoked it.\n\n",
        heading.text
    ));
    plant("heading", &heading, &mut secrets);
    let heading = make("gitlab-pat", &mut r);
    doc.push_str(&format!("### Token {}\n\nRevoked too.\n\n", heading.text));
    plant("heading", &heading, &mut secrets);
    doc.push_str("## Root cause\n\nThe .env file was committed:\n\n```\n");
    for kind in [
        "mysql-root-password",
        "datadog-api-key",
        "aws-secret-key",
        "azure-account-key",
        "sendgrid-key",
    ] {
        let s = make(kind, &mut r);
        doc.push_str(&s.text);
        doc.push('\n');
        plant("code", &s, &mut secrets);
    }
    doc.push_str("```\n");
    files.push(("2024-03-02-config-leak.md".to_owned(), doc));

    // 3. Front matter.
    let title = make("github-pat", &mut r);
    let summary = make("openai-key", &mut r);
    let service = make("npm-token", &mut r);
    let tag = make("aws-access-key", &mut r);
    let company = make("gcp-api-key", &mut r);
    // YAML unescapes `\x41` to `A`: the raw text holds no AWS key, the parsed value does.
    let escaped_tag = make("aws-access-key", &mut r);
    let doc = format!(
        "---\ntitle: \"Leak of {}\"\nsummary: \"We exposed {} in a build log.\"\nservices: [api, \"{}\"]\ntags:\n  - security\n  - \"{}\"\n  - \"\\x41{}\"\ncompany: \"{}\"\n---\n\n## Summary\n\nA token leaked.\n",
        title.text,
        summary.text,
        service.text,
        tag.text,
        &escaped_tag.text[1..],
        company.text
    );
    for s in [&title, &summary, &service, &tag, &escaped_tag, &company] {
        plant("front-matter", s, &mut secrets);
    }
    files.push(("2024-03-03-front-matter.md".to_owned(), doc));

    // 4. Markdown escapes, emphasis and entities split tokens in the source; the renderer joins
    //    them again.
    let mut doc = String::from("# Escapes\n\n## What happened\n\n");
    let s = make("github-pat", &mut r);
    doc.push_str(&format!(
        "Token {} was live.\n\n",
        s.text.replace('_', "\\_")
    ));
    plant("escaped", &s, &mut secrets);
    let s = make("aws-access-key", &mut r);
    doc.push_str(&format!(
        "Key {}**{}** was live.\n\n",
        &s.text[..4],
        &s.text[4..]
    ));
    plant("escaped", &s, &mut secrets);
    let s = make("aws-access-key", &mut r);
    doc.push_str(&format!("Key &#x41;{} was live.\n\n", &s.text[1..]));
    plant("escaped", &s, &mut secrets);
    let s = make("stripe-key", &mut r);
    doc.push_str(&format!(
        "Key {} was live.\n\n",
        s.text.replace('_', "&#95;")
    ));
    plant("escaped", &s, &mut secrets);
    let s = make("slack-bot-token", &mut r);
    doc.push_str(&format!("Token `{}` was live.\n\n", s.text));
    plant("escaped", &s, &mut secrets);
    let s = make("npm-token", &mut r);
    doc.push_str(&format!(
        "Token *{}*{} was live.\n\n",
        &s.text[..6],
        &s.text[6..]
    ));
    plant("escaped", &s, &mut secrets);
    let s = make("gcp-api-key", &mut r);
    doc.push_str(&format!(
        "Key {}<!-- -->{} was live.\n\n",
        &s.text[..8],
        &s.text[8..]
    ));
    plant("escaped", &s, &mut secrets);
    // A truncated key must not swallow what follows it.
    let lines: Vec<String> = (0..2).map(|_| r.string(BASE64, 64)).collect();
    let truncated = Secret {
        kind: "private-key-truncated",
        text: format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{}", lines.join("\n")),
        value: lines.join("\n"),
        parts: lines.clone(),
    };
    plant("plain", &truncated, &mut secrets);
    let bystanders: Vec<String> = (1..=10)
        .map(|i| format!("Bystander line {i}: the on-call engineer checked replica {i}."))
        .collect();
    // A complete block after them: a matcher that runs to the next END would take them all.
    let later = make("private-key", &mut r);
    plant("code", &later, &mut secrets);
    doc.push_str(&format!(
        "## Root cause\n\n```\n{}\n```\n\n{}\n\n```\n{}\n```\n",
        truncated.text,
        bystanders.join("\n\n"),
        later.text
    ));
    let truncated_inline = {
        let line = r.string(BASE64, 64);
        Secret {
            kind: "private-key-truncated",
            text: format!("-----BEGIN PRIVATE KEY-----\n{line}"),
            value: line.clone(),
            parts: vec![line],
        }
    };
    plant("plain", &truncated_inline, &mut secrets);
    doc.push_str(&format!(
        "\n## Lessons\n\n{}\nThe paste was cut off here.\n",
        truncated_inline.text
    ));
    files.push(("2024-03-04-escapes.md".to_owned(), doc));

    // 5. File names.
    for kind in [
        "github-pat",
        "aws-access-key",
        "slack-bot-token",
        "gitlab-pat",
    ] {
        let s = make(kind, &mut r);
        plant("file-name", &s, &mut secrets);
        files.push((
            format!("names/2024-03-05-leak-{}.md", s.text),
            "# Leak\n\n## Impact\n\nA token was in the file name.\n".to_owned(),
        ));
    }

    // 6. Plain text.
    let mut doc = String::from("Summary\n\nCredentials in a plain text write-up.\n\nTimeline\n\n");
    for kind in [
        "bearer-token",
        "redis-url",
        "mysql-url",
        "short-password",
        "azure-sas",
        "basic-auth",
    ] {
        let s = make(kind, &mut r);
        doc.push_str(&format!("- 10:00 pasted {}\n", s.text));
        plant("plain", &s, &mut secrets);
    }
    files.push(("2024-03-06-plain.txt".to_owned(), doc));

    PlantedCorpus {
        files,
        secrets,
        bystanders,
    }
}
