//! Loading a [`ManagerConfig`] from a document and the environment, with every problem
//! reported by key path.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Json, Toml, Yaml};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{DEFAULT_ADDR, EtcdConfig, ManagerConfig, RedisConfig};
use crate::error::{ConfigErrors, Error, Result};

/// Environment variables with this prefix override the loaded document.
pub(crate) const ENV_PREFIX: &str = "CONNHUB__";

/// How many type errors are collected in one connector before giving up on it.
const MAX_TYPE_ERRORS: usize = 32;

impl ManagerConfig {
    /// Loads a file, choosing the format by extension (`.yaml`/`.yml`, `.toml`, `.json`),
    /// then applies environment overrides and validates.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            invalid(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
            )
        })?;
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("yaml" | "yml") => Self::from_yaml_str(&text),
            Some("toml") => Self::from_toml_str(&text),
            Some("json") => Self::from_json_str(&text),
            _ => Err(invalid(
                path.display().to_string(),
                "unknown file extension; expected .yaml, .yml, .toml or .json",
            )),
        }
    }

    /// Loads YAML text, then applies environment overrides and validates.
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        load(Figment::from(Yaml::string(text)))
    }

    /// Loads TOML text, then applies environment overrides and validates.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        load(Figment::from(Toml::string(text)))
    }

    /// Loads JSON text, then applies environment overrides and validates.
    pub fn from_json_str(text: &str) -> Result<Self> {
        load(Figment::from(Json::string(text)))
    }

    /// Builds a config from the environment variables alone.
    pub fn from_env() -> Result<Self> {
        load(Figment::new())
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Error {
    let mut e = ConfigErrors::default();
    e.push(key, message);
    Error::InvalidConfig(e)
}

fn load(figment: Figment) -> Result<ManagerConfig> {
    let figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    let root: Value = figment
        .extract()
        .map_err(|e| invalid("", format!("cannot parse the configuration: {e}")))?;
    let mut errors = ConfigErrors::default();
    let root = match root {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => {
            return Err(invalid(
                "",
                format!(
                    "expected a mapping at the top level, found {}",
                    type_name(&other)
                ),
            ));
        }
    };
    let mut cfg = ManagerConfig::default();
    let mut defaults = Map::new();
    for (key, value) in &root {
        match key.as_str() {
            "defaults" => {
                defaults = object(value, "defaults", &mut errors);
                cfg.defaults =
                    parse_section(Value::Object(defaults.clone()), "defaults", &mut errors);
            }
            "redis" | "etcd" => {}
            other => errors.push(other, "unknown key (expected defaults, redis or etcd)"),
        }
    }
    if let Some(v) = root.get("redis") {
        for (name, c) in object(v, "redis", &mut errors) {
            explicit_addr(&c, &format!("redis.{name}"), &mut errors);
            let c = with_defaults(&defaults, &c, &format!("redis.{name}"), &mut errors);
            let parsed: RedisConfig = parse_section(c, &format!("redis.{name}"), &mut errors);
            cfg.redis.insert(name, parsed);
        }
    }
    if let Some(v) = root.get("etcd") {
        for (name, c) in object(v, "etcd", &mut errors) {
            let c = with_defaults(&defaults, &c, &format!("etcd.{name}"), &mut errors);
            let parsed: EtcdConfig = parse_section(c, &format!("etcd.{name}"), &mut errors);
            cfg.etcd.insert(name, parsed);
        }
    }
    if let Err(Error::InvalidConfig(more)) = cfg.validate() {
        // Keep one message per key: a type error already reported is not repeated.
        for issue in more.issues() {
            if !errors.has_key(&issue.key) {
                errors.push(issue.key.clone(), issue.message.clone());
            }
        }
    }
    errors.into_result().map(|()| cfg)
}

/// A file that names `addr` next to `sentinel` or `cluster` is refused even when the
/// address is the default one (validation alone cannot tell it was given).
fn explicit_addr(connector: &Value, prefix: &str, errors: &mut ConfigErrors) {
    let Value::Object(m) = connector else { return };
    // Any other address is reported by validation.
    if m.get("addr") != Some(&Value::String(DEFAULT_ADDR.into())) {
        return;
    }
    if let Some(other) = ["sentinel", "cluster"]
        .into_iter()
        .find(|k| m.get(*k).is_some_and(|v| !v.is_null()))
    {
        errors.push(
            format!("{prefix}.addr"),
            format!("give either addr or {other}, not both"),
        );
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn object(v: &Value, key: &str, errors: &mut ConfigErrors) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            errors.push(
                key,
                format!("expected a mapping, found {}", type_name(other)),
            );
            Map::new()
        }
    }
}

fn with_defaults(
    defaults: &Map<String, Value>,
    own: &Value,
    key: &str,
    errors: &mut ConfigErrors,
) -> Value {
    let mut merged = defaults.clone();
    merged.extend(object(own, key, errors));
    Value::Object(merged)
}

