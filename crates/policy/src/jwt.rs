//! `[auth.jwt]`: JWT verification with the `jsonwebtoken` crate — HMAC secrets, PEM
//! public keys (RSA, EC) or a JWKS file, `exp`/`nbf` with leeway, `iss`/`aud`, and the
//! consumer named by a claim.

use std::path::Path;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use switchyard_registry::ConfigIssue;

use crate::config::JwtConfig;

enum Keys {
    /// One key for every token.
    Single(DecodingKey),
    /// Keys from a JWKS, by `kid`.
    Set(Vec<(Option<String>, DecodingKey)>),
}

/// Verifies bearer tokens.
pub struct JwtVerifier {
    keys: Keys,
    /// One validation per algorithm family (the crate wants every accepted algorithm to
    /// match the key's family).
    validations: Vec<(AlgorithmFamily, Validation)>,
    consumer_claim: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field(
                "families",
                &self.validations.iter().map(|(f, _)| *f).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds from `[auth.jwt]`; issues are relative to that table. Key files are read now,
    /// relative to `base_dir`.
    pub fn build(config: &JwtConfig, base_dir: &Path) -> Result<JwtVerifier, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        let mut algorithms = Vec::new();
        for (i, name) in config.algorithms.iter().enumerate() {
            match name.parse::<Algorithm>() {
                Ok(alg @ (Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
                | Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512
                | Algorithm::ES256 | Algorithm::ES384)) => algorithms.push(alg),
                _ => issues.push(ConfigIssue::new(
                    format!("algorithms[{i}]"),
                    format!("{name:?} is not supported (HS256, HS384, HS512, RS256, RS384, RS512, ES256, ES384)"),
                )),
            }
        }
        if config.algorithms.is_empty() {
            issues.push(ConfigIssue::new(
                "algorithms",
                "must name at least one algorithm",
            ));
        }
        let families: Vec<AlgorithmFamily> = algorithms.iter().map(|a| a.family()).collect();
        let sources = [
            config.secret.is_some(),
            config.public_key_file.is_some(),
            config.jwks_file.is_some(),
        ];
        let keys = match sources {
            [true, false, false] => {
                if families.iter().any(|f| *f != AlgorithmFamily::Hmac) {
                    issues.push(ConfigIssue::new(
                        "algorithms",
                        "a secret only verifies HS256/HS384/HS512",
                    ));
                }
                let secret = config.secret.as_deref().unwrap_or_default();
                if secret.len() < 16 {
                    issues.push(ConfigIssue::new("secret", "must be at least 16 bytes"));
                }
                Some(Keys::Single(DecodingKey::from_secret(secret.as_bytes())))
            }
            [false, true, false] => {
                let file = config.public_key_file.as_deref().unwrap_or(Path::new(""));
                let first = families.first().copied();
                if families.iter().any(|f| Some(*f) != first)
                    || first == Some(AlgorithmFamily::Hmac)
                {
                    issues.push(ConfigIssue::new(
                        "algorithms",
                        "a public key verifies one family: RS* (RSA key) or ES* (EC key)",
                    ));
                }
                match std::fs::read(base_dir.join(file)) {
                    Err(e) => {
                        issues.push(ConfigIssue::new(
                            "public_key_file",
                            format!("cannot read {}: {e}", base_dir.join(file).display()),
                        ));
                        None
                    }
                    Ok(pem) => {
                        let key = match first {
                            Some(AlgorithmFamily::Ec) => DecodingKey::from_ec_pem(&pem),
                            _ => DecodingKey::from_rsa_pem(&pem),
                        };
                        match key {
                            Ok(key) => Some(Keys::Single(key)),
                            Err(e) => {
                                issues.push(ConfigIssue::new(
                                    "public_key_file",
                                    format!(
                                        "not a PEM public key for {:?}: {e}",
                                        config.algorithms
                                    ),
                                ));
                                None
                            }
                        }
                    }
                }
            }
            [false, false, true] => {
                let file = base_dir.join(config.jwks_file.as_deref().unwrap_or(Path::new("")));
                let parsed = std::fs::read(&file)
                    .map_err(|e| format!("cannot read {}: {e}", file.display()))
                    .and_then(|bytes| {
                        serde_json::from_slice::<JwkSet>(&bytes)
                            .map_err(|e| format!("not a JWKS document: {e}"))
                    });
                match parsed {
                    Err(message) => {
                        issues.push(ConfigIssue::new("jwks_file", message));
                        None
                    }
                    Ok(set) => {
                        let mut keys = Vec::new();
                        for (i, jwk) in set.keys.iter().enumerate() {
                            match DecodingKey::from_jwk(jwk) {
                                Ok(key) => keys.push((jwk.common.key_id.clone(), key)),
                                Err(e) => issues
                                    .push(ConfigIssue::new("jwks_file", format!("keys[{i}]: {e}"))),
                            }
                        }
                        if set.keys.is_empty() {
                            issues.push(ConfigIssue::new("jwks_file", "has no keys"));
                        }
                        Some(Keys::Set(keys))
                    }
                }
            }
            _ => {
                issues.push(ConfigIssue::new(
                    "",
                    "give exactly one of secret, public_key_file, jwks_file",
                ));
                None
            }
        };
        if config.consumer_claim.is_empty() {
            issues.push(ConfigIssue::new("consumer_claim", "must not be empty"));
        }
        let (Some(keys), true) = (keys, issues.is_empty()) else {
            return Err(issues);
        };
        let mut validations: Vec<(AlgorithmFamily, Validation)> = Vec::new();
        for alg in algorithms {
            if let Some((_, v)) = validations.iter_mut().find(|(f, _)| *f == alg.family()) {
                v.algorithms.push(alg);
                continue;
            }
            let mut validation = Validation::new(alg);
            validation.leeway = config.leeway.as_secs();
            validation.validate_nbf = true;
            if let Some(issuer) = &config.issuer {
                validation.set_issuer(&[issuer]);
            }
            match &config.audience {
                Some(audience) => validation.set_audience(&audience.values()),
                None => validation.validate_aud = false,
            }
            validations.push((alg.family(), validation));
        }
        Ok(JwtVerifier {
            keys,
            validations,
            consumer_claim: config.consumer_claim.clone(),
        })
    }

