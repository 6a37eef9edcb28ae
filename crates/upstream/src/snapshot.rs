//! What the request path reads: an upstream's immutable [`Snapshot`], its endpoint lists
//! ([`EndpointList`], persistent and shared between consecutive snapshots) and each
//! [`ServingEndpoint`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use switchyard_registry::Endpoint;

use crate::chunked::{self, Chunked, Item};
use crate::{EndpointStats, PickContext, Selector, SelectorFactory};

/// Identifies where an endpoint came from, for the admin API and the access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceRef {
    /// The registry's name in config.
    pub registry: String,
    /// The service, as the source names it.
    pub service: String,
}

/// A priority tier: sources rank first, then endpoints within a source. Lower serves first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tier {
    /// The source's `priority` from config.
    pub source: u32,
    /// The endpoint's own priority from its registry (DNS SRV priority, etcd `priority`).
    pub endpoint: u32,
}

/// One endpoint of an upstream, as a snapshot holds it. Snapshots share these: an endpoint
/// nothing changed about is the same `Arc` in the next snapshot.
#[derive(Clone, Debug)]
pub struct ServingEndpoint {
    /// The endpoint as its registry reported it (the same allocation the source's set
    /// holds).
    pub endpoint: Arc<Endpoint>,
    /// Where it came from.
    pub source: Arc<SourceRef>,
    /// Its tier.
    pub tier: Tier,
    /// Its weight for balancing: the endpoint's own weight, or its share of its source's
    /// weight when the tier splits traffic by source.
    pub weight: u32,
    /// The index of its source in the upstream's config (ranks sources within a tier).
    /// 16 bits keep the struct at 40 bytes (a 56-byte allocation with the `Arc`): at
    /// 100,000 endpoints every field counts.
    pub(crate) source_index: u16,
    /// Whether its source is failing, so this is a last known good endpoint.
    pub stale: bool,
    /// Registry health, active checks and passive ejection combined, when the endpoint
    /// was last (re)built.
    pub healthy: bool,
    /// Live counters (in-flight, latency, ejection), shared across snapshots.
    pub stats: Arc<EndpointStats>,
}

impl ServingEndpoint {
    /// A healthy endpoint of `source` with fresh counters, in tier (0, the endpoint's
    /// priority), weighted by the endpoint's own weight, not stale. For tests and
    /// benchmarks; the cache builds its own.
    pub fn new(endpoint: Endpoint, source: Arc<SourceRef>) -> Self {
        ServingEndpoint {
            tier: Tier {
                source: 0,
                endpoint: endpoint.priority,
            },
            weight: endpoint.weight,
            source_index: 0,
            stale: false,
            healthy: endpoint.healthy,
            stats: Arc::new(EndpointStats::new()),
            source,
            endpoint: Arc::new(endpoint),
        }
    }

    /// The address to connect to.
    #[inline]
    pub fn address(&self) -> SocketAddr {
        self.endpoint.address
    }

    /// The address as a `Host` value (`10.0.0.5:8080`, `[::1]:80`), made on demand: only
    /// a request without a `Host` of its own (HTTP/1.0) needs it, so no endpoint keeps one.
    pub fn authority(&self) -> Bytes {
        Bytes::copy_from_slice(address_text(self.endpoint.address).as_ref())
    }

    /// The endpoint's weight as balancers count it ([`effective_weight`]).
    #[inline]
    pub fn effective_weight(&self) -> u64 {
        effective_weight(self.weight)
    }

    /// The sort key of an upstream's endpoint list: tier, healthy before unhealthy,
    /// source, address.
    pub(crate) fn key(&self) -> (Tier, bool, u16, SocketAddr) {
        (
            self.tier,
            !self.healthy,
            self.source_index,
            self.endpoint.address,
        )
    }
}

impl Item for Arc<ServingEndpoint> {
    const WEIGHTED: bool = true;

    #[inline]
    fn weight(&self) -> u64 {
        self.effective_weight()
    }
}