/// Deserializes one section, reporting unknown keys and every type error by key path; a
/// key with a bad value is reported and then left at its default so the rest is checked too.
fn parse_section<T>(mut value: Value, prefix: &str, errors: &mut ConfigErrors) -> T
where
    T: DeserializeOwned + Serialize + Default,
{
    // Unknown keys: compare against the keys the type itself serializes.
    if let Ok(template) = serde_json::to_value(T::default()) {
        let mut unknown = Vec::new();
        unknown_keys(&value, &template, prefix, &mut unknown);
        for (path, suggestion) in unknown {
            let message = match suggestion {
                Some(key) => format!("unknown key (did you mean {key}?)"),
                None => "unknown key".to_owned(),
            };
            errors.push(path, message);
        }
    }
    for _ in 0..MAX_TYPE_ERRORS {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(parsed) => return parsed,
            Err(e) => {
                let path = e.path().to_string();
                if path != "." && !path.is_empty() {
                    let message = e.inner().to_string();
                    let message = value_at(&value, e.path())
                        .and_then(|v| not_a_duration(v, &message))
                        .unwrap_or(message);
                    errors.push(format!("{prefix}.{path}"), message);
                    if remove_path(&mut value, e.path()) {
                        continue;
                    }
                    break;
                }
                // No path (a flattened field): find the key by trying each alone.
                match isolate::<T>(&value) {
                    Some((key, message)) => {
                        let message = value
                            .get(&key)
                            .and_then(|v| not_a_duration(v, &message))
                            .unwrap_or(message);
                        errors.push(format!("{prefix}.{key}"), message);
                        if let Value::Object(m) = &mut value {
                            m.remove(&key);
                        }
                    }
                    None => {
                        errors.push(prefix, e.inner().to_string());
                        break;
                    }
                }
            }
        }
    }
    T::default()
}

/// The first top-level key whose value alone fails to deserialize, with the message.
fn isolate<T: DeserializeOwned>(value: &Value) -> Option<(String, String)> {
    let Value::Object(m) = value else { return None };
    m.iter().find_map(|(k, v)| {
        let mut single = Map::new();
        single.insert(k.clone(), v.clone());
        serde_json::from_value::<T>(Value::Object(single))
            .err()
            .map(|e| (k.clone(), e.to_string()))
    })
}

/// Every key of `value` that `template` does not have, by path, with the known key at the
/// same level it most likely meant.
fn unknown_keys(
    value: &Value,
    template: &Value,
    prefix: &str,
    out: &mut Vec<(String, Option<String>)>,
) {
    let (Value::Object(v), Value::Object(t)) = (value, template) else {
        return;
    };
    for (k, child) in v {
        let path = format!("{prefix}.{k}");
        match t.get(k) {
            None => out.push((path, closest(k, t.keys()))),
            Some(tchild) => unknown_keys(child, tchild, &path, out),
        }
    }
}

/// The known key most like `key`, when one is close enough to be a typo of it.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a String>) -> Option<String> {
    known
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.clone())
}

/// A duration key's value that humantime cannot read, said plainly: `message` is serde's
/// error for `value`, and it is humantime's (or says a duration was expected) only when the
/// key is a duration.
fn not_a_duration(value: &Value, message: &str) -> Option<String> {
    let is_humantime = match value {
        Value::String(s) => humantime::parse_duration(s)
            .err()
            .is_some_and(|e| message.contains(&e.to_string())),
        _ => false,
    };
    if !is_humantime && !message.contains("expected a duration") {
        return None;
    }
    let shown = match value {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    Some(format!(
        "{shown} is not a duration (write 10s, 250ms, 1m30s)"
    ))
}

fn value_at<'a>(value: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(value, |cur, seg| match (seg, cur) {
        (Segment::Map { key }, Value::Object(m)) => m.get(key.as_str()),
        (Segment::Seq { index }, Value::Array(a)) => a.get(*index),
        _ => None,
    })
}

fn remove_path(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        cur = match (seg, cur) {
            (Segment::Map { key }, Value::Object(m)) => match m.get_mut(key.as_str()) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(a)) => match a.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Segment::Map { key }, Value::Object(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { .. }, Value::Array(a)) => {
            a.clear();
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_own_keys_win() {
        let cfg = ManagerConfig::from_yaml_str(
            "defaults:\n  connect_timeout: 2s\n  fail_fast: false\nredis:\n  a:\n    addr: h:1\n    connect_timeout: 7s\n",
        )
        .unwrap();
        let a = &cfg.redis["a"].connector;
        assert_eq!(a.connect_timeout, std::time::Duration::from_secs(7));
        assert!(!a.fail_fast);
        assert_eq!(
            cfg.defaults.connect_timeout,
            std::time::Duration::from_secs(2)
        );
    }
}
