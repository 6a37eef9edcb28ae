//! The registry backends this binary knows, by `type`: one list, read by the loader, by
//! `switchyard config schema` and by the config's "missing type" message, so a backend
//! added here shows everywhere. Imports no other module of the crate.

use switchyard_registry::Catalog;

/// The registry backends this binary knows.
pub fn catalog() -> Catalog {
    let mut catalog = Catalog::new();
    catalog
        .register(switchyard_static::StaticFactory)
        .register(switchyard_file::FileFactory)
        .register(switchyard_etcd::EtcdFactory)
        .register(switchyard_dns::DnsFactory)
        .register(switchyard_consul::ConsulFactory)
        .register(switchyard_kubernetes::KubernetesFactory)
        .register(switchyard_nomad::NomadFactory)
        .register(switchyard_nacos::NacosFactory)
        .register(switchyard_eureka::EurekaFactory)
        .register(switchyard_zookeeper::ZooKeeperFactory)
        .register(switchyard_http_sd::HttpSdFactory)
        .register(switchyard_docker::DockerFactory);
    catalog
}

/// The known `type` values as `a | b | c`, for messages.
pub fn kinds() -> String {
    catalog().kinds().join(" | ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn kinds_lists_every_backend() {
        let kinds = super::kinds();
        for kind in ["static", "etcd", "kubernetes", "zookeeper", "http", "nacos"] {
            assert!(
                kinds.split(" | ").any(|k| k == kind),
                "{kind} not in {kinds}"
            );
        }
    }
}
