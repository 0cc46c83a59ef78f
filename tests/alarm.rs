//! Alarm triggers through the production dispatcher and handler, with Secrets Manager answered
//! by `aws-smithy-mocks` (AWS's JSON over HTTP, so the SDK's own deserializer runs) and every
//! request recorded: which alarms act, how they resolve to rotation functions, which secrets
//! those functions rotate, and the invocation's deadline.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::operation::cancel_rotate_secret::CancelRotateSecretInput;
use aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretInput;
use aws_sdk_secretsmanager::operation::list_secret_version_ids::ListSecretVersionIdsInput;
use aws_sdk_secretsmanager::operation::tag_resource::TagResourceInput;
use aws_sdk_secretsmanager::operation::untag_resource::UntagResourceInput;
use aws_sdk_secretsmanager::operation::update_secret_version_stage::UpdateSecretVersionStageInput;
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use chrono::{DateTime, TimeDelta, Utc};
use rotation_rescue::alarm::FunctionRef;
use rotation_rescue::config::Config;
use rotation_rescue::event::{self, Trigger};
use rotation_rescue::handler::{self, App, FAN_OUT_CONCURRENCY, HandlerError};
use rotation_rescue::outcome::{Outcome, Summary};
use rotation_rescue::secrets::{self, RESCUE_BUDGET, SecretsApi};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation-rescue";
const MUTATING: [&str; 4] = [
    "CancelRotateSecret",
    "UpdateSecretVersionStage",
    "TagResource",
    "UntagResource",
];

fn lambda(function: &str) -> String {
    format!("arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}")
}

fn secret_arn(name: &str) -> String {
    format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf")
}

fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// A world of secrets behind a mock client
// ---------------------------------------------------------------------------------------------

/// One secret as the mock answers it: listed with `listed_rotator`, described with
/// `described_rotator` (the listing lags), stuck or not.
#[derive(Debug, Clone)]
struct Secret {
    arn: String,
    listed_rotator: Option<String>,
    described_rotator: Option<String>,
    stuck: bool,
}

impl Secret {
    fn stuck(name: &str, rotator: Option<String>) -> Secret {
        Secret {
            arn: secret_arn(name),
            listed_rotator: rotator.clone(),
            described_rotator: rotator,
            stuck: true,
        }
    }

    fn healthy(name: &str, rotator: Option<String>) -> Secret {
        Secret {
            stuck: false,
            ..Secret::stuck(name, rotator)
        }
    }
}

/// Records each operation the client starts, with the secret it names.
#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<(String, String)>>>,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or_else(|| "?".to_owned(), |m| m.name().to_owned());
        let input = context.input();
        let secret = None
            .or_else(|| input.downcast_ref::<DescribeSecretInput>()?.secret_id())
            .or_else(|| {
                input
                    .downcast_ref::<ListSecretVersionIdsInput>()?
                    .secret_id()
            })
            .or_else(|| input.downcast_ref::<CancelRotateSecretInput>()?.secret_id())
            .or_else(|| {
                input
                    .downcast_ref::<UpdateSecretVersionStageInput>()?
                    .secret_id()
            })
            .or_else(|| input.downcast_ref::<TagResourceInput>()?.secret_id())
            .or_else(|| input.downcast_ref::<UntagResourceInput>()?.secret_id())
            .unwrap_or("-")
            .to_owned();
        self.calls.lock().unwrap().push((operation, secret));
        Ok(())
    }
}

impl Recorder {
    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().unwrap().clone()
    }

    /// The secrets named by `operation`, in order.
    fn secrets_of(&self, operation: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, secret)| secret)
            .collect()
    }

    fn mutating(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|(op, _)| MUTATING.contains(&op.as_str()))
            .collect()
    }
}

fn ok(body: Value) -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(200).unwrap(),
        SdkBody::from(body.to_string()),
    )
}

fn epoch(time: DateTime<Utc>) -> f64 {
    time.timestamp() as f64
}

/// Versions a month old: older than any minimum age.
fn created() -> DateTime<Utc> {
    Utc::now() - TimeDelta::days(30)
}

