//! The client address that per-address abuse limits count against
//! (registrations per hour, wrong codes per address): the TCP peer, or, when
//! the peer is a trusted proxy (`TRUSTED_PROXIES`), the last address of
//! `X-Forwarded-For` that is not itself a trusted proxy. Only a trusted
//! proxy's header is believed: anybody else could name any address.

use std::net::IpAddr;

/// The address a connection's limits count against.
///
/// `forwarded_for` are the `X-Forwarded-For` header values in the order they
/// came (a proxy appends the address it saw to the right). Walking from the
/// right, trusted proxies are skipped; the first other address is the
/// client. When the header holds only trusted proxies, or an entry that is
/// not an address is met first, the peer itself is used.
pub fn client_address(peer: IpAddr, forwarded_for: &[String], trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return peer;
    }
    let entries = forwarded_for
        .iter()
        .flat_map(|h| h.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let entries: Vec<&str> = entries.collect();
    for entry in entries.into_iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(a) if trusted.contains(&a.to_canonical()) => continue,
            Ok(a) => return a.to_canonical(),
            Err(_) => return peer,
        }
    }
    peer
}

/// Parses `TRUSTED_PROXIES`: comma-separated IP addresses.
pub fn parse_list(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<IpAddr>()
                .map(|a| a.to_canonical())
                .map_err(|_| format!("`{e}` is not an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = [ip("10.0.0.1")];
        assert_eq!(
            client_address(ip("203.0.113.7"), &xff(&["198.51.100.1"]), &trusted),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(ip("203.0.113.7"), &xff(&["198.51.100.1"]), &[]),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_last_untrusted_entry_wins() {
        let trusted = [ip("10.0.0.1"), ip("10.0.0.2")];
        // A client forging an entry on the left cannot choose its address.
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &xff(&["1.1.1.1, 198.51.100.9", "10.0.0.2"]),
                &trusted
            ),
            ip("198.51.100.9")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &xff(&["10.0.0.2"]), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &[], &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &xff(&["1.1.1.1, junk"]), &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_address(ip("::ffff:10.0.0.1"), &xff(&["2001:db8::5"]), &trusted),
            ip("2001:db8::5")
        );
    }

    #[test]
    fn the_list_parses_or_names_the_bad_entry() {
        assert_eq!(
            parse_list(" 10.0.0.1, ::1 ,"),
            Ok(vec![ip("10.0.0.1"), ip("::1")])
        );
        assert!(parse_list("10.0.0.1,nginx").unwrap_err().contains("nginx"));
    }
}
