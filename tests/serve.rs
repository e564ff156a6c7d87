//! `relvqa serve` as the page and `make demo` use it: MIME types, Range requests (how a cut
//! download resumes), paths kept under the root, and a clear error without a built page.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(root: &std::path::Path) -> Served {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["serve", "--port", "0", "--root"])
        .arg(root)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start relvqa serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the URL line");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    Served { child, addr }
}

/// One HTTP/1.0 request; returns (status, headers lowercased, body).
fn get(addr: &str, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{extra}\r\n").expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head, raw[split + 4..].to_vec())
}

#[test]
fn serves_the_page_with_mime_types_and_ranges() {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::write(root.path().join("index.html"), "<!doctype html>").expect("write");
    let shard: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    std::fs::write(root.path().join("shard-00000.bin"), &shard).expect("write");
    std::fs::write(root.path().join("relvqa_bg.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let s = serve(root.path());

    let (status, head, body) = get(&s.addr, "/", "");
    assert_eq!((status, body.as_slice()), (200, &b"<!doctype html>"[..]));
    assert!(head.contains("content-type: text/html"), "{head}");

    let (status, head, _) = get(&s.addr, "/relvqa_bg.wasm", "");
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/wasm"), "{head}");

    // A download cut after 600 bytes resumes with the rest, byte for byte.
    let (status, head, body) = get(&s.addr, "/shard-00000.bin", "Range: bytes=600-\r\n");
    assert_eq!(status, 206, "{head}");
    assert!(head.contains("content-range: bytes 600-999/1000"), "{head}");
    assert!(head.contains("accept-ranges: bytes"), "{head}");
    assert_eq!(body, &shard[600..]);
    let (status, _, body) = get(&s.addr, "/shard-00000.bin", "Range: bytes=10-19\r\n");
    assert_eq!((status, body.as_slice()), (206, &shard[10..20]));

    let (status, head, _) = get(&s.addr, "/shard-00000.bin", "Range: bytes=1000-\r\n");
    assert_eq!(status, 416);
    assert!(head.contains("content-range: bytes */1000"), "{head}");

    assert_eq!(get(&s.addr, "/missing.bin", "").0, 404);
    let outside = get(&s.addr, "/%2e%2e/%2e%2e/etc/passwd", "").0;
    assert!(outside == 403 || outside == 404, "{outside}");
}

#[test]
fn a_root_without_a_built_page_is_refused_with_the_fix() {
    let root = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_relvqa"))
        .args(["serve", "--port", "0", "--root"])
        .arg(root.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make web"), "{err}");
}
