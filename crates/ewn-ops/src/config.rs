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
    let defaults = Config::try_from(&T::default())
        .map_err(|e| Error::Config(vec![format!("built-in defaults: {e}")]))?;
    let mut builder = Config::builder().add_source(defaults);
    let file_text = match layers.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
            builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
            Some((path, text))
        }
        None => None,
    };
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
        let origin = origin(
            &key,
            file_text.as_ref().map(|(p, t)| (*p, t.as_str())),
            &env,
            &layers.overrides,
        );
        Error::Config(vec![format!("{key} ({origin}): {}", e.inner())])
    })
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
    let var = format!(
        "{ENV_PREFIX}{ENV_SEPARATOR}{}",
        key.split('.')
            .map(str::to_ascii_uppercase)
            .collect::<Vec<_>>()
            .join(ENV_SEPARATOR)
    );
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
    fn bad_type_from_env_names_the_variable() {
        let layers = Layers {
            env: vec![("EWN__KAFKA__PARTITIONS".into(), "many".into())],
            ..Default::default()
        };
        let text = load::<Settings>(&layers).unwrap_err().to_string();
        assert!(text.contains("kafka.partitions"), "{text}");
        assert!(text.contains("EWN__KAFKA__PARTITIONS"), "{text}");
    }
}
