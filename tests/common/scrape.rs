//! Plain HTTP on loopback, the way `curl` and Prometheus talk to the
//! metrics listener: [`get`] one URL (HTTP/1.0: one reply, then close), and
//! read the classic text exposition back as samples ([`Scrape`]). Written
//! against the wire, not the crate's own encoder.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A plain HTTP response.
#[derive(Debug)]
pub struct PlainResponse {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl PlainResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` from `addr`, with `Accept: accept` when given; fails the test
/// after 10 s. HTTP/1.0, so that the server closes after the reply and never
/// chunks it: the body is everything up to the end.
pub async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> PlainResponse {
    tokio::time::timeout(Duration::from_secs(10), exchange(addr, path, accept))
        .await
        .unwrap_or_else(|_| panic!("GET http://{addr}{path} took more than 10 s"))
}

async fn exchange(addr: SocketAddr, path: &str, accept: Option<&str>) -> PlainResponse {
    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n");
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("a UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    PlainResponse {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A classic-text exposition, as samples.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
}

impl Scrape {
    /// `GET /metrics` from `addr` without `Accept` (as `curl` does); must be 200.
    pub async fn from(addr: SocketAddr) -> Scrape {
        let response = get(addr, "/metrics", None).await;
        assert_eq!(response.status, 200, "{}", response.body);
        Scrape {
            text: response.body,
        }
    }

    /// Every sample line: (name, labels as written between the braces, value).
    pub fn samples(&self) -> Vec<(&str, &str, f64)> {
        self.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, rest.strip_suffix('}')?),
                    None => (series, ""),
                };
                Some((name, labels, value.parse().ok()?))
            })
            .collect()
    }

    /// Whether some sample is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples().iter().any(|(n, _, _)| *n == name)
    }

    /// The sum of the samples named `name` whose labels contain every one
    /// of `labels` (`key="value"` pieces); 0 when there are none.
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples()
            .iter()
            .filter(|(n, l, _)| *n == name && labels.iter().all(|want| l.contains(want)))
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The one sample named `name` with no labels; fails the test otherwise.
    pub fn value(&self, name: &str) -> f64 {
        let found: Vec<f64> = self
            .samples()
            .iter()
            .filter(|(n, l, _)| *n == name && l.is_empty())
            .map(|(_, _, v)| *v)
            .collect();
        match found.as_slice() {
            [one] => *one,
            _ => panic!(
                "expected one unlabelled {name}, found {found:?} in:\n{}",
                self.text
            ),
        }
    }
}