/// The rules that answer for `world`: one listing page, and per secret a describe and a version
/// listing; every mutating call succeeds.
fn rules(world: &[Secret]) -> Vec<Rule> {
    let world: Arc<BTreeMap<String, Secret>> = Arc::new(
        world
            .iter()
            .map(|secret| (secret.arn.clone(), secret.clone()))
            .collect(),
    );
    let listing: Vec<Value> = world
        .values()
        .map(|s| {
            let mut entry = json!({ "ARN": s.arn, "Name": name_of(&s.arn) });
            if let Some(rotator) = &s.listed_rotator {
                entry["RotationLambdaARN"] = json!(rotator);
                entry["RotationEnabled"] = json!(true);
            }
            entry
        })
        .collect();
    let list = mock!(Client::list_secrets)
        .then_http_response(move || ok(json!({ "SecretList": listing.clone() })));
    let described = world.clone();
    let describe = mock!(Client::describe_secret).then_compute_response(move |req| {
        let secret = &described[req.secret_id().unwrap()];
        let mut stages = json!({ "v0": ["AWSPREVIOUS"], "v1": ["AWSCURRENT"] });
        if secret.stuck {
            stages["v2"] = json!(["AWSPENDING"]);
        }
        let mut body = json!({
            "ARN": secret.arn,
            "Name": name_of(&secret.arn),
            "VersionIdsToStages": stages,
            "Tags": [],
        });
        if let Some(rotator) = &secret.described_rotator {
            body["RotationLambdaARN"] = json!(rotator);
            body["RotationEnabled"] = json!(true);
        }
        MockResponse::Http(ok(body))
    });
    let versions = mock!(Client::list_secret_version_ids).then_compute_response(move |req| {
        let arn = req.secret_id().unwrap();
        let versions: Vec<Value> = ["v0", "v1", "v2"]
            .iter()
            .map(|id| json!({ "VersionId": id, "CreatedDate": epoch(created()) }))
            .collect();
        MockResponse::Http(ok(json!({ "ARN": arn, "Versions": versions })))
    });
    let cancel = mock!(Client::cancel_rotate_secret)
        .then_compute_response(|req| MockResponse::Http(ok(json!({ "ARN": req.secret_id() }))));
    let stage = mock!(Client::update_secret_version_stage)
        .then_compute_response(|req| MockResponse::Http(ok(json!({ "ARN": req.secret_id() }))));
    let tag = mock!(Client::tag_resource).then_http_response(|| ok(json!({})));
    let untag = mock!(Client::untag_resource).then_http_response(|| ok(json!({})));
    vec![list, describe, versions, cancel, stage, tag, untag]
}

fn name_of(arn: &str) -> &str {
    let name = arn.rsplit_once(":secret:").map_or(arn, |(_, name)| name);
    name.rsplit_once('-').map_or(name, |(name, _)| name)
}

fn client(world: &[Secret], recorder: &Recorder) -> Client {
    static PARTITION: AtomicUsize = AtomicUsize::new(0);
    let partition = format!("alarm-{}", PARTITION.fetch_add(1, Ordering::SeqCst));
    let rules = rules(world);
    let rules: Vec<&Rule> = rules.iter().collect();
    mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        &rules,
        |config| config
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(secrets::MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(1)),
            )
            .retry_partition(RetryPartition::new(partition.clone()))
            .timeout_config(secrets::timeouts())
            .interceptor(recorder.clone())
    )
}

/// `AWS_REGION`, `RESCUE_GRACE=0`, `RESCUE_ALARM_MIN_AGE=0`, and `overrides`.
fn config(overrides: &[(&str, &str)]) -> Config {
    let mut env: BTreeMap<&str, &str> = BTreeMap::from([
        ("AWS_REGION", REGION),
        ("RESCUE_GRACE", "0"),
        ("RESCUE_ALARM_MIN_AGE", "0"),
    ]);
    env.extend(overrides.iter().copied());
    Config::from_lookup(|name| env.get(name).map(|v| (*v).to_owned())).unwrap()
}

