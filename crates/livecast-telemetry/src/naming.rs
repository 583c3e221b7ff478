//! A container's name from the reverse DNS of its own address (the front-end's
//! `--instance-name-from-dns`, the load tester's `--shard dns/N`).
//!
//! Compose sets a container's host name to its short id, which `docker compose ps` does not
//! show; Docker's DNS, asked for the container's address (PTR), answers with its name
//! (`livecast-web-2.livecast_default`, or `livecast_web_2…` under Compose v1), which it does
//! show. The address comes from `/etc/hosts` (Docker writes the container's address there
//! under its host name), the resolver from `/etc/resolv.conf`; the query is one UDP packet.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// This host's name: `$HOSTNAME`, else the kernel's.
pub fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && !h.contains('/'))
}

/// The first label of the PTR name of this host's address, or `None` when any step fails.
pub async fn from_dns(host_name: &str) -> Option<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    let own = own_address(&hosts, host_name)?;
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    let resolver = resolv.lines().find_map(|l| {
        let ip = l
            .strip_prefix("nameserver")?
            .trim()
            .parse::<IpAddr>()
            .ok()?;
        Some(SocketAddr::new(ip, 53))
    })?;
    lookup(resolver, own).await
}

/// The address `/etc/hosts` gives `host_name` (not a loopback one).
fn own_address(hosts: &str, host_name: &str) -> Option<IpAddr> {
    hosts.lines().find_map(|line| {
        let mut fields = line.split('#').next()?.split_whitespace();
        let ip: IpAddr = fields.next()?.parse().ok()?;
        (!ip.is_loopback() && fields.any(|name| name == host_name)).then_some(ip)
    })
}

/// Asks `resolver` for the PTR record of `ip`; the first label of the answer.
pub(crate) async fn lookup(resolver: SocketAddr, ip: IpAddr) -> Option<String> {
    let bind: SocketAddr = if resolver.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(resolver).await.ok()?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let query = ptr_query(id, ip);
    let mut answer = [0u8; 1500];
    for _ in 0..2 {
        socket.send(&query).await.ok()?;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut answer)).await
        {
            let name = ptr_answer(id, &answer[..n])?;
            return name
                .split('.')
                .next()
                .map(str::to_string)
                .filter(|n| !n.is_empty());
        }
    }
    None
}

/// The reverse name of `ip`: `5.0.18.172.in-addr.arpa`, or the nibbles under `ip6.arpa`.
fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut name = String::new();
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name + "ip6.arpa"
        }
    }
}

/// A recursive PTR query for `ip` with message id `id`.
fn ptr_query(id: u16, ip: IpAddr) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in reverse_name(ip).split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 12, 0, 1]); // root, type PTR, class IN
    q
}

/// The name in the first PTR answer of a response to query `id`.
fn ptr_answer(id: u16, msg: &[u8]) -> Option<String> {
    if msg.len() < 12 || msg[..2] != id.to_be_bytes() || msg[3] & 0x0f != 0 {
        return None;
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = read_name(msg, at)?.1 + 4;
    }
    for _ in 0..answers {
        let after_name = read_name(msg, at)?.1;
        let fixed = msg.get(after_name..after_name + 10)?;
        let kind = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data = after_name + 10;
        if kind == 12 {
            return read_name(msg, data).map(|(name, _)| name);
        }
        at = data + len;
    }
    None
}

/// The (possibly compressed) name at `at`, and where the record goes on after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let len = *msg.get(at)?;
        match len {
            0 => {
                return Some((labels.join("."), end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let target = usize::from(u16::from_be_bytes([l & 0x3f, *msg.get(at + 1)?]));
                end.get_or_insert(at + 2);
                at = target;
            }
            l => {
                let label = msg.get(at + 1..at + 1 + usize::from(l))?;
                labels.push(String::from_utf8_lossy(label).into_owned());
                at += 1 + usize::from(l);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_own_address_in_etc_hosts() {
        let hosts =
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n172.18.0.5\t6b31c86cdfc0\n";
        assert_eq!(
            own_address(hosts, "6b31c86cdfc0"),
            "172.18.0.5".parse().ok()
        );
        assert_eq!(
            own_address(hosts, "localhost"),
            None,
            "not a loopback address"
        );
        assert_eq!(own_address(hosts, "other"), None);
    }

    #[test]
    fn builds_reverse_names() {
        assert_eq!(
            reverse_name("172.18.0.5".parse().unwrap()),
            "5.0.18.172.in-addr.arpa"
        );
        assert!(reverse_name("2001:db8::1".parse().unwrap()).starts_with(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        ));
    }

    /// A response as a DNS server writes it: the question echoed, the answer's owner name a
    /// compression pointer to it, then the PTR name.
    fn response(id: u16, target: &str) -> Vec<u8> {
        let query = ptr_query(id, "172.18.0.5".parse().unwrap());
        let mut r = query.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1; // one answer
        r.extend_from_slice(&[0xc0, 12, 0, 12, 0, 1, 0, 0, 2, 88]);
        let mut data = Vec::new();
        for label in target.split('.') {
            data.push(label.len() as u8);
            data.extend_from_slice(label.as_bytes());
        }
        data.push(0);
        r.extend_from_slice(&(data.len() as u16).to_be_bytes());
        r.extend_from_slice(&data);
        r
    }

    #[test]
    fn reads_the_ptr_answer() {
        let r = response(7, "livecast-web-2.livecast_default");
        assert_eq!(
            ptr_answer(7, &r).as_deref(),
            Some("livecast-web-2.livecast_default")
        );
        assert_eq!(ptr_answer(8, &r), None, "another query's answer");
        let mut refused = r.clone();
        refused[3] = 0x83; // NXDOMAIN
        assert_eq!(ptr_answer(7, &refused), None);
        assert_eq!(ptr_answer(7, &r[..r.len() - 3]), None, "truncated");
    }

    #[tokio::test]
    async fn asks_a_server_over_udp() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(buf[..n].windows(7).any(|w| w == b"in-addr"));
            server
                .send_to(&response(id, "livecast_web_3.livecast_default"), peer)
                .await
                .unwrap();
        });
        let name = lookup(addr, "172.18.0.5".parse().unwrap()).await;
        assert_eq!(name.as_deref(), Some("livecast_web_3"));
    }
}
