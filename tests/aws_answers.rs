//! Real AWS answers that the moto emulator does not give (AWS-FACTS 9), reproduced with
//! `aws-smithy-mocks`. Errors are HTTP 400 with an awsJson 1.1 body (`__type`, `Message`), so the
//! SDK's own deserializer and retry classifier run on them, as they would against AWS.
//!
//! Every request the code sends is recorded by an interceptor, in order, so the tests assert the
//! calls (labels, version ids, tags) as well as the outcome.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_secretsmanager::operation::tag_resource::TagResourceInput;
use aws_sdk_secretsmanager::operation::untag_resource::UntagResourceInput;
use aws_sdk_secretsmanager::operation::update_secret_version_stage::UpdateSecretVersionStageInput;
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata};
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use chrono::{DateTime, Utc};
use rotation_rescue::config::Config;
use rotation_rescue::decide::{Cause, Home, tag};
use rotation_rescue::event::FailedStep;
use rotation_rescue::handler::{App, HandlerError};
use rotation_rescue::outcome::{Outcome, SecretReport};
use rotation_rescue::rescue::Rescuer;
use rotation_rescue::secrets::{self, MAX_ATTEMPTS, SecretsApi};
use serde_json::{Value, json};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";
const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/db-AbCdEf";
const NAME: &str = "prod/db";
const ROTATOR: &str = "arn:aws:lambda:us-east-1:123456789012:function:db-rotator";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation-rescue";

const V0_CREATED: &str = "2024-03-01T00:00:00Z";
const V1_CREATED: &str = "2024-04-01T00:00:00Z";
/// The stuck version: created one second before the failure, as a failed `createSecret` leaves it.
const V2_CREATED: &str = "2024-05-01T00:50:19Z";
const FAILED_AT: &str = "2024-05-01T00:50:20Z";
const NOW: &str = "2024-05-01T01:00:00Z";
/// The keep-label for v2 (default prefix and v2's creation time).
const KEEP: &str = "RESCUED_20240501T005019Z";

const PENDING: &str = "AWSPENDING";
const CURRENT: &str = "AWSCURRENT";
const PREVIOUS: &str = "AWSPREVIOUS";

const MARKED_FOR_DELETION: &str =
    "You can't perform this operation on the secret because it was marked for deletion.";

// ---------------------------------------------------------------------------------------------
// Recording the requests
// ---------------------------------------------------------------------------------------------

/// Records each operation the client starts (once per operation, not per retry attempt), with
/// the request fields that matter, as one readable line.
#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Recorded>>>,
}

#[derive(Debug, Clone)]
struct Recorded {
    /// The operation's name as the SDK knows it (`Metadata`), e.g. `UpdateSecretVersionStage`.
    operation: String,
    /// A readable line with the request fields, e.g. `stage AWSPENDING from=v2`.
    line: String,
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "Recorder"
    }

    /// Once per operation (retries are later), after the operation's configuration is applied.
    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map(|meta| meta.name().to_owned())
            .unwrap_or_else(|| "?".to_owned());
        let input = context.input();
        let line = if let Some(stage) = input.downcast_ref::<UpdateSecretVersionStageInput>() {
            let mut line = format!("stage {}", stage.version_stage().unwrap_or("?"));
            if let Some(from) = stage.remove_from_version_id() {
                line.push_str(&format!(" from={from}"));
            }
            if let Some(to) = stage.move_to_version_id() {
                line.push_str(&format!(" to={to}"));
            }
            line
        } else if let Some(tagged) = input.downcast_ref::<TagResourceInput>() {
            let tags: BTreeMap<&str, &str> = tagged
                .tags()
                .iter()
                .map(|t| (t.key().unwrap_or("?"), t.value().unwrap_or("?")))
                .collect();
            tag_line(&tags)
        } else if let Some(untagged) = input.downcast_ref::<UntagResourceInput>() {
            format!("untag {}", untagged.tag_keys().join(","))
        } else {
            operation.clone()
        };
        self.calls
            .lock()
            .unwrap()
            .push(Recorded { operation, line });
        Ok(())
    }
}

/// `tag marker=v2` for the marker; `tag record kept=v2 label=X` for the rescue record.
fn tag_line(tags: &BTreeMap<&str, &str>) -> String {
    if let Some(version) = tags.get(tag::UNLABELLED_VERSION) {
        let mut line = format!("tag marker={version}");
        if tags.len() > 1 {
            line.push_str(" +others");
        }
        return line;
    }
    let kept = tags.get(tag::KEPT_VERSION).copied().unwrap_or("-");
    let label = tags.get(tag::KEEP_LABEL).copied().unwrap_or("-");
    format!("tag record kept={kept} label={label}")
}

