//! Signed playback URLs: with `--playback-secret`, a request under `/hls/<stream>/` is let
//! through only with a valid token for that stream, as nginx's `secure_link` does.
//!
//! A token is `<expires>-<viewer>-<address>-<mac>`: the expiry in Unix seconds, the viewer's
//! identity and the address it is bound to (both hex-encoded, empty when unused), and the
//! HMAC-SHA256 (hex) under the secret of
//! `livecast-playback-v1\n<stream>\n<expires>\n<viewer>\n<address>`. It comes in the `token`
//! query parameter or in the `livecast_playback` cookie. A token that came in the query is
//! answered with that cookie (path `/hls/<stream>/`), so the segment requests that follow
//! carry it without a rewritten playlist: hls.js, ffmpeg and VLC send cookies back. The token
//! is removed from the URL before the request goes on to a front-end, and appears in no log
//! and no metric; the viewer's identity goes on in `X-Livecast-Viewer` for the access log.
//!
//! Tokens are minted by [`Playback::mint`] (the `livecast token` command, or a company portal
//! computing the same HMAC) or, with `--auth-url`, by the balancer itself at `/api/token`
//! after the company's authentication service vouched for the viewer (see `auth`).

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;

/// The query parameter that carries a token.
pub const TOKEN_PARAM: &str = "token";
/// The cookie that carries a token.
pub const TOKEN_COOKIE: &str = "livecast_playback";
/// The header that carries the viewer's identity to the front-ends (set only by the balancer).
pub const VIEWER_HEADER: &str = "x-livecast-viewer";
/// The shortest secret accepted.
pub const MIN_SECRET_BYTES: usize = 16;
/// The longest identity a token carries.
const MAX_VIEWER_BYTES: usize = 128;
const CONTEXT: &str = "livecast-playback-v1";

/// Why a request was refused; the reason is a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No token in the query or a cookie.
    Missing,
    /// A token that is not one, or whose MAC does not match (forged, altered, another
    /// stream's, another address's).
    Invalid,
    /// A valid token past its expiry.
    Expired,
}

impl Refused {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Missing => "token_missing",
            Refused::Invalid => "token_invalid",
            Refused::Expired => "token_expired",
        }
    }
}

/// A request the guard let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The identity the token carries (empty when the token names nobody).
    pub viewer: String,
    /// The cookie to set when the token came in the query.
    pub set_cookie: Option<String>,
}

/// The token's claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The stream the token opens.
    pub stream: String,
    /// Unix seconds after which it no longer does.
    pub expires: u64,
    /// Who it was given to.
    pub viewer: String,
    /// The only address it works from, if bound.
    pub address: Option<IpAddr>,
}

/// The secret and what is checked with it.
pub struct Playback {
    key: hmac::Key,
}

impl std::fmt::Debug for Playback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Playback { key: <secret> }")
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `viewer` is an identity a token may carry: it goes into a header and a log field.
pub fn valid_viewer(viewer: &str) -> bool {
    viewer.len() <= MAX_VIEWER_BYTES
        && viewer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-:".contains(&b))
}

/// The stream a path under `/hls/` belongs to.
pub fn stream_of(path: &str) -> Option<&str> {
    let stream = path.strip_prefix("/hls/")?.split('/').next()?;
    (!stream.is_empty()).then_some(stream)
}

