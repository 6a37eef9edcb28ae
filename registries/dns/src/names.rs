//! Warnings about names that a DNS source probably does not mean as written.
//!
//! Names are absolute here: Switchyard asks for exactly the name written, with no search
//! domain appended (`/etc/resolv.conf`'s `search` and `ndots` are not applied), unlike the
//! system resolver, which tries each search domain first for a name with fewer dots than
//! `ndots` (resolv.conf(5)). Two traps follow, and `switchyard check` names them:
//!
//! - a single-label name (`orders:8080`, `_http._tcp.orders`) is looked up at the root,
//!   where it never exists;
//! - a name with fewer dots than `ndots`, on a host with search domains (Kubernetes pods:
//!   `ndots:5`, `search <ns>.svc.cluster.local svc.cluster.local cluster.local`), resolves
//!   through the system resolver as `<name>.<search domain>`, but here as itself.

/// The warning for `service` (a DNS source's `service`), given the system resolver's
/// `search` domains and `ndots`; `None` when the name is fine.
pub fn warning(service: &str, search: &[String], ndots: usize) -> Option<String> {
    let service = service.trim();
    if service.parse::<std::net::SocketAddr>().is_ok() {
        return None;
    }
    let name = match service.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => service,
    };
    if name.ends_with('.') {
        // Written fully qualified: the user said what they meant.
        return None;
    }
    // The part that names the host or domain: an SRV name's `_service._proto.` labels off.
    let labels: Vec<&str> = name.split('.').collect();
    let domain: Vec<&str> = labels
        .iter()
        .copied()
        .skip_while(|label| label.starts_with('_'))
        .collect();
    if domain.len() == 1 {
        return Some(format!(
            "{service:?}: {:?} is a single-label name; names are absolute here (no search domain \
             is appended), so it is looked up as {:?} at the root and will not resolve; write \
             the fully qualified name",
            domain[0],
            format!("{name}.")
        ));
    }
    let dots = name.matches('.').count();
    if !search.is_empty() && dots < ndots {
        return Some(format!(
            "{service:?}: the system resolver would try {:?} first (search {}, ndots {ndots}), \
             but names are absolute here: it is looked up as {:?} only; write the fully \
             qualified name (a trailing dot silences this warning)",
            format!("{name}.{}", search[0]),
            search.join(" "),
            format!("{name}.")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(service: &str, search: &[&str], ndots: usize, expected: Option<&str>) {
        let search: Vec<String> = search.iter().map(|s| (*s).to_owned()).collect();
        let got = warning(service, &search, ndots);
        match (got.as_deref(), expected) {
            (None, None) => {}
            (Some(got), Some(expected)) => assert!(got.contains(expected), "{service}: {got}"),
            _ => panic!("{service}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn single_label_and_search_dependent_names() {
        check("orders:8080", &[], 1, Some("single-label"));
        check("_http._tcp.orders", &[], 1, Some("single-label"));
        check("orders.:8080", &[], 1, None);
        check("orders.example.test:8080", &[], 1, None);
        check("_http._tcp.orders.example.test", &[], 1, None);
        check("127.0.0.1:80", &[], 1, None);
        check("[::1]:80", &[], 1, None);
        let k8s = [
            "shop.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ];
        check(
            "orders.shop:8080",
            &k8s,
            5,
            Some("\"orders.shop.shop.svc.cluster.local\""),
        );
        check("orders.shop.svc.cluster.local.:8080", &k8s, 5, None);
        check("orders.example.test:8080", &["corp.test"], 1, None);
    }
}
