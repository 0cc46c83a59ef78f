//! Settings, read once at start from `RESCUE_*` environment variables.
//!
//! Each variable fails fast with its own name when its value is invalid, so a bad deployment
//! shows up in the first cold start rather than in the middle of a rescue.

use thiserror::Error;

/// A variable that could not be used, named so the operator can fix the stack parameter.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid {name}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// Which secrets this deployment may touch, checked on the described secret (never on the event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only secrets whose name starts with this.
    pub name_prefix: Option<String>,
    /// Only secrets carrying this tag (and, when given, this value).
    pub tag: Option<ScopeTag>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeTag {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Plan and report, but make only read calls.
    pub dry_run: bool,
    /// The keep-label is this prefix, `_`, and the stuck version's creation time.
    pub keep_label_prefix: String,
    /// Tag each rescued secret with what was done.
    pub tag_secrets: bool,
    pub scope: Scope,
    /// Touch secrets managed by another service (`OwningService`).
    pub allow_managed: bool,
    /// The account used when the invoked function ARN does not parse.
    pub account_id: Option<String>,
    /// The function's own region: secrets of other regions are not ours.
    pub region: String,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };

        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .ok_or(ConfigError {
                name: "AWS_REGION",
                value: String::new(),
                expected: "the function's region (Lambda sets it)",
            })?;

        Ok(Config {
            dry_run: flag(get("RESCUE_DRY_RUN"), "RESCUE_DRY_RUN", false)?,
            keep_label_prefix: keep_label_prefix(get("RESCUE_KEEP_LABEL_PREFIX"))?,
            tag_secrets: flag(get("RESCUE_TAG_SECRETS"), "RESCUE_TAG_SECRETS", true)?,
            scope: Scope {
                name_prefix: get("RESCUE_SCOPE_NAME_PREFIX"),
                tag: get("RESCUE_SCOPE_TAG").map(scope_tag).transpose()?,
            },
            allow_managed: flag(get("RESCUE_ALLOW_MANAGED"), "RESCUE_ALLOW_MANAGED", false)?,
            account_id: get("RESCUE_ACCOUNT_ID").map(account_id).transpose()?,
            region,
        })
    }
}

fn flag(value: Option<String>, name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(ConfigError {
            name,
            value: value.unwrap_or_default(),
            expected: "true or false",
        }),
    }
}

/// Staging labels allow up to 256 characters; the prefix leaves room for `_`, a compact UTC time
/// and, when that label is taken, `_` and a version id (up to 64 characters).
const MAX_PREFIX: usize = 64;

fn keep_label_prefix(value: Option<String>) -> Result<String, ConfigError> {
    let Some(prefix) = value else {
        return Ok("RESCUED".to_owned());
    };
    let valid_chars = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    // `AWS` labels belong to Secrets Manager; a keep-label must never look like one.
    let reserved = prefix.to_ascii_uppercase().starts_with("AWS");
    if prefix.len() > MAX_PREFIX || !valid_chars || reserved {
        return Err(ConfigError {
            name: "RESCUE_KEEP_LABEL_PREFIX",
            value: prefix,
            expected: "1-64 letters, digits, '_', '-' or '.', not starting with AWS",
        });
    }
    Ok(prefix)
}

fn scope_tag(value: String) -> Result<ScopeTag, ConfigError> {
    let (key, tag_value) = match value.split_once('=') {
        Some((key, tag_value)) => (key.trim(), Some(tag_value.trim().to_owned())),
        None => (value.as_str(), None),
    };
    if key.is_empty() {
        return Err(ConfigError {
            name: "RESCUE_SCOPE_TAG",
            value,
            expected: "key or key=value",
        });
    }
    Ok(ScopeTag {
        key: key.to_owned(),
        value: tag_value,
    })
}

fn account_id(value: String) -> Result<String, ConfigError> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value)
    } else {
        Err(ConfigError {
            name: "RESCUE_ACCOUNT_ID",
            value,
            expected: "a 12-digit AWS account id",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| env.get(name).cloned())
    }

    #[test]
    fn defaults_apply_when_only_the_region_is_set() {
        let config = config(&[("AWS_REGION", "us-east-1")]).unwrap();
        assert!(!config.dry_run);
        assert!(config.tag_secrets);
        assert!(!config.allow_managed);
        assert_eq!(config.keep_label_prefix, "RESCUED");
        assert_eq!(config.scope, Scope::default());
        assert_eq!(config.account_id, None);
        assert_eq!(config.region, "us-east-1");
    }

    #[test]
    fn missing_region_is_named() {
        assert_eq!(config(&[]).unwrap_err().name, "AWS_REGION");
    }

    #[test]
    fn every_invalid_variable_is_named() {
        let cases = [
            ("RESCUE_DRY_RUN", "maybe"),
            ("RESCUE_TAG_SECRETS", "2"),
            ("RESCUE_ALLOW_MANAGED", "on-tuesdays"),
            ("RESCUE_KEEP_LABEL_PREFIX", "has space"),
            ("RESCUE_KEEP_LABEL_PREFIX", "AWSKEEP"),
            ("RESCUE_SCOPE_TAG", "=value"),
            ("RESCUE_ACCOUNT_ID", "12345"),
        ];
        for (name, value) in cases {
            let err = config(&[("AWS_REGION", "us-east-1"), (name, value)]).unwrap_err();
            assert_eq!(err.name, name, "{name}={value}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn scope_tag_takes_key_or_key_and_value() {
        let only_key = config(&[("AWS_REGION", "r"), ("RESCUE_SCOPE_TAG", "team")]).unwrap();
        assert_eq!(
            only_key.scope.tag,
            Some(ScopeTag {
                key: "team".into(),
                value: None
            })
        );
        let pair = config(&[("AWS_REGION", "r"), ("RESCUE_SCOPE_TAG", "team=db")]).unwrap();
        assert_eq!(pair.scope.tag.unwrap().value.as_deref(), Some("db"));
    }

    #[test]
    fn flags_accept_common_spellings() {
        let on = config(&[("AWS_REGION", "r"), ("RESCUE_DRY_RUN", "TRUE")]).unwrap();
        assert!(on.dry_run);
        let off = config(&[("AWS_REGION", "r"), ("RESCUE_TAG_SECRETS", "0")]).unwrap();
        assert!(!off.tag_secrets);
    }
}
