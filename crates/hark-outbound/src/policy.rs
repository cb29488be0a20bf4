//! The SSRF policy: which addresses and hosts outbound requests may reach.
//!
//! By default every address that is not plainly public is refused: loopback, private,
//! link-local, unique-local, CGNAT, unspecified, broadcast, multicast, reserved and
//! documentation ranges, and the IPv6 forms that embed such an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64, 6to4). The check runs on the addresses a host
//! name resolves to, right before connecting (see [`crate::client`]), so a name that
//! is re-bound to a private address between two look-ups is still refused.

use crate::error::OutboundError;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where outbound requests may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Allow every address, private or not (development installs only).
    pub allow_private: bool,
    /// Networks that are always allowed, even inside a refused range.
    pub allowlist: Vec<IpNet>,
    /// Host names (as written in the URL, compared case-insensitively, without a
    /// trailing dot) that are always allowed, whatever they resolve to.
    pub allowed_hosts: Vec<String>,
}

impl OutboundPolicy {
    /// The default: only public addresses.
    pub fn deny_private() -> Self {
        Self::default()
    }

    /// Whether `ip` may be connected to.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), OutboundError> {
        if self.allow_private || self.is_allowlisted(ip) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            None => Ok(()),
            Some(reason) => Err(OutboundError::Forbidden(format!(
                "{ip} is a {reason} address"
            ))),
        }
    }

    /// Whether `host` (a URL's host) is named in `allowed_hosts`.
    pub fn is_allowed_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        !host.is_empty()
            && self
                .allowed_hosts
                .iter()
                .any(|allowed| normalize_host(allowed).eq_ignore_ascii_case(host))
    }

    fn is_allowlisted(&self, ip: IpAddr) -> bool {
        let canonical = canonical(ip);
        self.allowlist
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    }

    /// Resolves `host` and vets every address it resolves to: the whole name is
    /// refused if any one of them is forbidden (a name that mixes public and private
    /// addresses is not trusted). Returned addresses carry `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, OutboundError> {
        let bare = normalize_host(host);
        let bare = bare
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(bare);
        if bare.is_empty() {
            return Err(OutboundError::BadUrl("the URL has no host".into()));
        }
        let addrs: Vec<SocketAddr> = if let Ok(ip) = bare.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, port)]
        } else {
            tokio::net::lookup_host((bare, port))
                .await
                .map_err(|e| OutboundError::Network(format!("cannot resolve {bare}: {e}")))?
                .collect()
        };
        if addrs.is_empty() {
            return Err(OutboundError::Network(format!(
                "{bare} resolves to no address"
            )));
        }
        if !self.is_allowed_host(bare) {
            for addr in &addrs {
                self.check_ip(addr.ip()).map_err(|e| match e {
                    OutboundError::Forbidden(why) => {
                        OutboundError::Forbidden(format!("{bare} resolves to {why}"))
                    }
                    other => other,
                })?;
            }
        }
        Ok(addrs)
    }
}

fn normalize_host(host: &str) -> &str {
    host.strip_suffix('.').unwrap_or(host)
}

/// The IPv4 address an IPv4-mapped IPv6 address stands for, or the address itself.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let n = Ipv6Addr::new(
        net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7],
    );
    (u128::from(ip) & mask) == (u128::from(n) & mask)
}

/// Why `ip` is refused by default, or `None` for a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn v4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "\"this network\""),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([255, 255, 255, 255], 32, "broadcast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // Forms that embed an IPv4 address are judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_reason(v4);
    }
    let octets = ip.octets();
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        // NAT64: the gateway connects to the embedded IPv4 address.
        let v4 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
        return v4_reason(v4);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        // 6to4: the embedded IPv4 address is the tunnel end point.
        let v4 = Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5]);
        return v4_reason(v4);
    }
    const RANGES: &[([u16; 8], u32, &str)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible"),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "local NAT64"),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard-only"),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, "IETF protocol"),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, "documentation"),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, "documentation"),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, "unique-local"),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local"),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local"),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_refuses_non_public_addresses() {
        let policy = OutboundPolicy::default();
        for bad in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.2.5",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
        ] {
            assert!(
                matches!(policy.check_ip(ip(bad)), Err(OutboundError::Forbidden(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn default_allows_public_addresses() {
        let policy = OutboundPolicy::default();
        for good in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.216.34",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(policy.check_ip(ip(good)).is_ok(), "{good} must be allowed");
        }
    }

    #[test]
    fn allowlist_and_allow_private() {
        let policy = OutboundPolicy {
            allowlist: vec!["127.0.0.1/32".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..OutboundPolicy::default()
        };
        assert!(policy.check_ip(ip("127.0.0.1")).is_ok());
        assert!(policy.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert!(policy.check_ip(ip("fd12::1")).is_ok());
        assert!(policy.check_ip(ip("127.0.0.2")).is_err());
        assert!(policy.check_ip(ip("::1")).is_err());
        let open = OutboundPolicy {
            allow_private: true,
            ..OutboundPolicy::default()
        };
        assert!(open.check_ip(ip("10.0.0.1")).is_ok());
        assert!(open.check_ip(ip("::1")).is_ok());
    }

    #[test]
    fn allowed_hosts_match_case_insensitively() {
        let policy = OutboundPolicy {
            allowed_hosts: vec!["Media.Internal".into()],
            ..OutboundPolicy::default()
        };
        assert!(policy.is_allowed_host("media.internal"));
        assert!(policy.is_allowed_host("MEDIA.internal."));
        assert!(!policy.is_allowed_host("other.internal"));
        assert!(!policy.is_allowed_host(""));
    }

    #[tokio::test]
    async fn resolve_vets_every_address() {
        let policy = OutboundPolicy::default();
        assert!(matches!(
            policy.resolve("localhost", 80).await,
            Err(OutboundError::Forbidden(_))
        ));
        assert!(matches!(
            policy.resolve("[::1]", 80).await,
            Err(OutboundError::Forbidden(_))
        ));
        let allowed = OutboundPolicy {
            allowed_hosts: vec!["localhost".into()],
            ..OutboundPolicy::default()
        };
        let addrs = allowed.resolve("localhost", 8080).await.unwrap();
        assert!(!addrs.is_empty());
        assert!(addrs
            .iter()
            .all(|a| a.port() == 8080 && a.ip().is_loopback()));
    }
}
