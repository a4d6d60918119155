//! `enrich.classify-ip`: what kind of address an IP address or CIDR block is, per the IANA special-purpose
//! address registries (RFC 6890 and successors).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use qila_sdk::prelude::*;

/// The input of `enrich.classify-ip`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyIpInput {
    /// An IPv4 or IPv6 address (`192.0.2.1`, `2001:db8::1`) or a CIDR block (`10.0.0.0/8`); defanged forms
    /// (`192.0.2[.]1`) are accepted.
    pub ip: String,
}

/// What an address or block is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Globally routable: none of the below.
    Public,
    /// Private use (RFC 1918, unique local IPv6, local-use NAT64).
    Private,
    /// Shared address space for carrier-grade NAT, 100.64.0.0/10.
    Shared,
    /// Loopback: 127.0.0.0/8, ::1.
    Loopback,
    /// Link-local: 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Multicast: 224.0.0.0/4, ff00::/8.
    Multicast,
    /// Documentation examples (TEST-NET-1/2/3, 2001:db8::/32, 3fff::/20).
    Documentation,
    /// The unspecified address: 0.0.0.0, ::.
    Unspecified,
    /// The limited broadcast address, 255.255.255.255.
    Broadcast,
    /// Reserved, benchmarking, protocol assignments, deprecated and unallocated space.
    Reserved,
    /// A block that spans special-purpose space and other space (only for CIDR blocks).
    Mixed,
}

/// The output of `enrich.classify-ip`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ClassifyIpOutput {
    /// 4 or 6.
    pub version: u8,
    /// The address in canonical form (for a block: the address as written, host bits included).
    pub address: String,
    /// What the address (or the whole block) is used for.
    pub kind: Kind,
    /// Whether the address is globally routable (`kind` is `public`).
    pub is_global: bool,
    /// The IANA special-purpose registry entry that applies, if any, e.g. `10.0.0.0/8 Private-Use`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// For an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`), the IPv4 address; `kind` is that address's kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped_ipv4: Option<String>,
    /// For a CIDR block: the block itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
}

/// A CIDR block.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Network {
    /// The block in canonical form, host bits cleared: `10.0.0.0/8`.
    pub cidr: String,
    /// The network address (the first address of the block).
    pub network: String,
    /// The prefix length.
    pub prefix: u8,
    /// The netmask, for IPv4 only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netmask: Option<String>,
    /// The first address of the block.
    pub first: String,
    /// The last address of the block (for IPv4, the broadcast address of prefixes up to /30).
    pub last: String,
    /// How many addresses the block holds, as a decimal string (IPv6 sizes exceed what JSON numbers hold exactly).
    pub size: String,
}

/// Classifies an IP address or CIDR block: version, kind (private, loopback, documentation, ...), and the block's range.
#[action(example = r#"{"ip": "100.64.12.7"}"#)]
pub fn classify_ip(input: ClassifyIpInput) -> Result<ClassifyIpOutput, Error> {
    let text = crate::defang::refang_text(input.ip.trim());
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text.as_str(), None),
    };
    let addr: IpAddr = addr_text.parse().map_err(|_| {
        Error::invalid_input(format!("`{}` is not an IPv4 or IPv6 address", input.ip))
    })?;
    let width: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix_text {
        None => None,
        Some(p) => Some(
            Some(p)
                .filter(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|&p| p <= width)
                .ok_or_else(|| {
                    Error::invalid_input(format!("`/{p}` is not a prefix length from 0 to {width}"))
                })?,
        ),
    };

    let bits = to_bits(addr);
    let block = Block {
        version: version(addr),
        bits: mask(bits, prefix.unwrap_or(width), width),
        prefix: prefix.unwrap_or(width),
    };
    let mapped_ipv4 = match addr {
        IpAddr::V6(v6) if prefix.is_none() => v6.to_ipv4_mapped(),
        _ => None,
    };
    let (kind, registry) = match mapped_ipv4 {
        Some(v4) => classify(&Block {
            version: 4,
            bits: u128::from(u32::from(v4)),
            prefix: 32,
        }),
        None => classify(&block),
    };

    let network = prefix.map(|prefix| {
        let first = block.bits;
        let host_bits = u32::from(width - prefix);
        let last = first | low_ones(host_bits);
        let size = if host_bits == 128 {
            "340282366920938463463374607431768211456".to_owned()
        } else {
            (1u128 << host_bits).to_string()
        };
        Network {
            cidr: format!("{}/{prefix}", from_bits(first, width)),
            network: from_bits(first, width).to_string(),
            prefix,
            netmask: (width == 32)
                .then(|| from_bits(mask(u128::from(u32::MAX), prefix, 32), 32).to_string()),
            first: from_bits(first, width).to_string(),
            last: from_bits(last, width).to_string(),
            size,
        }
    });

    Ok(ClassifyIpOutput {
        version: version(addr),
        address: addr.to_string(),
        kind,
        is_global: kind == Kind::Public,
        registry: registry.map(|e| format!("{} {}", e.cidr, e.name)),
        mapped_ipv4: mapped_ipv4.map(|v4| v4.to_string()),
        network,
    })
}

