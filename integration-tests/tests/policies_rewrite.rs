//! Header and path rewrites through the real binary: a regex path rewrite keeping the
//! query, a host rewrite, request headers
//! set/added/removed before forwarding, response headers set/removed on the way back, and
//! `[route_defaults]` applied to routes that do not set a key (and turned off with `false`).

use switchyard_integration_tests::{Backend, Gateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_host_and_header_rewrites() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&format!(
        r#"
[registries.local]
type = "static"
services.api = ["{}"]

[upstreams.api]
[[upstreams.api.sources]]
registry = "local"
service = "api"

[route_defaults]
response_headers = {{ set = {{ "x-frame-options" = "DENY" }} }}

[[routes]]
name = "rewritten"
path_prefix = "/old"
upstream = "api"
rewrite = {{ regex = "^/old/(?P<rest>.*)$", replacement = "/new/$rest" }}
host_rewrite = "internal.example:8443"
request_headers = {{ set = {{ "x-env" = "prod" }}, add = {{ "x-tag" = "gw" }}, remove = ["x-secret"] }}
response_headers = {{ set = {{ "x-served-by" = "switchyard" }}, remove = ["x-backend"] }}

[[routes]]
name = "defaults"
path_prefix = "/d"
upstream = "api"

[[routes]]
name = "no-defaults"
path_prefix = "/n"
upstream = "api"
response_headers = false
"#,
        backend.address()
    ))
    .await;

    let reply = gw
        .send(
            gw.client()
                .get(gw.url("/old/a/b?q=1&r=2"))
                .header("x-env", "dev")
                .header("x-tag", "client")
                .header("x-secret", "s3cret"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = backend.seen().pop().unwrap();
    assert_eq!(seen.path, "/new/a/b?q=1&r=2");
    assert_eq!(seen.header("host"), ["internal.example:8443"]);
    // The client's own Host still reaches the upstream, as X-Forwarded-Host.
    let client_host = format!("127.0.0.1:{}", gw.port);
    assert_eq!(seen.header("x-forwarded-host"), [client_host.as_str()]);
    assert_eq!(seen.header("x-env"), ["prod"]);
    assert_eq!(seen.header("x-tag"), ["client", "gw"]);
    assert!(seen.header("x-secret").is_empty(), "{seen:?}");
    assert_eq!(reply.headers.get("x-served-by").unwrap(), "switchyard");
    assert!(reply.headers.get("x-backend").is_none(), "{reply:?}");
    assert!(
        reply.headers.get("x-frame-options").is_none(),
        "the route's own response_headers replace the default"
    );

    // Not matching the regex: the path goes as it is.
    gw.get("/old").await;
    assert_eq!(backend.seen().pop().unwrap().path, "/old");

    let defaults = gw.get("/d/x").await;
    assert_eq!(defaults.headers.get("x-frame-options").unwrap(), "DENY");
    assert_eq!(defaults.headers.get("x-backend").unwrap(), "api");
    let off = gw.get("/n/x").await;
    assert!(off.headers.get("x-frame-options").is_none(), "{off:?}");
}
