//! Destination filtering: which IP addresses and host names a webhook must
//! not reach, and the DNS resolver that drops such addresses before reqwest
//! connects.
//!
//! reqwest connects only to the addresses that [`FilteringResolver`] returns,
//! so a host name cannot lead the request to a forbidden address, even if its
//! DNS answer changes between two lookups. reqwest skips the resolver for IP
//! literal hosts, so `parse_destination` in the parent module checks those
//! with the same [`classify_address`].

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// IPv4 addresses of cloud metadata services. 169.254.169.254 is the instance
/// metadata address of AWS EC2, Azure, Google Compute Engine and other
/// clouds. 169.254.170.2 is the AWS ECS task credentials endpoint,
/// 169.254.170.23 the AWS EKS Pod Identity agent, and 100.100.100.200 the
/// Alibaba Cloud ECS metadata service.
const METADATA_IPV4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
];

/// IPv6 addresses of cloud metadata services. `fd00:ec2::254` is the AWS EC2
/// instance metadata address and `fd00:ec2::23` the AWS EKS Pod Identity
/// agent.
const METADATA_IPV6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x23),
];

/// Host names of cloud metadata services. Google Compute Engine VMs resolve
/// both `metadata.google.internal` and the short form `metadata`.
///
/// NOTE: other providers publish only addresses. Any other name that resolves
/// to a metadata address is rejected after resolution instead.
const METADATA_NAMES: [&str; 2] = ["metadata.google.internal", "metadata"];

/// Address range or kind of host name that a webhook must not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForbiddenRange {
    /// 127.0.0.0/8 and `::1`, and the names `localhost` and `*.localhost`.
    Loopback,
    /// RFC 1918 (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16), IPv6
    /// unique-local fc00::/7 and the deprecated site-local fec0::/10.
    Private,
    /// 100.64.0.0/10, the carrier-grade NAT space of RFC 6598.
    CarrierGradeNat,
    /// 0.0.0.0/8 and `::`. Linux connects 0.0.0.0 to the local host.
    Unspecified,
    /// 169.254.0.0/16 and fe80::/10.
    LinkLocal,
    /// 224.0.0.0/4 and ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// A cloud instance metadata address or name, which serves credentials
    /// of the machine the service runs on.
    CloudMetadata,
}

impl ForbiddenRange {
    /// Returns true if `channels.webhook.allow_loopback = true` permits this
    /// range. Loopback, private, carrier-grade NAT and unspecified addresses
    /// host development receivers. The other ranges never host a webhook
    /// receiver, so they stay forbidden.
    pub fn allowed_by_allow_loopback(self) -> bool {
        matches!(
            self,
            ForbiddenRange::Loopback
                | ForbiddenRange::Private
                | ForbiddenRange::CarrierGradeNat
                | ForbiddenRange::Unspecified
        )
    }

    fn description(self) -> &'static str {
        match self {
            ForbiddenRange::Loopback => "a loopback address",
            ForbiddenRange::Private => "a private address",
            ForbiddenRange::CarrierGradeNat => "a carrier-grade NAT address",
            ForbiddenRange::Unspecified => "an unspecified address",
            ForbiddenRange::LinkLocal => "a link-local address",
            ForbiddenRange::Multicast => "a multicast address",
            ForbiddenRange::Broadcast => "the broadcast address",
            ForbiddenRange::CloudMetadata => "a cloud metadata endpoint",
        }
    }
}

/// Prints the range and the setting that governs it, e.g. `a loopback
/// address, allowed only with `channels.webhook.allow_loopback = true``.
impl fmt::Display for ForbiddenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.allowed_by_allow_loopback() {
            write!(
                f,
                "{}, allowed only with `channels.webhook.allow_loopback = true`",
                self.description()
            )
        } else {
            write!(f, "{}, never allowed", self.description())
        }
    }
}

/// A webhook destination that the channel rejects. Messages name the host or
/// address, never the URL path or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationForbidden {
    /// The URL's host is an IP literal in a forbidden range.
    #[error("{address} is {range}")]
    Address {
        address: IpAddr,
        range: ForbiddenRange,
    },

    /// The URL's host is a forbidden name, rejected before any DNS lookup.
    #[error("host {host} is {range}")]
    Name { host: String, range: ForbiddenRange },

    /// Every address that the host name resolved to is forbidden.
    #[error("host {host} resolves only to forbidden addresses: {}", list_addresses(.addresses))]
    Resolved {
        host: String,
        addresses: Vec<(IpAddr, ForbiddenRange)>,
    },
}

fn list_addresses(addresses: &[(IpAddr, ForbiddenRange)]) -> String {
    let items: Vec<String> = addresses
        .iter()
        .map(|(address, range)| format!("{address} ({range})"))
        .collect();
    items.join(", ")
}

