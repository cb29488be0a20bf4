//! Client addresses as Hark's per-address limits count them (the sign-in throttle and
//! the budget of unknown API keys): IPv4 as is, IPv6 by its /64.

use std::net::IpAddr;

/// The key under which `addr` is counted: IPv4 as is (an IPv4-mapped IPv6 address
/// too), IPv6 by its /64 (one customer's allocation; a single host can use the whole
/// prefix, so counting each address would let it multiply any limit).
pub fn address_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("v6");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("v6");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("mapped");
        assert_eq!(address_key(mapped), "192.0.2.7");
        let v4: IpAddr = "192.0.2.8".parse().expect("v4");
        assert_eq!(address_key(v4), "192.0.2.8");
    }
}
