//! Errors of the server: [`Error`] for setting up and running it, [`ApiError`] for one request.
//!
//! Every failure a client can see goes through [`ApiError`], which carries a stable [`ErrorCode`]
//! and maps to the HTTP status (and, in `mcp`, to an MCP error) in one place. Index errors are
//! classified here, and only here, with [`precedent_index::Error::is_user_error`].

use std::net::SocketAddr;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can stop the server from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The options contradict themselves or are unsafe.
    #[error("invalid server options: {0}")]
    Options(String),

    /// Binding to a non-loopback address without a bearer token would expose the corpus.
    #[error(
        "refusing to listen on non-loopback address {0} without a bearer token: configure a token or bind to 127.0.0.1"
    )]
    InsecureBind(SocketAddr),

    /// The listening socket could not be bound or served.
    #[error("cannot serve on {addr}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },

    /// The server failed while running.
    #[error("server i/o error")]
    Io(#[from] std::io::Error),

    /// The MCP transport failed.
    #[error("mcp session failed: {0}")]
    Mcp(String),
}

/// Stable machine-readable error codes of the HTTP API (the `code` field of an error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is well-formed JSON but its values are not acceptable (empty query, `k` or
    /// query length out of bounds, a bad filter, a bad id or path, wrong field types).
    BadRequest,
    /// The body is not valid JSON (or not UTF-8).
    InvalidJson,
    /// The body has a field the endpoint does not know.
    UnknownField,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// No such route or incident.
    NotFound,
    /// The route exists but not with this method.
    MethodNotAllowed,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// A bearer token is configured and the request did not carry the right one.
    Unauthorized,
    /// The `Host` header is not one of the allowed hosts.
    ForbiddenHost,
    /// The `Origin` header is present and not allowed.
    ForbiddenOrigin,
    /// The server was started without `allow_writes` (or without a token).
    WritesDisabled,
    /// Another writer holds the index lock; retry later.
    IndexLocked,
    /// The write names an incident that a file of the corpus directory owns (`precedent index`
    /// syncs it): edit the file instead, or write under a path no file has.
    OwnedByCorpus,
    /// The index was built with another embedding model than the server runs.
    ModelMismatch,
    /// There is no index to serve yet.
    IndexUnavailable,
    /// Too many requests in flight; retry after the `Retry-After` delay.
    Overloaded,
    /// The request took longer than the configured time limit.
    Timeout,
    /// A failure inside the server (details are in its log, not in the answer).
    Internal,
}

impl ErrorCode {
    /// HTTP status for this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidJson | ErrorCode::UnknownField => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::ForbiddenHost | ErrorCode::ForbiddenOrigin | ErrorCode::WritesDisabled => {
                StatusCode::FORBIDDEN
            }
            ErrorCode::IndexLocked | ErrorCode::ModelMismatch | ErrorCode::OwnedByCorpus => {
                StatusCode::CONFLICT
            }
            ErrorCode::IndexUnavailable | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownField => "unknown_field",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::ForbiddenHost => "forbidden_host",
            ErrorCode::ForbiddenOrigin => "forbidden_origin",
            ErrorCode::WritesDisabled => "writes_disabled",
            ErrorCode::IndexLocked => "index_locked",
            ErrorCode::OwnedByCorpus => "owned_by_corpus",
            ErrorCode::ModelMismatch => "model_mismatch",
            ErrorCode::IndexUnavailable => "index_unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidJson,
        ErrorCode::UnknownField,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::ForbiddenHost,
        ErrorCode::ForbiddenOrigin,
        ErrorCode::WritesDisabled,
        ErrorCode::IndexLocked,
        ErrorCode::OwnedByCorpus,
        ErrorCode::ModelMismatch,
        ErrorCode::IndexUnavailable,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];
}

/// Body of every error answer: `{"code": "...", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable code, one of the [`ErrorCode`] values.
    pub code: ErrorCode,
    /// Human-readable explanation (never contains query text or tokens).
    pub message: String,
}

