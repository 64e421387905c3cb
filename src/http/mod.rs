//! The storage API over HTTP: routing `(method, path)` to handlers,
//! authentication before any handler runs, the body-size limit, the access
//! log and the request metrics, and nothing else. [`StorageApi`] is the
//! [`Handler`] the server runs on the platform-facing listener. Handlers
//! are thin; rules live in the service, crypto and store layers; statuses
//! are decided in [`error`].

pub mod auth;
pub mod error;
pub mod handlers;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, Request, Response};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::model::parse_canonical_uuid;
use crate::server::Handler;
use crate::service::{Authenticated, Service};
use auth::BasicCredentials;
use error::ApiError;
use handlers::Reply;

/// The storage API: everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct StorageApi {
    /// The use cases.
    pub service: Arc<Service>,
    /// Path prefix of every endpoint, e.g. `/api/storage/1`.
    pub base_path: String,
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// Basic credentials, when configured.
    pub basic: Option<BasicCredentials>,
    /// Where requests and their outcomes are counted.
    pub metrics: Arc<Metrics>,
}

/// The endpoints of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Tenant(Uuid),
    State(Uuid, Uuid),
}

/// A path that has the shape of an endpoint, ids not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape<'a> {
    Health,
    Tenant(&'a str),
    State(&'a str, &'a str),
}

impl Shape<'_> {
    /// The path below `base_path` that has an endpoint's shape, if any.
    fn of<'a>(base_path: &str, path: &'a str) -> Option<Shape<'a>> {
        let rest = path.strip_prefix(base_path.trim_end_matches('/'))?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["", "health"] => Some(Shape::Health),
            ["", "states", tenant] => Some(Shape::Tenant(tenant)),
            ["", "states", tenant, id] => Some(Shape::State(tenant, id)),
            _ => None,
        }
    }

    /// The route template, the `http_route` label of the request metrics
    /// (templates, never ids).
    fn template(self) -> &'static str {
        match self {
            Shape::Health => "/health",
            Shape::Tenant(_) => "/states/{tenant}",
            Shape::State(..) => "/states/{tenant}/{id}",
        }
    }
}

impl Handler for StorageApi {
    type Body = Full<Bytes>;
    type BodyError = std::convert::Infallible;

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        self.respond(request).await
    }
}

impl StorageApi {
    /// Answers one request; never fails (errors become JSON responses).
    async fn respond<B>(&self, request: Request<B>) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let started = Instant::now();
        let _in_flight = self.metrics.request_in_flight();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let route = Shape::of(&self.base_path, &path).map_or("", Shape::template);
        let (response, note) = match self.dispatch(request).await {
            Ok(Reply { response, note }) => (response, note),
            Err(error) => {
                if let Some(failure) = error.failure {
                    self.metrics.failed(failure);
                }
                let note = match &error.cause {
                    Some(cause) => format!("error=\"{}\" cause=\"{cause}\"", error.message),
                    None => format!("error=\"{}\"", error.message),
                };
                (error.into_response(), note)
            }
        };
        let status = response.status();
        self.metrics
            .observe_request(&method, route, status.as_u16(), started.elapsed());
        let level = if status.is_server_error() {
            log::Level::Error
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "{method} {path} {} {:.1}ms {note}",
            status.as_u16(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        response
    }

    async fn dispatch<B>(&self, request: Request<B>) -> Result<Reply, ApiError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let route = route(&self.base_path, request.uri().path())?;
        let method = request.method().clone();
        match (route, &method) {
            (Route::Health, &Method::GET | &Method::HEAD) => handlers::health(&self.service).await,
            (Route::Health, _) => Err(ApiError::method_not_allowed("GET, HEAD")),
            (Route::Tenant(tenant), &Method::POST | &Method::DELETE) => {
                let auth = self.authenticate(&request, tenant)?;
                let body = read_body(request, self.max_body_bytes).await?;
                if method == Method::POST {
                    handlers::save(&self.service, &self.metrics, &auth, &body).await
                } else {
                    handlers::delete(&self.service, &self.metrics, &auth, &body).await
                }
            }
            (Route::Tenant(_), _) => Err(ApiError::method_not_allowed("POST, DELETE")),
            (Route::State(tenant, id), &Method::GET) => {
                let auth = self.authenticate(&request, tenant)?;
                handlers::load(&self.service, &self.metrics, &auth, id).await
            }
            (Route::State(..), _) => Err(ApiError::method_not_allowed("GET")),
        }
    }

