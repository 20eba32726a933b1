//! A tiny blocking HTTP/1.1 client, so the API tests see raw status codes,
//! headers and bodies (one request per connection).

#![allow(dead_code)] // Each test binary uses a different part of it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

/// Generous: the CI machine has two loaded cores.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends one request to `base` (`http://host:port`) and reads the answer.
pub fn send(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
    timeout: Duration,
) -> io::Result<Reply> {
    let host = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(timeout))?;
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, format!("no answer: {raw:?}")))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let code = status_line.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let body = if body.is_empty() { Value::Null } else { serde_json::from_str(body)? };
    Ok(Reply { code, headers, body })
}

pub fn get(base: &str, path: &str) -> Reply {
    send(base, "GET", path, &[], "", TIMEOUT).expect("GET")
}

pub fn post(base: &str, path: &str, body: &Value) -> Reply {
    let headers = [("Content-Type", "application/json")];
    send(base, "POST", path, &headers, &body.to_string(), TIMEOUT).expect("POST")
}

pub fn put(base: &str, path: &str, body: &Value) -> Reply {
    let headers = [("Content-Type", "application/json")];
    send(base, "PUT", path, &headers, &body.to_string(), TIMEOUT).expect("PUT")
}

pub fn merge_patch(base: &str, path: &str, body: &Value) -> Reply {
    let headers = [("Content-Type", "application/merge-patch+json")];
    send(base, "PATCH", path, &headers, &body.to_string(), TIMEOUT).expect("PATCH")
}
