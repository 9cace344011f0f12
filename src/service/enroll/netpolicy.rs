//! Conditional enrollment: the enrollment profile (and the profile-service
//! phases) only to clients on given networks. Behind a proxy, the client's
//! address comes from the one header the proxy writes (`X-Forwarded-For` by
//! default, or RFC 7239 `Forwarded`: `--forwarded-header`), and only when the
//! TCP peer is one of the configured trusted proxies; the rightmost address
//! that is not a trusted proxy is the client. The other header is ignored: a
//! proxy that appends to one passes the client's own copy of the other through
//! unchanged, so believing it would let a client name any address (and spend
//! another address's rate-limit budget).
//!
//! No HTTP types here: the HTTP layer hands in the values of the one header
//! this policy names (`ForwardedHeader::name`), read only when the peer is a
//! trusted proxy.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct NetPolicy {
    /// Enrollment allowed from these networks (empty: from anywhere).
    pub allowed: Vec<IpNet>,
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Which header those proxies write (the only one read).
    pub header: ForwardedHeader,
}

/// The header a trusted proxy writes the client's address into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (nginx, HAProxy, AWS ALB …).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client;proto=https, for=…`.
    Forwarded,
}

/// A setting that names no network or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    #[error("{0:?} is not x-forwarded-for or forwarded")]
    Header(String),
    #[error("{0:?} is not a network (CIDR such as 10.0.0.0/8) or an address")]
    Network(String),
}

impl ForwardedHeader {
    pub fn parse(s: &str) -> Result<ForwardedHeader, SettingError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(SettingError::Header(other.to_owned())),
        }
    }

    /// The header's name in lower case, as the HTTP layer looks it up.
    pub fn name(self) -> &'static str {
        match self {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        }
    }
}

/// Parse `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, SettingError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| SettingError::Network(s.to_owned()))
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl NetPolicy {
    pub fn new(allowed: &[String], trusted: &[String]) -> Result<NetPolicy, SettingError> {
        Ok(NetPolicy {
            allowed: allowed
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
            trusted_proxies: trusted
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
            header: ForwardedHeader::default(),
        })
    }

    /// Read the client's address from `header` only (see the module doc).
    pub fn with_header(mut self, header: ForwardedHeader) -> NetPolicy {
        self.header = header;
        self
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// The client's address: the peer, or (from a trusted proxy) the
    /// rightmost forwarded address that is not itself a trusted proxy.
    /// `forwarded(name)` gives the values of the request's header `name`
    /// (always `self.header.name()`); it is called only for a trusted peer.
    pub fn client_ip<'a, I>(&self, peer: IpAddr, forwarded: impl FnOnce(&'static str) -> I) -> IpAddr
    where
        I: IntoIterator<Item = &'a str>,
    {
        let peer = unmap(peer);
        if !self.trusted(peer) {
            return peer;
        }
        let mut chain: Vec<IpAddr> = Vec::new();
        let values = forwarded(self.header.name());
        match self.header {
            ForwardedHeader::Forwarded => {
                for v in values {
                    for part in v.split([',', ';']) {
                        if let Some(f) = part.trim().strip_prefix("for=").or_else(|| part.trim().strip_prefix("For=")) {
                            let f = f.trim_matches('"');
                            let f = f.strip_prefix('[').and_then(|x| x.split(']').next()).unwrap_or(f);
                            let f = if f.matches(':').count() == 1 {
                                f.split(':').next().unwrap_or(f)
                            } else {
                                f
                            };
                            if let Ok(ip) = f.parse() {
                                chain.push(ip);
                            }
                        }
                    }
                }
            }
            ForwardedHeader::XForwardedFor => {
                for v in values {
                    for part in v.split(',') {
                        if let Ok(ip) = part.trim().parse() {
                            chain.push(ip);
                        }
                    }
                }
            }
        }
        chain.into_iter().map(unmap).rev().find(|ip| !self.trusted(*ip)).unwrap_or(peer)
    }

    /// Whether enrollment is allowed from this request; Err names the address refused.
    pub fn check<'a, I>(&self, peer: IpAddr, forwarded: impl FnOnce(&'static str) -> I) -> Result<(), IpAddr>
    where
        I: IntoIterator<Item = &'a str>,
    {
        if self.allowed.is_empty() {
            return Ok(());
        }
        let ip = self.client_ip(peer, forwarded);
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            Ok(())
        } else {
            Err(ip)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's headers, as (lower-case name, value) pairs.
    struct H(Vec<(&'static str, &'static str)>);
    impl H {
        fn new() -> H {
            H(Vec::new())
        }
        /// Replace every value of `name` (as `HeaderMap::insert`).
        fn insert(&mut self, name: &'static str, value: &'static str) {
            self.0.retain(|(n, _)| *n != name);
            self.0.push((name, value));
        }
        fn get(&self) -> impl FnOnce(&'static str) -> Vec<&str> + '_ {
            move |name| self.0.iter().filter(|(n, _)| *n == name).map(|(_, v)| *v).collect()
        }
    }

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let p = NetPolicy::new(&["10.0.0.0/8".into(), "2001:db8::/32".into()], &["127.0.0.1".into()]).unwrap();
        let mut h = H::new();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check(lo, h.get()).is_err());
        h.insert("x-forwarded-for", "192.0.2.7, 10.1.2.3");
        assert_eq!(p.client_ip(lo, h.get()), "10.1.2.3".parse::<IpAddr>().unwrap());
        assert!(p.check(lo, h.get()).is_ok());
        // Not from a trusted proxy: the header is ignored.
        assert!(p.check("192.0.2.1".parse().unwrap(), h.get()).is_err());
        // A client's own `Forwarded` passed through a proxy that appends X-Forwarded-For
        // names nothing.
        h.insert("forwarded", "for=10.9.9.9");
        h.insert("x-forwarded-for", "192.0.2.7");
        assert_eq!(p.client_ip(lo, h.get()), "192.0.2.7".parse::<IpAddr>().unwrap());
        assert!(p.check(lo, h.get()).is_err());
        let p = p.with_header(ForwardedHeader::Forwarded);
        let mut h = H::new();
        h.insert("forwarded", "for=\"[2001:db8::1]:4711\";proto=https");
        h.insert("x-forwarded-for", "192.0.2.7");
        assert!(p.check(lo, h.get()).is_ok());
        assert!(NetPolicy::new(&["10.0.0.0/33".into()], &[]).is_err());
        assert!(NetPolicy::new(&[], &[]).unwrap().check(lo, H::new().get()).is_ok());
    }
}
