//! Routes and handlers of the HTTP API.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use precedent_core::IncidentId;
use precedent_index::{
    AvenuesRequest, CompareRequest, MAX_NOTES_BYTES, SearchRequest, SimilarRequest, SimilarSource,
};
use serde::de::DeserializeOwned;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::{
    AvenuesBody, CompareBody, DeleteResponse, HealthResponse, SearchBody, SimilarBody, UpsertBody,
    UpsertResponse, validate_write_up_path,
};
use crate::error::{ApiError, ErrorCode};
use crate::security::Deadline;
use crate::state::AppState;

/// The complete application: the HTTP API, `/mcp`, and the security gate around both.
pub fn router(state: AppState) -> Router {
    let writes = Router::new()
        .route("/v1/incidents", put(upsert_incident))
        .route("/v1/incidents/{id}", axum::routing::delete(delete_incident))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            writes_allowed,
        ));
    // rmcp answers transport errors in plain text; the API's clients expect `{code, message}`.
    let mcp = Router::new()
        .nest_service("/mcp", crate::mcp::http_service(&state))
        .layer(middleware::from_fn(json_errors));
    let mut app = Router::new()
        .route("/v1/search", post(search))
        .route("/v1/similar", post(similar))
        .route("/v1/avenues", post(avenues))
        .route("/v1/compare", post(compare))
        .route("/v1/incidents/{id}", get(get_incident))
        .route("/v1/facets", get(facets))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(writes)
        .merge(mcp)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.inner.options.body_limit,
        ));
    if let Some(cors) = cors_layer(&state) {
        app = app.layer(cors);
    }
    app.layer(middleware::from_fn_with_state(
        state.clone(),
        crate::security::gate,
    ))
    .with_state(state)
}

fn cors_layer(state: &AppState) -> Option<CorsLayer> {
    let origins = &state.inner.options.cors_origins;
    if origins.is_empty() {
        return None;
    }
    let values = origins
        .iter()
        .filter_map(|o| o.trim_end_matches('/').parse().ok())
        .collect::<Vec<_>>();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(values))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Rewrites an error answer that is not JSON into the API's `{code, message}` body, keeping its
/// status and other headers.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let mut message: String = text.trim().chars().take(300).collect();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase();
    }
    let code = match status {
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Overloaded,
        StatusCode::GATEWAY_TIMEOUT => ErrorCode::Timeout,
        s if s.is_server_error() => ErrorCode::Internal,
        _ => ErrorCode::BadRequest,
    };
    let mut out = (status, Json(crate::error::ErrorBody { code, message })).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// Writes need `allow_writes` and a configured token (the gate has already checked it).
async fn writes_allowed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let options = &state.inner.options;
    if !options.allow_writes {
        return ApiError::new(
            ErrorCode::WritesDisabled,
            "writes are disabled on this server",
        )
        .into_response();
    }
    if options.token.is_none() {
        return ApiError::new(
            ErrorCode::WritesDisabled,
            "writes need a configured bearer token",
        )
        .into_response();
    }
    next.run(request).await
}

/// A JSON body, with every failure mapped to a stable error code.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a body with content-type application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_error)?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "body larger than the limit")
    } else {
        ApiError::bad_request("cannot read the request body")
    }
}

pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde's derive would also read a struct from an array of its field values.
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        use serde_json::error::Category;
        match err.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON: {err}"))
            }
            Category::Data if err.to_string().contains("unknown field") => {
                ApiError::new(ErrorCode::UnknownField, err.to_string())
            }
            Category::Data => ApiError::bad_request(err.to_string()),
        }
    })
}

fn check_k(k: Option<usize>, max: usize) -> Result<usize, ApiError> {
    let k = k.unwrap_or(10);
    if k == 0 || k > max {
        return Err(ApiError::bad_request(format!(
            "k must be between 1 and {max}, got {k}"
        )));
    }
    Ok(k)
}

fn check_text(name: &str, text: &str, max: usize) -> Result<(), ApiError> {
    if text.len() > max {
        return Err(ApiError::bad_request(format!(
            "{name} longer than {max} bytes"
        )));
    }
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(format!("empty {name}")));
    }
    Ok(())
}

/// Most steps per incident a request may ask for (0 = no limit).
pub(crate) fn check_per_incident(per: usize) -> Result<usize, ApiError> {
    const MAX_PER_INCIDENT: usize = 100;
    if per > MAX_PER_INCIDENT {
        return Err(ApiError::bad_request(format!(
            "per_incident must be between 0 and {MAX_PER_INCIDENT}, got {per}"
        )));
    }
    Ok(per)
}

/// An exact incident id, for `DELETE`: a destructive call never guesses from a prefix.
fn parse_incident_id(id: &str) -> Result<IncidentId, ApiError> {
    IncidentId::parse(id).map_err(|_| {
        ApiError::bad_request("invalid incident id: expected lowercase letters, digits and '-'")
    })
}

fn path_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|_| ApiError::bad_request("invalid incident id in path"))?;
    Ok(id)
}

