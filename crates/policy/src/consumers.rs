//! `[consumers.NAME]`: who may call, with which API keys and Basic credentials.
//!
//! API keys are kept as SHA-256 digests (a plain key in config is hashed when loaded, a
//! `sha256:<hex>` key is taken as it is) and a presented key is compared with every
//! digest in constant time. Basic passwords are verified against bcrypt or argon2 hashes
//! off the async workers; a successful check is remembered for five minutes (by a digest
//! of the credentials) so that a client sending the same header does not pay the hash
//! every time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use switchyard_registry::ConfigIssue;

use crate::config::{decode_key, ConsumerConfig};

/// A password hash from config.
#[derive(Clone, Debug)]
enum PasswordHashKind {
    Bcrypt(String),
    Argon2(String),
}

impl PasswordHashKind {
    fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with("$2a$") || text.starts_with("$2b$") || text.starts_with("$2y$") {
            // Verifying against a throw-away password checks the format.
            bcrypt::verify("", text)
                .map(|_| PasswordHashKind::Bcrypt(text.to_owned()))
                .map_err(|e| format!("not a valid bcrypt hash: {e}"))
        } else if text.starts_with("$argon2") {
            PasswordHash::new(text)
                .map(|_| PasswordHashKind::Argon2(text.to_owned()))
                .map_err(|e| format!("not a valid argon2 hash: {e}"))
        } else {
            Err("expected a bcrypt ($2b$...) or argon2 ($argon2id$...) hash".into())
        }
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            PasswordHashKind::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHashKind::Argon2(hash) => PasswordHash::new(hash).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            }),
        }
    }
}

/// Every configured consumer.
pub struct Consumers {
    names: Vec<Arc<str>>,
    keys: Vec<([u8; 32], usize)>,
    basic: HashMap<String, (usize, PasswordHashKind)>,
    verified: moka::sync::Cache<[u8; 32], usize>,
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Consumers {
    /// Decodes the `[consumers]` table; issues are relative to it (`alice.keys[0]`).
    pub fn build(table: Option<&serde_json::Value>) -> Result<Consumers, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut configs = BTreeMap::new();
        match table {
            None => {}
            Some(serde_json::Value::Object(map)) => {
                for (name, value) in map {
                    match decode_key::<ConsumerConfig>(name, value) {
                        Ok(config) => {
                            configs.insert(name.clone(), config);
                        }
                        Err(issue) => issues.push(issue),
                    }
                }
            }
            Some(_) => issues.push(ConfigIssue::new("", "must be a table of consumers")),
        }
        let mut names = Vec::new();
        let mut keys: Vec<([u8; 32], usize)> = Vec::new();
        let mut key_owner: HashMap<[u8; 32], String> = HashMap::new();
        let mut basic = HashMap::new();
        let mut user_owner: HashMap<String, String> = HashMap::new();
        for (index, (name, config)) in configs.iter().enumerate() {
            names.push(Arc::<str>::from(name.as_str()));
            for (i, key) in config.keys.iter().enumerate() {
                let path = format!("{name}.keys[{i}]");
                let digest = match parse_key(key) {
                    Ok(digest) => digest,
                    Err(message) => {
                        issues.push(ConfigIssue::new(path, message));
                        continue;
                    }
                };
                if let Some(other) = key_owner.insert(digest, name.clone()) {
                    issues.push(ConfigIssue::new(
                        path,
                        format!("the same key is already a key of consumer {other:?}"),
                    ));
                    continue;
                }
                keys.push((digest, index));
            }
            if let Some(credential) = &config.basic {
                if credential.user.is_empty() || credential.user.contains(':') {
                    issues.push(ConfigIssue::new(
                        format!("{name}.basic.user"),
                        "must be non-empty and without ':'",
                    ));
                }
                match PasswordHashKind::parse(&credential.password_hash) {
                    Ok(hash) => {
                        if let Some(other) =
                            user_owner.insert(credential.user.clone(), name.clone())
                        {
                            issues.push(ConfigIssue::new(
                                format!("{name}.basic.user"),
                                format!(
                                    "{:?} is already the user of consumer {other:?}",
                                    credential.user
                                ),
                            ));
                        }
                        basic.insert(credential.user.clone(), (index, hash));
                    }
                    Err(message) => issues.push(ConfigIssue::new(
                        format!("{name}.basic.password_hash"),
                        message,
                    )),
                }
            }
        }
        if !issues.is_empty() {
            return Err(issues);
        }
        Ok(Consumers {
            names,
            keys,
            basic,
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        })
    }

    /// Consumer names, sorted.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }

    /// The consumer called `name`, as the shared string.
    pub fn get(&self, name: &str) -> Option<&Arc<str>> {
        self.names
            .binary_search_by(|n| n.as_ref().cmp(name))
            .ok()
            .map(|i| &self.names[i])
    }

