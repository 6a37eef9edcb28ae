//! Access control through the real binary: JWT (good, bad signature, expired, wrong
//! audience, unknown consumer), API keys in a header and in the query (plain and stored
//! as SHA-256), Basic with bcrypt and argon2 hashes, 403 for a consumer outside `allow`,
//! credentials stripped before forwarding (or kept with `forward_credentials`), the
//! consumer sent upstream in `x-consumer`, and an IP deny list.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use switchyard_integration_tests::backend::Seen;
use switchyard_integration_tests::{Backend, Gateway};

const SECRET: &str = "integration-test-secret-0123456789";
// Hashes of the password "wonderland": bcrypt (cost 6) for alice, argon2id for bob.
const ALICE_HASH: &str = "$2b$06$Z0RoQI.M3wlKo47aa7QGEOaUv9rnhG3DURCm/JsRVA1LXxnuPSeS6";
const BOB_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$088XXujRV0KS5OeWDOjNytC8jw8ATwveLj6RDerUNfk";
// SHA-256 of "bob-key".
const BOB_KEY_SHA: &str = "9b94dc1a51a38769f135edf04033ad7f2f487b6c25929be7a861cfc1ab10cf98";

fn config(backend: &Backend) -> String {
    format!(
        r#"
[registries.local]
type = "static"
services.api = ["{address}"]

[upstreams.api]
[[upstreams.api.sources]]
registry = "local"
service = "api"

[consumers.alice]
keys = ["alice-key"]
basic = {{ user = "alice", password_hash = "{ALICE_HASH}" }}
[consumers.bob]
keys = ["sha256:{BOB_KEY_SHA}"]
basic = {{ user = "bob", password_hash = "{BOB_HASH}" }}
[consumers.carol]
keys = ["carol-key"]

[auth.jwt]
secret = "{SECRET}"
issuer = "https://issuer.test"
audience = "orders"

[[routes]]
name = "orders"
path_prefix = "/orders"
upstream = "api"
auth = ["key", "jwt", "basic"]
allow = ["alice", "bob"]

[[routes]]
name = "forwarding"
path_prefix = "/fwd"
upstream = "api"
auth = ["key"]
forward_credentials = true

[[routes]]
name = "internal"
path_prefix = "/internal"
upstream = "api"
ip_deny = ["127.0.0.0/8", "::1"]

[[routes]]
name = "open"
path_prefix = "/"
upstream = "api"
"#,
        address = backend.address()
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn token(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    json!({"sub": sub, "exp": now() + 600, "iss": "https://issuer.test", "aud": "orders"})
}

fn last(backend: &Backend) -> Seen {
    backend
        .seen()
        .last()
        .cloned()
        .expect("the backend saw a request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_good_bad_expired_wrong_audience() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&config(&backend)).await;
    let bearer = |t: &str| {
        gw.client()
            .get(gw.url("/orders/1"))
            .header("authorization", format!("Bearer {t}"))
    };

    let good = gw.send(bearer(&token(claims("alice"), SECRET))).await;
    assert_eq!(good.status, 200, "{good:?}");
    let seen = last(&backend);
    assert_eq!(seen.header("x-consumer"), ["alice"]);
    assert!(
        seen.header("authorization").is_empty(),
        "token stripped: {seen:?}"
    );

    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_audience = claims("alice");
    wrong_audience["aud"] = json!("billing");
    let mut wrong_issuer = claims("alice");
    wrong_issuer["iss"] = json!("https://elsewhere.test");
    let hits = backend.hits();
    for (name, t, reason) in [
        (
            "bad signature",
            token(claims("alice"), "another-secret-0123456789abcdef"),
            "bad signature",
        ),
        ("expired", token(expired, SECRET), "token expired"),
        (
            "wrong audience",
            token(wrong_audience, SECRET),
            "wrong audience",
        ),
        ("wrong issuer", token(wrong_issuer, SECRET), "wrong issuer"),
        (
            "unknown consumer",
            token(claims("mallory"), SECRET),
            "unknown consumer",
        ),
        ("garbage", "not-a-jwt".to_owned(), "malformed token"),
    ] {
        let reply = gw.send(bearer(&t)).await;
        assert_eq!(reply.status, 401, "{name}: {reply:?}");
        assert!(reply.body.contains(reason), "{name}: {}", reply.body);
        let challenges: Vec<&str> = reply
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges
                .iter()
                .any(|c| c.starts_with("Bearer realm=\"switchyard\"")
                    && c.contains("error=\"invalid_token\"")),
            "{name}: {challenges:?}"
        );
    }
    assert_eq!(
        backend.hits(),
        hits,
        "no refused request reached the upstream"
    );

    let carol = gw.send(bearer(&token(claims("carol"), SECRET))).await;
    assert_eq!(
        carol.status, 403,
        "valid token, consumer not allowed: {carol:?}"
    );

    let none = gw.get("/orders/1").await;
    assert_eq!(none.status, 401);
    let challenges: Vec<&str> = none
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(challenges.len(), 3, "{challenges:?}");
    assert!(
        challenges[0].starts_with("ApiKey realm=\"switchyard\", header=\"apikey\""),
        "{challenges:?}"
    );
    assert!(challenges[1].starts_with("Bearer"), "{challenges:?}");
    assert!(
        challenges[2].starts_with("Basic realm=\"switchyard\""),
        "{challenges:?}"
    );
    assert!(none.body.contains("credentials required"), "{}", none.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_in_header_and_query() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&config(&backend)).await;

    let reply = gw
        .send(
            gw.client()
                .get(gw.url("/orders/1"))
                .header("apikey", "alice-key")
                .header("x-consumer", "bob"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = last(&backend);
    assert_eq!(
        seen.header("x-consumer"),
        ["alice"],
        "a client's x-consumer is replaced"
    );
    assert!(
        seen.header("apikey").is_empty(),
        "key header stripped: {seen:?}"
    );

    let reply = gw.get("/orders/2?x=1&apikey=alice-key&y=2").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = last(&backend);
    assert_eq!(seen.path, "/orders/2?x=1&y=2", "key parameter stripped");
    assert_eq!(seen.header("x-consumer"), ["alice"]);

    // Stored as a SHA-256 digest in config.
    let reply = gw.get("/orders/3?apikey=bob-key").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(last(&backend).header("x-consumer"), ["bob"]);
    assert_eq!(last(&backend).path, "/orders/3");

    let hits = backend.hits();
    let wrong = gw
        .send(
            gw.client()
                .get(gw.url("/orders/1"))
                .header("apikey", "alice-kez"),
        )
        .await;
    assert_eq!(wrong.status, 401, "{wrong:?}");
    assert!(wrong.body.contains("unknown API key"), "{}", wrong.body);
    let hashed_itself = gw
        .get(&format!("/orders/1?apikey=sha256:{BOB_KEY_SHA}"))
        .await;
    assert_eq!(hashed_itself.status, 401, "the stored digest is not a key");
    let carol = gw.get("/orders/1?apikey=carol-key").await;
    assert_eq!(carol.status, 403, "{carol:?}");
    assert!(
        carol.body.contains("consumer not allowed"),
        "{}",
        carol.body
    );
    assert_eq!(backend.hits(), hits);

    // forward_credentials keeps the key; carol may use a route without allow-list.
    let reply = gw
        .send(
            gw.client()
                .get(gw.url("/fwd/x"))
                .header("apikey", "carol-key"),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let seen = last(&backend);
    assert_eq!(seen.header("apikey"), ["carol-key"]);
    assert_eq!(seen.header("x-consumer"), ["carol"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_with_bcrypt_and_argon2() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&config(&backend)).await;
    let basic = |user: &str, password: &str| {
        gw.client()
            .get(gw.url("/orders/1"))
            .basic_auth(user, Some(password))
    };
    for (user, password, status, consumer) in [
        ("alice", "wonderland", 200, Some("alice")), // bcrypt
        ("bob", "wonderland", 200, Some("bob")),     // argon2id
        ("alice", "wonderland", 200, Some("alice")), // remembered
        ("alice", "Wonderland", 401, None),
        ("bob", "wrong", 401, None),
        ("nobody", "wonderland", 401, None),
    ] {
        let hits = backend.hits();
        let reply = gw.send(basic(user, password)).await;
        assert_eq!(reply.status, status, "{user}:{password}: {reply:?}");
        match consumer {
            Some(consumer) => {
                let seen = last(&backend);
                assert_eq!(seen.header("x-consumer"), [consumer]);
                assert!(
                    seen.header("authorization").is_empty(),
                    "Basic stripped: {seen:?}"
                );
            }
            None => {
                assert_eq!(backend.hits(), hits);
                assert!(
                    reply.body.contains("wrong user or password"),
                    "{}",
                    reply.body
                );
                assert!(
                    reply
                        .headers
                        .get_all("www-authenticate")
                        .iter()
                        .any(|v| v.to_str().unwrap().starts_with("Basic realm=")),
                    "{reply:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_deny_list_and_open_routes() {
    let backend = Backend::start("api");
    let gw = Gateway::start(&config(&backend)).await;
    let denied = gw.get("/internal/x").await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert!(
        denied.body.contains("client address not allowed"),
        "{}",
        denied.body
    );
    let open = gw.get("/anything").await;
    assert_eq!(
        open.status, 200,
        "a route without policies is untouched: {open:?}"
    );
    assert!(open.headers.get("x-cache").is_none());

    let metrics = gw
        .send(gw.client().get(gw.admin_url("/metrics")))
        .await
        .body;
    assert!(
        metrics.contains("switchyard_auth_total{route=\"internal\",result=\"ip_denied\"} 1"),
        "{metrics}"
    );
}
