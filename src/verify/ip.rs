//! IP allowlists (single addresses, CIDRs, `a-b` ranges) and the client address behind trusted
//! proxies.
//!
//! The client address is the TCP peer unless the peer is a trusted proxy; only then is
//! `X-Forwarded-For` read, right to left, skipping trusted proxies. The left-most entries are
//! written by the client and are never trusted on their own.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// The address a request is attributed to. `Unknown` when a trusted proxy forwarded an entry
/// that is not an IP address: such a request passes no non-empty allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAddr {
    Known(IpAddr),
    Unknown,
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Known(ip) => write!(f, "{ip}"),
            ClientAddr::Unknown => f.write_str("unknown"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Single(IpAddr),
    Net(IpNet),
    Range(IpAddr, IpAddr),
}

/// A parsed allowlist. An empty list allows every address; callers decide whether an empty
/// list can exist (an omitted `[allow]` section), so "allow all" is never implicit in a typo.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<Entry>,
}

impl AllowList {
    /// Parses every item, returning `(index, reason)` for each one that is invalid.
    pub fn parse(items: &[String]) -> Result<Self, Vec<(usize, String)>> {
        let mut entries = Vec::with_capacity(items.len());
        let mut errors = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match parse_entry(item.trim()) {
                Ok(entry) => entries.push(entry),
                Err(reason) => errors.push((i, reason)),
            }
        }
        if errors.is_empty() {
            Ok(Self { entries })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether `client` may pass. An empty list allows everyone, including an unknown address.
    pub fn allows(&self, client: ClientAddr) -> bool {
        if self.entries.is_empty() {
            return true;
        }
        let ClientAddr::Known(ip) = client else {
            return false;
        };
        self.contains(ip)
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.entries.iter().any(|entry| match entry {
            Entry::Single(single) => *single == ip,
            Entry::Net(net) => net.contains(&ip),
            Entry::Range(start, end) => match (start, end, ip) {
                (IpAddr::V4(s), IpAddr::V4(e), IpAddr::V4(ip)) => {
                    (u32::from(*s)..=u32::from(*e)).contains(&u32::from(ip))
                }
                (IpAddr::V6(s), IpAddr::V6(e), IpAddr::V6(ip)) => {
                    (u128::from(*s)..=u128::from(*e)).contains(&u128::from(ip))
                }
                _ => false,
            },
        })
    }
}

fn parse_entry(item: &str) -> Result<Entry, String> {
    if item.is_empty() {
        return Err("empty address".to_owned());
    }
    if item.contains('/') {
        let net = IpNet::from_str(item)
            .map_err(|_| format!("`{item}` is not a valid CIDR (expected e.g. 10.0.0.0/8)"))?;
        // Host bits are ignored, as every CIDR tool does; the network is what is stored.
        let net = net.trunc();
        return Ok(Entry::Net(net));
    }
    if let Some((start, end)) = item.split_once('-') {
        let start = parse_ip(start.trim())?;
        let end = parse_ip(end.trim())?;
        return match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => Ok(Entry::Range(start, end)),
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => Ok(Entry::Range(start, end)),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err(format!("range `{item}` ends before it starts"))
            }
            _ => Err(format!("range `{item}` mixes IPv4 and IPv6")),
        };
    }
    Ok(Entry::Single(parse_ip(item)?))
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(text)
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("`{text}` is not an IP address (host names are not supported)"))
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(AllowList);

impl TrustedProxies {
    pub fn parse(items: &[String]) -> Result<Self, Vec<(usize, String)>> {
        AllowList::parse(items).map(Self)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        !self.0.is_empty() && self.0.contains(ip)
    }

    /// The client address of a request from `peer` carrying these `X-Forwarded-For` header
    /// values (each header line as received, in order).
    pub fn client_addr<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> ClientAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return ClientAddr::Known(peer);
        }
        // Several header lines are one comma-separated list in order; walk it from the right.
        let lines: Vec<&[u8]> = forwarded_for.into_iter().collect();
        let mut last_trusted = peer;
        for line in lines.iter().rev() {
            for entry in line.rsplit(|b| *b == b',') {
                let entry = entry.trim_ascii();
                if entry.is_empty() {
                    continue;
                }
                match forwarded_ip(entry) {
                    Some(ip) if self.trusts(ip) => last_trusted = ip,
                    Some(ip) => return ClientAddr::Known(ip),
                    None => return ClientAddr::Unknown,
                }
            }
        }
        // Every hop is a trusted proxy: the request started inside the trusted network.
        ClientAddr::Known(last_trusted)
    }
}

