//! `--trusted-proxy`: which peers may say who the client is, and reading that from
//! `X-Forwarded-For` or `Forwarded` (RFC 7239). Pure: the connection thread hands in
//! the socket's peer address and the request's headers.
//!
//! Only a connection from a trusted proxy is believed, and only the part of the chain
//! that trusted proxies appended: walking the addresses from the right, the first one
//! that is not a trusted proxy is the client. A client cannot pose as someone else
//! by sending its own `X-Forwarded-For`, because its proxy appends the real address
//! after whatever the client wrote.

use std::net::{IpAddr, SocketAddr};

/// An address or a network (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(v: &str) -> Result<Net, String> {
        let v = v.trim();
        let bad = || format!("{v:?} is not an IP address or network (e.g. 10.0.0.1 or 10.0.0.0/8)");
        let (addr, prefix) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (v, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Net { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) is `10.0.0.1`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose forwarding headers are believed (empty: none, the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Net>);

impl TrustedProxies {
    pub fn add(&mut self, v: &str) -> Result<(), String> {
        self.0.push(Net::parse(v)?);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request that came from `peer` with these headers
    /// (`name`, `value`). The port is the one `Forwarded` names, else 0: proxies do not
    /// pass the client's port on.
    pub fn client<'a>(
        &self,
        peer: SocketAddr,
        headers: impl Iterator<Item = (&'a str, &'a str)> + Clone,
    ) -> SocketAddr {
        if !self.trusts(peer.ip()) {
            return peer;
        }
        // `Forwarded` is the standard; `X-Forwarded-For` what nginx and most others send.
        let forwarded: Vec<Option<SocketAddr>> = headers
            .clone()
            .filter(|(n, _)| n.eq_ignore_ascii_case("forwarded"))
            .flat_map(|(_, v)| v.split(','))
            .map(forwarded_for)
            .collect();
        let chain = if forwarded.is_empty() {
            headers
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .flat_map(|(_, v)| v.split(','))
                .map(|a| parse_node(a.trim()))
                .collect()
        } else {
            forwarded
        };
        let mut client = peer;
        for hop in chain.iter().rev() {
            // An unreadable hop (`unknown`, an obfuscated name) ends the walk: what is
            // left of it cannot be attributed.
            let Some(addr) = hop else {
                break;
            };
            client = *addr;
            if !self.trusts(addr.ip()) {
                break;
            }
        }
        client
    }
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.60;proto=http`).
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| parse_node(v.trim().trim_matches('"')))
            .flatten()
    })
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `[2001:db8::1]:4711`.
fn parse_node(v: &str) -> Option<SocketAddr> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(SocketAddr::new(canonical(ip), 0));
    }
    let a: SocketAddr = v.parse().ok()?;
    Some(SocketAddr::new(canonical(a.ip()), a.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        let mut t = TrustedProxies::default();
        for p in list {
            t.add(p).unwrap();
        }
        t
    }

    fn client(t: &TrustedProxies, peer: &str, headers: &[(&str, &str)]) -> String {
        t.client(peer.parse().unwrap(), headers.iter().copied())
            .to_string()
    }

    #[test]
    fn networks() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains("10.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!n.contains("11.0.0.1".parse().unwrap()));
        assert!(Net::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Net::parse("fd00::/8")
            .unwrap()
            .contains("fd12::1".parse().unwrap()));
        assert!(Net::parse("10.0.0.0/33").is_err());
        assert!(Net::parse("proxy.example").is_err());
    }

    #[test]
    fn headers_count_only_from_trusted_peers_and_only_their_part() {
        let t = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let xff = [("X-Forwarded-For", "198.51.100.7")];
        assert_eq!(client(&t, "127.0.0.1:5000", &xff), "198.51.100.7:0");
        assert_eq!(client(&t, "192.0.2.1:5000", &xff), "192.0.2.1:5000");
        assert_eq!(
            client(&TrustedProxies::default(), "127.0.0.1:5000", &xff),
            "127.0.0.1:5000"
        );
        // The client wrote a header of its own; its proxy appended the real address.
        let spoofed = [("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.2")];
        assert_eq!(client(&t, "127.0.0.1:1", &spoofed), "198.51.100.7:0");
        // Two header lines are one list.
        let split = [
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-For", "198.51.100.7"),
        ];
        assert_eq!(client(&t, "127.0.0.1:1", &split), "198.51.100.7:0");
        assert_eq!(client(&t, "127.0.0.1:1", &[]), "127.0.0.1:1");
        assert_eq!(
            client(&t, "127.0.0.1:1", &[("X-Forwarded-For", "junk")]),
            "127.0.0.1:1"
        );
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for() {
        let t = proxies(&["127.0.0.1"]);
        let h = [
            (
                "Forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("X-Forwarded-For", "198.51.100.7"),
        ];
        assert_eq!(client(&t, "127.0.0.1:1", &h), "[2001:db8:cafe::17]:4711");
        assert_eq!(
            client(&t, "127.0.0.1:1", &[("Forwarded", "for=unknown")]),
            "127.0.0.1:1"
        );
    }
}