impl Playback {
    /// A guard with `secret`; refused when shorter than [`MIN_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the playback secret must be at least {MIN_SECRET_BYTES} bytes, got {}",
                secret.len()
            ));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    fn message(claims: &Claims) -> String {
        let address = claims.address.map(|a| a.to_string()).unwrap_or_default();
        format!(
            "{CONTEXT}\n{}\n{}\n{}\n{address}",
            claims.stream, claims.expires, claims.viewer
        )
    }

    /// The token for `claims`.
    pub fn mint(&self, claims: &Claims) -> Result<String, String> {
        if !valid_viewer(&claims.viewer) {
            return Err(format!(
                "a viewer identity is at most {MAX_VIEWER_BYTES} letters, digits and ._@+-: \
                 characters, got {:?}",
                claims.viewer
            ));
        }
        let tag = hmac::sign(&self.key, Self::message(claims).as_bytes());
        let address = claims.address.map(|a| a.to_string()).unwrap_or_default();
        Ok(format!(
            "{}-{}-{}-{}",
            claims.expires,
            hex(claims.viewer.as_bytes()),
            hex(address.as_bytes()),
            hex(tag.as_ref())
        ))
    }

    /// Checks `token` for `stream` from `client` at `now`; gives its claims.
    pub fn verify(
        &self,
        token: &str,
        stream: &str,
        client: IpAddr,
        now: u64,
    ) -> Result<Claims, Refused> {
        let mut fields = token.split('-');
        let (Some(expires), Some(viewer), Some(address), Some(mac), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(Refused::Invalid);
        };
        let expires: u64 = expires.parse().map_err(|_| Refused::Invalid)?;
        let decode = |field: &str| {
            unhex(field)
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or(Refused::Invalid)
        };
        let viewer = decode(viewer)?;
        let address = decode(address)?;
        let address = if address.is_empty() {
            None
        } else {
            Some(address.parse().map_err(|_| Refused::Invalid)?)
        };
        let mac = unhex(mac).ok_or(Refused::Invalid)?;
        let claims = Claims {
            stream: stream.to_string(),
            expires,
            viewer,
            address,
        };
        hmac::verify(&self.key, Self::message(&claims).as_bytes(), &mac)
            .map_err(|_| Refused::Invalid)?;
        if let Some(bound) = claims.address {
            if !same_address(bound, client) {
                return Err(Refused::Invalid);
            }
        }
        if now > claims.expires {
            return Err(Refused::Expired);
        }
        Ok(claims)
    }

    /// Admission of a request for `path` with `query` and the `Cookie` header values
    /// `cookies`, from `client`. `Ok(None)`: the path is not guarded.
    pub fn admit<'a>(
        &self,
        path: &str,
        query: Option<&str>,
        cookies: impl Iterator<Item = &'a [u8]>,
        client: IpAddr,
    ) -> Result<Option<Pass>, Refused> {
        let Some(stream) = stream_of(path) else {
            return Ok(None);
        };
        let now = unix_now();
        let from_query = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == TOKEN_PARAM)
                .map(|(_, v)| v.into_owned())
        });
        if let Some(token) = from_query {
            let claims = self.verify(&token, stream, client, now)?;
            let max_age = claims.expires.saturating_sub(now);
            return Ok(Some(Pass {
                viewer: claims.viewer,
                set_cookie: Some(cookie(stream, &token, max_age)),
            }));
        }
        // Several cookies of the name may come (an old one for a wider path): any valid one
        // lets the request in; the refusal is the best reason among the others.
        let mut refusal = Refused::Missing;
        for value in cookies {
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            for pair in value.split(';') {
                let Some((name, token)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name != TOKEN_COOKIE {
                    continue;
                }
                match self.verify(token, stream, client, now) {
                    Ok(claims) => {
                        return Ok(Some(Pass {
                            viewer: claims.viewer,
                            set_cookie: None,
                        }))
                    }
                    Err(Refused::Expired) => refusal = Refused::Expired,
                    Err(other) if refusal == Refused::Missing => refusal = other,
                    Err(_) => {}
                }
            }
        }
        Err(refusal)
    }
}

/// The `Set-Cookie` value that keeps `token` for the stream's requests.
pub fn cookie(stream: &str, token: &str, max_age: u64) -> String {
    format!(
        "{TOKEN_COOKIE}={token}; Path=/hls/{stream}/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
    )
}

fn same_address(a: IpAddr, b: IpAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canonical(a) == canonical(b)
}

/// `target` without its `token` query parameter (the rest of the query kept in order).
pub fn without_token(target: &str) -> std::borrow::Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return target.into();
    };
    let is_token = |pair: &&str| pair.split('=').next() == Some(TOKEN_PARAM);
    if !query.split('&').any(|p| is_token(&p)) {
        return target.into();
    }
    let rest: Vec<&str> = query.split('&').filter(|p| !is_token(p)).collect();
    if rest.is_empty() {
        path.to_string().into()
    } else {
        format!("{path}?{}", rest.join("&")).into()
    }
}

