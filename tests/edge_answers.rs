//! Edge cases found in review, with real AWS answers through aws-smithy-mocks (as in
//! tests/aws_answers.rs): a scoped policy's denial, and failures after AWSPENDING was removed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::operation::update_secret_version_stage::UpdateSecretVersionStageInput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use chrono::{DateTime, Utc};
use rotation_rescue::config::Config;
use rotation_rescue::decide::{Cause, Home};
use rotation_rescue::event::FailedStep;
use rotation_rescue::handler::{self, App};
use rotation_rescue::outcome::Outcome;
use rotation_rescue::rescue::Rescuer;
use rotation_rescue::secrets::{self, MAX_ATTEMPTS, SecretsApi};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
const NAME: &str = "prod/db";
const ROTATOR: &str = "arn:aws:lambda:us-east-1:123456789012:function:db-rotator";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation-rescue";
const FAILED_AT: &str = "2024-05-01T00:50:20Z";
const NOW: &str = "2024-05-01T01:00:00Z";

#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<String>>>,
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
            .map(|meta| meta.name().to_owned())
            .unwrap_or_default();
        let line = match context
            .input()
            .downcast_ref::<UpdateSecretVersionStageInput>()
        {
            Some(s) => format!(
                "stage {} from={:?} to={:?}",
                s.version_stage().unwrap_or("?"),
                s.remove_from_version_id(),
                s.move_to_version_id()
            ),
            None => operation,
        };
        self.calls.lock().unwrap().push(line);
        Ok(())
    }
}

fn client(rules: &[&Rule], recorder: &Recorder) -> Client {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let partition = format!("review-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        rules,
        |config| config
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(5)),
            )
            .retry_partition(RetryPartition::new(partition.clone()))
            .timeout_config(secrets::timeouts())
            .interceptor(recorder.clone())
    )
}

fn http(status: u16, body: String) -> HttpResponse {
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

fn ok(body: Value) -> HttpResponse {
    http(200, body.to_string())
}

fn aws_error(code: &str, message: &str) -> HttpResponse {
    http(
        400,
        json!({ "__type": code, "Message": message }).to_string(),
    )
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn epoch(text: &str) -> f64 {
    at(text).timestamp() as f64
}

fn config(extra: &[(&str, &str)]) -> Config {
    let extra: Vec<(String, String)> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(move |name| {
        if name == "AWS_REGION" {
            return Some(REGION.to_owned());
        }
        if name == "RESCUE_GRACE" || name == "RESCUE_ALARM_MIN_AGE" {
            return Some("0".to_owned());
        }
        extra
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    })
    .unwrap()
}

fn rotation_failed_event(secret_arn: &str) -> Value {
    json!({
        "version": "0", "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196",
        "detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
        "account": ACCOUNT, "time": FAILED_AT, "region": REGION, "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": ACCOUNT, "invokedBy": "secretsmanager.amazonaws.com"},
            "eventTime": FAILED_AT,
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationFailed",
            "errorMessage": format!("Error when executing lambda {ROTATOR} during testSecret step"),
            "additionalEventData": {"SecretId": secret_arn},
            "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9"
        }
    })
}

// 1. RESCUE_SCOPE_NAME_PREFIX narrows the IAM policy (template.yaml) to `secret:<prefix>*`, so
//    AWS would deny DescribeSecret on any other secret. Such a secret is `skipped` on its
//    identifier, before any call, rather than `failed` on the denial.

#[tokio::test]
async fn out_of_scope_secret_denied_by_the_scoped_policy_is_skipped_not_failed() {
    const OTHER: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:other/db-XyZ123";
    // What IAM answers for a secret outside `secret:prod/*`.
    let describe = mock!(Client::describe_secret).then_http_response(|| {
        aws_error(
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/rescue/fn is not authorized to \
             perform: secretsmanager:DescribeSecret on resource: other/db because no \
             identity-based policy allows the secretsmanager:DescribeSecret action",
        )
    });
    let recorder = Recorder::default();
    let app = App::new(
        SecretsApi::new(client(&[&describe], &recorder)),
        config(&[("RESCUE_SCOPE_NAME_PREFIX", "prod/")]),
    );

    let result = app
        .handle(&rotation_failed_event(OTHER), FUNCTION_ARN, at(NOW))
        .await;

    let summary = match result {
        Ok(summary) => summary,
        Err(err) => panic!(
            "a secret outside RESCUE_SCOPE_NAME_PREFIX must be skipped, not fail the \
             invocation (which Lambda retries and sends to the failure queue): {err}"
        ),
    };
    assert_eq!(summary.secrets[0].outcome, Outcome::Skipped, "{summary:?}");
}

