//! Dora's web console: the page and its scripts, compiled into the binary and served under
//! `/ui/` by every API server. The page is plain ES modules (no bundler, no Node.js to build);
//! it talks to the same HTTPS API as the CLI, with a session cookie instead of a bearer token.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Where the console is served.
pub const PATH: &str = "/ui/";

/// A file of the console: its name under `/ui/`, media type and contents.
struct Asset {
    name: &'static str,
    media_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $media_type:expr) => {
        Asset {
            name: $name,
            media_type: $media_type,
            bytes: include_bytes!(concat!("../assets/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("views.js", JS),
    asset!("shell.js", JS),
    asset!("style.css", CSS),
    asset!("vendor/xterm.mjs", JS),
    asset!("vendor/addon-fit.mjs", JS),
    asset!("vendor/xterm.css", CSS),
];

/// Scripts, styles and connections from this origin only; no framing (clickjacking). Styles
/// may be inline: the terminal writes its own.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /` (a redirect to the console), `/ui` and the console's files under `/ui/`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to(PATH) }))
        .route("/ui", get(|| async { Redirect::to(PATH) }))
        .route("/ui/", get(|| async { serve("index.html") }))
        .route(
            "/ui/{*file}",
            get(|Path(file): Path<String>| async move { serve(&file) }),
        )
}

fn serve(name: &str) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such file of the console\n").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    // The files change with the binary: revalidate each time (cheap, the page is small).
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        let served: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        for asset in ASSETS.iter().filter(|asset| asset.media_type == JS) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            let imports = text.split("from '").skip(1);
            let dynamic = text.split("import('").skip(1);
            for import in imports.chain(dynamic) {
                let target = import.split('\'').next().unwrap();
                let Some(relative) = target.strip_prefix("./") else {
                    panic!(
                        "{}: import {target} is not a file of the console",
                        asset.name
                    );
                };
                let folder = asset.name.rsplit_once('/').map_or("", |(folder, _)| folder);
                let path = if folder.is_empty() {
                    relative.to_string()
                } else {
                    format!("{folder}/{relative}")
                };
                assert!(
                    served.contains(&path.as_str()),
                    "{}: {target} is not served",
                    asset.name
                );
            }
        }
    }
}