/// Classifies an address a webhook must not reach, or returns `None` for an
/// address on the public internet.
///
/// IPv6 addresses that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`,
/// IPv4-compatible `::/96` and the NAT64 prefix `64:ff9b::/96`) are classified
/// by the embedded IPv4 address.
pub fn classify_address(ip: IpAddr) -> Option<ForbiddenRange> {
    match ip {
        IpAddr::V4(ip) => classify_ipv4(ip),
        IpAddr::V6(ip) => classify_ipv6(ip),
    }
}

fn classify_ipv4(ip: Ipv4Addr) -> Option<ForbiddenRange> {
    let [first, second, ..] = ip.octets();

    if METADATA_IPV4.contains(&ip) {
        Some(ForbiddenRange::CloudMetadata)
    } else if ip.is_loopback() {
        Some(ForbiddenRange::Loopback)
    } else if ip.is_private() {
        Some(ForbiddenRange::Private)
    } else if first == 100 && (64..128).contains(&second) {
        Some(ForbiddenRange::CarrierGradeNat)
    } else if first == 0 {
        Some(ForbiddenRange::Unspecified)
    } else if ip.is_link_local() {
        Some(ForbiddenRange::LinkLocal)
    } else if ip.is_multicast() {
        Some(ForbiddenRange::Multicast)
    } else if ip.is_broadcast() {
        Some(ForbiddenRange::Broadcast)
    } else {
        None
    }
}

fn classify_ipv6(ip: Ipv6Addr) -> Option<ForbiddenRange> {
    if METADATA_IPV6.contains(&ip) {
        return Some(ForbiddenRange::CloudMetadata);
    }
    if let Some(embedded) = embedded_ipv4(ip) {
        return classify_ipv4(embedded);
    }

    let first_segment = ip.segments()[0];
    if ip.is_loopback() {
        Some(ForbiddenRange::Loopback)
    } else if ip.is_unspecified() {
        Some(ForbiddenRange::Unspecified)
    } else if first_segment & 0xfe00 == 0xfc00 || first_segment & 0xffc0 == 0xfec0 {
        Some(ForbiddenRange::Private)
    } else if first_segment & 0xffc0 == 0xfe80 {
        Some(ForbiddenRange::LinkLocal)
    } else if ip.is_multicast() {
        Some(ForbiddenRange::Multicast)
    } else {
        None
    }
}

/// Returns the IPv4 address inside an IPv4-mapped, IPv4-compatible or NAT64
/// (`64:ff9b::/96`, RFC 6052) address. `::` and `::1` are not IPv4-compatible.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(mapped) = ip.to_ipv4_mapped() {
        return Some(mapped);
    }

    let segments = ip.segments();
    let compatible = segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if !(compatible || nat64) {
        return None;
    }
    let [.., high, low] = segments;
    Some(Ipv4Addr::from((u32::from(high) << 16) | u32::from(low)))
}

/// Classifies a host name that is forbidden without a lookup: `localhost`,
/// `*.localhost` and the cloud metadata names. Matching ignores case and a
/// trailing dot.
pub fn classify_name(host: &str) -> Option<ForbiddenRange> {
    let name = host.trim_end_matches('.').to_ascii_lowercase();

    if name == "localhost" || name.ends_with(".localhost") {
        Some(ForbiddenRange::Loopback)
    } else if METADATA_NAMES.contains(&name.as_str()) {
        Some(ForbiddenRange::CloudMetadata)
    } else {
        None
    }
}

/// Returns true if the channel's policy rejects `range`.
pub(super) fn is_rejected(range: ForbiddenRange, allow_loopback: bool) -> bool {
    !(allow_loopback && range.allowed_by_allow_loopback())
}

/// Returns the addresses of `host` that the policy allows, in their original
/// order.
///
/// # Errors
///
/// Returns [`DestinationForbidden::Resolved`] if every address is forbidden.
pub(super) fn filter_addresses(
    host: &str,
    addresses: Vec<IpAddr>,
    allow_loopback: bool,
) -> Result<Vec<IpAddr>, DestinationForbidden> {
    let mut allowed = Vec::new();
    let mut rejected = Vec::new();
    for address in addresses {
        match classify_address(address) {
            Some(range) if is_rejected(range, allow_loopback) => rejected.push((address, range)),
            _ => allowed.push(address),
        }
    }

    if allowed.is_empty() && !rejected.is_empty() {
        return Err(DestinationForbidden::Resolved {
            host: host.to_owned(),
            addresses: rejected,
        });
    }
    if !rejected.is_empty() {
        tracing::debug!(
            host,
            dropped = %list_addresses(&rejected),
            "dropped forbidden addresses from the DNS answer of a webhook host"
        );
    }
    Ok(allowed)
}

/// The future of a host name lookup: every IP address of the name.
pub type LookupFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send>>;