impl Recorder {
    /// Every request, in order.
    fn lines(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|c| c.line.clone()).collect()
    }

    /// The requests that change something (all but the two reads).
    fn mutating(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .iter()
            .filter(|c| {
                !matches!(
                    c.operation.as_str(),
                    "DescribeSecret" | "ListSecretVersionIds"
                )
            })
            .map(|c| c.line.clone())
            .collect()
    }

    fn operations(&self) -> std::collections::BTreeSet<String> {
        let calls = self.calls.lock().unwrap();
        calls.iter().map(|c| c.operation.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The client and the answers
// ---------------------------------------------------------------------------------------------

/// Production's retry policy (standard mode, `MAX_ATTEMPTS`) with millisecond backoff, and a
/// retry partition of its own so that no other test's retries drain this client's budget.
fn client(mode: RuleMode, rules: &[&Rule], recorder: &Recorder) -> Client {
    static NEXT_PARTITION: AtomicUsize = AtomicUsize::new(0);
    let partition = format!(
        "aws-answers-{}",
        NEXT_PARTITION.fetch_add(1, Ordering::SeqCst)
    );
    mock_client!(aws_sdk_secretsmanager, mode, rules, |config| config
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
        .retry_partition(RetryPartition::new(partition.clone()))
        .timeout_config(secrets::timeouts())
        .interceptor(recorder.clone()))
}

fn http(status: u16, body: String) -> HttpResponse {
    HttpResponse::new(StatusCode::try_from(status).unwrap(), SdkBody::from(body))
}

fn ok(body: Value) -> HttpResponse {
    http(200, body.to_string())
}

/// An error as AWS sends it for the awsJson 1.1 protocol.
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

/// A `DescribeSecret` answer: rotation on, with a rotation Lambda, the given labels, and `extra`
/// fields merged in (`DeletedDate`, `PrimaryRegion`, `Tags`...).
fn described(stages: &[(&str, &[&str])], extra: Value) -> Value {
    let stages: serde_json::Map<String, Value> = stages
        .iter()
        .map(|(id, labels)| (id.to_string(), json!(labels)))
        .collect();
    let mut body = json!({
        "ARN": ARN,
        "Name": NAME,
        "RotationEnabled": true,
        "RotationLambdaARN": ROTATOR,
        "RotationRules": { "AutomaticallyAfterDays": 30 },
        "LastChangedDate": epoch(V2_CREATED),
        "NextRotationDate": epoch("2024-04-30T00:00:00Z"),
        "CreatedDate": epoch(V0_CREATED),
        "VersionIdsToStages": stages,
        "Tags": [],
    });
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body
}

/// The usual stuck state: AWSCURRENT on v1, AWSPREVIOUS on v0, AWSPENDING on v2.
fn stuck() -> Value {
    described(
        &[("v0", &[PREVIOUS]), ("v1", &[CURRENT]), ("v2", &[PENDING])],
        json!({}),
    )
}

/// A `ListSecretVersionIds` answer with a `CreatedDate` for each version.
fn listed(versions: &[(&str, &str)]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|(id, created)| json!({ "VersionId": id, "CreatedDate": epoch(created) }))
        .collect();
    json!({ "ARN": ARN, "Name": NAME, "Versions": versions })
}

fn usual_versions() -> Value {
    listed(&[("v0", V0_CREATED), ("v1", V1_CREATED), ("v2", V2_CREATED)])
}

/// `DescribeSecret` answering `bodies` in turn (the first describe, then each re-describe).
fn describe_rule(bodies: Vec<Value>) -> Rule {
    let mut sequence = mock!(Client::describe_secret).sequence();
    for body in bodies {
        sequence = sequence.http_status(200, Some(body.to_string()));
    }
    sequence.build()
}

fn list_rule(body: Value) -> Rule {
    mock!(Client::list_secret_version_ids).then_http_response(move || ok(body.clone()))
}

/// `CancelRotateSecret` answering with `version_id` as AWS does: the partial version's id.
fn cancel_rule(version_id: &'static str) -> Rule {
    mock!(Client::cancel_rotate_secret).then_http_response(move || {
        ok(json!({ "ARN": ARN, "Name": NAME, "VersionId": version_id }))
    })
}

fn stage_answer() -> HttpResponse {
    ok(json!({ "ARN": ARN, "Name": NAME }))
}

/// Attaching a label (`MoveToVersionId` only).
fn attach_rule_ok() -> Rule {
    mock!(Client::update_secret_version_stage)
        .match_requests(|req| {
            req.move_to_version_id().is_some() && req.remove_from_version_id().is_none()
        })
        .then_http_response(stage_answer)
}

/// Removing `AWSPENDING` (`RemoveFromVersionId` only).
fn remove_rule_ok() -> Rule {
    mock!(Client::update_secret_version_stage)
        .match_requests(is_pending_removal)
        .then_http_response(stage_answer)
}

fn is_pending_removal(req: &UpdateSecretVersionStageInput) -> bool {
    req.version_stage() == Some(PENDING)
        && req.remove_from_version_id().is_some()
        && req.move_to_version_id().is_none()
}

fn is_marker(req: &TagResourceInput) -> bool {
    req.tags()
        .iter()
        .any(|t| t.key() == Some(tag::UNLABELLED_VERSION))
}

fn marker_rule_ok() -> Rule {
    mock!(Client::tag_resource)
        .match_requests(is_marker)
        .then_http_response(|| ok(json!({})))
}

fn tag_rule_ok() -> Rule {
    mock!(Client::tag_resource).then_http_response(|| ok(json!({})))
}

fn untag_rule_ok() -> Rule {
    mock!(Client::untag_resource).then_http_response(|| ok(json!({})))
}

fn config() -> Config {
    Config::from_lookup(|name| match name {
        "AWS_REGION" => Some(REGION.to_owned()),
        "RESCUE_GRACE" | "RESCUE_ALARM_MIN_AGE" => Some("0".to_owned()),
        _ => None,
    })
    .unwrap()
}

fn rescuer(client: Client) -> Rescuer {
    Rescuer {
        api: SecretsApi::new(client),
        config: config(),
        home: Home {
            account: Some(ACCOUNT.to_owned()),
            region: REGION.to_owned(),
        },
        queue: None,
    }
}

fn failure() -> Cause {
    Cause::RotationFailed {
        failed_at: at(FAILED_AT),
        step: FailedStep::TestSecret,
    }
}

/// Rescues the secret through a client that answers by `rules` (first match wins).
async fn rescue(rules: &[&Rule]) -> (SecretReport, Recorder) {
    let recorder = Recorder::default();
    let client = client(RuleMode::MatchAny, rules, &recorder);
    let report = rescuer(client).rescue(ARN, failure(), false, at(NOW)).await;
    (report, recorder)
}

fn strings(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|line| line.to_string()).collect()
}