    /// The consumer claim of a valid `token`, or why it is not valid.
    pub fn verify(&self, token: &str) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| describe(&e))?;
        let validation = self
            .validations
            .iter()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .map(|(_, v)| v)
            .ok_or("algorithm not accepted")?;
        let key = match &self.keys {
            Keys::Single(key) => key,
            Keys::Set(keys) => {
                let found = match &header.kid {
                    Some(kid) => keys.iter().find(|(k, _)| k.as_deref() == Some(kid)),
                    None if keys.len() == 1 => keys.first(),
                    None => None,
                };
                &found.ok_or("no key for the token's kid")?.1
            }
        };
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token, key, validation,
        )
        .map_err(|e| describe(&e))?;
        match data.claims.get(&self.consumer_claim) {
            Some(serde_json::Value::String(consumer)) => Ok(consumer.clone()),
            _ => Err(format!("no {:?} claim", self.consumer_claim)),
        }
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token not yet valid".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("no {claim:?} claim"),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-of-32-bytes-length";

    // Test-only key pairs (made with openssl for these tests).
    const EC_PRIVATE: &str = include_str!("../testdata/ec-private.pem");
    const EC_PUBLIC: &str = include_str!("../testdata/ec-public.pem");
    const RSA_PRIVATE: &str = include_str!("../testdata/rsa-private.pem");
    const RSA_PUBLIC: &str = include_str!("../testdata/rsa-public.pem");

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn config(extra: serde_json::Value) -> JwtConfig {
        let mut base =
            json!({"secret": SECRET, "audience": "orders", "issuer": "https://issuer.test"});
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        crate::config::decode_key("jwt", &base).unwrap()
    }

    fn hs(claims: serde_json::Value) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn check(verifier: &JwtVerifier, token: &str, expected: Result<&str, &str>) {
        assert_eq!(
            verifier.verify(token).as_deref(),
            expected.map_err(|e| e.to_owned()).as_deref(),
            "{token}"
        );
    }

    #[test]
    fn hs256_claims() {
        let verifier = JwtVerifier::build(&config(json!({})), Path::new(".")).unwrap();
        let good = json!({"sub": "alice", "exp": now() + 600, "aud": "orders", "iss": "https://issuer.test"});
        let with = |k: &str, v: serde_json::Value| {
            let mut c = good.clone();
            c[k] = v;
            c
        };
        check(&verifier, &hs(good.clone()), Ok("alice"));
        check(
            &verifier,
            &hs(with("exp", json!(now() - 3600))),
            Err("token expired"),
        );
        check(&verifier, &hs(with("exp", json!(now() - 30))), Ok("alice")); // within leeway
        check(
            &verifier,
            &hs(with("nbf", json!(now() + 3600))),
            Err("token not yet valid"),
        );
        check(
            &verifier,
            &hs(with("aud", json!("billing"))),
            Err("wrong audience"),
        );
        check(
            &verifier,
            &hs(with("iss", json!("https://other.test"))),
            Err("wrong issuer"),
        );
        let mut no_sub = good.clone();
        no_sub.as_object_mut().unwrap().remove("sub");
        check(&verifier, &hs(no_sub), Err("no \"sub\" claim"));
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        check(&verifier, &hs(no_exp), Err("no \"exp\" claim"));
        let other = encode(
            &Header::default(),
            &good,
            &EncodingKey::from_secret(b"another-secret-of-enough-length"),
        )
        .unwrap();
        check(&verifier, &other, Err("bad signature"));
        check(&verifier, "not.a.token", Err("malformed token"));
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &good,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        check(&verifier, &hs512, Err("algorithm not accepted"));
    }

    #[test]
    fn rs256_and_es256_public_keys_and_jwks() {
        let dir = tempdir();
        std::fs::write(dir.join("rsa.pem"), RSA_PUBLIC).unwrap();
        std::fs::write(dir.join("ec.pem"), EC_PUBLIC).unwrap();
        let claims = json!({"sub": "bob", "exp": now() + 600, "aud": "orders", "iss": "https://issuer.test"});
        let rs = encode(
            &Header::new(Algorithm::RS256),
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let mut es_header = Header::new(Algorithm::ES256);
        es_header.kid = Some("ec-1".into());
        let es = encode(
            &es_header,
            &claims,
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();

        let rsa = JwtVerifier::build(
            &config(json!({"secret": null, "algorithms": ["RS256"], "public_key_file": "rsa.pem"})),
            &dir,
        )
        .unwrap();
        check(&rsa, &rs, Ok("bob"));
        check(&rsa, &es, Err("algorithm not accepted"));
        let ec = JwtVerifier::build(
            &config(json!({"secret": null, "algorithms": ["ES256"], "public_key_file": "ec.pem"})),
            &dir,
        )
        .unwrap();
        check(&ec, &es, Ok("bob"));

        // A JWKS with both keys, picked by kid.
        let ec_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            Algorithm::ES256,
        )
        .unwrap();
        let mut ec_jwk = serde_json::to_value(ec_jwk).unwrap();
        ec_jwk["kid"] = json!("ec-1");
        let rsa_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            Algorithm::RS256,
        )
        .unwrap();
        let mut rsa_jwk = serde_json::to_value(rsa_jwk).unwrap();
        rsa_jwk["kid"] = json!("rsa-1");
        std::fs::write(
            dir.join("jwks.json"),
            json!({"keys": [ec_jwk, rsa_jwk]}).to_string(),
        )
        .unwrap();
        let jwks = JwtVerifier::build(
            &config(
                json!({"secret": null, "algorithms": ["ES256", "RS256"], "jwks_file": "jwks.json"}),
            ),
            &dir,
        )
        .unwrap();
        check(&jwks, &es, Ok("bob"));
        let mut rs_header = Header::new(Algorithm::RS256);
        rs_header.kid = Some("rsa-1".into());
        let rs_kid = encode(
            &rs_header,
            &claims,
            &EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        check(&jwks, &rs_kid, Ok("bob"));
        check(&jwks, &rs, Err("no key for the token's kid"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_problems_are_named() {
        let dir = Path::new("/nonexistent");
        for (extra, path, message) in [
            (
                json!({"algorithms": ["HS256", "none"]}),
                "algorithms[1]",
                "not supported",
            ),
            (
                json!({"algorithms": ["RS256"]}),
                "algorithms",
                "a secret only verifies",
            ),
            (json!({"secret": "short"}), "secret", "at least 16 bytes"),
            (json!({"public_key_file": "k.pem"}), "", "exactly one of"),
            (
                json!({"secret": null, "algorithms": ["RS256"], "public_key_file": "k.pem"}),
                "public_key_file",
                "cannot read",
            ),
            (
                json!({"secret": null, "jwks_file": "k.json"}),
                "jwks_file",
                "cannot read",
            ),
            (
                json!({"consumer_claim": ""}),
                "consumer_claim",
                "must not be empty",
            ),
        ] {
            let issues = JwtVerifier::build(&config(extra.clone()), dir).unwrap_err();
            assert!(
                issues
                    .iter()
                    .any(|i| i.path == path && i.message.contains(message)),
                "{extra}: {issues:?}"
            );
        }
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("switchyard-jwt-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
