//! Layered configuration: built-in defaults, then a TOML file, then `EWN__SECTION__KEY`
//! environment variables, then command-line flags. Unknown keys are errors, and every error
//! names the key and the layer (file path, variable or flag) it came from.

use std::collections::HashMap;
use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub const ENV_PREFIX: &str = "EWN";
pub const ENV_SEPARATOR: &str = "__";

/// What to layer over the defaults.
#[derive(Debug, Default)]
pub struct Layers<'a> {
    pub file: Option<&'a Path>,
    /// The process environment (only `EWN__*` variables are used).
    pub env: Vec<(String, String)>,
    /// Dotted keys set by command-line flags, e.g. `("kafka.brokers", "host:9092")`.
    pub overrides: Vec<(String, String)>,
    /// Keys whose environment value is a comma-separated list (`kafka.states`).
    pub list_keys: &'a [&'a str],
}

/// Loads `T`, layering `layers` over `T::default()`.
pub fn load<T>(layers: &Layers<'_>) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let file_text = match layers.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            Some((path, text))
        }
        None => None,
    };
    layered(layers, file_text.as_ref().map(|(p, t)| (*p, t.as_str())))
}

/// [`load`] with the file's text given rather than read (`path` only names it in errors;
/// `layers.file` is ignored): the parser of outside input the fuzz target `config` drives.
pub fn load_str<T>(path: &Path, text: &str, layers: &Layers<'_>) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    layered(layers, Some((path, text)))
}

fn layered<T>(layers: &Layers<'_>, file_text: Option<(&Path, &str)>) -> Result<T>
where
    T: Serialize + DeserializeOwned + Default,
{
    let defaults = Config::try_from(&T::default())
        .map_err(|e| Error::Config(vec![format!("built-in defaults: {e}")]))?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some((_, text)) = file_text {
        builder = builder.add_source(File::from_str(text, FileFormat::Toml));
    }
    let env: HashMap<String, String> = layers
        .env
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}{ENV_SEPARATOR}")))
        .cloned()
        .collect();
    let mut environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .list_separator(",");
    for key in layers.list_keys {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment.source(Some(env.clone().into_iter().collect())));
    for (key, value) in &layers.overrides {
        builder = builder
            .set_override(key.as_str(), value.as_str())
            .map_err(|e| Error::Config(vec![format!("flag for `{key}`: {e}")]))?;
    }
    let merged = builder.build().map_err(|e| {
        let place = file_text
            .as_ref()
            .map(|(p, _)| p.display().to_string())
            .unwrap_or_default();
        Error::Config(vec![format!("{place}: {e}")])
    })?;
    serde_path_to_error::deserialize::<_, T>(merged).map_err(|e| {
        let key = e.path().to_string();
        let origin = origin(&key, file_text, &env, &layers.overrides);
        Error::Config(vec![format!("{key} ({origin}): {}", e.inner())])
    })
}

/// The layer an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Default,
    /// The configuration file, by path.
    File(std::path::PathBuf),
    /// The environment variable that set it.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag => f.write_str("flag"),
        }
    }
}

/// One effective setting: its dotted key (`kafka.brokers`, `subscriptions[0].id`), its
/// value and the layer that set it.
#[derive(Clone, Debug, PartialEq)]
pub struct Explained {
    pub key: String,
    pub value: toml::Value,
    pub origin: Origin,
}

/// Every value of `effective` (what [`load`] returned for `layers`), flattened to dotted
/// keys in key order (`kafka.brokers`, `subscriptions[0].id`, a key with a dot in
/// it quoted as in TOML: `kafka.properties."sasl.password"`), each with the layer that set
/// it. A value inside an array of tables comes from the layer that set the array: a later
/// layer replaces an array whole. Unset optional values do not appear.
pub fn explain<T: Serialize>(effective: &T, layers: &Layers<'_>) -> Result<Vec<Explained>> {
    let table = toml::Value::try_from(effective)
        .map_err(|e| Error::Config(vec![format!("cannot show the configuration: {e}")]))?;
    let file = match layers.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            let table = text
                .parse::<toml::Table>()
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            Some((path, toml::Value::Table(table)))
        }
        None => None,
    };
    let mut leaves = Vec::new();
    flatten(&mut Vec::new(), table, &mut leaves);
    Ok(leaves
        .into_iter()
        .map(|(path, value)| {
            // `subscriptions[0].id` was set with `subscriptions`.
            let setting: Vec<&str> = path
                .iter()
                .map_while(|seg| match seg {
                    Seg::Key(k) => Some(k.as_str()),
                    Seg::Index(_) => None,
                })
                .collect();
            let dotted = setting.join(".");
            let origin = if layers.overrides.iter().any(|(k, _)| *k == dotted) {
                Origin::Flag
            } else if let Some((var, _)) = layers.env.iter().find(|(k, _)| *k == env_var(&dotted)) {
                Origin::Env(var.clone())
            } else if let Some((p, _)) = file.as_ref().filter(|(_, doc)| {
                setting
                    .iter()
                    .try_fold(doc, |node, part| node.get(part))
                    .is_some()
            }) {
                Origin::File(p.to_path_buf())
            } else {
                Origin::Default
            };
            Explained {
                key: display_key(&path),
                value,
                origin,
            }
        })
        .collect())
}