fn record_line() -> String {
    format!("tag record kept=v2 label={KEEP}")
}

// ---------------------------------------------------------------------------------------------
// 1. CancelRotateSecret's VersionId is not where the labels go
// ---------------------------------------------------------------------------------------------

/// AWS answers the cancel with the partial version's id; the emulator with AWSCURRENT's. Either
/// way the labels must go to the version that `VersionIdsToStages` shows as stuck.
async fn labels_target_the_version_describe_shows_stuck(cancel_answer: &'static str) {
    let describe = describe_rule(vec![described(
        &[("v1", &[CURRENT]), ("v2", &[PENDING])],
        json!({}),
    )]);
    let list = list_rule(listed(&[("v1", V1_CREATED), ("v2", V2_CREATED)]));
    let cancel = cancel_rule(cancel_answer);
    let (attach, remove, tag) = (attach_rule_ok(), remove_rule_ok(), tag_rule_ok());

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(report.stuck_version_id.as_deref(), Some("v2"));
    assert_eq!(report.keep_label.as_deref(), Some(KEEP));
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "stage AWSPENDING from=v2".to_owned(),
            record_line(),
        ]
    );
    assert_eq!(cancel.num_calls(), 1);
}

#[tokio::test]
async fn cancel_answering_another_version_id_does_not_redirect_the_labels() {
    labels_target_the_version_describe_shows_stuck("v-other").await;
}

#[tokio::test]
async fn cancel_answering_the_partial_version_id_labels_that_version() {
    labels_target_the_version_describe_shows_stuck("v2").await;
}

#[tokio::test]
async fn cancel_answering_the_current_version_id_as_moto_does_does_not_redirect_the_labels() {
    labels_target_the_version_describe_shows_stuck("v1").await;
}