/// RFC 2782 weight 0 ("very small chance"): balancers count weight 0 as 1/100 of weight 1,
/// so a weight-0 endpoint still gets a share when others have weight. This returns the
/// weight in those units: 1 for weight 0, `100 × weight` otherwise.
#[inline]
pub fn effective_weight(weight: u32) -> u64 {
    if weight == 0 {
        1
    } else {
        u64::from(weight) * ZERO_WEIGHT_DIVISOR
    }
}

/// Weight 1 is worth this many weight-0 endpoints (see [`effective_weight`]).
pub const ZERO_WEIGHT_DIVISOR: u64 = 100;

/// An address as text (`10.0.0.5:8080`, `[::1]:80`), formatted on the stack.
pub fn address_text(address: SocketAddr) -> AddressText {
    use std::io::Write;
    let mut text = AddressText {
        len: 0,
        buf: [0; ADDRESS_TEXT_LEN],
    };
    let mut cursor = std::io::Cursor::new(&mut text.buf[..]);
    // Cannot fail: the longest address, `[` 39 `%` 10 `]:` 5, is 58 bytes.
    let _ = write!(cursor, "{address}");
    text.len = cursor.position() as u8;
    text
}

/// Room for the longest socket address as text (an IPv6 address with a scope id).
const ADDRESS_TEXT_LEN: usize = 64;

/// The text of an address ([`address_text`]).
pub struct AddressText {
    len: u8,
    buf: [u8; ADDRESS_TEXT_LEN],
}

impl AsRef<[u8]> for AddressText {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// A list of endpoints in a snapshot: a persistent sequence (see [`Chunked`]) or a range
/// of one, which consecutive snapshots share. Cloning is cheap (a reference count).
///
/// It reads like a slice: [`len`](EndpointList::len), [`get`](EndpointList::get),
/// [`iter`](EndpointList::iter); and it indexes effective weights
/// ([`ServingEndpoint::effective_weight`]) for weighted picks
/// ([`find_weight`](EndpointList::find_weight)).
#[derive(Clone)]
pub struct EndpointList {
    all: Arc<Chunked<Arc<ServingEndpoint>>>,
    start: usize,
    end: usize,
    /// Effective weight before `start`.
    base: u64,
    /// Effective weight of the range.
    weight: u64,
}

impl Default for EndpointList {
    fn default() -> Self {
        EndpointList::new(Vec::new())
    }
}

impl EndpointList {
    /// A list of `endpoints`, in this order.
    pub fn new(endpoints: Vec<Arc<ServingEndpoint>>) -> Self {
        let all = Arc::new(Chunked::from_vec(endpoints));
        let len = all.len();
        EndpointList::view(&all, 0, len)
    }

    /// The range `start..end` of `all`.
    pub(crate) fn view(all: &Arc<Chunked<Arc<ServingEndpoint>>>, start: usize, end: usize) -> Self {
        let base = all.weight_before(start);
        EndpointList {
            weight: all.weight_before(end) - base,
            all: all.clone(),
            start,
            end,
            base,
        }
    }

    /// Number of endpoints.
    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether there is none.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The endpoint at `index`.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&Arc<ServingEndpoint>> {
        if index < self.len() {
            self.all.get(self.start + index)
        } else {
            None
        }
    }

    /// The first endpoint.
    pub fn first(&self) -> Option<&Arc<ServingEndpoint>> {
        self.get(0)
    }

    /// Every endpoint, in order.
    pub fn iter(&self) -> chunked::Iter<'_, Arc<ServingEndpoint>> {
        self.all.range(self.start, self.end)
    }

    /// The endpoints as a vector (a copy of the pointers).
    pub fn to_vec(&self) -> Vec<Arc<ServingEndpoint>> {
        self.iter().cloned().collect()
    }

    /// Sum of the endpoints' effective weights.
    #[inline]
    pub fn total_weight(&self) -> u64 {
        self.weight
    }

    /// The endpoint whose slice of the cumulative effective-weight line holds `x`
    /// (endpoints in list order, each covering as many units as its effective weight);
    /// `None` when `x ≥` [`total_weight`](EndpointList::total_weight). A weighted pick
    /// draws `x` uniformly (random) or by a counter (round robin).
    #[inline]
    pub fn find_weight(&self, x: u64) -> Option<&Arc<ServingEndpoint>> {
        if x >= self.weight {
            return None;
        }
        self.all.find_weight(self.base + x).map(|(_, e)| e)
    }
}

