//! What the admin API and metrics say about the config source: its state (off, connecting,
//! ok, refused, down), the revision running, the last refusal with its errors, and the
//! counts of applied and refused changes. The watcher writes it; readers take a copy.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use serde_json::Value;
use switchyard_registry::ConfigIssue;

use crate::api::{ConfigChanges, ConfigRefusal, ConfigSourceStatus};

use super::merge::Snapshot;
use super::settings::ConfigSource;

/// What the admin API and metrics say about the config source.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    configured: Option<(Vec<String>, String)>,
    state: &'static str,
    revision: Option<i64>,
    applied_revision: Option<i64>,
    applied_at: Option<SystemTime>,
    objects: usize,
    last_error: Option<String>,
    refused: Option<Refusal>,
    applied_total: u64,
    refused_total: u64,
}

#[derive(Debug)]
struct Refusal {
    revision: i64,
    at: SystemTime,
    objects: BTreeMap<String, Vec<u8>>,
    errors: Vec<String>,
}

impl Status {
    /// The status of a generation's config source (`None`: off).
    pub fn new(source: Option<&ConfigSource>) -> Status {
        let inner = match source {
            None => StatusInner {
                state: "off",
                ..StatusInner::default()
            },
            Some(source) => StatusInner {
                configured: Some((source.connect.endpoints.clone(), source.prefix.clone())),
                state: "connecting",
                revision: source.snapshot.as_ref().map(|s| s.revision),
                applied_revision: source.snapshot.as_ref().map(|s| s.revision),
                applied_at: source.snapshot.as_ref().map(|_| SystemTime::now()),
                objects: source.snapshot.as_ref().map_or(0, |s| s.objects.len()),
                ..StatusInner::default()
            },
        };
        Status {
            inner: Mutex::new(inner),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The running snapshot is current at `revision`.
    pub fn ok(&self, revision: i64, objects: usize) {
        self.with(|s| {
            s.state = "ok";
            s.revision = Some(revision);
            s.applied_revision = Some(revision);
            s.applied_at.get_or_insert_with(SystemTime::now);
            s.objects = objects;
            s.last_error = None;
            s.refused = None;
        });
    }

    /// A new snapshot was applied.
    pub fn applied(&self, revision: i64, objects: usize) {
        self.with(|s| {
            s.applied_total += 1;
            s.applied_at = Some(SystemTime::now());
        });
        self.ok(revision, objects);
    }

    /// A snapshot was refused.
    pub fn refused(&self, snapshot: &Snapshot, issues: &[ConfigIssue]) {
        self.with(|s| {
            s.state = "refused";
            s.revision = Some(snapshot.revision);
            s.last_error = None;
            s.refused_total += 1;
            s.refused = Some(Refusal {
                revision: snapshot.revision,
                at: SystemTime::now(),
                objects: snapshot.objects.clone(),
                errors: issues.iter().map(ToString::to_string).collect(),
            });
        });
    }

    /// Connected again, and etcd still holds the objects last refused.
    pub fn still_refused(&self, revision: i64) {
        self.with(|s| {
            s.state = "refused";
            s.revision = Some(revision);
            s.last_error = None;
        });
    }

    /// Whether exactly these objects were the last ones refused.
    pub fn was_refused(&self, objects: &BTreeMap<String, Vec<u8>>) -> bool {
        self.with(|s| s.refused.as_ref().is_some_and(|r| &r.objects == objects))
    }

    /// The connection broke.
    pub fn down(&self, error: &str) {
        self.with(|s| {
            s.state = "down";
            s.last_error = Some(error.to_owned());
        });
    }

    /// `GET /api/config_source`.
    pub fn to_status(&self) -> ConfigSourceStatus {
        let time = |t: Option<SystemTime>| t.map(switchyard_proxy::access_log::rfc3339);
        self.with(|s| match &s.configured {
            None => ConfigSourceStatus {
                kind: None,
                state: "off".into(),
                ..ConfigSourceStatus::default()
            },
            Some((endpoints, prefix)) => ConfigSourceStatus {
                kind: Some("etcd".into()),
                state: s.state.into(),
                endpoints: Some(endpoints.clone()),
                prefix: Some(prefix.clone()),
                revision: Some(s.revision),
                applied_revision: Some(s.applied_revision),
                applied_at: Some(time(s.applied_at)),
                objects: Some(s.objects as u64),
                last_error: Some(s.last_error.clone()),
                refused: Some(s.refused.as_ref().map(|r| ConfigRefusal {
                    revision: r.revision,
                    at: time(Some(r.at)),
                    errors: r.errors.clone(),
                })),
                changes: Some(ConfigChanges {
                    applied: s.applied_total,
                    refused: s.refused_total,
                }),
            },
        })
    }

    /// [`Status::to_status`] as JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self.to_status()).unwrap_or_default()
    }

    /// Writes the `switchyard_config_source_*` families to `/metrics` (nothing when off).
    pub fn encode_metrics(
        &self,
        encoder: &mut switchyard_metrics::prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use switchyard_metrics::{family, Escaped};
        let Some((up, revision, applied, refused)) = self.with(|s| {
            s.configured.as_ref().map(|_| {
                (
                    i64::from(matches!(s.state, "ok" | "refused")),
                    s.applied_revision.unwrap_or(0),
                    s.applied_total,
                    s.refused_total,
                )
            })
        }) else {
            return Ok(());
        };
        family::single_gauge(
            encoder,
            "switchyard_config_source_up",
            "1 while the etcd config source is connected.",
            up,
        )?;
        family::single_gauge(
            encoder,
            "switchyard_config_source_revision",
            "The etcd revision of the running fleet config.",
            revision,
        )?;
        family::counter(
            encoder,
            "switchyard_config_source_changes_total",
            "Fleet config changes from etcd by result.",
            [("applied", applied), ("refused", refused)]
                .map(|(result, n)| ([("result", Escaped(result))], n)),
        )
    }
}
#[cfg(test)]
mod tests {
    use super::super::settings::decode;
    use super::*;
    use serde_json::json;
    #[test]
    fn status_states() {
        let state = |status: &Status| status.to_json()["state"].as_str().unwrap().to_owned();
        assert_eq!(state(&Status::new(None)), "off");
        let source = decode(&json!({"type": "etcd", "endpoints": ["http://a:1"]})).unwrap();
        let status = Status::new(Some(&source));
        assert_eq!(state(&status), "connecting");
        status.applied(5, 2);
        assert_eq!(state(&status), "ok");
        let bad = Snapshot {
            prefix: "/switchyard/config".into(),
            revision: 7,
            objects: [("routes/x".to_owned(), b"{".to_vec())].into(),
        };
        status.refused(
            &bad,
            &[ConfigIssue::new(
                "etcd:/switchyard/config/routes/x",
                "invalid JSON",
            )],
        );
        assert_eq!(state(&status), "refused");
        assert!(status.was_refused(&bad.objects));
        status.down("connection refused");
        assert_eq!(state(&status), "down");
        status.still_refused(8);
        let json = status.to_json();
        assert_eq!(
            (json["state"].as_str(), json["applied_revision"].as_i64()),
            (Some("refused"), Some(5))
        );
        assert_eq!(
            json["refused"]["errors"][0],
            "etcd:/switchyard/config/routes/x: invalid JSON"
        );
        let status = std::sync::Arc::new(status);
        let metrics = {
            let status = status.clone();
            switchyard_metrics::exposition::render_one(
                switchyard_metrics::Format::Prometheus,
                move |e| status.encode_metrics(e),
            )
        };
        for line in [
            "switchyard_config_source_up 1",
            "switchyard_config_source_revision 5",
            "switchyard_config_source_changes_total{result=\"applied\"} 1",
            "switchyard_config_source_changes_total{result=\"refused\"} 1",
        ] {
            assert!(metrics.contains(line), "{line} not in {metrics}");
        }
        status.ok(9, 2);
        assert!(status.to_json()["refused"].is_null());
    }
}