// ---------------------------------------------------------------------------------------------
// 2. The 20-label quota
// ---------------------------------------------------------------------------------------------

/// A stateful stand-in for the quota: an attach is refused with `LimitExceededException` until
/// AWSPENDING has left v2 (which frees a slot). `attach_after_free` is the answer once freed.
struct Quota {
    freed: Arc<AtomicBool>,
}

impl Quota {
    fn new() -> Self {
        Quota {
            freed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn refusal() -> HttpResponse {
        aws_error(
            "LimitExceededException",
            "You have exceeded the maximum number of staging labels (20) for this secret.",
        )
    }

    /// Attach: refused while no slot is free, then `after_free`.
    fn attach_rule(&self, after_free: fn() -> HttpResponse) -> Rule {
        let freed = self.freed.clone();
        mock!(Client::update_secret_version_stage)
            .match_requests(|req| req.move_to_version_id().is_some())
            .then_http_response(move || {
                if freed.load(Ordering::SeqCst) {
                    after_free()
                } else {
                    Quota::refusal()
                }
            })
    }

    /// Removing AWSPENDING from v2 succeeds once and frees a slot; a second removal finds no
    /// AWSPENDING on v2 and is refused as AWS refuses it.
    fn remove_rule(&self) -> Rule {
        let freed = self.freed.clone();
        mock!(Client::update_secret_version_stage)
            .match_requests(is_pending_removal)
            .then_http_response(move || {
                if freed.swap(true, Ordering::SeqCst) {
                    aws_error(
                        "InvalidParameterException",
                        "The staging label AWSPENDING is not attached to version v2.",
                    )
                } else {
                    stage_answer()
                }
            })
    }
}

/// v1 AWSCURRENT, v0 AWSPREVIOUS, v2 AWSPENDING and 17 custom labels on old versions: 20.
fn full_of_labels() -> (Value, Value) {
    let custom: Vec<(String, Vec<String>)> = (0..17)
        .map(|i| (format!("old{}", i % 6), format!("KEEP{i:02}")))
        .fold(
            BTreeMap::<String, Vec<String>>::new(),
            |mut acc, (id, label)| {
                acc.entry(id).or_default().push(label);
                acc
            },
        )
        .into_iter()
        .collect();
    let mut stages: Vec<(&str, Vec<&str>)> = vec![
        ("v0", vec![PREVIOUS]),
        ("v1", vec![CURRENT]),
        ("v2", vec![PENDING]),
    ];
    for (id, labels) in &custom {
        stages.push((id, labels.iter().map(String::as_str).collect()));
    }
    let total: usize = stages.iter().map(|(_, labels)| labels.len()).sum();
    assert_eq!(total, 20);
    let stages: Vec<(&str, &[&str])> = stages.iter().map(|(id, l)| (*id, l.as_slice())).collect();

    let mut versions = vec![("v0", V0_CREATED), ("v1", V1_CREATED), ("v2", V2_CREATED)];
    for (id, _) in &custom {
        versions.push((id, "2023-01-01T00:00:00Z"));
    }
    (described(&stages, json!({})), listed(&versions))
}

#[tokio::test]
async fn full_label_quota_marks_the_version_before_removing_pending_then_attaches_and_unmarks() {
    let (described, versions) = full_of_labels();
    let quota = Quota::new();
    let describe = describe_rule(vec![described]);
    let list = list_rule(versions);
    let cancel = cancel_rule("v2");
    let attach = quota.attach_rule(stage_answer);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_ok(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            "tag marker=v2".to_owned(),
            "stage AWSPENDING from=v2".to_owned(),
            format!("stage {KEEP} to=v2"),
            format!("untag {}", tag::UNLABELLED_VERSION),
            record_line(),
        ]
    );
    // The plan's order needed no refusal to find it: one attempt at the attach.
    assert_eq!(attach.num_calls(), 1);
}

#[tokio::test]
async fn quota_refusal_of_the_attach_marks_removes_pending_and_attaches_again() {
    let quota = Quota::new();
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = quota.attach_rule(stage_answer);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_ok(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert!(
        report.warnings.iter().any(|w| w.contains("quota")),
        "a warning tells of the quota: {:?}",
        report.warnings
    );
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "tag marker=v2".to_owned(),
            "stage AWSPENDING from=v2".to_owned(),
            format!("stage {KEEP} to=v2"),
            format!("untag {}", tag::UNLABELLED_VERSION),
            record_line(),
        ]
    );
    // The SDK classifies LimitExceededException as throttling and retries it: every attempt of
    // the first attach is refused, then the second attach succeeds at once.
    assert_eq!(attach.num_calls(), MAX_ATTEMPTS as usize + 1);
}

