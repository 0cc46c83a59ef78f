//! Settings, read once at start from `RESCUE_*` environment variables.
//!
//! Each variable fails fast with its own name when its value is invalid, so a bad deployment
//! shows up in the first cold start rather than in the middle of a rescue.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use thiserror::Error;

use crate::alarm::FunctionRef;

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
    /// How long Secrets Manager's own retry gets before a stuck version is rescued.
    pub grace: Duration,
    /// Where deferred secrets are sent to be looked at again.
    pub recheck_queue_url: Option<String>,
    /// The shortest delay of a re-check, so that a re-check can never spin.
    pub recheck_min_delay: Duration,
    /// An alarm names no failed rotation: it acts only on stuck versions at least this old (and
    /// at least as old as the grace).
    pub alarm_min_age: Duration,
    /// Rotation functions of alarms that name none (composite alarms, other metrics), by alarm
    /// name: `alarm-a=fn-1,fn-2;alarm-b=fn-3`.
    pub alarm_functions: BTreeMap<String, Vec<String>>,
    /// Mutating calls per second, per invocation.
    pub max_rate: NonZeroU32,
    /// When set, only secrets rotated by these functions are touched, whatever the trigger.
    pub rotation_functions: Vec<FunctionRef>,
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

        let grace = duration(get("RESCUE_GRACE"), "RESCUE_GRACE", DEFAULT_GRACE)?;
        // A re-check gives up after a day; a longer grace could never rescue.
        if grace
            >= crate::recheck::MAX_DEFERRAL
                .to_std()
                .unwrap_or(Duration::MAX)
        {
            return Err(ConfigError {
                name: "RESCUE_GRACE",
                value: humantime::format_duration(grace).to_string(),
                expected: "a duration under 24 hours (re-checks end a day after the first)",
            });
        }
        let alarm_min_age = duration(
            get("RESCUE_ALARM_MIN_AGE"),
            "RESCUE_ALARM_MIN_AGE",
            DEFAULT_ALARM_MIN_AGE,
        )?;
        let recheck_queue_url = get("RESCUE_RECHECK_QUEUE_URL");
        if !(grace.is_zero() && alarm_min_age.is_zero()) && recheck_queue_url.is_none() {
            // Waiting is only safe when every deferred secret is looked at again: an alarm
            // does not fire again while it stays in ALARM.
            return Err(ConfigError {
                name: "RESCUE_RECHECK_QUEUE_URL",
                value: String::new(),
                expected: "the re-check queue's URL unless RESCUE_GRACE and \
                           RESCUE_ALARM_MIN_AGE are both 0",
            });
        }
        let recheck_min_delay = duration(
            get("RESCUE_RECHECK_MIN_DELAY"),
            "RESCUE_RECHECK_MIN_DELAY",
            DEFAULT_RECHECK_MIN_DELAY,
        )?;
        if recheck_min_delay.is_zero() || recheck_min_delay > MAX_RECHECK_DELAY {
            return Err(ConfigError {
                name: "RESCUE_RECHECK_MIN_DELAY",
                value: humantime::format_duration(recheck_min_delay).to_string(),
                expected: "a duration from 1s to 15m (SQS delays end at 15 minutes)",
            });
        }

        let max_rate = match get("RESCUE_MAX_RATE") {
            None => NonZeroU32::new(DEFAULT_MAX_RATE).unwrap_or(NonZeroU32::MIN),
            Some(text) => text
                .parse::<NonZeroU32>()
                .ok()
                .filter(|rate| rate.get() <= MAX_RATE_CEILING)
                .ok_or(ConfigError {
                    name: "RESCUE_MAX_RATE",
                    value: text,
                    expected: "mutating calls per second, 1 to 50 (the per-account quota)",
                })?,
        };

        Ok(Config {
            alarm_min_age,
            alarm_functions: alarm_functions(get("RESCUE_ALARM_FUNCTIONS"))?,
            max_rate,
            rotation_functions: rotation_functions(get("RESCUE_ROTATION_FUNCTIONS"))?,
            grace,
            recheck_queue_url,
            recheck_min_delay,
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

const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);
const DEFAULT_RECHECK_MIN_DELAY: Duration = Duration::from_secs(60);
const MAX_RECHECK_DELAY: Duration = Duration::from_secs(15 * 60);

const DEFAULT_ALARM_MIN_AGE: Duration = Duration::from_secs(15 * 60);
const DEFAULT_MAX_RATE: u32 = 20;
/// Secrets Manager's shared quotas for the mutating calls are 50 per second (AWS-FACTS 4).
const MAX_RATE_CEILING: u32 = 50;

/// `alarm-a=fn-1,fn-2;alarm-b=fn-3`: each function a name or an ARN.
fn alarm_functions(value: Option<String>) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let Some(text) = value else {
        return Ok(BTreeMap::new());
    };
    let invalid = || ConfigError {
        name: "RESCUE_ALARM_FUNCTIONS",
        value: text.clone(),
        expected: "alarm=function[,function...][;alarm=function...], functions as names or ARNs",
    };
    let mut mapping = BTreeMap::new();
    for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (alarm, functions) = entry.split_once('=').ok_or_else(invalid)?;
        let functions: Vec<String> = functions
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        if alarm.trim().is_empty()
            || functions.is_empty()
            || functions.iter().any(|f| FunctionRef::parse(f).is_none())
        {
            return Err(invalid());
        }
        mapping.insert(alarm.trim().to_owned(), functions);
    }
    Ok(mapping)
}