/// A host name lookup, called with the name to resolve.
pub(super) type Lookup = Arc<dyn Fn(String) -> LookupFuture + Send + Sync>;

/// Returns the lookup through the system resolver (`getaddrinfo` on a
/// blocking thread), as reqwest's default resolver does.
pub(super) fn system_lookup() -> Lookup {
    Arc::new(|host: String| -> LookupFuture {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    })
}

/// A reqwest DNS resolver that forwards only the addresses the policy allows.
///
/// Errors are [`DestinationForbidden`] when the name or all its addresses are
/// forbidden, so that [`super::error`] can find them in the reqwest error's
/// source chain. A failed or empty lookup is an [`io::Error`].
pub(super) struct FilteringResolver {
    lookup: Lookup,
    allow_loopback: bool,
}

impl FilteringResolver {
    pub(super) fn new(lookup: Lookup, allow_loopback: bool) -> FilteringResolver {
        FilteringResolver {
            lookup,
            allow_loopback,
        }
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let lookup = Arc::clone(&self.lookup);
        let allow_loopback = self.allow_loopback;

        Box::pin(async move {
            if let Some(range) = classify_name(&host) {
                if is_rejected(range, allow_loopback) {
                    return Err(DestinationForbidden::Name { host, range }.into());
                }
            }

            let addresses = lookup(host.clone()).await?;
            if addresses.is_empty() {
                let message = format!("DNS lookup of {host} returned no addresses");
                return Err(io::Error::new(io::ErrorKind::NotFound, message).into());
            }
            let allowed = filter_addresses(&host, addresses, allow_loopback)?;

            // reqwest replaces port 0 with the URL's port or the scheme's default.
            let socket_addresses = allowed
                .into_iter()
                .map(|address| SocketAddr::new(address, 0));
            Ok(Box::new(socket_addresses) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ip(address: &str) -> IpAddr {
        address.parse().unwrap()
    }

    /// Builds a lookup that returns `answers` for every name and counts its calls.
    fn fixed_lookup(answers: &[&str], calls: Arc<AtomicUsize>) -> Lookup {
        let answers: Vec<IpAddr> = answers.iter().map(|answer| ip(answer)).collect();
        Arc::new(move |_host: String| -> LookupFuture {
            calls.fetch_add(1, Ordering::SeqCst);
            let answers = answers.clone();
            Box::pin(async move { Ok(answers) })
        })
    }

    async fn resolve(
        resolver: &FilteringResolver,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addresses = resolver.resolve(host.parse().unwrap()).await?;
        Ok(addresses.collect())
    }

    #[test]
    fn address_classification_table() {
        use ForbiddenRange::*;

        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("10.0.0.5", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd00::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("100.64.0.1", Some(CarrierGradeNat)),
            ("100.127.255.255", Some(CarrierGradeNat)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("169.254.0.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("169.254.170.2", Some(CloudMetadata)),
            ("169.254.170.23", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("fd00:ec2::23", Some(CloudMetadata)),
            // IPv4-mapped forms.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.0.0.5", Some(Private)),
            ("::ffff:100.64.0.1", Some(CarrierGradeNat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:169.254.0.1", Some(LinkLocal)),
            ("::ffff:224.0.0.1", Some(Multicast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            // IPv4-compatible forms.
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.0.1", Some(Private)),
            ("::169.254.169.254", Some(CloudMetadata)),
            // NAT64 forms.
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::10.0.0.5", Some(Private)),
            ("64:ff9b::169.254.169.254", Some(CloudMetadata)),
            // Public addresses.
            ("93.184.216.34", None),
            ("8.8.8.8", None),
            ("100.63.255.255", None),
            ("100.128.0.1", None),
            ("172.32.0.1", None),
            ("2606:2800:220:1::1", None),
            ("2606:4700::1111", None),
            ("::ffff:93.184.216.34", None),
            ("::93.184.216.34", None),
            ("64:ff9b::93.184.216.34", None),
        ];

        for (address, expected) in cases {
            assert_eq!(classify_address(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn allow_loopback_lifts_only_development_ranges() {
        use ForbiddenRange::*;

        for range in [Loopback, Private, CarrierGradeNat, Unspecified] {
            assert!(!is_rejected(range, true), "{range:?}");
            assert!(is_rejected(range, false), "{range:?}");
        }
        for range in [LinkLocal, Multicast, Broadcast, CloudMetadata] {
            assert!(is_rejected(range, true), "{range:?}");
            assert!(is_rejected(range, false), "{range:?}");
        }
    }

    #[test]
    fn name_classification() {
        let cases = [
            ("localhost", Some(ForbiddenRange::Loopback)),
            ("LOCALHOST.", Some(ForbiddenRange::Loopback)),
            ("api.localhost", Some(ForbiddenRange::Loopback)),
            (
                "metadata.google.internal",
                Some(ForbiddenRange::CloudMetadata),
            ),
            (
                "Metadata.Google.Internal.",
                Some(ForbiddenRange::CloudMetadata),
            ),
            ("metadata", Some(ForbiddenRange::CloudMetadata)),
            ("hooks.example.com", None),
            ("notlocalhost", None),
            ("metadata.example.com", None),
        ];

        for (name, expected) in cases {
            assert_eq!(classify_name(name), expected, "{name}");
        }
    }

    #[test]
    fn filter_keeps_allowed_addresses_in_order() {
        let answers = vec![
            ip("127.0.0.1"),
            ip("93.184.216.34"),
            ip("169.254.169.254"),
            ip("2606:2800:220:1::1"),
            ip("fd00::1"),
        ];

        let allowed = filter_addresses("hook.example.test", answers, false).unwrap();

        assert_eq!(allowed, [ip("93.184.216.34"), ip("2606:2800:220:1::1")]);
    }

    #[test]
    fn filter_with_allow_loopback_keeps_development_ranges() {
        let answers = vec![
            ip("169.254.169.254"),
            ip("127.0.0.1"),
            ip("224.0.0.1"),
            ip("10.0.0.5"),
            ip("fd00:ec2::254"),
        ];

        let allowed = filter_addresses("hook.example.test", answers, true).unwrap();

        assert_eq!(allowed, [ip("127.0.0.1"), ip("10.0.0.5")]);
    }

    #[test]
    fn filter_rejects_all_forbidden_answers() {
        let answers = vec![ip("127.0.0.1"), ip("169.254.169.254")];

        let error = filter_addresses("hook.example.test", answers, false).unwrap_err();

        assert_eq!(
            error,
            DestinationForbidden::Resolved {
                host: "hook.example.test".to_owned(),
                addresses: vec![
                    (ip("127.0.0.1"), ForbiddenRange::Loopback),
                    (ip("169.254.169.254"), ForbiddenRange::CloudMetadata),
                ],
            }
        );
        assert_eq!(
            error.to_string(),
            "host hook.example.test resolves only to forbidden addresses: \
             127.0.0.1 (a loopback address, allowed only with `channels.webhook.allow_loopback = true`), \
             169.254.169.254 (a cloud metadata endpoint, never allowed)"
        );
    }

    #[tokio::test]
    async fn resolver_returns_only_allowed_addresses() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = fixed_lookup(&["10.0.0.5", "93.184.216.34", "::ffff:127.0.0.1"], calls);
        let resolver = FilteringResolver::new(lookup, false);

        let addresses = resolve(&resolver, "hook.example.test").await.unwrap();

        assert_eq!(addresses, [SocketAddr::new(ip("93.184.216.34"), 0)]);
    }

    #[tokio::test]
    async fn resolver_error_is_destination_forbidden() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = fixed_lookup(&["fd00::1", "::1"], calls);
        let resolver = FilteringResolver::new(lookup, false);

        let error = resolve(&resolver, "hook.example.test").await.unwrap_err();

        let forbidden = error.downcast_ref::<DestinationForbidden>();
        assert!(
            matches!(forbidden, Some(DestinationForbidden::Resolved { host, .. }) if host == "hook.example.test"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn resolver_rejects_never_allowed_answers_with_allow_loopback() {
        for address in [
            "169.254.169.254",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "169.254.10.1",
            "fe80::1",
            "224.0.0.1",
        ] {
            let calls = Arc::new(AtomicUsize::new(0));
            let resolver = FilteringResolver::new(fixed_lookup(&[address], calls), true);

            let error = resolve(&resolver, "hook.example.test").await.unwrap_err();

            let forbidden = error.downcast_ref::<DestinationForbidden>();
            assert!(
                matches!(forbidden, Some(DestinationForbidden::Resolved { .. })),
                "{address}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn resolver_rejects_metadata_name_without_lookup() {
        let calls = Arc::new(AtomicUsize::new(0));
        let lookup = fixed_lookup(&["93.184.216.34"], Arc::clone(&calls));
        let resolver = FilteringResolver::new(lookup, true);

        let error = resolve(&resolver, "metadata.google.internal")
            .await
            .unwrap_err();

        assert_eq!(
            error.downcast_ref::<DestinationForbidden>(),
            Some(&DestinationForbidden::Name {
                host: "metadata.google.internal".to_owned(),
                range: ForbiddenRange::CloudMetadata,
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn resolver_empty_answer_is_lookup_error() {
        let calls = Arc::new(AtomicUsize::new(0));
        let resolver = FilteringResolver::new(fixed_lookup(&[], calls), false);

        let error = resolve(&resolver, "hook.example.test").await.unwrap_err();

        assert!(error.downcast_ref::<io::Error>().is_some(), "{error}");
        assert!(error.downcast_ref::<DestinationForbidden>().is_none());
    }
}
