//! Secret redaction, before any text leaves the parser. Patterns follow gitleaks' rules for the
//! secrets that end up pasted into write-ups: cloud keys, VCS and chat tokens, private keys, JWTs,
//! bearer headers and `password=`-style assignments.

use std::sync::LazyLock;

use precedent_core::{Diagnostic, DiagnosticCode, Level};
use regex::{Captures, Regex};

use crate::text::LineIndex;

/// One rule: what it finds, the marker name, and which capture group holds the secret (0: all).
struct Rule {
    name: &'static str,
    regex: Regex,
    group: usize,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |name, pattern: &str, group| Rule {
        name,
        regex: Regex::new(&crate::classify::ascii_boundaries(pattern))
            .expect("redaction pattern compiles"),
        group,
    };
    vec![
        rule(
            "private-key",
            r"-----BEGIN[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----[\s\S]*?-----END[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----",
            0,
        ),
        rule(
            "aws-access-key",
            r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA)[0-9A-Z]{16}\b",
            0,
        ),
        rule(
            "aws-secret-key",
            r#"(?i)aws_?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?([A-Za-z0-9/+=]{40})\b"#,
            1,
        ),
        rule(
            "github-token",
            r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36,255}\b",
            0,
        ),
        rule("github-token", r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b", 0),
        rule("gitlab-token", r"\bglpat-[A-Za-z0-9_-]{20,}\b", 0),
        rule("slack-token", r"\bxox[baprse]-[A-Za-z0-9-]{10,}\b", 0),
        rule(
            "slack-webhook",
            r"https://hooks\.slack\.com/services/[A-Za-z0-9+/_-]{20,}",
            0,
        ),
        rule(
            "stripe-key",
            r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{20,}\b",
            0,
        ),
        rule("gcp-api-key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
        rule(
            "bearer-token",
            r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)",
            1,
        ),
        rule(
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            0,
        ),
        rule(
            "url-password",
            r"\b[a-z][a-z0-9+.-]{1,20}://[^\s:/@]{1,100}:([^\s@/]{1,200})@",
            1,
        ),
        rule(
            "password",
            r#"(?i)\b(?:password|passwd|pwd|secret|client_secret|api_?key|apikey|access_?token|auth_?token|token)\b["']?\s*[:=]\s*["']?([^\s"',;]{6,})"#,
            1,
        ),
    ]
});

/// Replaces every secret in `text` with `[REDACTED:name]`, keeping line breaks so that line
/// numbers stay exact. Reports one diagnostic per secret with its line.
pub(crate) fn redact(text: String, diagnostics: &mut Vec<Diagnostic>) -> String {
    let mut text = text;
    for rule in RULES.iter() {
        if !rule.regex.is_match(&text) {
            continue;
        }
        let index = LineIndex::new(&text);
        let mut found = Vec::new();
        let replaced = rule.regex.replace_all(&text, |caps: &Captures<'_>| {
            let whole = caps.get(0).expect("group 0 always matches");
            let secret = caps.get(rule.group).unwrap_or(whole);
            if secret.as_str().starts_with("[REDACTED:") {
                return whole.as_str().to_owned();
            }
            found.push(index.line(secret.start()));
            let mut out = String::with_capacity(whole.len());
            out.push_str(&text[whole.start()..secret.start()]);
            out.push_str("[REDACTED:");
            out.push_str(rule.name);
            out.push(']');
            // Keep the line count: a private key block spans lines.
            out.extend(std::iter::repeat_n(
                '\n',
                secret.as_str().matches('\n').count(),
            ));
            out.push_str(&text[secret.end()..whole.end()]);
            out
        });
        let replaced = replaced.into_owned();
        for line in found {
            diagnostics.push(
                Diagnostic::new(
                    Level::Warning,
                    DiagnosticCode::SecretRedacted,
                    format!("redacted a secret ({})", rule.name),
                )
                .at_line(line),
            );
        }
        text = replaced;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let mut diagnostics = Vec::new();
        let out = redact(input.to_owned(), &mut diagnostics);
        assert_eq!(out, expected);
        assert_eq!(
            out.lines().count(),
            input.lines().count(),
            "line count changed"
        );
        let redactions = expected.matches("[REDACTED:").count();
        assert_eq!(diagnostics.len(), redactions, "{diagnostics:?}");
    }

    #[test]
    fn redacts_each_kind() {
        check(
            "key AKIAIOSFODNN7EXAMPLE here",
            "key [REDACTED:aws-access-key] here",
        );
        check(
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "aws_secret_access_key = [REDACTED:aws-secret-key]",
        );
        check(
            "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 leaked",
            "token [REDACTED:github-token] leaked",
        );
        check("glpat-abcdefghij0123456789", "[REDACTED:gitlab-token]");
        check("xoxb-1234567890-abcdefghij", "[REDACTED:slack-token]");
        check(
            "Authorization: Bearer abcdefghijklmnop.qrstuvwx",
            "Authorization: Bearer [REDACTED:bearer-token]",
        );
        check(
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt [REDACTED:jwt]",
        );
        check(
            "db password=hunter2hunter2 ok",
            "db password=[REDACTED:password] ok",
        );
        check(
            "postgres://app:s3cr3t@db.internal:5432/app",
            "postgres://app:[REDACTED:url-password]@db.internal:5432/app",
        );
        check(
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY-----\nb",
            "a\n[REDACTED:private-key]\n\n\n\nb",
        );
    }

    #[test]
    fn leaves_prose_alone() {
        check(
            "the token signing certificate expired; password resets failed",
            "the token signing certificate expired; password resets failed",
        );
        check(
            "see https://example.com/a:b@c",
            "see https://example.com/a:b@c",
        );
    }
}