/// A comma-separated list of unqualified function ARNs: exactly what the template grants with
/// `secretsmanager:resource/AllowRotationLambdaArn` (the bare ARN and its `:*` form), so that
/// code and IAM agree on which secrets are in reach.
fn rotation_functions(value: Option<String>) -> Result<Vec<FunctionRef>, ConfigError> {
    let Some(text) = value else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            FunctionRef::parse(f)
                .filter(|function| function.region.is_some() && f.split(':').count() == 7)
                .ok_or_else(|| ConfigError {
                    name: "RESCUE_ROTATION_FUNCTIONS",
                    value: text.clone(),
                    expected: "comma-separated unqualified Lambda function ARNs \
                               (arn:aws:lambda:REGION:ACCOUNT:function:NAME)",
                })
        })
        .collect()
}

/// A duration such as `15m`, `90s` or `1h 30m`; a bare `0` is zero.
fn duration(
    value: Option<String>,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value.as_deref() {
        None => Ok(default),
        Some("0") => Ok(Duration::ZERO),
        Some(text) => humantime::parse_duration(text).map_err(|_| ConfigError {
            name,
            value: text.to_owned(),
            expected: "a duration such as 15m, 90s or 0",
        }),
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
    fn defaults_apply_when_only_the_region_and_queue_are_set() {
        let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/recheck";
        let config = config(&[
            ("AWS_REGION", "us-east-1"),
            ("RESCUE_RECHECK_QUEUE_URL", queue),
        ])
        .unwrap();
        assert_eq!(config.grace, Duration::from_secs(900));
        assert_eq!(config.recheck_min_delay, Duration::from_secs(60));
        assert_eq!(config.recheck_queue_url.as_deref(), Some(queue));
        assert!(!config.dry_run);
        assert!(config.tag_secrets);
        assert!(!config.allow_managed);
        assert_eq!(config.keep_label_prefix, "RESCUED");
        assert_eq!(config.scope, Scope::default());
        assert_eq!(config.account_id, None);
        assert_eq!(config.region, "us-east-1");
    }

    #[test]
    fn grace_without_a_recheck_queue_is_refused() {
        let err = config(&[("AWS_REGION", "r")]).unwrap_err();
        assert_eq!(err.name, "RESCUE_RECHECK_QUEUE_URL");
        let immediate = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "0"),
            ("RESCUE_ALARM_MIN_AGE", "0"),
        ])
        .unwrap();
        assert_eq!(immediate.grace, Duration::ZERO);
        assert_eq!(immediate.recheck_queue_url, None);
        // An alarm's minimum age defers too, so it needs the queue as much as the grace does.
        let alarm_waits = config(&[("AWS_REGION", "r"), ("RESCUE_GRACE", "0")]).unwrap_err();
        assert_eq!(alarm_waits.name, "RESCUE_RECHECK_QUEUE_URL");
    }

    #[test]
    fn durations_read_human_units() {
        let config = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "1h 30m"),
            ("RESCUE_RECHECK_QUEUE_URL", "q"),
            ("RESCUE_RECHECK_MIN_DELAY", "90s"),
        ])
        .unwrap();
        assert_eq!(config.grace, Duration::from_secs(5400));
        assert_eq!(config.recheck_min_delay, Duration::from_secs(90));
    }

    #[test]
    fn alarm_settings_read_their_forms() {
        let config = config(&[
            ("AWS_REGION", "us-east-1"),
            ("RESCUE_RECHECK_QUEUE_URL", "q"),
            (
                "RESCUE_ALARM_FUNCTIONS",
                "composite-a=db-rotator,api-rotator; b=x",
            ),
            ("RESCUE_MAX_RATE", "35"),
            (
                "RESCUE_ROTATION_FUNCTIONS",
                "arn:aws:lambda:us-east-1:123456789012:function:db-rotator, \
                 arn:aws:lambda:us-east-1:123456789012:function:api",
            ),
        ])
        .unwrap();
        assert_eq!(config.alarm_min_age, Duration::from_secs(900));
        assert_eq!(
            config.alarm_functions["composite-a"],
            ["db-rotator", "api-rotator"]
        );
        assert_eq!(config.alarm_functions["b"], ["x"]);
        assert_eq!(config.max_rate.get(), 35);
        assert_eq!(config.rotation_functions.len(), 2);
        assert_eq!(config.rotation_functions[1].name, "api");
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
            ("RESCUE_GRACE", "soon"),
            ("RESCUE_RECHECK_MIN_DELAY", "0"),
            ("RESCUE_RECHECK_MIN_DELAY", "20m"),
            ("RESCUE_ALARM_MIN_AGE", "later"),
            ("RESCUE_ALARM_FUNCTIONS", "no-equals-sign"),
            ("RESCUE_ALARM_FUNCTIONS", "a="),
            ("RESCUE_MAX_RATE", "0"),
            ("RESCUE_MAX_RATE", "51"),
            ("RESCUE_ROTATION_FUNCTIONS", "arn:aws:sns:us-east-1:1:topic"),
            ("RESCUE_ROTATION_FUNCTIONS", "db-rotator"),
            (
                "RESCUE_ROTATION_FUNCTIONS",
                "arn:aws:lambda:us-east-1:123456789012:function:db-rotator:live",
            ),
            ("RESCUE_GRACE", "24h"),
        ];
        for (name, value) in cases {
            let base = [
                ("AWS_REGION", "us-east-1"),
                ("RESCUE_GRACE", "0"),
                ("RESCUE_ALARM_MIN_AGE", "0"),
            ];
            let mut pairs = base.to_vec();
            pairs.retain(|(key, _)| *key != name);
            pairs.push((name, value));
            let err = config(&pairs).unwrap_err();
            assert_eq!(err.name, name, "{name}={value}");
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn scope_tag_takes_key_or_key_and_value() {
        let only_key = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "0"),
            ("RESCUE_ALARM_MIN_AGE", "0"),
            ("RESCUE_SCOPE_TAG", "team"),
        ])
        .unwrap();
        assert_eq!(
            only_key.scope.tag,
            Some(ScopeTag {
                key: "team".into(),
                value: None
            })
        );
        let pair = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "0"),
            ("RESCUE_ALARM_MIN_AGE", "0"),
            ("RESCUE_SCOPE_TAG", "team=db"),
        ])
        .unwrap();
        assert_eq!(pair.scope.tag.unwrap().value.as_deref(), Some("db"));
    }

    #[test]
    fn flags_accept_common_spellings() {
        let on = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "0"),
            ("RESCUE_ALARM_MIN_AGE", "0"),
            ("RESCUE_DRY_RUN", "TRUE"),
        ])
        .unwrap();
        assert!(on.dry_run);
        let off = config(&[
            ("AWS_REGION", "r"),
            ("RESCUE_GRACE", "0"),
            ("RESCUE_ALARM_MIN_AGE", "0"),
            ("RESCUE_TAG_SECRETS", "0"),
        ])
        .unwrap();
        assert!(!off.tag_secrets);
    }
}