/// A block of addresses: the `prefix` high bits of `bits` (right-aligned in a u128 for IPv4).
struct Block {
    version: u8,
    bits: u128,
    prefix: u8,
}

/// One entry of the registries.
struct Entry {
    version: u8,
    cidr: &'static str,
    bits: u128,
    prefix: u8,
    kind: Kind,
    name: &'static str,
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u128 {
    ((a as u128) << 24) | ((b as u128) << 16) | ((c as u128) << 8) | d as u128
}

const fn v6(segments: [u16; 8]) -> u128 {
    let mut bits = 0u128;
    let mut i = 0;
    while i < 8 {
        bits = (bits << 16) | segments[i] as u128;
        i += 1;
    }
    bits
}

macro_rules! entry {
    (4, $cidr:literal, [$a:literal, $b:literal, $c:literal, $d:literal], $prefix:literal, $kind:ident, $name:literal) => {
        Entry { version: 4, cidr: $cidr, bits: v4($a, $b, $c, $d), prefix: $prefix, kind: Kind::$kind, name: $name }
    };
    (6, $cidr:literal, [$($s:literal),*], $prefix:literal, $kind:ident, $name:literal) => {
        Entry { version: 6, cidr: $cidr, bits: v6(pad([$($s),*])), prefix: $prefix, kind: Kind::$kind, name: $name }
    };
}

/// `[a, b]` → `[a, b, 0, 0, 0, 0, 0, 0]`, for the high segments of an IPv6 prefix.
const fn pad<const N: usize>(high: [u16; N]) -> [u16; 8] {
    let mut segments = [0u16; 8];
    let mut i = 0;
    while i < N {
        segments[i] = high[i];
        i += 1;
    }
    segments
}

/// The IANA IPv4 and IPv6 special-purpose address registries, plus multicast, class E and the IPv6 space outside
/// global unicast. The most specific entry that contains a block wins.
static REGISTRY: &[Entry] = &[
    entry!(
        4,
        "0.0.0.0/8",
        [0, 0, 0, 0],
        8,
        Reserved,
        "\"This network\""
    ),
    entry!(
        4,
        "0.0.0.0/32",
        [0, 0, 0, 0],
        32,
        Unspecified,
        "\"This host on this network\""
    ),
    entry!(4, "10.0.0.0/8", [10, 0, 0, 0], 8, Private, "Private-Use"),
    entry!(
        4,
        "100.64.0.0/10",
        [100, 64, 0, 0],
        10,
        Shared,
        "Shared Address Space"
    ),
    entry!(4, "127.0.0.0/8", [127, 0, 0, 0], 8, Loopback, "Loopback"),
    entry!(
        4,
        "169.254.0.0/16",
        [169, 254, 0, 0],
        16,
        LinkLocal,
        "Link Local"
    ),
    entry!(
        4,
        "172.16.0.0/12",
        [172, 16, 0, 0],
        12,
        Private,
        "Private-Use"
    ),
    entry!(
        4,
        "192.0.0.0/24",
        [192, 0, 0, 0],
        24,
        Reserved,
        "IETF Protocol Assignments"
    ),
    entry!(
        4,
        "192.0.2.0/24",
        [192, 0, 2, 0],
        24,
        Documentation,
        "Documentation (TEST-NET-1)"
    ),
    entry!(
        4,
        "192.88.99.0/24",
        [192, 88, 99, 0],
        24,
        Reserved,
        "Deprecated (6to4 Relay Anycast)"
    ),
    entry!(
        4,
        "192.168.0.0/16",
        [192, 168, 0, 0],
        16,
        Private,
        "Private-Use"
    ),
    entry!(
        4,
        "198.18.0.0/15",
        [198, 18, 0, 0],
        15,
        Reserved,
        "Benchmarking"
    ),
    entry!(
        4,
        "198.51.100.0/24",
        [198, 51, 100, 0],
        24,
        Documentation,
        "Documentation (TEST-NET-2)"
    ),
    entry!(
        4,
        "203.0.113.0/24",
        [203, 0, 113, 0],
        24,
        Documentation,
        "Documentation (TEST-NET-3)"
    ),
    entry!(4, "224.0.0.0/4", [224, 0, 0, 0], 4, Multicast, "Multicast"),
    entry!(4, "240.0.0.0/4", [240, 0, 0, 0], 4, Reserved, "Reserved"),
    entry!(
        4,
        "255.255.255.255/32",
        [255, 255, 255, 255],
        32,
        Broadcast,
        "Limited Broadcast"
    ),
    entry!(6, "::/128", [], 128, Unspecified, "Unspecified Address"),
    entry!(
        6,
        "::1/128",
        [0, 0, 0, 0, 0, 0, 0, 1],
        128,
        Loopback,
        "Loopback Address"
    ),
    entry!(
        6,
        "::ffff:0:0/96",
        [0, 0, 0, 0, 0, 0xffff],
        96,
        Reserved,
        "IPv4-mapped Address"
    ),
    entry!(
        6,
        "64:ff9b::/96",
        [0x64, 0xff9b],
        96,
        Public,
        "IPv4-IPv6 Translat."
    ),
    entry!(
        6,
        "64:ff9b:1::/48",
        [0x64, 0xff9b, 1],
        48,
        Private,
        "IPv4-IPv6 Translat. (local use)"
    ),
    entry!(
        6,
        "100::/64",
        [0x100],
        64,
        Reserved,
        "Discard-Only Address Block"
    ),
    entry!(
        6,
        "2001::/23",
        [0x2001],
        23,
        Reserved,
        "IETF Protocol Assignments"
    ),
    entry!(6, "2001::/32", [0x2001], 32, Public, "TEREDO"),
    entry!(
        6,
        "2001:db8::/32",
        [0x2001, 0xdb8],
        32,
        Documentation,
        "Documentation"
    ),
    entry!(6, "3fff::/20", [0x3fff], 20, Documentation, "Documentation"),
    entry!(
        6,
        "5f00::/16",
        [0x5f00],
        16,
        Reserved,
        "Segment Routing (SRv6) SIDs"
    ),
    entry!(6, "fc00::/7", [0xfc00], 7, Private, "Unique-Local"),
    entry!(
        6,
        "fe80::/10",
        [0xfe80],
        10,
        LinkLocal,
        "Link-Local Unicast"
    ),
    entry!(
        6,
        "fec0::/10",
        [0xfec0],
        10,
        Reserved,
        "Site-Local (deprecated)"
    ),
    entry!(6, "ff00::/8", [0xff00], 8, Multicast, "Multicast"),
    // Everything outside 2000::/3 (global unicast) that no entry above names is reserved by the IETF.
    entry!(6, "::/3", [], 3, Reserved, "Reserved by IETF"),
    entry!(6, "4000::/2", [0x4000], 2, Reserved, "Reserved by IETF"),
    entry!(6, "8000::/1", [0x8000], 1, Reserved, "Reserved by IETF"),
];

/// The kind of `block` and the most specific registry entry that contains it, if any.
fn classify(block: &Block) -> (Kind, Option<&'static Entry>) {
    let width = if block.version == 4 { 32 } else { 128 };
    let entries = || REGISTRY.iter().filter(|e| e.version == block.version);
    let containing = entries()
        .filter(|e| e.prefix <= block.prefix && mask(block.bits, e.prefix, width) == e.bits)
        .max_by_key(|e| e.prefix);
    // A block that contains a more specific entry of another kind than its own spans more than one kind.
    let own_kind = containing.map_or(Kind::Public, |e| e.kind);
    let spans_another_kind = entries().any(|e| {
        e.prefix > block.prefix
            && mask(e.bits, block.prefix, width) == block.bits
            && e.kind != own_kind
    });
    if spans_another_kind {
        (Kind::Mixed, None)
    } else {
        (own_kind, containing)
    }
}

fn version(addr: IpAddr) -> u8 {
    if addr.is_ipv4() { 4 } else { 6 }
}

fn to_bits(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_bits(bits: u128, width: u8) -> IpAddr {
    if width == 32 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX)))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// `n` low bits set.
