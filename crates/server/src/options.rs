//! Typed configuration of the server. Only the binary reads flags, environment and files; it
//! fills a [`ServerOptions`] and hands it over.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// How the server listens, whom it lets in, and how much work it accepts.
#[derive(Clone)]
pub struct ServerOptions {
    /// Address to listen on. Default `127.0.0.1:7777`. A non-loopback address needs a token.
    pub addr: SocketAddr,
    /// Directory of the local index, when the server has one (see [`Backend`](crate::Backend)):
    /// `PUT`/`DELETE` open a writer on it.
    pub index_dir: PathBuf,
    /// Bearer token required on every route except `/healthz` when set. Read by the binary
    /// from a file or the environment, never from argv.
    pub token: Option<String>,
    /// Accept `PUT /v1/incidents` and `DELETE /v1/incidents/{id}` (which also need a token).
    pub allow_writes: bool,
    /// Accepted `Host` header values. An entry with a port (`example.com:443`) matches exactly;
    /// one without matches any port. `None`: `localhost`, `127.0.0.1` and `[::1]` with the
    /// port actually bound.
    pub allowed_hosts: Option<Vec<String>>,
    /// Accepted `Origin` header values (requests without `Origin` are not affected), e.g.
    /// `http://localhost:7777`. `None`: `http://localhost`, `http://127.0.0.1` and
    /// `http://[::1]` with the port bound. Origins listed in `cors_origins` are accepted too.
    pub allowed_origins: Option<Vec<String>>,
    /// Origins that browsers may call the API from (CORS). Default none: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request body, in bytes. Default 1 MiB.
    pub body_limit: usize,
    /// Longest query (or `similar` text), in bytes. Default 4096.
    pub max_query_bytes: usize,
    /// Largest `k` of the HTTP API. Default 100. (MCP tools allow 1..=50.)
    pub max_k: usize,
    /// Time limit of one request. Default 10 s.
    pub request_timeout: Duration,
    /// Requests handled at once; more are answered 503 with `Retry-After`. Default 64.
    pub concurrency_limit: usize,
    /// Open connections at most. At the cap a new connection evicts an idle one (preferring
    /// those that never completed a request, or failed authentication), or is closed when all
    /// are busy. Default 1024.
    pub max_connections: usize,
    /// Time a client has to send a request head, from connecting (or from the first byte of a
    /// later request on a kept-alive connection). Default 10 s.
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may sit idle between requests. Default 60 s.
    pub idle_timeout: Duration,
    /// Size limit, in bytes, of each form (text and structured) of an MCP tool result.
    /// Default 20 000.
    pub mcp_result_bytes: usize,
    /// How often the index directory is checked for a newer generation. Default 2 s.
    pub reload_interval: Duration,
}

/// Default listening address.
pub const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7777);

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            addr: DEFAULT_ADDR,
            index_dir: PathBuf::from(".precedent"),
            token: None,
            allow_writes: false,
            allowed_hosts: None,
            allowed_origins: None,
            cors_origins: Vec::new(),
            body_limit: 1024 * 1024,
            max_query_bytes: 4096,
            max_k: 100,
            request_timeout: Duration::from_secs(10),
            concurrency_limit: 64,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            mcp_result_bytes: 20_000,
            reload_interval: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches a log line.
        f.debug_struct("ServerOptions")
            .field("addr", &self.addr)
            .field("index_dir", &self.index_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("allow_writes", &self.allow_writes)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("cors_origins", &self.cors_origins)
            .field("body_limit", &self.body_limit)
            .field("max_query_bytes", &self.max_query_bytes)
            .field("max_k", &self.max_k)
            .field("request_timeout", &self.request_timeout)
            .field("concurrency_limit", &self.concurrency_limit)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("mcp_result_bytes", &self.mcp_result_bytes)
            .field("reload_interval", &self.reload_interval)
            .finish()
    }
}

impl ServerOptions {
    /// Options for `addr` with every other value at its default.
    pub fn new(addr: SocketAddr, index_dir: impl Into<PathBuf>) -> Self {
        Self {
            addr,
            index_dir: index_dir.into(),
            ..Self::default()
        }
    }

    /// The connection limits.
    pub(crate) fn conn_limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            idle_timeout: self.idle_timeout,
        }
    }

    /// Checks values that make no sense on their own.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(crate::Error::Options(m.to_owned()));
        if self.body_limit == 0 {
            return bad("body limit must be positive");
        }
        if self.max_query_bytes == 0 {
            return bad("max query bytes must be positive");
        }
        if self.max_k == 0 {
            return bad("max k must be positive");
        }
        if self.concurrency_limit == 0 {
            return bad("concurrency limit must be positive");
        }
        if self.request_timeout.is_zero() {
            return bad("request timeout must be positive");
        }
        if self.max_connections == 0 {
            return bad("connection limit must be positive");
        }
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() {
            return bad("header-read and idle timeouts must be positive");
        }
        if self.mcp_result_bytes < 1024 {
            return bad("mcp result budget must be at least 1024 bytes");
        }
        if let Some(token) = &self.token
            && token.trim().len() < 16
        {
            return bad("bearer token must be at least 16 characters");
        }
        Ok(())
    }

    /// The `Host` values accepted when none are configured, for the port in `addr`.
    pub(crate) fn effective_hosts(&self) -> Vec<String> {
        match &self.allowed_hosts {
            Some(hosts) => hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            None => {
                let port = self.addr.port();
                vec![
                    format!("localhost:{port}"),
                    format!("127.0.0.1:{port}"),
                    format!("[::1]:{port}"),
                ]
            }
        }
    }

    /// The `Origin` values accepted.
    pub(crate) fn effective_origins(&self) -> Vec<String> {
        let mut origins = match &self.allowed_origins {
            Some(origins) => origins.clone(),
            None => {
                let port = self.addr.port();
                vec![
                    format!("http://localhost:{port}"),
                    format!("http://127.0.0.1:{port}"),
                    format!("http://[::1]:{port}"),
                ]
            }
        };
        origins.extend(self.cors_origins.iter().cloned());
        origins
            .into_iter()
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect()
    }
}