/// Parses one `X-Forwarded-For` entry: a bare address, `ipv4:port` or `[ipv6]:port`.
fn forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = IpAddr::from_str(text) {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return IpAddr::from_str(inside).ok().map(|ip| ip.to_canonical());
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    IpAddr::from_str(host).ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> AllowList {
        AllowList::parse(&items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("valid list")
    }

    fn ip(s: &str) -> ClientAddr {
        ClientAddr::Known(s.parse().expect("ip"))
    }

    #[test]
    fn single_cidr_and_range_match_like_gwt() {
        let l = list(&[
            "3.251.12.205",
            "2.2.3.0/24",
            "3.2.1.1-3.2.1.10",
            "2001:db8::1",
            "2002:db8::/127",
            "fe80::1-fe80::5",
        ]);
        for (addr, allowed) in [
            ("3.251.12.205", true),
            ("3.251.12.206", false),
            ("2.2.3.0", true),
            ("2.2.3.255", true),
            ("2.2.4.0", false),
            ("2.2.2.255", false),
            ("3.2.1.1", true),
            ("3.2.1.10", true),
            ("3.2.1.11", false),
            ("3.2.1.0", false),
            ("2001:db8::1", true),
            ("2001:db8::2", false),
            ("2002:db8::1", true),
            ("2002:db8::2", false),
            ("fe80::5", true),
            ("fe80::6", false),
            ("::ffff:3.251.12.205", true),
        ] {
            assert_eq!(l.allows(ip(addr)), allowed, "{addr}");
        }
    }

    #[test]
    fn a_single_address_is_exactly_that_address() {
        let l = list(&["10.0.0.1"]);
        assert!(l.allows(ip("10.0.0.1")));
        assert!(!l.allows(ip("10.0.0.2")));
        assert!(!l.allows(ip("10.0.0.0")));
    }

    #[test]
    fn empty_list_allows_all_and_unknown_fails_non_empty_lists() {
        assert!(AllowList::default().allows(ClientAddr::Unknown));
        assert!(!list(&["10.0.0.0/8"]).allows(ClientAddr::Unknown));
    }

    #[test]
    fn invalid_entries_are_all_reported() {
        let errors = AllowList::parse(&[
            "example.org".to_owned(),
            "10.0.0.0/33".to_owned(),
            "10.0.0.1".to_owned(),
            "10.0.0.9-10.0.0.1".to_owned(),
            "10.0.0.1-::1".to_owned(),
            "".to_owned(),
        ])
        .expect_err("invalid");
        let indices: Vec<usize> = errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indices, vec![0, 1, 3, 4, 5]);
        assert!(errors[0].1.contains("host names"));
    }

    fn proxies(items: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("valid")
    }

    fn client(p: &TrustedProxies, peer: &str, xff: &[&str]) -> ClientAddr {
        p.client_addr(
            peer.parse().expect("peer"),
            xff.iter().map(|s| s.as_bytes()),
        )
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "203.0.113.9", &["1.2.3.4"]), ip("203.0.113.9"));
        assert_eq!(
            client(&TrustedProxies::default(), "10.0.0.1", &["1.2.3.4"]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn right_most_untrusted_entry_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client spoofed the left-most entry; the proxy appended the real address.
        assert_eq!(
            client(&p, "10.0.0.1", &["3.251.12.205, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // A chain of trusted proxies is skipped.
        assert_eq!(
            client(&p, "10.0.0.1", &["198.51.100.7, 10.0.0.2", "10.0.0.3"]),
            ip("198.51.100.7")
        );
        // Ports and brackets are tolerated.
        assert_eq!(
            client(&p, "10.0.0.1", &["198.51.100.7:5555"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client(&p, "10.0.0.1", &["[2001:db8::7]:443"]),
            ip("2001:db8::7")
        );
        // No header: the proxy itself.
        assert_eq!(client(&p, "10.0.0.1", &[]), ip("10.0.0.1"));
        // Only trusted hops: the left-most trusted one.
        assert_eq!(client(&p, "10.0.0.1", &["10.0.0.9"]), ip("10.0.0.9"));
    }

    #[test]
    fn garbage_behind_a_trusted_proxy_is_unknown() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            client(&p, "10.0.0.1", &["1.2.3.4, not-an-ip"]),
            ClientAddr::Unknown
        );
    }
}
