//! `switchyard check` on configs with bad `nacos`, `eureka` and `nomad` tables and sources:
//! exit code 2 and every problem named by its key path, all at once.
//!
//! Needs `cargo build -p switchyard`.

use switchyard_integration_tests::gateway;

#[test]
fn bad_keys_are_named_by_path_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[registries.nacos]
type = "nacos"
servers = ["http://127.0.0.1:8848", "127.0.0.1:8849"]
username = "nacos"
fetch_interval = "1ms"

[registries.eureka]
type = "eureka"
servers = ["http://127.0.0.1:8761/eureka"]
prefer = "dns"

[registries.nomad]
type = "nomad"
address = "http://127.0.0.1:4646"
wait = "1h"
namespace = "*"

"#,
    )
    .unwrap();
    let (code, stderr) = gateway::check(&path);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "registries.nacos.servers[1]:",
        "registries.nacos.password: is needed with username",
        "registries.nacos.fetch_interval: must be at least 100ms",
        "registries.eureka.prefer: unknown variant `dns`",
        "registries.nomad.wait: must be more than 0 and at most 10m",
        "registries.nomad.namespace:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn bad_sources_are_named_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[registries.nacos]
type = "nacos"

[registries.eureka]
type = "eureka"

[registries.nomad]
type = "nomad"

[upstreams.a]
[[upstreams.a.sources]]
registry = "nomad"
service = "web"
port = "http"
[[upstreams.a.sources]]
registry = "nacos"
service = "@@orders"
[[upstreams.a.sources]]
registry = "eureka"
service = "a/b"
"#,
    )
    .unwrap();
    let (code, stderr) = gateway::check(&path);
    println!("{stderr}");
    assert_eq!(code, 2, "{stderr}");
    for expected in [
        "upstreams.a.sources[0].port:",
        "upstreams.a.sources[1].service:",
        "upstreams.a.sources[2].service:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}