#[tokio::test]
async fn quota_refusal_of_the_second_attach_needs_attention_and_keeps_the_marker() {
    let quota = Quota::new();
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = quota.attach_rule(Quota::refusal);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_ok(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:?}");
    assert!(
        report.reason.contains("v2"),
        "names the version: {}",
        report.reason
    );
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "tag marker=v2".to_owned(),
            "stage AWSPENDING from=v2".to_owned(),
            format!("stage {KEEP} to=v2"),
        ],
        "the marker stays: no UntagResource, and no record tag claiming a rescue"
    );
    assert_eq!(untag.num_calls(), 0);
}

/// The tag refusal: IAM scoping `aws:TagKeys`, or the 50-tag quota; AccessDenied is not retried.
fn marker_rule_refused() -> Rule {
    mock!(Client::tag_resource)
        .match_requests(is_marker)
        .then_http_response(|| {
            aws_error(
                "AccessDeniedException",
                "User is not authorized to perform: secretsmanager:TagResource",
            )
        })
}

#[tokio::test]
async fn refused_marker_tag_after_a_quota_refusal_leaves_pending_in_place() {
    let quota = Quota::new();
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = quota.attach_rule(stage_answer);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_refused(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:?}");
    assert!(report.reason.contains("v2"), "{}", report.reason);
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "tag marker=v2".to_owned(),
        ]
    );
    assert_eq!(
        remove.num_calls(),
        0,
        "no RemoveFromVersionId request at all"
    );
}

#[tokio::test]
async fn refused_marker_tag_in_the_quota_order_leaves_pending_in_place() {
    let (described, versions) = full_of_labels();
    let quota = Quota::new();
    let describe = describe_rule(vec![described]);
    let list = list_rule(versions);
    let cancel = cancel_rule("v2");
    let attach = quota.attach_rule(stage_answer);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_refused(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:?}");
    assert!(report.reason.contains("v2"), "{}", report.reason);
    assert_eq!(
        recorder.mutating(),
        ["CancelRotateSecret".to_owned(), "tag marker=v2".to_owned()]
    );
    assert_eq!(
        remove.num_calls(),
        0,
        "no RemoveFromVersionId request at all"
    );
}

/// The quota order, where another writer takes the slot that removing AWSPENDING freed: the
/// attach that follows is refused. AWSPENDING is already gone, so the version has no label and
/// only the marker names it: that is `needs_attention` naming v2, with the marker kept, and no
/// second mark-and-remove (a second removal can only be refused).
#[tokio::test]
async fn quota_order_attach_refused_after_the_remove_needs_attention_without_a_second_remove() {
    let (described, versions) = full_of_labels();
    let quota = Quota::new();
    let describe = describe_rule(vec![described]);
    let list = list_rule(versions);
    let cancel = cancel_rule("v2");
    // Still refused after the remove: someone else took the freed slot.
    let attach = quota.attach_rule(Quota::refusal);
    let remove = quota.remove_rule();
    let (marker, tag, untag) = (marker_rule_ok(), tag_rule_ok(), untag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &marker, &tag, &untag,
    ])
    .await;

    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            "tag marker=v2".to_owned(),
            "stage AWSPENDING from=v2".to_owned(),
            format!("stage {KEEP} to=v2"),
        ]
    );
    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:?}");
    assert!(report.reason.contains("v2"), "{}", report.reason);
    assert_eq!(untag.num_calls(), 0, "the marker stays");
}

