//! The web viewer's static assets (`web/`), embedded in the binary at compile time.
//!
//! In: HTTP GETs for `/`, client-side routes (`/service/NAME...`) and
//! `/assets/{version}/{file}`. Out: the embedded bytes with their content type and cache
//! headers. Must not: read the disk at run time, or know anything about the JSON API
//! (the viewer talks to it from the browser).
//!
//! Caching: `index.html` is never cached (it names the asset version); assets live under
//! a path holding a hash of all of them, so they can be cached forever and an upgrade of
//! the binary still reaches every browser at once.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::OnceLock;

/// One embedded file of `web/`.
struct Asset {
    /// File name under `web/` (flat: no directories).
    name: &'static str,
    /// `Content-Type` header value.
    content_type: &'static str,
    /// The file's bytes.
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, bytes: include_bytes!(concat!("../../web/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the viewer needs; `index.html` is served separately (see `index`).
static ASSETS: &[Asset] = &[
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("format.js", JS),
    asset!("state.js", JS),
    asset!("tree.js", JS),
    asset!("flame.js", JS),
    asset!("timeline.js", JS),
    asset!("start.js", JS),
    asset!("service.js", JS),
    asset!("tables.js", JS),
    asset!("diff.js", JS),
    asset!("settings.js", JS),
    asset!("dom.js", JS),
    asset!("wins.js", JS),
];

const INDEX_HTML: &str = include_str!("../../web/index.html");

/// The placeholder in `index.html` replaced by the asset version.
const VERSION_MARK: &str = "__ASSET_VERSION__";

/// A short hash of all embedded assets: the path segment that busts browser caches.
fn asset_version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        // FNV-1a: stable across builds and platforms, unlike std's DefaultHasher.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for asset in ASSETS {
            for &byte in asset.name.as_bytes().iter().chain(asset.bytes) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        format!("{:012x}", hash & 0xffff_ffff_ffff)
    })
}

fn index_html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| INDEX_HTML.replace(VERSION_MARK, asset_version()))
}

/// The viewer's routes: `/`, `/service/{name}[/...]`, `/assets/{version}/{file}` and
/// `/favicon.ico`. Merge them into the API router.
pub fn routes() -> Router {
    Router::new()
        .route("/", get(index))
        .route("/index.html", get(index))
        .route("/service/{*rest}", get(index))
        .route("/wins", get(index))
        .route("/wins/{*rest}", get(index))
        .route("/assets/{version}/{file}", get(asset))
        .route("/favicon.ico", get(favicon))
}

async fn index() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, index_html()).into_response()
}

async fn favicon() -> Response {
    serve(find("favicon.svg"), false, &HeaderMap::new())
}

async fn asset(Path((version, file)): Path<(String, String)>, request_headers: HeaderMap) -> Response {
    serve(find(&file), version == asset_version(), &request_headers)
}

fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|asset| asset.name == name)
}

fn serve(asset: Option<&'static Asset>, current_version: bool, request_headers: &HeaderMap) -> Response {
    let Some(asset) = asset else {
        return (StatusCode::NOT_FOUND, "no such viewer asset: reload the page (the server may have been upgraded)")
            .into_response();
    };
    // A stale version (a page loaded before an upgrade) still gets the current bytes, but
    // they must not be cached under the old name.
    let cache = if current_version { "public, max-age=31536000, immutable" } else { "no-cache" };
    let etag = format!("\"{}\"", asset_version());
    let etag_value = HeaderValue::from_str(&etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    let not_modified = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::ETAG, etag_value);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if not_modified {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    (headers, asset.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str) -> Response {
        routes().oneshot(Request::get(uri).body(Body::empty()).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn index_names_the_current_asset_version() {
        for uri in ["/", "/service/checkout", "/service/checkout/diff"] {
            let response = get(uri).await;
            assert_eq!(response.status(), StatusCode::OK, "{uri}");
            assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
            let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            let html = String::from_utf8(body.to_vec()).unwrap();
            assert!(html.contains(&format!("/assets/{}/app.js", asset_version())), "{html}");
            assert!(!html.contains(VERSION_MARK));
        }
    }

    #[tokio::test]
    async fn assets_have_types_and_cache_headers() {
        let v = asset_version();
        let response = get(&format!("/assets/{v}/flame.js")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], JS);
        assert!(response.headers()[header::CACHE_CONTROL].to_str().unwrap().contains("immutable"));
        let stale = get("/assets/000000000000/style.css").await;
        assert_eq!(stale.status(), StatusCode::OK);
        assert_eq!(stale.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(get(&format!("/assets/{v}/nope.js")).await.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn etag_revalidation_answers_304() {
        let v = asset_version();
        let request = Request::get(format!("/assets/{v}/app.js"))
            .header(header::IF_NONE_MATCH, format!("\"{v}\""))
            .body(Body::empty())
            .unwrap();
        let response = routes().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn every_module_import_is_embedded() {
        // A module that app.js imports but ASSETS lacks would 404 only in the browser.
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            for line in text.lines().filter(|l| l.trim_start().starts_with("import ")) {
                let Some(start) = line.find("'./") else { continue };
                let rest = &line[start + 3..];
                let name = &rest[..rest.find('\'').unwrap()];
                assert!(find(name).is_some(), "{} imports {name}, which is not embedded", asset.name);
            }
        }
    }
}
