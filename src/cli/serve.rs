//! `relvqa serve`: the built page (`make web` → dist/web) over HTTP, for `make demo` and for
//! anyone hosting the page without a web server at hand.
//!
//! Static files only, with what the page needs from a server: the right MIME types
//! (`application/wasm` for streaming compilation), `Range` requests (a download cut mid-shard
//! resumes from its last complete byte) and no path outside the root. HTTP parsing is
//! tiny_http's; only the byte-range arithmetic is ours.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use tiny_http::{Header, Method, Request, Response, Server, StatusCode};

use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// The directory to serve (`make web` writes the page to dist/web).
    #[arg(long, default_value = "dist/web")]
    root: PathBuf,
    /// Address to listen on; 127.0.0.1 keeps the page on this machine.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the URL printed says which).
    #[arg(long, default_value_t = 8080)]
    port: u16,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let root = a
        .root
        .canonicalize()
        .map_err(|e| Error::io(a.root.display().to_string(), e))?;
    if !root.join("index.html").is_file() {
        return Err(Error::Invalid(format!(
            "{} has no index.html; build the page first with `make web`",
            root.display()
        )));
    }
    let server = Server::http((a.host.as_str(), a.port))
        .map_err(|e| Error::Invalid(format!("cannot listen on {}:{}: {e}", a.host, a.port)))?;
    let port = server
        .server_addr()
        .to_ip()
        .map_or(a.port, |addr| addr.port());
    // The one line scripts and tests wait for.
    println!("serving {} at http://{}:{port}/", root.display(), a.host);
    for req in server.incoming_requests() {
        let resp = respond(&root, &req);
        // A client that went away is not the server's problem.
        let _ = match resp {
            Ok(r) => req.respond(r),
            Err(status) => req.respond(Response::from_string(status.1).with_status_code(status.0)),
        };
    }
    Ok(())
}

type Reply = Response<std::io::Take<File>>;

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

/// The file `url` names under `root`: percent-decoded, query dropped, `..` refused, a
/// directory answered by its index.html.
fn resolve(root: &Path, url: &str) -> Option<PathBuf> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(&decoded).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A `Range: bytes=...` header against a file of `len` bytes: `Ok(None)` for the whole file
/// (no header, or one we do not serve partially: several ranges), `Ok(Some((start, end)))`
/// inclusive, `Err(())` when it cannot be satisfied.
pub fn parse_range(value: Option<&str>, len: u64) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(v) = value else { return Ok(None) };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        // Suffix: the last `b` bytes.
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (false, true) => (a.parse().map_err(|_| ())?, len.checked_sub(1).ok_or(())?),
        (false, false) => {
            let (s, e): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (s, e.min(len.saturating_sub(1)))
        }
        (true, true) => return Err(()),
    };
    if range.0 >= len || range.0 > range.1 {
        return Err(());
    }
    Ok(Some(range))
}

fn respond(root: &Path, req: &Request) -> std::result::Result<Reply, (u16, &'static str)> {
    if !matches!(req.method(), Method::Get | Method::Head) {
        return Err((405, "only GET and HEAD"));
    }
    let path = resolve(root, req.url()).ok_or((403, "forbidden"))?;
    let mut file = File::open(&path).map_err(|_| (404, "not found"))?;
    let len = file.metadata().map_err(|_| (404, "not found"))?.len();
    let mime = match path.extension().and_then(|e| e.to_str()) {
        Some("wasm") => "application/wasm".to_string(),
        Some("js" | "mjs") => "text/javascript; charset=utf-8".to_string(),
        Some("jsonl") => "application/jsonl".to_string(),
        _ => mime_guess::from_path(&path)
            .first_or_octet_stream()
            .essence_str()
            .to_string(),
    };
    let range = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Range"))
        .map(|h| h.value.as_str());
    let (status, start, end) = match parse_range(range, len) {
        Ok(Some((s, e))) => (206, s, e),
        Ok(None) => (200, 0, len.saturating_sub(1)),
        Err(()) => {
            let body = File::open(&path).map_err(|_| (404, "not found"))?;
            let mut r = Response::new(StatusCode(416), Vec::new(), body.take(0), Some(0), None);
            if let Some(h) = header("Content-Range", &format!("bytes */{len}")) {
                r.add_header(h);
            }
            return Ok(r);
        }
    };
    file.seek(SeekFrom::Start(start))
        .map_err(|_| (500, "cannot read the file"))?;
    let n = if len == 0 { 0 } else { end - start + 1 };
    let mut r = Response::new(
        StatusCode(status),
        Vec::new(),
        file.take(n),
        Some(n as usize),
        None,
    );
    for (k, v) in [
        ("Content-Type", mime.as_str()),
        ("Accept-Ranges", "bytes"),
        // Development server: always revalidate, so a rebuilt page is picked up.
        ("Cache-Control", "no-cache"),
    ] {
        if let Some(h) = header(k, v) {
            r.add_header(h);
        }
    }
    if status == 206 {
        if let Some(h) = header("Content-Range", &format!("bytes {start}-{end}/{len}")) {
            r.add_header(h);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=4-"), 10), Ok(Some((4, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }

    #[test]
    fn paths_stay_under_the_root() {
        let root = Path::new("/srv/page");
        assert_eq!(resolve(root, "/a/b.js?x=1"), Some(root.join("a/b.js")));
        assert_eq!(resolve(root, "/%2e%2e/etc/passwd"), None);
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a%20b.png"), Some(root.join("a b.png")));
    }
}