fn app(world: &[Secret], overrides: &[(&str, &str)], recorder: &Recorder) -> App {
    App::new(SecretsApi::new(client(world, recorder)), config(overrides))
}

async fn handle(app: &App, raw: &Value) -> Result<Summary, HandlerError> {
    app.handle(raw, FUNCTION_ARN, Utc::now()).await
}

fn count(summary: &Summary, outcome: Outcome) -> usize {
    summary.counts.get(&outcome).copied().unwrap_or(0)
}

/// Secrets of every kind that an alarm on `db-rotator` in 123456789012/us-east-1 must tell
/// apart, all stuck.
fn mixed_world() -> Vec<Secret> {
    vec![
        Secret::stuck("plain", Some(lambda("db-rotator"))),
        Secret::stuck("alias", Some(format!("{}:live", lambda("db-rotator")))),
        Secret::stuck("version", Some(format!("{}:7", lambda("db-rotator")))),
        Secret::stuck("v2", Some(lambda("db-rotator-v2"))),
        Secret::stuck(
            "v2-alias",
            Some(format!("{}:live", lambda("db-rotator-v2"))),
        ),
        Secret::stuck("api", Some(lambda("api-rotator"))),
        Secret::stuck(
            "other-account",
            Some("arn:aws:lambda:us-east-1:999999999999:function:db-rotator".into()),
        ),
        Secret::stuck(
            "other-region",
            Some("arn:aws:lambda:eu-west-1:123456789012:function:db-rotator".into()),
        ),
        Secret::stuck("no-rotation", None),
    ]
}

// ---------------------------------------------------------------------------------------------
// Which alarms act
// ---------------------------------------------------------------------------------------------

/// `events/alarm-eventbridge.json`, `alarm-action.json` and `alarm-sns.json` in `state`.
fn alarms_in_state(state: &str) -> Vec<Value> {
    let mut eventbridge = load("alarm-eventbridge.json");
    eventbridge["detail"]["state"]["value"] = json!(state);
    let mut action = load("alarm-action.json");
    action["alarmData"]["state"]["value"] = json!(state);
    let mut sns = load("alarm-sns.json");
    let message = sns["Records"][0]["Sns"]["Message"].as_str().unwrap();
    let mut message: Value = serde_json::from_str(message).unwrap();
    message["NewStateValue"] = json!(state);
    message["OldStateValue"] = json!("ALARM");
    sns["Records"][0]["Sns"]["Message"] = json!(message.to_string());
    vec![eventbridge, action, sns]
}

#[tokio::test]
async fn ok_and_insufficient_data_are_nothing_to_do_without_any_call() {
    let mut payloads = vec![("OK".to_owned(), load("alarm-ok.json"))];
    for state in ["OK", "INSUFFICIENT_DATA"] {
        payloads.extend(
            alarms_in_state(state)
                .into_iter()
                .map(|p| (state.to_owned(), p)),
        );
    }
    for (state, payload) in payloads {
        let recorder = Recorder::default();
        let app = app(&mixed_world(), &[], &recorder);
        let summary = handle(&app, &payload)
            .await
            .unwrap_or_else(|e| panic!("{state}: the invocation fails: {e}"));
        assert_eq!(summary.alarms.len(), 1, "{summary:#?}");
        let report = &summary.alarms[0];
        assert_eq!(report.state, state);
        assert_eq!(report.outcome, "nothing_to_do", "{report:?}");
        assert!(report.reason.contains(&state), "{report:?}");
        assert!(summary.secrets.is_empty(), "{summary:#?}");
        assert_eq!(recorder.calls(), [], "{state}: no call at all");
    }
}

