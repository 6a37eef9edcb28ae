//! `switchyard status`: a running gateway's upstreams, registries and routes as terminal
//! tables, read from its admin API.

use std::process::ExitCode;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Fetches and prints; exit 1 when the gateway cannot be reached.
pub fn run(admin: &str, token: Option<&str>) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let base = admin.trim_end_matches('/');
        let mut parts = Vec::new();
        for api in ["upstreams", "registries", "routes"] {
            match fetch(&format!("{base}/api/{api}"), token).await {
                Ok(value) => parts.push(value),
                Err(error) => {
                    eprintln!("switchyard status: {base}/api/{api}: {error}");
                    return ExitCode::from(1);
                }
            }
        }
        print!("{}", render(&parts[0], &parts[1], &parts[2]));
        ExitCode::SUCCESS
    })
}

async fn fetch(url: &str, token: Option<&str>) -> Result<Value, String> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut request = http::Request::get(url)
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "bad token".to_owned())?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, value);
    }
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Lays rows out in aligned columns.
fn columns(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(head.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn render(upstreams: &Value, registries: &Value, routes: &Value) -> String {
    let empty = Vec::new();
    let mut rows = Vec::new();
    for u in upstreams.as_array().unwrap_or(&empty) {
        for e in u["endpoints"].as_array().unwrap_or(&empty) {
            rows.push(vec![
                s(&u["name"]),
                s(&e["address"]),
                format!(
                    "{}/{}",
                    s(&e["source"]["registry"]),
                    s(&e["source"]["service"])
                ),
                format!("{}.{}", s(&e["priority"]), s(&e["endpoint_priority"])),
                if e["healthy"].as_bool() == Some(true) {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                if e["stale"].as_bool() == Some(true) {
                    "stale".into()
                } else {
                    "fresh".into()
                },
                if e["serving"].as_bool() == Some(true) {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]);
        }
    }
    let mut out = String::from("Upstreams\n");
    out.push_str(&columns(
        &[
            "upstream", "address", "source", "tier", "health", "stale", "serving",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = registries
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            [
                "name",
                "type",
                "state",
                "services",
                "endpoints",
                "last_update",
                "last_error",
            ]
            .iter()
            .map(|k| s(&r[*k]))
            .collect()
        })
        .collect();
    out.push_str("\nRegistries\n");
    out.push_str(&columns(
        &[
            "registry",
            "type",
            "state",
            "services",
            "endpoints",
            "last update",
            "last error",
        ],
        &rows,
    ));
    let rows: Vec<Vec<String>> = routes
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .map(|r| {
            let path = if r["path"].is_string() {
                s(&r["path"])
            } else {
                format!("{}*", s(&r["path_prefix"]))
            };
            vec![s(&r["name"]), s(&r["host"]), path, s(&r["upstream"])]
        })
        .collect();
    out.push_str("\nRoutes\n");
    out.push_str(&columns(&["route", "host", "path", "upstream"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_tables() {
        let upstreams = serde_json::json!([{"name": "echo", "endpoints": [{"address": "127.0.0.1:1", "source": {"registry": "files", "service": "echo"}, "priority": 0, "endpoint_priority": 0, "healthy": true, "stale": false, "serving": true}]}]);
        let registries = serde_json::json!([{"name": "files", "type": "file", "state": "ok", "services": 1, "endpoints": 1, "last_update": null, "last_error": null}]);
        let routes = serde_json::json!([{"name": "echo", "host": null, "path_prefix": "/", "upstream": "echo"}]);
        let out = render(&upstreams, &registries, &routes);
        assert!(
            out.contains("echo      127.0.0.1:1  files/echo  0.0   healthy  fresh  yes"),
            "{out}"
        );
        assert!(out.contains("files     file  ok"), "{out}");
    }
}