/// A token for `stream`, valid `ttl` from now, for `viewer`, bound to `address` if given.
pub fn claims_for(stream: &str, ttl: Duration, viewer: &str, address: Option<IpAddr>) -> Claims {
    Claims {
        stream: stream.to_string(),
        expires: unix_now() + ttl.as_secs(),
        viewer: viewer.to_string(),
        address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Playback {
        Playback::new(b"0123456789abcdef-secret").unwrap()
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn a_token_opens_its_stream_only_until_it_expires() {
        let g = guard();
        let claims = claims_for("talk", Duration::from_secs(60), "ann@corp", None);
        let token = g.mint(&claims).unwrap();
        let now = unix_now();
        assert_eq!(
            g.verify(&token, "talk", HOME, now).unwrap().viewer,
            "ann@corp"
        );
        assert_eq!(g.verify(&token, "other", HOME, now), Err(Refused::Invalid));
        assert_eq!(
            g.verify(&token, "talk", HOME, now + 61),
            Err(Refused::Expired)
        );
        // Any altered character breaks it, the expiry included.
        let later = token.replacen(
            &claims.expires.to_string(),
            &(claims.expires + 3600).to_string(),
            1,
        );
        assert_eq!(g.verify(&later, "talk", HOME, now), Err(Refused::Invalid));
        let mut flipped = token.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(g.verify(&flipped, "talk", HOME, now), Err(Refused::Invalid));
        let other_secret = Playback::new(b"another-secret-of-16+").unwrap();
        assert_eq!(
            other_secret.verify(&token, "talk", HOME, now),
            Err(Refused::Invalid)
        );
        assert_eq!(
            g.verify("garbage", "talk", HOME, now),
            Err(Refused::Invalid)
        );
        assert!(Playback::new(b"short").is_err());
        assert!(g
            .mint(&claims_for("talk", Duration::ZERO, "bad\nname", None))
            .is_err());
    }

    #[test]
    fn a_bound_token_works_only_from_its_address() {
        let g = guard();
        let token = g
            .mint(&claims_for("talk", Duration::from_secs(60), "", Some(HOME)))
            .unwrap();
        let now = unix_now();
        assert!(g.verify(&token, "talk", HOME, now).is_ok());
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert!(g.verify(&token, "talk", mapped, now).is_ok());
        assert_eq!(
            g.verify(&token, "talk", "10.1.2.4".parse().unwrap(), now),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn admission_reads_the_query_then_the_cookies() {
        let g = guard();
        let token = g
            .mint(&claims_for("talk", Duration::from_secs(60), "bob", None))
            .unwrap();
        let none = std::iter::empty::<&[u8]>;
        assert_eq!(g.admit("/api/streams", None, none(), HOME), Ok(None));
        assert_eq!(
            g.admit("/hls/talk/index.m3u8", None, none(), HOME),
            Err(Refused::Missing)
        );
        let query = format!("_HLS_msn=4&token={token}");
        let pass = g
            .admit("/hls/talk/index.m3u8", Some(&query), none(), HOME)
            .unwrap()
            .unwrap();
        assert_eq!(pass.viewer, "bob");
        let set = pass.set_cookie.unwrap();
        assert!(
            set.starts_with(&format!("{TOKEN_COOKIE}={token}; Path=/hls/talk/;")),
            "{set}"
        );
        let header = format!("livecast_session=abc; {TOKEN_COOKIE}=stale; {TOKEN_COOKIE}={token}");
        let pass = g
            .admit(
                "/hls/talk/1.m4s",
                None,
                [header.as_bytes()].into_iter(),
                HOME,
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            pass,
            Pass {
                viewer: "bob".into(),
                set_cookie: None
            }
        );
        // The stream's cookie (path /hls/talk/) covers its renditions under /hls/talk/<rendition>/.
        assert!(g
            .admit(
                "/hls/talk/480p/index.m3u8",
                None,
                [header.as_bytes()].into_iter(),
                HOME
            )
            .is_ok_and(|pass| pass.is_some()));
        // The cookie of one stream does not open another.
        assert_eq!(
            g.admit(
                "/hls/board/1.m4s",
                None,
                [header.as_bytes()].into_iter(),
                HOME
            ),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn the_token_is_taken_out_of_the_forwarded_url() {
        assert_eq!(without_token("/hls/a/index.m3u8"), "/hls/a/index.m3u8");
        assert_eq!(
            without_token("/hls/a/index.m3u8?token=x"),
            "/hls/a/index.m3u8"
        );
        assert_eq!(
            without_token("/hls/a/index.m3u8?_HLS_msn=3&token=x&_HLS_part=1"),
            "/hls/a/index.m3u8?_HLS_msn=3&_HLS_part=1"
        );
        assert_eq!(without_token("/x?tokenish=1"), "/x?tokenish=1");
    }
}