#[tokio::test]
async fn composite_alarm_without_a_mapping_is_unresolved_and_succeeds_without_calls() {
    let recorder = Recorder::default();
    // A mapping for another alarm does not apply.
    let app = app(
        &mixed_world(),
        &[("RESCUE_ALARM_FUNCTIONS", "some-other-alarm=db-rotator")],
        &recorder,
    );
    let summary = handle(&app, &load("alarm-action-composite.json"))
        .await
        .expect("an unresolved alarm is not an error: a retry would not resolve it");
    assert_eq!(summary.trigger, "alarm_action");
    let report = &summary.alarms[0];
    assert_eq!(report.alarm_name, "rotation-health");
    assert_eq!(report.outcome, "unresolved");
    assert!(report.reason.contains("composite"), "{report:?}");
    assert!(
        report.reason.contains("RESCUE_ALARM_FUNCTIONS"),
        "{report:?}"
    );
    assert!(report.functions.is_empty());
    assert!(summary.secrets.is_empty());
    assert_eq!(recorder.calls(), []);
}

#[tokio::test]
async fn alarm_on_another_metric_without_a_mapping_is_unresolved() {
    let mut raw = load("alarm-eventbridge.json");
    raw["detail"]["configuration"]["metrics"][0]["metricStat"]["metric"] = json!({
        "namespace": "AWS/RDS", "name": "DatabaseConnections",
        "dimensions": {"DBInstanceIdentifier": "prod-db"}
    });
    let recorder = Recorder::default();
    let summary = handle(&app(&mixed_world(), &[], &recorder), &raw)
        .await
        .unwrap();
    assert_eq!(summary.alarms[0].outcome, "unresolved");
    assert_eq!(recorder.calls(), []);
}

#[tokio::test]
async fn composite_alarm_resolves_through_rescue_alarm_functions() {
    let recorder = Recorder::default();
    let app = app(
        &mixed_world(),
        &[(
            "RESCUE_ALARM_FUNCTIONS",
            "rotation-health=db-rotator;other=api-rotator",
        )],
        &recorder,
    );
    let summary = handle(&app, &load("alarm-action-composite.json"))
        .await
        .unwrap();
    let report = &summary.alarms[0];
    assert_eq!(report.outcome, "resolved", "{report:?}");
    assert_eq!(report.functions, ["db-rotator"]);
    assert!(
        report.reason.contains("RESCUE_ALARM_FUNCTIONS"),
        "{report:?}"
    );
    assert_eq!(
        sorted(recorder.secrets_of("DescribeSecret")),
        sorted(vec![
            secret_arn("plain"),
            secret_arn("alias"),
            secret_arn("version")
        ])
    );
    assert_eq!(count(&summary, Outcome::Rescued), 3, "{summary:#?}");
}

// ---------------------------------------------------------------------------------------------
// Which secrets an alarmed function rotates
// ---------------------------------------------------------------------------------------------

fn sorted(mut list: Vec<String>) -> Vec<String> {
    list.sort();
    list
}

#[test]
fn function_names_match_whole_names_with_qualifiers_dropped() {
    let alarmed = FunctionRef::parse("db-rotator").unwrap();
    assert!(alarmed.matches(&lambda("db-rotator")));
    assert!(alarmed.matches(&format!("{}:live", lambda("db-rotator"))));
    assert!(alarmed.matches(&format!("{}:42", lambda("db-rotator"))));
    assert!(alarmed.matches("db-rotator"));
    assert!(!alarmed.matches(&lambda("db-rotator-v2")));
    assert!(!alarmed.matches(&format!("{}:live", lambda("db-rotator-v2"))));
    assert!(!alarmed.matches("db-rotator-v2"));
    assert!(!alarmed.matches(&lambda("db")));
    assert!(!alarmed.matches(&lambda("prod-db-rotator")));
    assert!(!alarmed.matches(""));
    // From an ARN, the account and region count too.
    let placed = FunctionRef::parse(&format!("{}:live", lambda("db-rotator"))).unwrap();
    assert_eq!(placed.account.as_deref(), Some(ACCOUNT));
    assert!(placed.matches(&lambda("db-rotator")));
    assert!(!placed.matches("arn:aws:lambda:us-east-1:999999999999:function:db-rotator"));
    assert!(!placed.matches("arn:aws:lambda:eu-west-1:123456789012:function:db-rotator"));
}