    /// Authenticates a request to an endpoint of `tenant`, before its body is read.
    fn authenticate<B>(
        &self,
        request: &Request<B>,
        tenant: Uuid,
    ) -> Result<Authenticated, ApiError> {
        auth::authenticate(
            &self.service,
            self.basic.as_ref(),
            request.headers(),
            tenant,
            request.uri().path(),
        )
    }
}

/// Maps a URL path to an endpoint: 404 for anything else, 400 for an id
/// that is not a canonical UUID.
fn route(base_path: &str, path: &str) -> Result<Route, ApiError> {
    let shape = Shape::of(base_path, path).ok_or_else(ApiError::no_route)?;
    let uuid = |what: &str, s: &str| {
        parse_canonical_uuid(s).ok_or_else(|| {
            ApiError::bad_request(format!(
                "the {what} in the URL is not a UUID (8-4-4-4-12 hex)"
            ))
        })
    };
    match shape {
        Shape::Health => Ok(Route::Health),
        Shape::Tenant(tenant) => Ok(Route::Tenant(uuid("tenant", tenant)?)),
        Shape::State(tenant, id) => {
            Ok(Route::State(uuid("tenant", tenant)?, uuid("state id", id)?))
        }
    }
}

/// Reads the whole body, refusing (413) anything over `limit` before it is
/// buffered: a declared length is checked first, then the stream is capped.
async fn read_body<B>(request: Request<B>, limit: u64) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::too_large(limit));
    }
    let limited = Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => {
            let mut error = ApiError::bad_request("the request body could not be read");
            error.cause = Some(e.to_string());
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "/api/storage/1";
    const T: &str = "918f5a24-290e-4659-9cd6-c8d95aee92c6";

    #[test]
    fn routes() {
        assert_eq!(route(BASE, "/api/storage/1/health").unwrap(), Route::Health);
        assert!(matches!(
            route(BASE, &format!("{BASE}/states/{T}")).unwrap(),
            Route::Tenant(_)
        ));
        assert!(matches!(
            route(BASE, &format!("{BASE}/states/{T}/{T}")).unwrap(),
            Route::State(..)
        ));
        assert_eq!(route(BASE, "/other").unwrap_err().status.as_u16(), 404);
        assert_eq!(
            route(BASE, &format!("{BASE}/states/{T}/"))
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        assert_eq!(
            route(BASE, &format!("{BASE}/states/nope"))
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        assert_eq!(
            route(BASE, &format!("{BASE}/states/{T}/{T}/x"))
                .unwrap_err()
                .status
                .as_u16(),
            404
        );
        assert_eq!(
            route(BASE, "/api/storage/1health")
                .unwrap_err()
                .status
                .as_u16(),
            404
        );
    }

    #[test]
    fn templates_never_hold_ids() {
        let template = |path: &str| Shape::of(BASE, path).map(Shape::template);
        assert_eq!(template(&format!("{BASE}/health")), Some("/health"));
        assert_eq!(
            template(&format!("{BASE}/states/{T}")),
            Some("/states/{tenant}")
        );
        assert_eq!(
            template(&format!("{BASE}/states/not-a-uuid/{T}")),
            Some("/states/{tenant}/{id}")
        );
        assert_eq!(template("/elsewhere"), None);
    }
}
