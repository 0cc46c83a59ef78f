//! A fleet of secrets on moto for the alarm fan-out (`tests/alarm_fan_out.rs`) and its benchmark
//! (`benches/alarm_fan_out.rs`): seeded concurrently, read back in one listing, and a client
//! whose every request is counted and timed by an interceptor.
//!
//! Needs `tests/common` as `crate::common` (the moto harness and the client).

#![allow(dead_code)] // the test binary and the benchmark use different parts

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, RotationRulesType};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use futures::stream::{self, StreamExt};
use rotation_rescue::config::Config;
use rotation_rescue::handler::App;
use rotation_rescue::secrets::SecretsApi;
use serde_json::Value;

use crate::common::{ACCOUNT, PENDING, REGION};

/// How many seeding calls are in flight at once.
pub const SEED_CONCURRENCY: usize = 8;

/// The mutating calls that Secrets Manager's shared 50-per-second quotas count (AWS-FACTS 4).
pub const MUTATING: [&str; 4] = [
    "CancelRotateSecret",
    "UpdateSecretVersionStage",
    "TagResource",
    "UntagResource",
];

/// A rotation function's ARN in moto's account and region.
pub fn lambda_arn(function: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}")
}

/// What one seeded secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A failed rotation (AWSPENDING on a new version, rotation on) with this rotation ARN.
    Stuck { rotation_arn: String },
    /// Rotation configured with this rotation ARN, nothing pending.
    Healthy { rotation_arn: String },
    /// No rotation ever configured.
    NoRotation,
    /// A failed rotation with this rotation ARN, then scheduled for deletion.
    DeletedStuck { rotation_arn: String },
}

impl Kind {
    pub fn stuck(function: &str) -> Kind {
        Kind::Stuck {
            rotation_arn: lambda_arn(function),
        }
    }

    /// Stuck, with an alias- or version-qualified rotation ARN (`...:function:db-rotator:live`).
    pub fn stuck_qualified(function: &str, qualifier: &str) -> Kind {
        Kind::Stuck {
            rotation_arn: format!("{}:{qualifier}", lambda_arn(function)),
        }
    }

    pub fn healthy(function: &str) -> Kind {
        Kind::Healthy {
            rotation_arn: lambda_arn(function),
        }
    }

    pub fn deleted_stuck(function: &str) -> Kind {
        Kind::DeletedStuck {
            rotation_arn: lambda_arn(function),
        }
    }