    /// Whether any consumer has an API key.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether any consumer has Basic credentials.
    pub fn has_basic(&self) -> bool {
        !self.basic.is_empty()
    }

    /// The owner of API key `presented`: compared with every stored digest, in constant
    /// time per digest, without stopping at a match.
    pub fn by_key(&self, presented: &[u8]) -> Option<&Arc<str>> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = usize::MAX;
        for (stored, index) in &self.keys {
            let equal: bool = stored.ct_eq(&digest).into();
            if equal {
                found = *index;
            }
        }
        self.names.get(found)
    }

    /// The owner of Basic credentials `user`/`password`, if the password matches. Hash
    /// checks run on the blocking pool; an unknown user costs one check as well.
    pub async fn by_basic(self: &Arc<Self>, user: &str, password: &str) -> Option<Arc<str>> {
        let mut hasher = Sha256::new();
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        let token: [u8; 32] = hasher.finalize().into();
        if let Some(index) = self.verified.get(&token) {
            return self.names.get(index).cloned();
        }
        let this = self.clone();
        let (user, password) = (user.to_owned(), password.to_owned());
        let index = tokio::task::spawn_blocking(move || match this.basic.get(&user) {
            Some((index, hash)) => hash.verify(&password).then_some(*index),
            None => {
                // Spend the same effort on an unknown user as on a known one.
                if let Some((_, hash)) = this.basic.values().next() {
                    let _ = hash.verify(&password);
                }
                None
            }
        })
        .await
        .ok()
        .flatten()?;
        self.verified.insert(token, index);
        self.names.get(index).cloned()
    }
}

/// A key from config as its SHA-256 digest.
fn parse_key(key: &str) -> Result<[u8; 32], String> {
    if let Some(hex) = key.strip_prefix("sha256:") {
        let bytes = decode_hex(hex).ok_or("sha256: needs 64 hex digits")?;
        return bytes
            .try_into()
            .map_err(|_| "sha256: needs 64 hex digits".to_owned());
    }
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(Sha256::digest(key.as_bytes()).into())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // bcrypt (cost 4) and argon2id hashes of "s3cret".
    pub(crate) const BCRYPT: &str = "$2b$04$I2gjF8tXANOm3DHCaW.52OrqGe5RutwEdh7Cee0m8Xa4lLmXTBxMm";
    pub(crate) const ARGON2: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aiw2o9oMq/9ebSZcoiTcfCAvRu6fmltcIeT3flB1dAo";

    fn issues(table: serde_json::Value) -> Vec<String> {
        match Consumers::build(Some(&table)) {
            Ok(_) => Vec::new(),
            Err(issues) => issues.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn bad_entries_are_all_named() {
        let found = issues(json!({
            "alice": {"keys": ["k1", "sha256:abc"], "basic": {"user": "a", "password_hash": "plain"}},
            "bob": {"keys": ["k1"], "extra": true},
            "carol": 3,
            "dave": {"keys": ["k1"]},
        }));
        let expected = [
            "alice.keys[1]: sha256: needs 64 hex digits",
            "alice.basic.password_hash: expected a bcrypt",
            "bob.extra: unknown field `extra`",
            "carol: invalid type",
            "dave.keys[0]: the same key is already a key of consumer \"alice\"",
        ];
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        for want in expected {
            assert!(
                found.iter().any(|f| f.starts_with(want)),
                "{want} not in {found:#?}"
            );
        }
    }

    #[test]
    fn keys_plain_and_hashed() {
        let hashed = format!("sha256:{:x}", Sha256::digest(b"bob-key"));
        let consumers = Consumers::build(Some(&json!({
            "alice": {"keys": ["alice-key"]},
            "bob": {"keys": [hashed]},
        })))
        .unwrap();
        for (key, owner) in [
            ("alice-key", Some("alice")),
            ("bob-key", Some("bob")),
            ("alice-keY", None),
            ("", None),
        ] {
            assert_eq!(
                consumers.by_key(key.as_bytes()).map(|c| c.as_ref()),
                owner,
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn basic_with_bcrypt_and_argon2() {
        let consumers = Arc::new(
            Consumers::build(Some(&json!({
                "alice": {"basic": {"user": "alice", "password_hash": BCRYPT}},
                "bob": {"basic": {"user": "bob", "password_hash": ARGON2}},
            })))
            .unwrap(),
        );
        for (user, password, owner) in [
            ("alice", "s3cret", Some("alice")),
            ("alice", "s3cret", Some("alice")), // remembered
            ("alice", "wrong", None),
            ("bob", "s3cret", Some("bob")),
            ("bob", "S3cret", None),
            ("nobody", "s3cret", None),
        ] {
            let got = consumers.by_basic(user, password).await;
            assert_eq!(got.as_deref(), owner, "{user}:{password}");
        }
    }
}
