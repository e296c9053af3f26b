//! The page at `/`, the dashboard at `/dashboard`, and their scripts and style under
//! `/assets/`, compiled into the binary.
//!
//! The files are `crates/wirehub-server/assets/`, built from `crates/wirehub-server/web/` by
//! `npm run build:web` in `clients/typescript` (the page's script bundles the TypeScript SDK
//! with esbuild) and committed, gzipped beside them: building the server needs no npm, and a
//! test of the TypeScript step fails when they are stale. Each answer has an `ETag` (a hash
//! of the file, computed at compile time) and `Cache-Control: no-cache`, so a browser
//! revalidates and gets `304` until the binary changes; the gzipped copy goes to clients that
//! accept it.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};

/// One file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzip: &'static [u8],
    hash: u64,
}

/// FNV-1a, 64 bits: enough to tell two versions of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../assets/", $name)),
            gzip: include_bytes!(concat!("../assets/", $name, ".gz")),
            hash: fnv1a(include_bytes!(concat!("../assets/", $name))),
        }
    };
}

static INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");
static DASHBOARD: Asset = asset!("dashboard.html", "text/html; charset=utf-8");
static FILES: [Asset; 3] = [
    asset!("page.js", "text/javascript; charset=utf-8"),
    asset!("dashboard.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
];

/// What the pages may load: their own scripts, style and WebSocket, nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// `GET /`.
pub(crate) async fn index(headers: HeaderMap) -> Response {
    respond(&INDEX, &headers)
}

/// `GET /dashboard`.
pub(crate) async fn dashboard(headers: HeaderMap) -> Response {
    respond(&DASHBOARD, &headers)
}

/// `GET /assets/NAME`.
pub(crate) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match FILES.iter().find(|asset| asset.name == name) {
        Some(asset) => respond(asset, &headers),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let name = coding.split(';').next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case("gzip") && !q_zero(coding)
        })
}

/// Whether a coding carries `q=0` (also written `q=0.0`, `q=0.000`).
fn q_zero(coding: &str) -> bool {
    coding.split(';').skip(1).any(|param| {
        let param = param.trim();
        param
            .strip_prefix("q=")
            .and_then(|q| q.parse::<f32>().ok())
            .is_some_and(|q| q == 0.0)
    })
}

fn respond(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut response = asset.gzip.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        asset.body.into_response()
    };
    let out = response.headers_mut();
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, etag);
    }
    if asset.content_type.starts_with("text/html") {
        out.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        out.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).expect("a header value"),
        );
        headers
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        assert!(accepts_gzip(&with_accept("gzip, deflate, br")));
        assert!(accepts_gzip(&with_accept("br;q=1.0, GZIP;q=0.5")));
        assert!(!accepts_gzip(&with_accept("gzip;q=0")));
        assert!(!accepts_gzip(&with_accept("gzip; q=0.0")));
        assert!(!accepts_gzip(&with_accept("br, deflate")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn every_file_has_its_gzipped_copy_and_a_distinct_etag() {
        let all: Vec<&Asset> = [&INDEX, &DASHBOARD]
            .into_iter()
            .chain(FILES.iter())
            .collect();
        for asset in &all {
            assert!(!asset.body.is_empty(), "{} is empty", asset.name);
            // The gzip magic number: the copy is what it says.
            assert_eq!(&asset.gzip[..2], &[0x1f, 0x8b], "{}.gz", asset.name);
        }
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a.hash, b.hash, "{} and {}", a.name, b.name);
            }
        }
    }
}
