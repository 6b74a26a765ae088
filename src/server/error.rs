//! `ApiError`: the one error type of every handler, answered as
//! `{"error": "<what was wrong and what to do>", "reason": "<short_code>"}` with the
//! right status. `From` impls map model, store, cost and time errors.
//!
//! In: errors of other modules. Out: HTTP responses. Must not: log secrets or bodies.

use crate::cost::CostError;
use crate::model::state::UnknownState;
use crate::model::time::BadTime;
use crate::model::ModelError;
pub use crate::model::Reason;
use crate::store::StoreError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Why a request failed; each variant has its status and a short machine code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed input (400): `reason` is a short code such as `bad_folded`.
    #[error("{message}")]
    BadRequest { reason: Reason, message: String },
    /// A body over the limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A body that did not arrive in time (408).
    #[error("{0}")]
    Timeout(String),
    /// A content type the endpoint does not speak (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A service or route that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// No valid token (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token without the needed scope (403).
    #[error("{0}")]
    Forbidden(String),
    /// Too many writes in flight (429 with `Retry-After`).
    #[error("the server is busy writing other profiles; retry after {retry_after_secs} s")]
    Busy { retry_after_secs: u32 },
    /// The store's disk is full (507 with `Retry-After`): the write can be sent again later.
    #[error("{message}")]
    DiskFull { message: String, retry_after_secs: u32 },
    /// A failure of the server itself (500).
    #[error("internal error: {0}")]
    Internal(String),
    /// A server this one depends on (Prometheus) failed or is unreachable (502).
    #[error("{0}")]
    Upstream(String),
    /// The store's database is unreachable or restarting (503 with `Retry-After`).
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u32 },
}

/// What a client is told to wait (`Retry-After`) when the store's disk is full.
pub const DISK_FULL_RETRY_AFTER_SECS: u32 = 30;

/// What a client is told to wait (`Retry-After`) while the store's database is unreachable.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 2;

/// Marks a response with the reason of its failure, for the rejects metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectReason(pub Reason);

impl ApiError {
    /// A 400 with a reason code.
    pub fn bad(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError::BadRequest { reason, message: message.into() }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The short machine-readable code.
    pub fn reason(&self) -> Reason {
        match self {
            ApiError::BadRequest { reason, .. } => *reason,
            ApiError::TooLarge(_) => Reason::BodyTooLarge,
            ApiError::Timeout(_) => Reason::BodyTimeout,
            ApiError::UnsupportedMediaType(_) => Reason::UnsupportedMediaType,
            ApiError::NotFound(_) => Reason::NotFound,
            ApiError::Unauthorized(_) => Reason::Unauthorized,
            ApiError::Forbidden(_) => Reason::Forbidden,
            ApiError::Busy { .. } => Reason::Busy,
            ApiError::DiskFull { .. } => Reason::DiskFull,
            ApiError::Internal(_) => Reason::Internal,
            ApiError::Upstream(_) => Reason::Upstream,
            ApiError::Unavailable { .. } => Reason::StoreUnavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // An outage of the database is logged by the store's pool, not once per request.
        if status.is_server_error() && !matches!(self, ApiError::Unavailable { .. }) {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(error = %self, status = status.as_u16(), "request refused");
        }
        let body = serde_json::json!({ "error": self.to_string(), "reason": self.reason() });
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(RejectReason(self.reason()));
        match &self {
            ApiError::Busy { retry_after_secs }
            | ApiError::DiskFull { retry_after_secs, .. }
            | ApiError::Unavailable { retry_after_secs, .. } => {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthorized(_) => {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        let reason = match &e {
            ModelError::TooLarge { .. }
            | ModelError::OverBudget { .. }
            | ModelError::TooManySamples { .. }
            | ModelError::TooManyFrames { .. } => return ApiError::TooLarge(e.to_string()),
            ModelError::EmptyService | ModelError::BadServiceName(_) => Reason::BadService,
            ModelError::BadLabelName(_)
            | ModelError::BadLabelValue { .. }
            | ModelError::LabelValueTooLong { .. }
            | ModelError::TooManyLabels { .. } => Reason::BadLabels,
            ModelError::StackTooDeep { .. } => Reason::StackTooDeep,
            ModelError::TooManyStacks { .. } => Reason::TooManyStacks,
            ModelError::BadWindow { .. } | ModelError::TimeOutOfRange(_) => Reason::BadTime,
            ModelError::BadPeriod | ModelError::RateOutOfRange { .. } => Reason::BadSampleRate,
            ModelError::ImplausibleCount { .. } | ModelError::ImplausibleValue { .. } => Reason::ImplausibleCount,
            ModelError::BadFolded { .. } => Reason::BadFolded,
            ModelError::BadPprof(_) | ModelError::DanglingStack { .. } | ModelError::DanglingFrame { .. } => {
                Reason::BadPprof
            }
        };
        ApiError::bad(reason, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::TooManySeries { .. } => ApiError::bad(Reason::SeriesLimit, e.to_string()),
            StoreError::UnknownService(name) => ApiError::NotFound(format!(
                "unknown service {name:?}: no profiles were received for it; GET /api/v1/services lists the known ones"
            )),
            StoreError::Invalid(message) => ApiError::bad(Reason::Invalid, message),
            StoreError::DiskFull(_) => {
                ApiError::DiskFull { message: e.to_string(), retry_after_secs: DISK_FULL_RETRY_AFTER_SECS }
            }
            StoreError::Unavailable(_) => {
                ApiError::Unavailable { message: e.to_string(), retry_after_secs: UNAVAILABLE_RETRY_AFTER_SECS }
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<CostError> for ApiError {
    fn from(e: CostError) -> Self {
        ApiError::bad(Reason::BadSettings, e.to_string())
    }
}

impl From<crate::model::time::OutOfRange> for ApiError {
    fn from(e: crate::model::time::OutOfRange) -> Self {
        ApiError::bad(Reason::BadTime, e.to_string())
    }
}

impl From<BadTime> for ApiError {
    fn from(e: BadTime) -> Self {
        ApiError::bad(Reason::BadTime, e.to_string())
    }
}

impl From<UnknownState> for ApiError {
    fn from(e: UnknownState) -> Self {
        ApiError::bad(Reason::BadStates, e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("worker task failed: {e}"))
    }
}