impl<'a> IntoIterator for &'a EndpointList {
    type Item = &'a Arc<ServingEndpoint>;
    type IntoIter = chunked::Iter<'a, Arc<ServingEndpoint>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl std::fmt::Debug for EndpointList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|e| e.address()))
            .finish()
    }
}

/// An immutable view of one upstream, swapped in atomically whenever anything changes.
pub struct Snapshot {
    /// Every known endpoint, deduplicated by address, ordered by tier, then healthy before
    /// unhealthy, then source (config order), then address.
    pub endpoints: EndpointList,
    /// The endpoints that take traffic now: a range of `endpoints` (the healthy ones of
    /// the serving tier, or all of it in panic mode).
    pub serving: EndpointList,
    /// The tier that serves, if any endpoint exists.
    pub serving_tier: Option<Tier>,
    /// True when no endpoint is healthy and the lowest tier serves in full anyway.
    pub panic: bool,
    /// Picks from `serving`; built (or derived from the previous snapshot's) once for
    /// this snapshot.
    pub selector: Box<dyn Selector>,
    /// Increases with every snapshot of this upstream.
    pub version: u64,
}

impl Snapshot {
    /// An empty snapshot: nothing serves.
    pub fn empty(factory: &dyn SelectorFactory) -> Self {
        let endpoints = EndpointList::default();
        Snapshot {
            selector: factory.build(&endpoints),
            serving: endpoints.clone(),
            endpoints,
            serving_tier: None,
            panic: false,
            version: 0,
        }
    }

    /// Picks an endpoint for a request.
    #[inline]
    pub fn pick(&self, ctx: &PickContext) -> Option<&Arc<ServingEndpoint>> {
        self.selector.pick(&self.serving, ctx)
    }

    /// Whether `endpoint` (one of `endpoints`) is in `serving`, in O(1).
    pub fn is_serving(&self, endpoint: &ServingEndpoint) -> bool {
        !self.serving.is_empty()
            && Some(endpoint.tier) == self.serving_tier
            && (self.panic || endpoint.healthy)
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("endpoints", &self.endpoints.len())
            .field("serving", &self.serving.len())
            .field("serving_tier", &self.serving_tier)
            .field("panic", &self.panic)
            .field("version", &self.version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_text() {
        for address in [
            "10.0.0.5:8080",
            "255.255.255.255:65535",
            "[::1]:80",
            "[2001:db8:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        ] {
            let a: SocketAddr = address.parse().unwrap();
            assert_eq!(address_text(a).as_ref(), address.as_bytes());
        }
        // The longest there is: a full IPv6 address with a scope id and port.
        let longest = std::net::SocketAddrV6::new(
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            65535,
            0,
            u32::MAX,
        );
        let text = longest.to_string();
        assert_eq!(text.len(), 58);
        assert_eq!(address_text(longest.into()).as_ref(), text.as_bytes());
    }

    #[test]
    fn weighted_ranges() {
        let source = Arc::new(SourceRef {
            registry: "r".into(),
            service: "s".into(),
        });
        let all: Vec<Arc<ServingEndpoint>> = (1..=4u16)
            .map(|port| {
                let e = Endpoint::new(([127, 0, 0, 1], port).into()).with_weight(port.into());
                Arc::new(ServingEndpoint::new(e, source.clone()))
            })
            .collect();
        let list = Arc::new(Chunked::from_vec(all));
        let range = EndpointList::view(&list, 1, 3);
        assert_eq!(range.len(), 2);
        assert_eq!(range.total_weight(), 500);
        assert_eq!(range.find_weight(0).unwrap().address().port(), 2);
        assert_eq!(range.find_weight(199).unwrap().address().port(), 2);
        assert_eq!(range.find_weight(200).unwrap().address().port(), 3);
        assert!(range.find_weight(500).is_none());
        assert_eq!(range.get(2).map(|e| e.address()), None);
        let ports: Vec<u16> = range.iter().map(|e| e.address().port()).collect();
        assert_eq!(ports, vec![2, 3]);
    }
}