    pub fn rotation_arn(&self) -> Option<&str> {
        match self {
            Kind::Stuck { rotation_arn }
            | Kind::Healthy { rotation_arn }
            | Kind::DeletedStuck { rotation_arn } => Some(rotation_arn),
            Kind::NoRotation => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct FleetSecret {
    pub name: String,
    pub arn: String,
    pub kind: Kind,
    /// The version the seed's `RotateSecret` made (its `ClientRequestToken`).
    pub pending: Option<String>,
}

/// `plan`: how many secrets of each kind, named `<prefix>/<index>`.
pub async fn seed(client: &Client, prefix: &str, plan: &[(Kind, usize)]) -> Vec<FleetSecret> {
    let mut jobs = Vec::new();
    for (kind, count) in plan {
        for _ in 0..*count {
            let name = format!("{prefix}/{:04}", jobs.len());
            jobs.push((name, kind.clone()));
        }
    }
    stream::iter(jobs)
        .map(|(name, kind)| seed_one(client, name, kind))
        .buffer_unordered(SEED_CONCURRENCY)
        .collect()
        .await
}

async fn seed_one(client: &Client, name: String, kind: Kind) -> FleetSecret {
    let created = client
        .create_secret()
        .name(&name)
        .secret_string(r#"{"username":"app","password":"first"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("seed: CreateSecret {name}: {e:?}"));
    let arn = created.arn().expect("ARN").to_owned();
    let mut secret = FleetSecret {
        name,
        arn,
        kind: kind.clone(),
        pending: None,
    };
    let Some(rotation_arn) = kind.rotation_arn() else {
        return secret;
    };
    // A rotation function that moto does not have: the rotation starts (AWSPENDING on the
    // version named by the token, ARN stored, rotation on) and the call answers not found.
    let token = next_token();
    let err = client
        .rotate_secret()
        .secret_id(&secret.arn)
        .rotation_lambda_arn(rotation_arn)
        .client_request_token(&token)
        .rotation_rules(
            RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .send()
        .await
        .expect_err("seed: RotateSecret with a missing rotation function fails");
    assert_eq!(err.code(), Some("ResourceNotFoundException"), "{err:?}");
    match kind {
        Kind::Stuck { .. } => secret.pending = Some(token),
        Kind::Healthy { .. } => {
            client
                .update_secret_version_stage()
                .secret_id(&secret.arn)
                .version_stage(PENDING)
                .remove_from_version_id(&token)
                .send()
                .await
                .unwrap_or_else(|e| panic!("seed: remove AWSPENDING {}: {e:?}", secret.name));
        }
        Kind::DeletedStuck { .. } => {
            secret.pending = Some(token);
            client
                .delete_secret()
                .secret_id(&secret.arn)
                .recovery_window_in_days(7)
                .send()
                .await
                .unwrap_or_else(|e| panic!("seed: DeleteSecret {}: {e:?}", secret.name));
        }
        Kind::NoRotation => unreachable!(),
    }
    secret
}

/// A fresh `ClientRequestToken` (UUID-shaped), which becomes the new version's id.
fn next_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:08x}-{:04x}-4000-8000-{n:012x}",
        std::process::id(),
        nonce & 0xffff
    )
}

/// The 1,000-secret fleet: stuck secrets of the alarmed `db-rotator` (some with an alias- or
/// version-qualified rotation ARN), stuck secrets of `api-rotator` and `db-rotator-v2`, healthy
/// secrets of all three, secrets without rotation, and one stuck secret of `db-rotator` that is
/// scheduled for deletion.
pub fn thousand() -> Vec<(Kind, usize)> {
    vec![
        (Kind::stuck("db-rotator"), 110),
        (Kind::stuck_qualified("db-rotator", "live"), 40),
        (Kind::stuck_qualified("db-rotator", "7"), 10),
        (Kind::stuck("api-rotator"), 60),
        (Kind::stuck("db-rotator-v2"), 60),
        (Kind::healthy("db-rotator"), 100),
        (Kind::healthy("api-rotator"), 100),
        (Kind::healthy("db-rotator-v2"), 100),
        (Kind::NoRotation, 419),
        (Kind::deleted_stuck("db-rotator"), 1),
    ]
}

/// Whether the alarm on `db-rotator` (in this account and region) is about `kind`'s secret.
pub fn alarmed(kind: &Kind) -> bool {
    let db_rotator = lambda_arn("db-rotator");
    kind.rotation_arn().is_some_and(|arn| {
        arn == db_rotator || arn.strip_prefix(&format!("{db_rotator}:")).is_some()
    })
}

/// A secret as `ListSecrets` shows it (moto's listing does not lag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub rotation_enabled: Option<bool>,
    pub rotation_arn: Option<String>,
    pub deleted: bool,
    /// Labelled versions and their labels, sorted.
    pub labels: BTreeMap<String, Vec<String>>,
    pub tags: BTreeMap<String, String>,
}

impl Listed {
    pub fn holders(&self, label: &str) -> Vec<&str> {
        self.labels
            .iter()
            .filter(|(_, labels)| labels.iter().any(|l| l == label))
            .map(|(id, _)| id.as_str())
            .collect()
    }
}

/// Every secret whose name starts with `prefix`, scheduled deletions included, by name.
pub async fn snapshot(client: &Client, prefix: &str) -> BTreeMap<String, Listed> {
    let mut pages = client
        .list_secrets()
        .include_planned_deletion(true)
        .filters(
            Filter::builder()
                .key(FilterNameStringType::Name)
                .values(prefix)
                .build(),
        )
        .max_results(100)
        .into_paginator()
        .send();
    let mut listed = BTreeMap::new();
    while let Some(page) = pages.next().await {
        let page = page.expect("ListSecrets");
        for entry in page.secret_list() {
            let name = entry.name().expect("Name").to_owned();
            if !name.starts_with(prefix) {
                continue;
            }
            let labels = entry
                .secret_versions_to_stages()
                .into_iter()
                .flatten()
                .map(|(id, stages)| {
                    let mut stages = stages.clone();
                    stages.sort();
                    (id.clone(), stages)
                })
                .collect();
            let tags = entry
                .tags()
                .iter()
                .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                .collect();
            listed.insert(
                name,
                Listed {
                    rotation_enabled: entry.rotation_enabled(),
                    rotation_arn: entry.rotation_lambda_arn().map(str::to_owned),
                    deleted: entry.deleted_date().is_some(),
                    labels,
                    tags,
                },
            );
        }
    }
    listed
}

/// Every operation a client starts, and when: recorded before serialization, right after the
/// rate limiter let it through (once per operation: the SDK's retries of throttled calls are
/// not paced by this function either, and moto never asks for one).
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    calls: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or_else(|| "?".to_owned(), |m| m.name().to_owned());
        self.calls.lock().unwrap().push((operation, Instant::now()));
        Ok(())
    }
}

impl CallLog {
    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
    }

    pub fn by_operation(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (operation, _) in self.calls.lock().unwrap().iter() {
            *counts.entry(operation.clone()).or_insert(0) += 1;
        }
        counts
    }

    pub fn total(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// When each mutating call was sent, in order.
    pub fn mutating_times(&self) -> Vec<Instant> {
        let mut times: Vec<Instant> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, _)| MUTATING.contains(&op.as_str()))
            .map(|(_, at)| *at)
            .collect();
        times.sort();
        times
    }
}

/// The most calls in any one-second window `[t, t + 1 s)` (a busiest window starts at a call).
pub fn max_per_second(times: &[Instant]) -> usize {
    let mut most = 0;
    let mut end = 0;
    for (start, at) in times.iter().enumerate() {
        while end < times.len() && times[end].duration_since(*at) < Duration::from_secs(1) {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

/// Calls per second from the first to the last call (`None` with fewer than two).
pub fn achieved_rate(times: &[Instant]) -> Option<f64> {
    let (first, last) = (times.first()?, times.last()?);
    let span = last.duration_since(*first).as_secs_f64();
    (span > 0.0).then(|| (times.len() - 1) as f64 / span)
}

/// This binary's moto client with `log` on it.
pub fn logged_client(log: &CallLog) -> Client {
    let config = crate::common::client()
        .config()
        .to_builder()
        .interceptor(log.clone())
        .build();
    Client::from_conf(config)
}

/// The app as the Lambda binary builds it: mutating calls paced to `config.max_rate`.
pub fn paced_app(client: Client, config: Config) -> App {
    let rate: NonZeroU32 = config.max_rate;
    App::new(SecretsApi::new(client).with_rate_limit(rate), config)
}

/// `events/<name>` as JSON.
pub fn event_file(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// The EventBridge alarm of `events/alarm-eventbridge.json`, on `function` instead of
/// `db-rotator`.
pub fn eventbridge_alarm_on(function: &str) -> Value {
    let mut event = event_file("alarm-eventbridge.json");
    let metric = &mut event["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"];
    metric["dimensions"]["FunctionName"] = Value::from(function);
    event
}
