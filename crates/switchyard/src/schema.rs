//! `switchyard config schema`: the JSON Schema (draft 2020-12) of the config file, derived
//! from the structs that decode it, so that a key added to a struct is in the schema (and
//! must then be in docs/configuration.md: the docs test names any key that is not).
//!
//! - `[server]`, `[admin]`, `[log]`, `[state]`, `[upstreams.*]`, `[[routes]]`: the config
//!   structs' `schemars::JsonSchema` derives (doc comments become `description`s).
//! - `[registries.*]`: one variant per registry `type` in the catalog, each the backend's own
//!   settings schema ([`RegistryFactory::settings_schema`]) plus its `type`.
//! - `[config_source]`: the etcd backend's connection settings plus `type` and
//!   `startup_timeout`.
//! - Route policies (`auth`, `rate_limit`, `cache`, ...) and `[consumers]`, `[auth]`,
//!   `[route_defaults]`: named, their contents checked by `switchyard check` only.
//!
//! Editors use it through a `#:schema` comment on a TOML file's first line (Taplo, Even
//! Better TOML): see docs/configuration.md.
//!
//! [`RegistryFactory::settings_schema`]: switchyard_registry::RegistryFactory::settings_schema

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};
use switchyard_registry::Catalog;

use crate::config::{
    AdminConfig, LogConfig, RouteConfig, ServerConfig, StateConfig, UpstreamConfig, POLICY_SECTIONS,
};

/// The schema of the whole config file for the registry types in `catalog`.
pub fn config_schema(catalog: &Catalog) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut properties = Map::new();
    for section in crate::config::sections() {
        let schema = match *section {
            "server" => of::<ServerConfig>(&mut generator),
            "admin" => of::<AdminConfig>(&mut generator),
            "log" => of::<LogConfig>(&mut generator),
            "state" => of::<StateConfig>(&mut generator),
            "upstreams" => json!({
                "description": "Upstreams by name: where a route sends requests.",
                "type": "object",
                "additionalProperties": of::<UpstreamConfig>(&mut generator),
            }),
            "routes" => json!({
                "description": "Routes, in order: what a request matches, and where it goes.",
                "type": "array",
                "items": route(&mut generator),
            }),
            "registries" => json!({
                "description": "Registries by name: where upstreams' instances are discovered.",
                "type": "object",
                "additionalProperties": {"oneOf": registries(catalog, &mut generator)},
            }),
            "config_source" => config_source(catalog, &mut generator),
            "tracing" => of::<crate::telemetry::TracingConfig>(&mut generator),
            // A section added to `RawConfig` without a typed schema here: any table, and the
            // docs test says which (`schema_describes_every_section`).
            _ => json!({"type": "object", "x-undescribed": true}),
        };
        properties.insert((*section).to_owned(), schema);
    }
    for section in POLICY_SECTIONS {
        let schema = match section {
            "route_defaults" => json!({
                "description": "Policy keys every route inherits (a route's own keys win).",
                "type": "object",
                "properties": policy_keys(),
                "additionalProperties": false,
            }),
            "consumers" => json!({
                "description": "API consumers by name: `keys` and `basic` credentials.",
                "type": "object",
                "additionalProperties": {"type": "object"},
            }),
            _ => json!({
                "description": "Shared authentication settings: `realm`, `[auth.key]`, `[auth.jwt]`.",
                "type": "object",
            }),
        };
        properties.insert(section.to_owned(), schema);
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Switchyard configuration",
        "description": "The config file of the switchyard gateway (docs/configuration.md).",
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    })
}

/// The inline schema of `T`.
fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// A `[[routes]]` table: the router's keys, and the policy keys the policy layer decodes.
fn route(generator: &mut SchemaGenerator) -> Value {
    let mut schema = of::<RouteConfig>(generator);
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.extend(policy_keys());
    }
    schema
}

/// The route policy keys, each any value here (decoded and checked by the policy layer).
fn policy_keys() -> Map<String, Value> {
    switchyard_policy::config::ROUTE_POLICY_KEYS
        .iter()
        .map(|key| {
            let description = format!(
                "Route policy `{key}` (docs/configuration.md, \"Route policies\"); checked by `switchyard check`."
            );
            ((*key).to_owned(), json!({ "description": description }))
        })
        .collect()
}

/// One variant per registry type: the backend's settings schema with `type` added.
fn registries(catalog: &Catalog, generator: &mut SchemaGenerator) -> Vec<Value> {
    let mut variants = Vec::new();
    for kind in catalog.kinds() {
        let Some(factory) = catalog.get(kind) else {
            continue;
        };
        let settings = factory.settings_schema(generator).to_value();
        variants.push(with_type(
            settings,
            kind,
            &format!("`{kind}`: this table's registry backend."),
        ));
    }
    variants
}

/// `[config_source]`: the etcd connection keys, `type = "etcd"` and `startup_timeout`.
fn config_source(catalog: &Catalog, generator: &mut SchemaGenerator) -> Value {
    let settings = catalog
        .get("etcd")
        .map(|factory| factory.settings_schema(generator).to_value())
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut schema = with_type(settings, "etcd", "`etcd`: the only config source type.");
    if let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert(
            "prefix".into(),
            json!({
                "description": "Key prefix of the fleet config, without a trailing `/`. Default `/switchyard/config`.",
                "type": "string",
            }),
        );
        properties.insert(
            "startup_timeout".into(),
            json!({
                "description": "How long start-up waits for the first read of the prefix (it then starts on the file alone). Default 10 s.",
                "type": "string",
            }),
        );
    }
    schema["description"] =
        json!("Fleet config in etcd: routes, upstreams, consumers and policies shared by every gateway watching the prefix (docs/configuration.md, \"Fleet config\").");
    schema
}

/// `schema` with a required `type` property whose value must be `kind`.
fn with_type(mut schema: Value, kind: &str, description: &str) -> Value {
    let Some(object) = schema.as_object_mut() else {
        return schema;
    };
    object.remove("$schema");
    object.remove("title");
    let properties = object
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(properties) = properties.as_object_mut() {
        let mut with_type = Map::new();
        with_type.insert(
            "type".into(),
            json!({"description": description, "const": kind}),
        );
        with_type.extend(std::mem::take(properties));
        *properties = with_type;
    }
    let required = object
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(required) = required.as_array_mut() {
        required.retain(|r| r != "type");
        required.insert(0, json!("type"));
    }
    schema
}