/// The secrets an alarm in `raw` describes in [`mixed_world`], and the summary.
async fn described_by(raw: &Value) -> (Vec<String>, Summary, Recorder) {
    let recorder = Recorder::default();
    let summary = handle(&app(&mixed_world(), &[], &recorder), raw)
        .await
        .unwrap_or_else(|e| panic!("the invocation fails: {e}"));
    (
        sorted(recorder.secrets_of("DescribeSecret")),
        summary,
        recorder,
    )
}

#[tokio::test]
async fn db_rotator_never_matches_db_rotator_v2_and_alias_qualified_arns_match() {
    for file in [
        "alarm-eventbridge.json",
        "alarm-action.json",
        "alarm-sns.json",
    ] {
        let (described, summary, recorder) = described_by(&load(file)).await;
        assert_eq!(
            described,
            sorted(vec![
                secret_arn("plain"),
                secret_arn("alias"),
                secret_arn("version")
            ]),
            "{file}"
        );
        assert_eq!(summary.secrets.len(), 3, "{file}");
        assert_eq!(count(&summary, Outcome::Rescued), 3, "{file}: {summary:#?}");
        let touched: Vec<String> = recorder.mutating().into_iter().map(|(_, s)| s).collect();
        assert!(
            touched
                .iter()
                .all(|s| !s.contains("v2") && !s.contains("other")),
            "{file}: {touched:?}"
        );
    }
}

#[tokio::test]
async fn function_of_another_account_or_region_than_the_alarm_does_not_match() {
    // The alarm's ARN places db-rotator in 123456789012/us-east-1.
    let (described, ..) = described_by(&load("alarm-eventbridge.json")).await;
    assert!(!described.contains(&secret_arn("other-account")));
    assert!(!described.contains(&secret_arn("other-region")));

    // The same alarm raised in eu-west-1 is about eu-west-1's db-rotator only: of this
    // region's secrets, just the one that function rotates.
    let mut elsewhere = load("alarm-eventbridge.json");
    elsewhere["region"] = json!("eu-west-1");
    elsewhere["resources"] =
        json!(["arn:aws:cloudwatch:eu-west-1:123456789012:alarm:db-rotator-errors"]);
    let (described, summary, recorder) = described_by(&elsewhere).await;
    assert_eq!(described, [secret_arn("other-region")]);
    assert_eq!(count(&summary, Outcome::Rescued), 1, "{summary:#?}");
    assert!(
        recorder
            .mutating()
            .iter()
            .all(|(_, s)| *s == secret_arn("other-region"))
    );
}

#[tokio::test]
async fn metric_math_alarms_cover_every_function_they_name() {
    for file in [
        "alarm-eventbridge-metric-math.json",
        "alarm-sns-metric-math.json",
    ] {
        let (described, summary, _) = described_by(&load(file)).await;
        assert_eq!(summary.alarms[0].functions, ["db-rotator", "api-rotator"]);
        assert_eq!(
            described,
            sorted(vec![
                secret_arn("plain"),
                secret_arn("alias"),
                secret_arn("version"),
                secret_arn("api"),
            ]),
            "{file}"
        );
        assert_eq!(count(&summary, Outcome::Rescued), 4, "{file}");
    }
}

#[tokio::test]
async fn rescue_rotation_functions_skips_secrets_of_unlisted_functions_before_any_change() {
    let recorder = Recorder::default();
    let app = app(
        &mixed_world(),
        &[(
            "RESCUE_ROTATION_FUNCTIONS",
            "arn:aws:lambda:us-east-1:123456789012:function:db-rotator",
        )],
        &recorder,
    );
    let summary = handle(&app, &load("alarm-eventbridge-metric-math.json"))
        .await
        .unwrap();
    let api = summary
        .secrets
        .iter()
        .find(|r| r.secret_arn == secret_arn("api"))
        .expect("api-rotator's secret is reported");
    assert_eq!(api.outcome, Outcome::Skipped);
    assert!(api.reason.contains("RESCUE_ROTATION_FUNCTIONS"), "{api:?}");
    let touched: Vec<String> = recorder.mutating().into_iter().map(|(_, s)| s).collect();
    assert!(!touched.contains(&secret_arn("api")), "{touched:?}");
    assert_eq!(count(&summary, Outcome::Rescued), 3);
}

