//! Where a webhook may point: the policy that keeps the fan-out from being turned against
//! the network it runs in (server-side request forgery: a subscription aimed at a cloud
//! metadata service, an admin port on loopback, a host of the internal network).
//!
//! - Scheme: `https` only, except for hosts listed in `fanout.webhook.allow_http_hosts`
//!   (compared with the URL's host as written, case-insensitively: a name or an IP literal;
//!   IPv6 literals in brackets, e.g. `[::1]`).
//! - Address: a destination whose address is loopback, link-local (169.254.0.0/16, where
//!   cloud metadata services answer; fe80::/10), private (10/8, 172.16/12, 192.168/16,
//!   fc00::/7, the deprecated site-local fec0::/10), shared (100.64.0.0/10, carrier-grade
//!   NAT) or reserved (0.0.0.0/8 "this network", 240.0.0.0/4) is refused unless it lies in
//!   one of the CIDR blocks of `fanout.webhook.allow_private_cidrs` (e.g. `127.0.0.1/32` for
//!   a receiver on the same host, `10.20.0.0/16` for a desk network). Unspecified
//!   (0.0.0.0, ::), multicast and broadcast addresses are refused always: they are never a
//!   webhook receiver. IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64
//!   (64:ff9b::/96) IPv6 addresses are judged by the IPv4 address inside.
//!
//! Checked twice: when a subscription is made (configuration and admin API: the URL's
//! scheme, and its host when it is an IP literal or `localhost`), and on every connection
//! ([`PolicyResolver`], the HTTP client's resolver): a name is resolved and only its
//! allowed addresses are connected to, so a name that resolved to a public address when
//! the subscription was made and to 169.254.169.254 later (DNS rebinding) is not
//! followed. Redirects are never followed, and proxy environment variables are ignored
//! (through a proxy the address checked would not be the one connected to).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::settings::WebhookSettings;

/// The class of an address, as far as this policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    LinkLocal,
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    Shared,
    Reserved,
    Unspecified,
    Multicast,
    Broadcast,
}

impl AddressClass {
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Private => "private",
            AddressClass::Shared => "shared (carrier-grade NAT)",
            AddressClass::Reserved => "reserved",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
        }
    }

    /// May an allow-list entry open this class? Never for addresses that cannot be a
    /// receiver.
    fn may_be_allowed(self) -> bool {
        !matches!(
            self,
            AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Broadcast
        )
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_private() {
        AddressClass::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressClass::Shared
    } else if a == 0 || a >= 240 {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-compatible (::a.b.c.d, deprecated) and the NAT64 well-known prefix.
    if seg[..6] == [0; 6] || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let o = ip.octets();
        return classify_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    match seg[0] {
        s if s & 0xff00 == 0xff00 => AddressClass::Multicast,
        s if s & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => AddressClass::Private,
        s if s & 0xfe00 == 0xfc00 => AddressClass::Private,
        _ => AddressClass::Public,
    }
}

/// The configured policy, compiled.
#[derive(Clone, Debug, Default)]
pub struct DestinationPolicy {
    http_hosts: Vec<String>,
    private: Vec<IpNet>,
}

impl DestinationPolicy {
    /// The policy of the settings; entries that do not parse are left out (and reported by
    /// [`DestinationPolicy::problems`]).
    pub fn new(settings: &WebhookSettings) -> DestinationPolicy {
        DestinationPolicy {
            http_hosts: settings
                .allow_http_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            private: settings
                .allow_private_cidrs
                .iter()
                .filter_map(|c| parse_cidr(c).ok())
                .collect(),
        }
    }

    /// The settings' problems, each naming its key.
    pub fn problems(settings: &WebhookSettings) -> Vec<String> {
        let mut p = Vec::new();
        for (i, c) in settings.allow_private_cidrs.iter().enumerate() {
            if let Err(e) = parse_cidr(c) {
                p.push(format!("fanout.webhook.allow_private_cidrs[{i}]: {e}"));
            }
        }
        for (i, h) in settings.allow_http_hosts.iter().enumerate() {
            if h.trim().is_empty() || h.contains(['/', ' ', '@']) {
                p.push(format!(
                    "fanout.webhook.allow_http_hosts[{i}]: a host name or IP literal expected"
                ));
            }
        }
        p
    }

    /// May a connection go to this address?
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), AddressClass> {
        // An IPv4-mapped address is matched against IPv4 blocks.
        let ip = ip.to_canonical();
        let class = classify(ip);
        match class {
            AddressClass::Public => Ok(()),
            c if c.may_be_allowed() && self.private.iter().any(|n| n.contains(&ip)) => Ok(()),
            c => Err(c),
        }
    }

    /// Checks a webhook URL as far as can be told without resolving it: the scheme, and
    /// the host when it is an address or `localhost`.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let u = reqwest::Url::parse(url).map_err(|_| "not a URL".to_string())?;
        // As the URL parser normalises it: IPv4 in dotted decimal, IPv6 in brackets.
        let written = u
            .host_str()
            .ok_or("the URL has no host")?
            .to_ascii_lowercase();
        match u.scheme() {
            "https" => {}
            "http" if self.http_hosts.contains(&written) => {}
            "http" => {
                return Err(format!(
                    "http is allowed only for the hosts of fanout.webhook.allow_http_hosts, \
                     and `{written}` is not one; use https"
                ));
            }
            _ => return Err("an https URL expected".into()),
        }
        let literal = written
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&written);
        let ip = match literal.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                let d = literal.trim_end_matches('.');
                if d == "localhost" || d.ends_with(".localhost") {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    return Ok(());
                }
            }
        };
        self.check_ip(ip).map_err(|class| {
            format!(
                "`{written}` is a {} address; allowed only within fanout.webhook.allow_private_cidrs",
                class.as_str()
            )
        })
    }
}

fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not a CIDR block (e.g. 10.20.0.0/16) or an address"))
}

/// The HTTP client's resolver: the system's (getaddrinfo, on a blocking thread), keeping
/// only the addresses the policy allows. A name with none left fails to connect.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: Arc<DestinationPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<DestinationPolicy>) -> PolicyResolver {
        PolicyResolver { policy }
    }
}

/// Refused by the destination policy (the error a connection attempt reports).
#[derive(Debug, thiserror::Error)]
#[error("every address of the webhook host is refused by the destination policy ({0})")]
pub struct AddressRefused(&'static str);

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(class) => {
                        refused = Some(class);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let class = refused.map_or("no address", AddressClass::as_str);
                tracing::warn!(class, "webhook host refused by the destination policy");
                return Err(Box::new(AddressRefused(class)) as _);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy(http: &[&str], cidrs: &[&str]) -> DestinationPolicy {
        let settings = WebhookSettings {
            allow_http_hosts: http.iter().map(|s| s.to_string()).collect(),
            allow_private_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            ..WebhookSettings::default()
        };
        assert!(DestinationPolicy::problems(&settings).is_empty());
        DestinationPolicy::new(&settings)
    }

    #[test]
    fn v4_classes() {
        use AddressClass::*;
        for (a, c) in [
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("169.254.169.254", LinkLocal),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("172.32.0.1", Public),
            ("192.168.1.1", Private),
            ("100.64.0.1", Shared),
            ("100.127.255.255", Shared),
            ("100.128.0.1", Public),
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Reserved),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Broadcast),
            ("224.0.0.1", Multicast),
            ("8.8.8.8", Public),
            ("93.184.215.14", Public),
        ] {
            assert_eq!(classify(ip(a)), c, "{a}");
        }
    }

    #[test]
    fn v6_classes_and_embedded_v4() {
        use AddressClass::*;
        for (a, c) in [
            ("::1", Loopback),
            ("::", Unspecified),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("ff02::1", Multicast),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:8.8.8.8", Public),
            ("::10.0.0.1", Private),
            ("64:ff9b::a9fe:a9fe", LinkLocal),
            ("2001:db8::1", Public),
            ("2a00:1450::1", Public),
        ] {
            assert_eq!(classify(ip(a)), c, "{a}");
        }
    }

    #[test]
    fn the_allow_list_opens_only_what_it_names() {
        let p = policy(&[], &["127.0.0.1/32", "10.20.0.0/16", "fd00::/8"]);
        assert!(p.check_ip(ip("127.0.0.1")).is_ok());
        assert!(p.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert_eq!(
            p.check_ip(ip("::ffff:127.0.0.2")),
            Err(AddressClass::Loopback)
        );
        assert_eq!(p.check_ip(ip("127.0.0.2")), Err(AddressClass::Loopback));
        assert!(p.check_ip(ip("10.20.3.4")).is_ok());
        assert_eq!(p.check_ip(ip("10.21.0.1")), Err(AddressClass::Private));
        assert!(p.check_ip(ip("fd00::5")).is_ok());
        assert_eq!(
            p.check_ip(ip("169.254.169.254")),
            Err(AddressClass::LinkLocal)
        );
        let all = policy(&[], &["0.0.0.0/0", "::/0"]);
        assert_eq!(all.check_ip(ip("0.0.0.0")), Err(AddressClass::Unspecified));
        assert_eq!(all.check_ip(ip("224.0.0.1")), Err(AddressClass::Multicast));
        assert_eq!(
            all.check_ip(ip("255.255.255.255")),
            Err(AddressClass::Broadcast)
        );
        assert!(all.check_ip(ip("192.168.0.1")).is_ok());
        // A bare address is a /32 (or /128).
        assert!(policy(&[], &["::1"]).check_ip(ip("::1")).is_ok());
    }

    #[test]
    fn the_scheme_rule() {
        let p = DestinationPolicy::default();
        assert!(p.check_url("https://desk.example/hook").is_ok());
        assert!(
            p.check_url("http://desk.example/hook")
                .unwrap_err()
                .contains("https")
        );
        assert!(p.check_url("ftp://desk.example/").is_err());
        assert!(
            p.check_url("https://127.0.0.1/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://[::1]:8443/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://localhost/")
                .unwrap_err()
                .contains("loopback")
        );
        assert!(
            p.check_url("https://169.254.169.254/latest/meta-data/")
                .unwrap_err()
                .contains("link-local")
        );
        assert!(
            p.check_url("https://[::ffff:a9fe:a9fe]/")
                .unwrap_err()
                .contains("link-local")
        );
        let p = policy(&["127.0.0.1", "Desk.Local"], &["127.0.0.0/8"]);
        assert!(p.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(p.check_url("http://desk.local/hook").is_ok());
        assert!(p.check_url("http://127.0.0.2/hook").is_err());
        assert!(p.check_url("https://127.0.0.2/hook").is_ok());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let settings = WebhookSettings {
            allow_private_cidrs: vec!["10.0.0.0/33".into(), "nonsense".into()],
            allow_http_hosts: vec!["http://x/".into()],
            ..WebhookSettings::default()
        };
        let p = DestinationPolicy::problems(&settings).join("\n");
        assert!(p.contains("allow_private_cidrs[0]") && p.contains("allow_private_cidrs[1]"));
        assert!(p.contains("allow_http_hosts[0]"));
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        let refusing = PolicyResolver::new(Arc::new(DestinationPolicy::default()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(refusing.resolve(name).await.is_err());
        let allowing = PolicyResolver::new(Arc::new(policy(&[], &["127.0.0.0/8", "::1/128"])));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let addrs: Vec<_> = allowing.resolve(name).await.unwrap().collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