/// The environment variable of a dotted key: `kafka.linger_ms` -> `EWN__KAFKA__LINGER_MS`.
pub fn env_var(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(ENV_SEPARATOR)
    )
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn display_key(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if bare {
                    out.push_str(k);
                } else {
                    out.push_str(&toml::Value::String(k.clone()).to_string());
                }
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Leaves of `value`: tables by key, arrays of tables by index; other arrays are one value.
fn flatten(path: &mut Vec<Seg>, value: toml::Value, out: &mut Vec<(Vec<Seg>, toml::Value)>) {
    match value {
        toml::Value::Table(table) if !table.is_empty() || path.is_empty() => {
            for (k, v) in table {
                path.push(Seg::Key(k));
                flatten(path, v, out);
                path.pop();
            }
        }
        toml::Value::Array(items) if !items.is_empty() && items.iter().all(|i| i.is_table()) => {
            for (i, item) in items.into_iter().enumerate() {
                path.push(Seg::Index(i));
                flatten(path, item, out);
                path.pop();
            }
        }
        leaf => out.push((path.clone(), leaf)),
    }
}

/// Which layer set `key` (or, for an unknown key, which layer holds it).
fn origin(
    key: &str,
    file: Option<(&Path, &str)>,
    env: &HashMap<String, String>,
    overrides: &[(String, String)],
) -> String {
    if overrides.iter().any(|(k, _)| k == key) {
        return format!("command-line flag for `{key}`");
    }
    let var = env_var(key);
    if env.contains_key(&var) {
        return format!("environment variable {var}");
    }
    if let Some((path, text)) = file {
        if let Ok(table) = text.parse::<toml::Table>() {
            let mut node = Some(&toml::Value::Table(table));
            for part in key.split('.') {
                node = node.and_then(|n| n.get(part.split('[').next().unwrap_or(part)));
            }
            if node.is_some() {
                return format!("in {}", path.display());
            }
        }
        return format!("in {} or the environment", path.display());
    }
    "in the environment or built-in defaults".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Kafka {
        brokers: String,
        partitions: i32,
        states: Vec<String>,
    }

    impl Default for Kafka {
        fn default() -> Self {
            Kafka {
                brokers: "d:9092".into(),
                partitions: 3,
                states: vec!["kz".into()],
            }
        }
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Settings {
        kafka: Kafka,
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn layers_apply_in_order() {
        let f = file("[kafka]\nbrokers = \"file:1\"\npartitions = 6\n");
        let layers = Layers {
            file: Some(f.path()),
            env: vec![
                ("EWN__KAFKA__PARTITIONS".into(), "9".into()),
                ("EWN__KAFKA__STATES".into(), "kz,kg".into()),
                ("OTHER".into(), "x".into()),
            ],
            overrides: vec![("kafka.brokers".into(), "flag:2".into())],
            list_keys: &["kafka.states"],
        };
        let s: Settings = load(&layers).unwrap();
        assert_eq!(
            s.kafka,
            Kafka {
                brokers: "flag:2".into(),
                partitions: 9,
                states: vec!["kz".into(), "kg".into()]
            }
        );
        let s: Settings = load(&Layers::default()).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let f = file("[kafka]\nbrokerz = \"x\"\n");
        let err = load::<Settings>(&Layers {
            file: Some(f.path()),
            ..Default::default()
        })
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kafka.brokerz"), "{text}");
        assert!(text.contains(&f.path().display().to_string()), "{text}");
        assert!(text.contains("unknown field `brokerz`"), "{text}");
    }

    #[test]
    fn text_given_loads_as_the_file_would() {
        let text = "[kafka]\nbrokerz = \"x\"\n";
        let f = file(text);
        let from_file = load::<Settings>(&Layers {
            file: Some(f.path()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        let from_text = load_str::<Settings>(f.path(), text, &Layers::default())
            .unwrap_err()
            .to_string();
        assert_eq!(from_file, from_text);
        let s: Settings =
            load_str(f.path(), "[kafka]\npartitions = 4\n", &Layers::default()).unwrap();
        assert_eq!(s.kafka.partitions, 4);
    }

    #[test]
    fn bad_type_from_env_names_the_variable() {
        let layers = Layers {
            env: vec![("EWN__KAFKA__PARTITIONS".into(), "many".into())],
            ..Default::default()
        };
        let text = load::<Settings>(&layers).unwrap_err().to_string();
        assert!(text.contains("kafka.partitions"), "{text}");
        assert!(text.contains("EWN__KAFKA__PARTITIONS"), "{text}");
    }

    #[test]
    fn explain_names_the_layer_of_every_value() {
        let f = file("[kafka]\nbrokers = \"file:1\"\n");
        let layers = Layers {
            file: Some(f.path()),
            env: vec![("EWN__KAFKA__STATES".into(), "kz,kg".into())],
            overrides: vec![("kafka.partitions".into(), "7".into())],
            list_keys: &["kafka.states"],
        };
        let s: Settings = load(&layers).unwrap();
        let got: Vec<(String, String, Origin)> = explain(&s, &layers)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value.to_string(), e.origin))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "kafka.brokers".into(),
                    "\"file:1\"".into(),
                    Origin::File(f.path().into())
                ),
                ("kafka.partitions".into(), "7".into(), Origin::Flag),
                (
                    "kafka.states".into(),
                    "[\"kz\", \"kg\"]".into(),
                    Origin::Env("EWN__KAFKA__STATES".into())
                ),
            ]
        );
        let defaults = explain(&Settings::default(), &Layers::default()).unwrap();
        assert!(defaults.iter().all(|e| e.origin == Origin::Default));
        assert_eq!(defaults.len(), 3);
    }
}