#[tokio::test]
async fn secret_listed_for_the_function_but_described_with_another_is_skipped() {
    // The listing lags: it still shows db-rotator, the secret now names db-rotator-v2.
    let mut moved = Secret::stuck("moved", Some(lambda("db-rotator")));
    moved.described_rotator = Some(lambda("db-rotator-v2"));
    let recorder = Recorder::default();
    let summary = handle(
        &app(&[moved], &[], &recorder),
        &load("alarm-eventbridge.json"),
    )
    .await
    .unwrap();
    assert_eq!(summary.secrets[0].outcome, Outcome::Skipped);
    assert!(
        summary.secrets[0].reason.contains("db-rotator-errors"),
        "{:?}",
        summary.secrets[0]
    );
    assert_eq!(recorder.mutating(), []);
}

#[tokio::test]
async fn healthy_secrets_of_the_function_need_nothing() {
    let world = [
        Secret::healthy("healthy", Some(lambda("db-rotator"))),
        Secret::stuck("stuck", Some(lambda("db-rotator"))),
    ];
    let recorder = Recorder::default();
    let summary = handle(&app(&world, &[], &recorder), &load("alarm-sns.json"))
        .await
        .unwrap();
    assert_eq!(summary.trigger, "alarm_sns");
    assert_eq!(count(&summary, Outcome::NothingToDo), 1);
    assert_eq!(count(&summary, Outcome::Rescued), 1);
    assert!(
        recorder
            .mutating()
            .iter()
            .all(|(_, s)| *s == secret_arn("stuck"))
    );
}

// ---------------------------------------------------------------------------------------------
// The deadline
// ---------------------------------------------------------------------------------------------

/// `n` stuck secrets of db-rotator, `s00`, `s01`, ... (listed in that order).
fn stuck_fleet(n: usize) -> Vec<Secret> {
    (0..n)
        .map(|i| Secret::stuck(&format!("s{i:02}"), Some(lambda("db-rotator"))))
        .collect()
}

#[tokio::test]
async fn secrets_beyond_the_deadline_are_not_reached_and_the_invocation_fails() {
    let world = stuck_fleet(20);
    let recorder = Recorder::default();
    // Five mutating calls a second, burst one: each rescue (four calls) takes most of a second
    // while the first wave of FAN_OUT_CONCURRENCY secrets shares the pace.
    let api =
        SecretsApi::new(client(&world, &recorder)).with_rate_limit(NonZeroU32::new(5).unwrap());
    let app = App::new(api, config(&[]));
    // Time for the first wave to start, not for a second one.
    let deadline =
        Utc::now() + TimeDelta::from_std(RESCUE_BUDGET).unwrap() + TimeDelta::milliseconds(300);
    let err = app
        .handle_until(
            &load("alarm-eventbridge.json"),
            FUNCTION_ARN,
            Utc::now(),
            Some(deadline),
        )
        .await
        .expect_err("secrets left for Lambda's retry fail the invocation");

    let HandlerError::SecretsFailed {
        failed,
        total,
        first,
    } = &err
    else {
        panic!("expected SecretsFailed, got {err:?}");
    };
    assert_eq!(*total, 20);
    let reached = total - failed;
    assert!(
        (1..=FAN_OUT_CONCURRENCY).contains(&reached),
        "{reached} secrets reached: {err}"
    );
    assert!(first.contains("not started"), "{first}");
    // The secrets reached are the first ones listed, each rescued; no call for the others.
    let rescued = sorted(recorder.secrets_of("CancelRotateSecret"));
    let expected: Vec<String> = world[..reached].iter().map(|s| s.arn.clone()).collect();
    assert_eq!(rescued, expected);
    let described = recorder.secrets_of("DescribeSecret");
    assert_eq!(sorted(described), expected);
}