// ---------------------------------------------------------------------------------------------
// 3. A keep-label that sits on another version is never moved
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keep_label_on_another_version_is_left_there_and_the_suffixed_label_is_attached() {
    let describe = describe_rule(vec![described(
        &[("v1", &[CURRENT, KEEP]), ("v2", &[PENDING])],
        json!({}),
    )]);
    let list = list_rule(listed(&[("v1", V1_CREATED), ("v2", V2_CREATED)]));
    let cancel = cancel_rule("v2");
    // AWS refuses to move a label that sits on another version without RemoveFromVersionId.
    let base_refused = mock!(Client::update_secret_version_stage)
        .match_requests(|req| req.version_stage() == Some(KEEP))
        .then_http_response(|| {
            aws_error(
                "InvalidParameterException",
                "The staging label is attached to version v1: specify RemoveFromVersionId.",
            )
        });
    let suffixed = format!("{KEEP}_v2");
    let wanted = suffixed.clone();
    let attach = mock!(Client::update_secret_version_stage)
        .match_requests(move |req| {
            req.version_stage() == Some(wanted.as_str())
                && req.move_to_version_id() == Some("v2")
                && req.remove_from_version_id().is_none()
        })
        .then_http_response(stage_answer);
    let (remove, tag) = (remove_rule_ok(), tag_rule_ok());

    let (report, recorder) = rescue(&[
        &describe,
        &list,
        &cancel,
        &base_refused,
        &attach,
        &remove,
        &tag,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(report.keep_label.as_deref(), Some(suffixed.as_str()));
    assert_eq!(
        base_refused.num_calls(),
        0,
        "the base label is never requested"
    );
    assert_eq!(attach.num_calls(), 1);
    let stage_lines: Vec<String> = recorder
        .mutating()
        .into_iter()
        .filter(|line| line.starts_with("stage "))
        .collect();
    assert_eq!(
        stage_lines,
        [
            format!("stage {suffixed} to=v2"),
            "stage AWSPENDING from=v2".to_owned()
        ],
        "RemoveFromVersionId only ever for AWSPENDING"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A secret scheduled for deletion
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn secret_scheduled_for_deletion_is_skipped_without_mutating_calls() {
    let describe = describe_rule(vec![described(
        &[("v1", &[CURRENT]), ("v2", &[PENDING])],
        json!({ "DeletedDate": epoch("2024-05-01T00:55:00Z") }),
    )]);
    let list = list_rule(usual_versions());
    let cancel = mock!(Client::cancel_rotate_secret)
        .then_http_response(|| aws_error("InvalidRequestException", MARKED_FOR_DELETION));
    let stage = mock!(Client::update_secret_version_stage)
        .then_http_response(|| aws_error("InvalidRequestException", MARKED_FOR_DELETION));
    let tag = tag_rule_ok();

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &stage, &tag]).await;

    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(report.reason.contains("deletion"), "{}", report.reason);
    assert_eq!(recorder.mutating(), Vec::<String>::new());
}

#[tokio::test]
async fn deletion_racing_the_rescue_ends_skipped_without_further_calls() {
    let deleted = described(
        &[("v1", &[CURRENT]), ("v2", &[PENDING])],
        json!({ "DeletedDate": epoch("2024-05-01T00:59:59Z"), "RotationEnabled": false }),
    );
    let describe = describe_rule(vec![stuck(), deleted]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let stage = mock!(Client::update_secret_version_stage)
        .then_http_response(|| aws_error("InvalidRequestException", MARKED_FOR_DELETION));
    let tag = tag_rule_ok();

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &stage, &tag]).await;

    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(report.reason.contains("deletion"), "{}", report.reason);
    assert_eq!(
        recorder.lines(),
        [
            "DescribeSecret".to_owned(),
            "ListSecretVersionIds".to_owned(),
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "DescribeSecret".to_owned(),
            "ListSecretVersionIds".to_owned(),
        ],
        "nothing after the re-describe"
    );
    assert_eq!(
        stage.num_calls(),
        1,
        "InvalidRequestException is not retried"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Throttling and refusals
// ---------------------------------------------------------------------------------------------

fn throttled() -> HttpResponse {
    aws_error("ThrottlingException", "Rate exceeded")
}

#[tokio::test]
async fn throttled_once_is_retried_by_the_sdk_and_rescued() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = mock!(Client::update_secret_version_stage)
        .match_requests(|req| req.move_to_version_id().is_some())
        .sequence()
        .http_response(throttled)
        .http_response(stage_answer)
        .build();
    let (remove, tag) = (remove_rule_ok(), tag_rule_ok());

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(attach.num_calls(), 2, "one throttled attempt, one retry");
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "stage AWSPENDING from=v2".to_owned(),
            record_line(),
        ],
        "the retry is the SDK's: one operation"
    );
}

fn always_throttled_attach() -> Rule {
    mock!(Client::update_secret_version_stage)
        .match_requests(|req| req.move_to_version_id().is_some())
        .then_http_response(throttled)
}

