//! The gate every request passes, MCP included, in this order: `Host` allow-list, `Origin`
//! allow-list (when the header is present), bearer token (when configured; `/healthz` and CORS
//! preflights excepted), declared body size, concurrency limit, time limit. It also records the
//! request in the metrics. Nothing here logs header values.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::conn::Accepted;
use crate::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// When the request's time is up, for handlers that enforce the limit themselves (writes,
/// which must not be published after their client was told they failed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub(crate) tokio::time::Instant);

/// Axum middleware implementing the gate (see the module docs).
pub(crate) async fn gate(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    // The connection is busy (not idle, not evictable) while this request is handled.
    let conn = request
        .extensions()
        .get::<ConnectInfo<Accepted>>()
        .map(|c| c.0.conn.clone());
    let _in_flight = conn.as_ref().map(|c| c.begin());
    let http1 = request.version() < Version::HTTP_2;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let admitted = admit(&state, &request);
    if let Some(conn) = &conn {
        conn.set_authenticated(admitted.is_ok());
    }
    let response = match admitted {
        Err(err) => {
            let mut response = err.into_response();
            // A client that fails the checks does not keep a connection open.
            if http1 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
        Ok(()) => run(&state, request, next).await,
    };
    let status = response.status().as_u16();
    state
        .inner
        .metrics
        .record(&route, method.as_str(), status, started.elapsed());
    if status >= 500 {
        if let Some(suppressed) = state.inner.metrics.may_log_error() {
            tracing::warn!(
                route,
                method = %method,
                status,
                suppressed,
                "request failed (suppressed: failures not logged since the last line; all are counted in /metrics)"
            );
        }
    } else {
        tracing::debug!(route, method = %method, status, elapsed_ms = started.elapsed().as_millis() as u64, "request");
    }
    response
}

/// Checks that need only the request head.
fn admit(state: &AppState, request: &Request<Body>) -> Result<(), ApiError> {
    let shared = &state.inner;
    let headers = request.headers();
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::bad_request("more than one Host header"));
    }
    let host = host.map(|h| h.to_str().unwrap_or("\u{0}"));
    // An absolute-form target (`GET http://host/path`) names the host too; both must agree and
    // be allowed.
    let authority = request.uri().authority().map(|a| a.as_str());
    let forbidden = || ApiError::new(ErrorCode::ForbiddenHost, "host not allowed");
    match (host, authority) {
        (None, None) => return Err(forbidden()),
        (Some(h), Some(a)) if !h.trim().eq_ignore_ascii_case(a) => return Err(forbidden()),
        _ => {}
    }
    if [host, authority]
        .into_iter()
        .flatten()
        .any(|h| !host_allowed(&shared.hosts, h))
    {
        return Err(forbidden());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(&shared.origins, o));
        if !ok {
            return Err(ApiError::new(
                ErrorCode::ForbiddenOrigin,
                "origin not allowed",
            ));
        }
    }
    let preflight = request.method() == Method::OPTIONS && !shared.options.cors_origins.is_empty();
    if let Some(token) = &shared.options.token
        && request.uri().path() != "/healthz"
        && !preflight
        && !token_matches(headers, token)
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing or invalid bearer token",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > shared.options.body_limit as u64) {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body larger than {} bytes", shared.options.body_limit),
        ));
    }
    Ok(())
}

/// Runs the request under a concurrency permit and the time limit.
async fn run(state: &AppState, request: Request<Body>, next: Next) -> Response {
    let shared = &state.inner;
    // Probes and scrapes answer from memory and must work when the server is saturated:
    // that is when the orchestrator and Prometheus most need them.
    let probe =
        *request.method() == Method::GET && matches!(request.uri().path(), "/healthz" | "/metrics");
    let permit = shared.permits.clone().try_acquire_owned();
    let Ok(_permit) = permit
        .map(Some)
        .or_else(|e| if probe { Ok(None) } else { Err(e) })
    else {
        shared.metrics.record_overload();
        return ApiError::new(
            ErrorCode::Overloaded,
            "too many requests in flight, retry later",
        )
        .into_response();
    };
    let deadline = tokio::time::Instant::now() + shared.options.request_timeout;
    let mut request = request;
    request.extensions_mut().insert(Deadline(deadline));
    // Writes keep to the deadline themselves: cut off here, a write could still be published
    // after its client was answered 504.
    let is_write = matches!(*request.method(), Method::PUT | Method::DELETE)
        && request.uri().path().starts_with("/v1/incidents");
    if is_write {
        return next.run(request).await;
    }
    match tokio::time::timeout_at(deadline, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "request took longer than {} ms",
                shared.options.request_timeout.as_millis()
            ),
        )
        .into_response(),
    }
}

/// `Host` matching: entries with a port match exactly, entries without match any port.
pub(crate) fn host_allowed(allowed: &[String], host: &str) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let name = strip_port(&host);
    allowed.iter().any(|entry| {
        if entry == &host {
            return true;
        }
        strip_port(entry) == entry && entry == name
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port` -> the host part.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => authority,
    }
}

pub(crate) fn origin_allowed(allowed: &[String], origin: &str) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    allowed.iter().any(|entry| entry == &origin)
}

/// Compares the `Authorization: Bearer` credential with the token in constant time.
pub(crate) fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, credential)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq::constant_time_eq(credential.trim().as_bytes(), token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_match_with_and_without_ports() {
        let allowed = list(&[
            "localhost:7777",
            "127.0.0.1:7777",
            "[::1]:7777",
            "search.example",
        ]);
        let check = |host: &str, expected: bool| {
            assert_eq!(host_allowed(&allowed, host), expected, "{host}");
        };
        check("localhost:7777", true);
        check("LOCALHOST:7777", true);
        check("[::1]:7777", true);
        check("localhost:7778", false);
        check("localhost", false);
        check("evil.example:7777", false);
        check("127.0.0.1.evil.example:7777", false);
        check("search.example", true);
        check("search.example:8443", true);
        check("search.example.evil", false);
        check("", false);
    }

    #[test]
    fn origins_match_exactly() {
        let allowed = list(&["http://localhost:7777"]);
        assert!(origin_allowed(&allowed, "http://localhost:7777"));
        assert!(origin_allowed(&allowed, "http://localhost:7777/"));
        assert!(!origin_allowed(&allowed, "https://localhost:7777"));
        assert!(!origin_allowed(
            &allowed,
            "http://localhost:7777.evil.example"
        ));
        assert!(!origin_allowed(&allowed, "null"));
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let token = "s3cret-token-0123456789";
        let check = |value: Option<&str>, expected: bool| {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(token_matches(&headers, token), expected, "{value:?}");
        };
        check(None, false);
        check(Some("Bearer s3cret-token-0123456789"), true);
        check(Some("bearer s3cret-token-0123456789"), true);
        check(Some("Bearer s3cret-token-012345678"), false);
        check(Some("Bearer s3cret-token-01234567890"), false);
        check(Some("Basic s3cret-token-0123456789"), false);
        check(Some("s3cret-token-0123456789"), false);
        check(Some("Bearer "), false);
    }
}