// 2. After the quota forced AWSPENDING off first, an attach refused by a service error leaves
//    the version with no label: the report says so, names the version and the marker tag, and
//    fails (the retry re-attaches by id).

/// 17 custom labels on old versions + AWSCURRENT, AWSPREVIOUS, AWSPENDING: the quota is full.
fn full_secret() -> (Value, Value) {
    let mut stages = serde_json::Map::new();
    stages.insert("v0".into(), json!(["AWSPREVIOUS"]));
    stages.insert("v1".into(), json!(["AWSCURRENT"]));
    stages.insert("v2".into(), json!(["AWSPENDING"]));
    let mut versions = vec![
        json!({"VersionId": "v0", "CreatedDate": epoch("2024-03-01T00:00:00Z")}),
        json!({"VersionId": "v1", "CreatedDate": epoch("2024-04-01T00:00:00Z")}),
        json!({"VersionId": "v2", "CreatedDate": epoch("2024-05-01T00:50:19Z")}),
    ];
    for i in 0..17 {
        stages.insert(format!("old{i}"), json!([format!("KEEP{i:02}")]));
        versions.push(json!({"VersionId": format!("old{i}"),
                             "CreatedDate": epoch("2023-01-01T00:00:00Z")}));
    }
    let described = json!({
        "ARN": ARN, "Name": NAME, "RotationEnabled": true, "RotationLambdaARN": ROTATOR,
        "VersionIdsToStages": stages, "Tags": [],
    });
    let listed = json!({"ARN": ARN, "Name": NAME, "Versions": versions});
    (described, listed)
}

#[tokio::test]
async fn quota_order_attach_failing_after_the_remove_reports_the_unlabelled_version() {
    let (described, listed) = full_secret();
    let describe = mock!(Client::describe_secret).then_http_response(move || ok(described.clone()));
    let list =
        mock!(Client::list_secret_version_ids).then_http_response(move || ok(listed.clone()));
    let cancel = mock!(Client::cancel_rotate_secret)
        .then_http_response(|| ok(json!({"ARN": ARN, "Name": NAME, "VersionId": "v2"})));
    let removed = Arc::new(AtomicBool::new(false));
    let removed_flag = removed.clone();
    let remove = mock!(Client::update_secret_version_stage)
        .match_requests(|r| r.remove_from_version_id().is_some())
        .then_http_response(move || {
            removed_flag.store(true, Ordering::SeqCst);
            ok(json!({"ARN": ARN, "Name": NAME}))
        });
    // Service trouble on the attach: every attempt answers HTTP 500 (retried, then given up).
    let attach = mock!(Client::update_secret_version_stage)
        .match_requests(|r| r.move_to_version_id().is_some())
        .then_http_response(|| {
            http(
                500,
                json!({"__type": "InternalServiceError", "Message": "boom"}).to_string(),
            )
        });
    let tag = mock!(Client::tag_resource).then_http_response(|| ok(json!({})));
    let untag = mock!(Client::untag_resource).then_http_response(|| ok(json!({})));
    let recorder = Recorder::default();
    let rescuer = Rescuer {
        api: SecretsApi::new(client(
            &[&describe, &list, &cancel, &remove, &attach, &tag, &untag],
            &recorder,
        )),
        config: config(&[]),
        home: Home {
            account: Some(ACCOUNT.into()),
            region: REGION.into(),
        },
        queue: None,
    };

    let report = rescuer
        .rescue(
            ARN,
            Cause::RotationFailed {
                failed_at: at(FAILED_AT),
                step: FailedStep::TestSecret,
            },
            false,
            at(NOW),
        )
        .await;

    assert!(
        removed.load(Ordering::SeqCst),
        "AWSPENDING left v2: {:?}",
        recorder.calls
    );
    // A service error is retried (the invocation fails, and the retry re-attaches the label by
    // id from the marker tag); the reason says the version has no label now.
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert_eq!(report.keep_label, None, "the keep-label was never attached");
    assert!(
        report.reason.contains("v2") && report.reason.contains("no label"),
        "{}",
        report.reason
    );
}