#[tokio::test]
async fn throttled_on_every_attempt_fails_without_removing_pending() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = always_throttled_attach();
    let (remove, tag) = (remove_rule_ok(), tag_rule_ok());

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.reason.contains("Throttl"), "{}", report.reason);
    assert_eq!(attach.num_calls(), MAX_ATTEMPTS as usize);
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2")
        ]
    );
}

fn rotation_failed_event() -> Value {
    json!({
        "version": "0",
        "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196",
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager",
        "account": ACCOUNT,
        "time": FAILED_AT,
        "region": REGION,
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": ACCOUNT, "invokedBy": "secretsmanager.amazonaws.com"},
            "eventTime": FAILED_AT,
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationFailed",
            "awsRegion": REGION,
            "sourceIPAddress": "secretsmanager.amazonaws.com",
            "userAgent": "secretsmanager.amazonaws.com",
            "errorMessage": format!(
                "Error when executing lambda {ROTATOR} during testSecret step"
            ),
            "requestParameters": null,
            "responseElements": null,
            "additionalEventData": {"SecretId": ARN},
            "requestID": "Rotation-id",
            "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9",
            "readOnly": false,
            "eventType": "AwsServiceEvent",
            "managementEvent": true,
            "recipientAccountId": ACCOUNT,
            "eventCategory": "Management"
        }
    })
}

#[tokio::test]
async fn throttled_on_every_attempt_makes_the_invocation_fail_as_secrets_failed() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let attach = always_throttled_attach();
    let (remove, tag) = (remove_rule_ok(), tag_rule_ok());
    let recorder = Recorder::default();
    let client = client(
        RuleMode::MatchAny,
        &[&describe, &list, &cancel, &attach, &remove, &tag],
        &recorder,
    );
    let app = App::new(SecretsApi::new(client), config());

    let result = app
        .handle(&rotation_failed_event(), FUNCTION_ARN, at(NOW))
        .await;

    let err = result.expect_err("a failed secret fails the event invocation");
    match &err {
        HandlerError::SecretsFailed {
            failed,
            total,
            first,
        } => {
            assert_eq!((*failed, *total), (1, 1));
            assert!(first.starts_with(ARN), "{first}");
        }
        other => panic!("expected SecretsFailed, got {other:?}"),
    }
    let diagnostic = lambda_runtime::Diagnostic::from(err);
    assert_eq!(diagnostic.error_type, "SecretsFailed");
    assert_eq!(attach.num_calls(), MAX_ATTEMPTS as usize);
    assert_eq!(remove.num_calls(), 0);
}

#[tokio::test]
async fn access_denied_on_cancel_fails_without_label_calls() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = mock!(Client::cancel_rotate_secret).then_http_response(|| {
        aws_error(
            "AccessDeniedException",
            "User is not authorized to perform: secretsmanager:CancelRotateSecret",
        )
    });
    let (attach, remove, tag) = (attach_rule_ok(), remove_rule_ok(), tag_rule_ok());

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(report.reason.contains("AccessDenied"), "{}", report.reason);
    assert_eq!(
        cancel.num_calls(),
        1,
        "AccessDeniedException is not retried"
    );
    assert_eq!(recorder.mutating(), ["CancelRotateSecret".to_owned()]);
}

// ---------------------------------------------------------------------------------------------
// 6. A concurrent change between describe and act
// ---------------------------------------------------------------------------------------------

fn remove_refused_as_not_on_version() -> Rule {
    mock!(Client::update_secret_version_stage)
        .match_requests(is_pending_removal)
        .then_http_response(|| {
            aws_error(
                "InvalidParameterException",
                "The staging label AWSPENDING is not attached to version v2.",
            )
        })
}

