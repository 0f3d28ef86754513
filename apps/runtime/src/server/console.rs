//! The operator console at `/console`: static pages compiled into the
//! binary (`apps/runtime/console/`), served with their content types, a
//! strict Content-Security-Policy and revalidated caching.
//!
//! The console holds no state and no secret on the server: the page calls
//! the internal routes with the token the operator types in, so these
//! routes sit outside the internal-credential rule, like `/healthz`.

use crate::error::ApiError;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::hash::{DefaultHasher, Hasher};
use std::sync::LazyLock;

/// Only this origin's scripts, styles and connections; no inline code, no
/// plugins, no framing, no form posts anywhere.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
/// What every console answer carries besides its type and validator: the
/// policy above, no type sniffing, no referrer to other sites, no framing.
const POLICY_HEADERS: [(HeaderName, &str); 4] = [
    (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::X_FRAME_OPTIONS, "DENY"),
];
/// Every answer is revalidated: the files change with the binary and carry
/// no version in their names, and a revalidation costs a 304 only.
const CACHE_CONTROL: &str = "no-cache";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    /// A strong validator of `bytes`.
    etag: HeaderValue,
}

/// The embedded files: `index.html` is the page, the others its assets.
static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    const JS: &str = "text/javascript; charset=utf-8";
    [
        (
            "index.html",
            "text/html; charset=utf-8",
            include_bytes!("../../console/index.html").as_slice(),
        ),
        (
            "console.css",
            "text/css; charset=utf-8",
            include_bytes!("../../console/console.css"),
        ),
        ("app.js", JS, include_bytes!("../../console/app.js")),
        ("api.js", JS, include_bytes!("../../console/api.js")),
        ("dom.js", JS, include_bytes!("../../console/dom.js")),
        ("runs.js", JS, include_bytes!("../../console/runs.js")),
        ("run.js", JS, include_bytes!("../../console/run.js")),
        ("receipt.js", JS, include_bytes!("../../console/receipt.js")),
        ("workers.js", JS, include_bytes!("../../console/workers.js")),
        ("health.js", JS, include_bytes!("../../console/health.js")),
        ("chart.js", JS, include_bytes!("../../console/chart.js")),
    ]
    .into_iter()
    .map(|(name, content_type, bytes)| Asset {
        name,
        content_type,
        bytes,
        etag: etag(bytes),
    })
    .collect()
});

fn etag(bytes: &[u8]) -> HeaderValue {
    // `DefaultHasher::new` has fixed keys: the same bytes give the same
    // tag in every process, so a restart does not invalidate caches.
    let mut hasher = DefaultHasher::new();
    hasher.write(bytes);
    HeaderValue::from_str(&format!("\"{:016x}-{}\"", hasher.finish(), bytes.len()))
        .expect("hex is a valid header value")
}

/// `GET /console`: the page.
pub(crate) async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers).unwrap_or_else(IntoResponse::into_response)
}

/// `GET /console/assets/{name}`: a script or the style sheet.
pub(crate) async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // The page has one address, `/console`.
    if name == "index.html" {
        return missing(&name).into_response();
    }
    serve(&name, &headers).unwrap_or_else(IntoResponse::into_response)
}

fn missing(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "the console has no asset {:?}",
        crate::error::clip(name)
    ))
}

/// The file `name`, or 304 when the client's copy is current.
fn serve(name: &str, request: &HeaderMap) -> Result<Response, ApiError> {
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| missing(name))?;
    let current = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .any(|tag| tag == asset.etag);
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.bytes.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::ETAG, asset.etag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    for (name, value) in POLICY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_the_console_imports_is_embedded() {
        let names: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        for asset in ASSETS.iter() {
            let text = std::str::from_utf8(asset.bytes).expect("UTF-8");
            for import in text
                .split("from \"./")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
            {
                assert!(names.contains(&import), "{} imports {import}", asset.name);
            }
        }
    }

    #[test]
    fn a_current_copy_gets_304_and_every_answer_the_policy() {
        let first = serve("app.js", &HeaderMap::new()).expect("served");
        assert_eq!(first.status(), StatusCode::OK);
        let tag = first.headers()[header::ETAG].clone();
        let mut again = HeaderMap::new();
        again.insert(header::IF_NONE_MATCH, tag);
        let second = serve("app.js", &again).expect("served");
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
        for response in [first, second] {
            assert_eq!(
                response.headers()[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
        }
        assert!(serve("nope.js", &HeaderMap::new()).is_err());
    }
}