// 3. Finishing an interrupted rescue (the marker tag names vX, which has no label): when the
//    quota refuses the re-attach, AWSPENDING is not "removed" from vX (it carries none); the
//    secret needs attention, naming vX.

#[tokio::test]
async fn repair_attach_refused_by_quota_does_not_remove_pending_from_an_unlabelled_version() {
    let described = json!({
        "ARN": ARN, "Name": NAME, "RotationEnabled": false, "RotationLambdaARN": ROTATOR,
        "VersionIdsToStages": {"v0": ["AWSPREVIOUS"], "v1": ["AWSCURRENT"]},
        "Tags": [{"Key": "rotation-rescue:unlabelled-version", "Value": "vX"}],
    });
    let listed = json!({"ARN": ARN, "Name": NAME, "Versions": [
        {"VersionId": "v0", "CreatedDate": epoch("2024-03-01T00:00:00Z")},
        {"VersionId": "v1", "CreatedDate": epoch("2024-04-01T00:00:00Z")},
        {"VersionId": "vX", "CreatedDate": epoch("2024-05-01T00:50:19Z")},
    ]});
    let describe = mock!(Client::describe_secret).then_http_response(move || ok(described.clone()));
    let list =
        mock!(Client::list_secret_version_ids).then_http_response(move || ok(listed.clone()));
    // Another writer filled the quota between describe and attach.
    let attach = mock!(Client::update_secret_version_stage)
        .match_requests(|r| r.move_to_version_id().is_some())
        .then_http_response(|| {
            aws_error(
                "LimitExceededException",
                "You have exceeded the maximum number of staging labels (20) for this secret.",
            )
        });
    let remove = mock!(Client::update_secret_version_stage)
        .match_requests(|r| r.remove_from_version_id().is_some())
        .then_http_response(|| {
            aws_error(
                "InvalidParameterException",
                "The staging label AWSPENDING is not attached to version vX.",
            )
        });
    let tag = mock!(Client::tag_resource).then_http_response(|| ok(json!({})));
    let untag = mock!(Client::untag_resource).then_http_response(|| ok(json!({})));
    let recorder = Recorder::default();
    let rescuer = Rescuer {
        api: SecretsApi::new(client(
            &[&describe, &list, &attach, &remove, &tag, &untag],
            &recorder,
        )),
        config: config(&[]),
        home: Home {
            account: Some(ACCOUNT.into()),
            region: REGION.into(),
        },
        queue: None,
    };

    let report = rescuer
        .rescue(ARN, Cause::Operator { force: false }, false, at(NOW))
        .await;

    assert_eq!(
        remove.num_calls(),
        0,
        "AWSPENDING removal sent for vX, which has no AWSPENDING: {:?} / {report:#?}",
        recorder.calls.lock().unwrap()
    );
    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:#?}");
    assert!(report.reason.contains("vX"), "{}", report.reason);
}

// ---------------------------------------------------------------------------------------------
// 4. The invocation's deadline: an operator call starts no secret when less than one rescue's
//    worst case is left, and reports each `not_reached` (no call made), instead of timing out
//    without an answer. A deadline in the past (cargo-lambda's placeholder) means unknown.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secrets_beyond_the_deadline_are_not_reached_and_not_touched() {
    let recorder = Recorder::default();
    let app = App::new(SecretsApi::new(client(&[], &recorder)), config(&[]));
    let now = Utc::now();
    let deadline = now + chrono::TimeDelta::seconds(10);
    let request = json!({"secrets": ["prod/db", "prod/api"]});

    let summary = app
        .handle_until(&request, FUNCTION_ARN, now, Some(deadline))
        .await
        .expect("an operator call always answers with the summary");

    let outcomes: Vec<Outcome> = summary.secrets.iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, [Outcome::NotReached, Outcome::NotReached]);
    assert!(
        recorder.calls.lock().unwrap().is_empty(),
        "{:?}",
        recorder.calls
    );
}

#[test]
fn a_deadline_in_the_past_is_unknown_not_none_left() {
    let now = at(NOW);
    let past_ms = 600_000; // cargo-lambda's placeholder: 1970
    assert_eq!(handler::deadline_from_context(past_ms, now), None);
    let future_ms = u64::try_from((now.timestamp() + 300) * 1000).unwrap();
    assert_eq!(
        handler::deadline_from_context(future_ms, now),
        Some(now + chrono::TimeDelta::seconds(300))
    );
}