#[tokio::test]
async fn pending_removed_concurrently_and_keep_label_on_v2_is_rescued() {
    let after = described(
        &[("v0", &[PREVIOUS]), ("v1", &[CURRENT]), ("v2", &[KEEP])],
        json!({ "RotationEnabled": false }),
    );
    let describe = describe_rule(vec![stuck(), after]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let (attach, remove, tag) = (
        attach_rule_ok(),
        remove_refused_as_not_on_version(),
        tag_rule_ok(),
    );

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(
        recorder.lines(),
        [
            "DescribeSecret".to_owned(),
            "ListSecretVersionIds".to_owned(),
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "stage AWSPENDING from=v2".to_owned(),
            "DescribeSecret".to_owned(),
            "ListSecretVersionIds".to_owned(),
            record_line(),
        ]
    );
}

#[tokio::test]
async fn conflict_on_the_remove_with_pending_still_on_v2_fails() {
    let after = described(
        &[
            ("v0", &[PREVIOUS]),
            ("v1", &[CURRENT]),
            ("v2", &[PENDING, KEEP]),
        ],
        json!({ "RotationEnabled": false }),
    );
    let describe = describe_rule(vec![stuck(), after]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let (attach, remove, tag) = (
        attach_rule_ok(),
        remove_refused_as_not_on_version(),
        tag_rule_ok(),
    );

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &attach, &remove, &tag]).await;

    assert_eq!(report.outcome, Outcome::Failed, "{report:?}");
    assert!(
        report.reason.contains("InvalidParameter"),
        "{}",
        report.reason
    );
    assert_eq!(
        tag.num_calls(),
        0,
        "no record of a rescue that did not happen"
    );
    assert_eq!(
        recorder.mutating(),
        [
            "CancelRotateSecret".to_owned(),
            format!("stage {KEEP} to=v2"),
            "stage AWSPENDING from=v2".to_owned(),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// 7. A replica
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn replica_is_skipped_without_mutating_calls() {
    let describe = describe_rule(vec![described(
        &[("v1", &[CURRENT]), ("v2", &[PENDING])],
        json!({ "PrimaryRegion": "eu-west-1" }),
    )]);
    let list = list_rule(usual_versions());
    let replica_refusal = || {
        aws_error(
            "InvalidParameterException",
            "Operation not permitted on a replica secret. Call must be made in primary \
             secret's region.",
        )
    };
    let cancel = mock!(Client::cancel_rotate_secret).then_http_response(replica_refusal);
    let stage = mock!(Client::update_secret_version_stage).then_http_response(replica_refusal);

    let (report, recorder) = rescue(&[&describe, &list, &cancel, &stage]).await;

    assert_eq!(report.outcome, Outcome::Skipped, "{report:?}");
    assert!(report.reason.contains("eu-west-1"), "{}", report.reason);
    assert_eq!(recorder.mutating(), Vec::<String>::new());
    assert_eq!(cancel.num_calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// 8. Dry run
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dry_run_calls_only_describe_and_list() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let recorder = Recorder::default();
    // Sequential: these two rules, in this order, once each; any other request panics.
    let client = client(RuleMode::Sequential, &[&describe, &list], &recorder);

    let report = rescuer(client).rescue(ARN, failure(), true, at(NOW)).await;

    assert_eq!(report.outcome, Outcome::Planned, "{report:?}");
    let planned: Vec<&str> = report.actions.iter().map(|a| a.name()).collect();
    assert_eq!(
        planned,
        [
            "cancel_rotation",
            "attach_label",
            "remove_pending",
            "tag_secret"
        ]
    );
    assert_eq!(
        recorder.lines(),
        strings(&["DescribeSecret", "ListSecretVersionIds"])
    );
    assert_eq!((describe.num_calls(), list.num_calls()), (1, 1));
}

// ---------------------------------------------------------------------------------------------
// 9. No secret value is ever read or written
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn full_rescue_calls_only_the_five_operations_that_touch_no_value() {
    let describe = describe_rule(vec![stuck()]);
    let list = list_rule(usual_versions());
    let cancel = cancel_rule("v2");
    let (attach, remove, tag) = (attach_rule_ok(), remove_rule_ok(), tag_rule_ok());
    // Present so that a call would be answered (and counted) rather than panic.
    let get_value = mock!(Client::get_secret_value).then_http_response(|| {
        ok(json!({ "ARN": ARN, "Name": NAME, "VersionId": "v2", "SecretString": "hunter2" }))
    });
    let put_value = mock!(Client::put_secret_value)
        .then_http_response(|| ok(json!({ "ARN": ARN, "Name": NAME, "VersionId": "v3" })));

    let (report, recorder) = rescue(&[
        &describe, &list, &cancel, &attach, &remove, &tag, &get_value, &put_value,
    ])
    .await;

    assert_eq!(report.outcome, Outcome::Rescued, "{report:?}");
    assert_eq!(
        recorder.operations(),
        [
            "CancelRotateSecret",
            "DescribeSecret",
            "ListSecretVersionIds",
            "TagResource",
            "UpdateSecretVersionStage",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect()
    );
    assert_eq!((get_value.num_calls(), put_value.num_calls()), (0, 0));
}