fn low_ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// `bits` with all but the `prefix` high bits of a `width`-bit address cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    bits & !low_ones(u32::from(width - prefix.min(width)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::PLUGIN;

    fn run(ip: &str) -> Value {
        PLUGIN
            .invoke_json("classify-ip", json!({ "ip": ip }), &Context::default())
            .unwrap()
    }

    #[test]
    fn kinds_of_ipv4_addresses() {
        for (ip, kind) in [
            ("8.8.8.8", "public"),
            ("1.1.1.1", "public"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("172.32.0.1", "public"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared"),
            ("100.127.255.254", "shared"),
            ("100.128.0.1", "public"),
            ("127.0.0.1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.99", "documentation"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("198.18.5.5", "reserved"),
            ("192.0.0.8", "reserved"),
        ] {
            let out = run(ip);
            assert_eq!(out["kind"], kind, "{ip}: {out}");
            assert_eq!(out["version"], 4);
            assert_eq!(out["is_global"], kind == "public", "{ip}");
        }
        assert_eq!(run("10.0.0.1")["registry"], "10.0.0.0/8 Private-Use");
    }

    #[test]
    fn kinds_of_ipv6_addresses() {
        for (ip, kind) in [
            ("2606:4700:4700::1111", "public"),
            ("2001:4860:4860::8888", "public"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd12:3456:789a::1", "private"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("2001:0:4136:e378::1", "public"),
            ("2001:2::1", "reserved"),
            ("64:ff9b::808:808", "public"),
            ("::2", "reserved"),
            ("fec0::1", "reserved"),
        ] {
            let out = run(ip);
            assert_eq!(out["kind"], kind, "{ip}: {out}");
            assert_eq!(out["version"], 6);
        }
        let mapped = run("::ffff:192.168.0.1");
        assert_eq!(mapped["kind"], "private");
        assert_eq!(mapped["mapped_ipv4"], "192.168.0.1");
        assert_eq!(run("2001:0DB8:0000::0001")["address"], "2001:db8::1");
    }

    #[test]
    fn cidr_blocks() {
        let out = run("10.1.2.3/8");
        assert_eq!(
            out["network"],
            json!({"cidr": "10.0.0.0/8", "network": "10.0.0.0", "prefix": 8, "netmask": "255.0.0.0",
                   "first": "10.0.0.0", "last": "10.255.255.255", "size": "16777216"})
        );
        assert_eq!(out["kind"], "private");
        assert_eq!(run("192.168.1.0/24")["network"]["last"], "192.168.1.255");
        assert_eq!(run("203.0.113.5/32")["network"]["size"], "1");
        assert_eq!(run("0.0.0.0/0")["kind"], "mixed");
        assert_eq!(run("8.8.8.0/24")["kind"], "public");
        assert_eq!(run("172.0.0.0/8")["kind"], "mixed");
        let v6 = run("2001:db8:abcd::/48");
        assert_eq!(v6["kind"], "documentation");
        assert_eq!(
            v6["network"]["last"],
            "2001:db8:abcd:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(v6["network"]["size"], "1208925819614629174706176");
        assert_eq!(
            run("::/0")["network"]["size"],
            "340282366920938463463374607431768211456"
        );
        assert!(run("::/0")["network"].get("netmask").is_none());
    }

    #[test]
    fn defanged_and_invalid_input() {
        assert_eq!(run("192.0.2[.]1")["address"], "192.0.2.1");
        for bad in [
            "10.0.0.256",
            "example.com",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "::/129",
            "",
        ] {
            let e = PLUGIN
                .invoke_json("classify-ip", json!({ "ip": bad }), &Context::default())
                .unwrap_err();
            assert!(matches!(e, Error::InvalidInput(_)), "{bad}: {e}");
        }
    }
}