#[tokio::test]
async fn deadline_closer_than_one_rescue_reaches_no_secret() {
    let world = stuck_fleet(5);
    let recorder = Recorder::default();
    let app = app(&world, &[], &recorder);
    let deadline = Utc::now() + TimeDelta::from_std(RESCUE_BUDGET).unwrap() - TimeDelta::seconds(1);
    let err = app
        .handle_until(
            &load("alarm-sns.json"),
            FUNCTION_ARN,
            Utc::now(),
            Some(deadline),
        )
        .await
        .expect_err("nothing reached: the invocation fails for Lambda to retry");
    assert!(
        matches!(
            err,
            HandlerError::SecretsFailed {
                failed: 5,
                total: 5,
                ..
            }
        ),
        "{err:?}"
    );
    // Listed, nothing else.
    let operations: Vec<String> = recorder.calls().into_iter().map(|(op, _)| op).collect();
    assert_eq!(operations, ["ListSecrets"]);
}

#[tokio::test]
async fn a_deadline_in_1970_as_cargo_lambda_sends_means_unknown_not_none_left() {
    let now = Utc::now();
    // cargo-lambda's emulator passes a fixed deadline a few seconds after the epoch.
    for placeholder in [0, 1_000, 30_000] {
        assert_eq!(handler::deadline_from_context(placeholder, now), None);
    }
    let world = stuck_fleet(3);
    let recorder = Recorder::default();
    let app = app(&world, &[], &recorder);
    let deadline = handler::deadline_from_context(30_000, now);
    let summary = app
        .handle_until(&load("alarm-eventbridge.json"), FUNCTION_ARN, now, deadline)
        .await
        .expect("every secret is handled");
    assert_eq!(count(&summary, Outcome::Rescued), 3, "{summary:#?}");
    assert_eq!(count(&summary, Outcome::NotReached), 0);

    // A real deadline from the context is kept.
    let later = now + TimeDelta::minutes(10);
    let millis = u64::try_from(later.timestamp_millis()).unwrap();
    assert_eq!(
        handler::deadline_from_context(millis, now).map(|d| d.timestamp_millis()),
        Some(later.timestamp_millis())
    );
}

// ---------------------------------------------------------------------------------------------
// Dispatcher edge cases
// ---------------------------------------------------------------------------------------------

#[test]
fn sns_batch_of_two_alarms_gives_two_alarms() {
    let mut raw = load("alarm-sns.json");
    let second = load("alarm-sns-metric-math.json")["Records"][0].clone();
    raw["Records"].as_array_mut().unwrap().push(second);
    let Ok(Trigger::Alarm(alarms)) = event::parse(&raw) else {
        panic!("not an alarm trigger");
    };
    let names: Vec<&str> = alarms.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["db-rotator-errors-sns", "rotators-errors-math-sns"]);
}

#[test]
fn alarm_events_missing_their_state_are_malformed_and_named() {
    let mut raw = load("alarm-eventbridge.json");
    raw["detail"]["state"]
        .as_object_mut()
        .unwrap()
        .remove("value");
    let err = event::parse(&raw).unwrap_err().to_string();
    assert!(err.contains("detail.state.value"), "{err}");

    let mut raw = load("alarm-sns.json");
    raw["Records"][0]["Sns"]["Message"] = json!("not json");
    let err = event::parse(&raw).unwrap_err().to_string();
    assert!(err.contains("Records[0].Sns.Message"), "{err}");
}

/// An alarm's wait is max(`RESCUE_GRACE`, `RESCUE_ALARM_MIN_AGE`), and an alarm does not fire
/// again while it stays in `ALARM`: so the minimum age, like the grace, needs the re-check queue,
/// and the function refuses to start without one.
#[test]
fn alarm_min_age_needs_the_recheck_queue_as_the_grace_does() {
    let config = Config::from_lookup(|name| match name {
        "AWS_REGION" => Some(REGION.to_owned()),
        "RESCUE_GRACE" => Some("0".to_owned()),
        _ => None,
    });
    let err = config.expect_err("a 15-minute alarm minimum age without a re-check queue");
    assert_eq!(err.name, "RESCUE_RECHECK_QUEUE_URL", "{err}");
}