async fn search(
    State(state): State<AppState>,
    body: Result<JsonBody<SearchBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let options = state.options();
    check_text("query", &body.query, options.max_query_bytes)?;
    let k = check_k(body.k, options.max_k)?;
    let mut request = SearchRequest::new(body.query)
        .with_mode(body.mode)
        .with_k(k)
        .with_filters(body.filters)
        .with_group(body.group)
        .with_case_sensitive(body.case_sensitive);
    if let Some(per) = body.per_incident {
        request = request.with_per_incident(check_per_incident(per)?);
    }
    Ok(Json(state.search(request).await?).into_response())
}

async fn similar(
    State(state): State<AppState>,
    body: Result<JsonBody<SimilarBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let options = state.options();
    let source = match (body.text, body.incident_id) {
        (Some(text), None) => {
            check_text("text", &text, precedent_index::MAX_DRAFT_BYTES)?;
            SimilarSource::Text(text)
        }
        (None, Some(id)) => SimilarSource::Incident(state.resolve(&id).await?),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of text and incident_id",
            ));
        }
    };
    let mut request = SimilarRequest::new(source);
    request.k = check_k(body.k, options.max_k)?;
    request.filters = body.filters;
    Ok(Json(state.similar(request).await?).into_response())
}

async fn avenues(
    State(state): State<AppState>,
    body: Result<JsonBody<AvenuesBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    let options = state.options();
    check_text("query", &body.query, options.max_query_bytes)?;
    let mut request = AvenuesRequest::new(body.query);
    request.k = check_k(body.k, options.max_k)?;
    // Out of range is the index's user error, naming the field.
    request.incidents = body.incidents.unwrap_or(request.incidents);
    request.filters = body.filters;
    request.outcome = body.outcome;
    Ok(Json(state.avenues(request).await?).into_response())
}

async fn compare(
    State(state): State<AppState>,
    body: Result<JsonBody<CompareBody>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonBody(body) = body?;
    check_text("notes", &body.notes, MAX_NOTES_BYTES)?;
    let mut request = CompareRequest::new(body.notes);
    request.k = body.k.unwrap_or(request.k);
    request.filters = body.filters;
    Ok(Json(state.compare(request).await?).into_response())
}

async fn get_incident(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = state.resolve(&path_param(id)?).await?;
    Ok(Json(state.incident(id).await?).into_response())
}

async fn facets(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(state.facets().await?).into_response())
}

async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (store, healthy) = match state.store_health().await {
        (kind, Ok(())) => (kind, true),
        (kind, Err(reason)) => {
            // The reason names the store's URL: the log only.
            tracing::warn!(store = kind, reason = %reason, "health check: store unavailable");
            (kind, false)
        }
    };
    // A store that does not answer has no stats to give: the counts are then 0.
    let stats = if healthy {
        Some(state.stats().await?)
    } else {
        None
    };
    let (generation, incidents, steps) =
        stats.map_or((0, 0, 0), |s| (s.generation, s.incidents, s.steps));
    let body = Json(HealthResponse {
        status: if healthy { "ok" } else { "degraded" }.into(),
        store: store.into(),
        store_status: if healthy { "ok" } else { "unavailable" }.into(),
        index_loaded: healthy,
        generation,
        incidents,
        steps,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, body).into_response())
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Metrics stay available when the index cannot be read; the gauges are then left out.
    let stats = state.stats().await.ok();
    let text = state.inner.metrics.render(stats.as_ref());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

/// The deadline the gate set, or one from now for a router driven without the gate.
fn deadline_of(state: &AppState, deadline: Option<Extension<Deadline>>) -> tokio::time::Instant {
    deadline.map_or_else(
        || tokio::time::Instant::now() + state.options().request_timeout,
        |Extension(Deadline(at))| at,
    )
}

async fn upsert_incident(
    State(state): State<AppState>,
    deadline: Option<Extension<Deadline>>,
    request: Request,
) -> Result<Response, ApiError> {
    let deadline = deadline_of(&state, deadline);
    // The gate leaves writes to their own deadline, the body upload included.
    let JsonBody(body) = tokio::time::timeout_at(
        deadline,
        JsonBody::<UpsertBody>::from_request(request, &state),
    )
    .await
    .map_err(|_| {
        ApiError::new(
            ErrorCode::Timeout,
            "the request body was not received in time",
        )
    })??;
    let path = validate_write_up_path(&body.path).map_err(ApiError::bad_request)?;
    let outcome = state.upsert(path, body.markdown, deadline).await?;
    let status = if outcome.replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let response = UpsertResponse {
        incident_id: outcome.incident_id.to_string(),
        steps: outcome.steps,
        replaced: outcome.replaced,
        generation: outcome.generation,
    };
    Ok((status, Json(response)).into_response())
}

async fn delete_incident(
    State(state): State<AppState>,
    deadline: Option<Extension<Deadline>>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let deadline = deadline_of(&state, deadline);
    let id = parse_incident_id(&path_param(id)?)?;
    if !state.delete(id.clone(), deadline).await? {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("unknown incident id {id}"),
        ));
    }
    Ok(Json(DeleteResponse {
        incident_id: id.to_string(),
        deleted: true,
    })
    .into_response())
}