/// A failed request: a code and a message safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    /// The stable code.
    pub code: ErrorCode,
    /// The message.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// An `internal` error; the cause is logged, not returned.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %ErrorChain(cause), "internal error");
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// The body sent to the client.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }

    /// True when the client is at fault (4xx).
    pub fn is_user_error(&self) -> bool {
        self.code.status().is_client_error()
    }
}

/// The one place where index errors become API errors.
impl From<precedent_index::Error> for ApiError {
    fn from(err: precedent_index::Error) -> Self {
        use precedent_index::Error as E;
        match &err {
            E::UnknownIncident(_)
            | E::IncidentRef {
                ambiguous: false, ..
            } => ApiError::new(ErrorCode::NotFound, err.to_string()),
            E::Locked { .. } => ApiError::new(ErrorCode::IndexLocked, err.to_string()),
            E::OwnedByCorpus { .. } => ApiError::new(ErrorCode::OwnedByCorpus, err.to_string()),
            E::Abandoned => ApiError::new(ErrorCode::Timeout, err.to_string()),
            E::ModelMismatch { .. } | E::QdrantCollection { .. } | E::RebuildNeeded { .. } => {
                ApiError::new(ErrorCode::ModelMismatch, err.to_string())
            }
            // The store behind the server is down or overloaded past its retries: worth
            // retrying (503 + Retry-After). The URL stays in the log.
            E::QdrantUnavailable(_) => {
                tracing::warn!(error = %err, "qdrant unavailable");
                ApiError::new(
                    ErrorCode::IndexUnavailable,
                    "the search store is unavailable; retry shortly",
                )
            }
            // The store refused the request: retrying will not help.
            E::Qdrant(_) => {
                tracing::error!(error = %err, "qdrant request failed");
                ApiError::new(
                    ErrorCode::Internal,
                    "the search store failed the request; details are in the server log",
                )
            }
            // The message names a server-side path: keep it in the log only.
            E::IndexMissing(_) => {
                tracing::warn!(error = %err, "no index to serve");
                ApiError::new(ErrorCode::IndexUnavailable, "no index has been built yet")
            }
            _ if err.is_user_error() => ApiError::bad_request(err.to_string()),
            _ => ApiError::internal(&err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        let headers = response.headers_mut();
        match self.code {
            ErrorCode::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ErrorCode::IndexLocked => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ErrorCode::IndexUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            }
            ErrorCode::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"precedent\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// Displays an error and its sources, `a: b: c`.
pub(crate) struct ErrorChain<'a>(pub &'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialise_as_their_names_and_have_distinct_names() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
            assert!(seen.insert(code.as_str()));
        }
    }

    #[test]
    fn index_errors_map_to_user_and_internal_codes() {
        let check = |err: precedent_index::Error, code: ErrorCode| {
            assert_eq!(ApiError::from(err).code, code);
        };
        check(
            precedent_index::Error::InvalidRequest("empty query".into()),
            ErrorCode::BadRequest,
        );
        check(
            precedent_index::Error::Locked { pid: None },
            ErrorCode::IndexLocked,
        );
        check(
            precedent_index::Error::Corrupt("x".into()),
            ErrorCode::Internal,
        );
        check(precedent_index::Error::Ann("x".into()), ErrorCode::Internal);
        check(
            precedent_index::Error::QdrantUnavailable("down".into()),
            ErrorCode::IndexUnavailable,
        );
        check(
            precedent_index::Error::Qdrant("bad filter".into()),
            ErrorCode::Internal,
        );
        check(
            precedent_index::Error::OwnedByCorpus {
                path: "a.md".into(),
            },
            ErrorCode::OwnedByCorpus,
        );
        let unavailable = ApiError::from(precedent_index::Error::QdrantUnavailable("down".into()))
            .into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.headers()[header::RETRY_AFTER], "2");
        let reference = |ambiguous| precedent_index::Error::IncidentRef {
            reference: "2017".into(),
            ambiguous,
            candidates: vec!["2017-a-00000000".into()],
        };
        check(reference(false), ErrorCode::NotFound);
        check(reference(true), ErrorCode::BadRequest);
        let internal = ApiError::from(precedent_index::Error::Corrupt("secret path".into()));
        assert!(!internal.message.contains("secret"));
        assert!(!internal.is_user_error());
    }
}
