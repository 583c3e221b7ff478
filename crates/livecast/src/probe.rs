//! `livecast probe URL`: a health check for container images that carry no HTTP client.
//!
//! One `GET` over plain HTTP/1.1 with a deadline; success is a 2xx status line. Docker's and
//! Compose's `healthcheck` run it inside the container (`livecast probe
//! http://127.0.0.1:9102/readyz`), so the image needs neither curl nor a shell.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{LivecastError, Result};

/// Checks `url` (`http://HOST:PORT/PATH`), failing unless it answers 2xx within `timeout`.
pub fn probe(url: &str, timeout: Duration) -> Result<()> {
    let (authority, path) = split(url)?;
    let deadline = Instant::now() + timeout;
    let addr = authority
        .to_socket_addrs()
        .map_err(LivecastError::io(format!("cannot resolve {authority}")))?
        .next()
        .ok_or_else(|| LivecastError::Probe(format!("{authority} has no address")))?;
    let mut socket = TcpStream::connect_timeout(&addr, timeout)
        .map_err(LivecastError::io(format!("cannot connect to {addr}")))?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    socket.set_write_timeout(Some(left()))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: livecast-probe\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes())?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.contains(&b'\n') {
        socket.set_read_timeout(Some(left()))?;
        let n = socket
            .read(&mut chunk)
            .map_err(LivecastError::io("no answer in time"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or_default();
    match line.split(' ').nth(1) {
        Some(code) if code.len() == 3 && code.starts_with('2') => Ok(()),
        Some(code) => Err(LivecastError::Probe(format!("{url} answered {code}"))),
        None => Err(LivecastError::Probe(format!("{url} sent no status line"))),
    }
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LivecastError::Probe(format!("{url}: only http:// URLs can be probed")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(LivecastError::Probe(format!("{url}: no host")));
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split("http://127.0.0.1:9102/readyz").unwrap(),
            ("127.0.0.1:9102".into(), "/readyz".into())
        );
        assert_eq!(split("http://web").unwrap(), ("web:80".into(), "/".into()));
        assert!(split("https://web/").is_err());
        assert!(split("http:///x").is_err());
    }

    #[test]
    fn passes_on_2xx_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        let url = format!("http://{addr}/readyz");
        assert!(probe(&url, Duration::from_secs(2)).is_ok());
        let err = probe(&url, Duration::from_secs(2)).unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        server.join().unwrap();
        // Nothing listening: a clear failure, not a hang.
        assert!(probe(&url, Duration::from_secs(2)).is_err());
    }
}
