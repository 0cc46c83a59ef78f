//! The grace period and its re-check, end to end against moto (Secrets Manager and SQS on one
//! endpoint): a fresh failure is deferred and sends itself a re-check with a delivery delay of
//! the time left; that message, received from moto and wrapped in an SQS event as Lambda's event
//! source mapping delivers it, is handed back to the handler.
//!
//! moto facts these tests rely on:
//! * `ListSecretVersionIds` reports a version's `CreatedDate` as the time of the call, in whole
//!   seconds (rounded down). So every stuck version looks brand new: a grace of 15 minutes leaves
//!   about 900 s, and a re-check rescues only with `RESCUE_GRACE=0`.
//! * moto honours `DelaySeconds`: a delayed message is invisible until its delay is over. Tests
//!   that receive a re-check use a 2 s grace and a 1 s minimum delay; the others read the
//!   `SendMessage` request itself through an interceptor ([`SentMessages`]).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_sqs::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_sqs::operation::send_message::SendMessageInput;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use rotation_rescue::event::{EventError, FailedStep};
use rotation_rescue::handler::{App, HandlerError};
use rotation_rescue::outcome::{Outcome, SecretReport, Summary};
use rotation_rescue::recheck::{MAX_DELAY, Recheck, RecheckMessage};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// Every `SendMessage` request the SQS client starts (once per operation, before any retry), as
/// the SDK is asked to send it.
#[derive(Debug, Clone, Default)]
struct SentMessages {
    sent: Arc<Mutex<Vec<Sent>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    queue_url: String,
    body: String,
    delay_seconds: Option<i32>,
}

impl Sent {
    fn message(&self) -> Recheck {
        serde_json::from_str::<RecheckMessage>(&self.body)
            .unwrap_or_else(|e| panic!("not a re-check message: {e}: {}", self.body))
            .recheck
    }
}

impl Intercept for SentMessages {
    fn name(&self) -> &'static str {
        "SentMessages"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<SendMessageInput>() {
            self.sent.lock().unwrap().push(Sent {
                queue_url: input.queue_url().unwrap_or_default().to_owned(),
                body: input.message_body().unwrap_or_default().to_owned(),
                delay_seconds: input.delay_seconds(),
            });
        }
        Ok(())
    }
}

impl SentMessages {
    fn all(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// The one message sent; panics on none or several.
    fn only(&self) -> Sent {
        let all = self.all();
        assert_eq!(all.len(), 1, "exactly one SendMessage: {all:#?}");
        all[0].clone()
    }
}

/// A queue of its own on moto, the SQS client that records what it sends there, and the app
/// (test configuration plus `overrides`) that sends its re-checks through it.
struct Setup {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    sent: SentMessages,
    app: App,
}

async fn setup(test: &str, overrides: &[(&str, &str)]) -> Setup {
    let sent = SentMessages::default();
    let sqs = aws_sdk_sqs::Client::from_conf(sqs_config().interceptor(sent.clone()).build());
    let queue_url = create_queue(&sqs, test).await;
    let app = moto_app_with_queue(overrides, sqs.clone(), &queue_url);
    Setup {
        sqs,
        queue_url,
        sent,
        app,
    }
}

impl Setup {
    /// Another app on the same queue and client, with other settings (a shortened grace).
    fn app_with(&self, overrides: &[(&str, &str)]) -> App {
        moto_app_with_queue(overrides, self.sqs.clone(), &self.queue_url)
    }
}

const GRACE_15M: &[(&str, &str)] = &[("RESCUE_GRACE", "15m")];
/// A grace and a minimum delay short enough to receive the re-check within the test.
const GRACE_2S: &[(&str, &str)] = &[("RESCUE_GRACE", "2s"), ("RESCUE_RECHECK_MIN_DELAY", "1s")];
const GRACE_0: &[(&str, &str)] = &[("RESCUE_GRACE", "0")];

fn only_report(summary: &Summary) -> &SecretReport {
    assert_eq!(summary.secrets.len(), 1, "{summary:#?}");
    &summary.secrets[0]
}

/// A re-check message body for `seeded`'s stuck version.
fn recheck_body(seeded: &Seeded, step: FailedStep, first_deferred_at: DateTime<Utc>) -> String {
    let message = RecheckMessage {
        recheck: Recheck {
            secret_arn: seeded.arn.clone(),
            version_id: seeded.pending().to_owned(),
            failed_step: step,
            first_deferred_at,
            min_age_seconds: None,
        },
    };
    serde_json::to_string(&message).unwrap()
}

static MESSAGE_IDS: AtomicUsize = AtomicUsize::new(0);

/// A one-record SQS event carrying `body`, with a fresh message id.
fn one_record_event(queue_url: &str, body: &str) -> (Value, String) {
    let id = format!(
        "00000000-0000-4000-8000-{:012}",
        MESSAGE_IDS.fetch_add(1, Ordering::Relaxed)
    );
    (sqs_event(vec![sqs_record_with(queue_url, &id, body)]), id)
}

/// Handles a `RotationFailed` event for `seeded` (failed in `setSecret`, stamped now) with a 2 s
/// grace: deferred, and its re-check received from moto once the delay is over. Returns the
/// received message.
async fn defer_and_receive(setup: &Setup, seeded: &Seeded) -> aws_sdk_sqs::types::Message {
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = setup.app.handle(&event, FUNCTION_ARN, Utc::now()).await;
    let summary = summary.expect("a deferral is no failure");
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    let delay = setup.sent.only().delay_seconds.expect("DelaySeconds");
    assert!((1..=3).contains(&delay), "2 s grace: delay {delay}");

    // Not visible before its delay (moto honours DelaySeconds)...
    let early = setup
        .sqs
        .receive_message()
        .queue_url(&setup.queue_url)
        .send()
        .await
        .expect("ReceiveMessage");
    assert!(early.messages().is_empty(), "delayed: {early:#?}");
    // ... and delivered once it is over.
    let mut received = receive(&setup.sqs, &setup.queue_url, 1, Duration::from_secs(6)).await;
    assert_eq!(received.len(), 1, "the re-check arrives after its delay");
    received.remove(0)
}

// ---------------------------------------------------------------------------------------------
// Deferral and the delay of its re-check
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn fresh_failure_is_deferred_and_its_recheck_delay_is_captured() {
    let setup = setup("fresh", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("fresh")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let event = rotation_failed_event(&seeded.arn, "testSecret", failure_now());
    let summary = setup.app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert_eq!(report.stuck_version_id.as_deref(), Some(seeded.pending()));
    assert_eq!(report.failed_step, Some(FailedStep::TestSecret));
    assert!(report.actions.is_empty());
    assert_eq!(report.recheck_in_seconds, Some(900), "{report:#?}");
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after, before, "unchanged");
    assert_eq!(after.holders(PENDING), vec![seeded.pending()]);
    assert_eq!(after.rotation_enabled, Some(true));

    // The version looks created at the describe call (moto), so the whole grace is left.
    let sent = setup.sent.only();
    assert_eq!(sent.queue_url, setup.queue_url);
    assert_eq!(sent.delay_seconds, Some(900), "{sent:#?}");
    let message = sent.message();
    assert_eq!(
        message,
        Recheck {
            secret_arn: seeded.arn.clone(),
            version_id: seeded.pending().to_owned(),
            failed_step: FailedStep::TestSecret,
            first_deferred_at: now,
            min_age_seconds: None,
        }
    );
    // Delayed: not visible yet.
    let early = receive(&setup.sqs, &setup.queue_url, 1, Duration::from_secs(1)).await;
    assert!(early.is_empty(), "{early:#?}");
}

#[tokio::test]
async fn recheck_delay_is_the_time_left_of_the_grace() {
    let setup = setup("five-minutes", &[("RESCUE_GRACE", "5m")]).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("five-minutes")).await;

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = setup.app.handle(&event, FUNCTION_ARN, Utc::now()).await;
    assert_eq!(only_report(&summary.unwrap()).outcome, Outcome::Deferred);

    let delay = setup.sent.only().delay_seconds.expect("DelaySeconds");
    assert!((299..=301).contains(&delay), "about 300 s left: {delay}");
}

#[tokio::test]
async fn recheck_delay_is_capped_at_fifteen_minutes() {
    let setup = setup("two-hours", &[("RESCUE_GRACE", "2h")]).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("two-hours")).await;

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = setup.app.handle(&event, FUNCTION_ARN, Utc::now()).await;
    let summary = summary.unwrap();
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert_eq!(report.recheck_in_seconds, Some(MAX_DELAY.as_secs()));
    assert_eq!(setup.sent.only().delay_seconds, Some(900));
}

// ---------------------------------------------------------------------------------------------
// The re-check, delivered as an SQS event
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn recheck_rescues_once_the_grace_has_passed() {
    let setup = setup("rescue", GRACE_2S).await;
    let client = client();
    let since = Utc::now();
    let seeded = failed_rotation(&client, &unique_name("rescue")).await;

    let message = defer_and_receive(&setup, &seeded).await;
    let event = sqs_event(vec![sqs_record(&setup.queue_url, &message)]);
    // The shape Lambda delivers: an SQS record with every field the event source mapping sets.
    let record = &event["Records"][0];
    for field in [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ] {
        assert!(record.get(field).is_some(), "{field} in {record:#}");
    }
    assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");

    // moto dates the version at every describe: with the grace shortened to 0, it is old enough.
    let summary = setup
        .app_with(GRACE_0)
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .unwrap();

    assert_eq!(summary.trigger, "recheck");
    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(report.secret_arn, seeded.arn);
    assert_eq!(report.stuck_version_id.as_deref(), Some(seeded.pending()));
    // The step from the message: the same version is stuck.
    assert_eq!(report.failed_step, Some(FailedStep::SetSecret));
    assert!(report.live_credential_note.is_some(), "{report:#?}");
    assert_eq!(summary.response(), json!({"batchItemFailures": []}));

    let keep_label = report.keep_label.clone().expect("keep-label");
    assert_keep_label(
        &keep_label,
        "RESCUED",
        since,
        Utc::now() + TimeDelta::seconds(1),
    );
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after.labels_of(seeded.pending()), vec![keep_label.as_str()]);
    assert!(after.holders(PENDING).is_empty(), "{after:#?}");
    assert_eq!(after.holders(CURRENT), vec![seeded.current.as_str()]);
    assert_eq!(after.rotation_enabled, Some(false));
    assert_eq!(setup.sent.all().len(), 1, "no further re-check");
}

#[tokio::test]
async fn recheck_after_the_rotation_healed_changes_nothing() {
    let setup = setup("healed", GRACE_2S).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("healed")).await;
    let message = defer_and_receive(&setup, &seeded).await;

    // Secrets Manager's own retry succeeded: AWSCURRENT moved to the new version, AWSPENDING gone.
    let pending = seeded.pending();
    move_label(
        &client,
        &seeded.arn,
        CURRENT,
        Some(&seeded.current),
        Some(pending),
    )
    .await;
    move_label(&client, &seeded.arn, PENDING, Some(pending), None).await;
    let healed = state(&client, &seeded.arn).await;
    assert_eq!(healed.holders(CURRENT), vec![pending]);
    assert!(healed.holders(PENDING).is_empty(), "{healed:#?}");

    let event = sqs_event(vec![sqs_record(&setup.queue_url, &message)]);
    for overrides in [GRACE_0, GRACE_15M] {
        let summary = setup
            .app_with(overrides)
            .handle(&event, FUNCTION_ARN, Utc::now())
            .await
            .unwrap();
        let report = only_report(&summary);
        assert_eq!(report.outcome, Outcome::NothingToDo, "{report:#?}");
        assert!(report.actions.is_empty());
        assert_eq!(summary.response(), json!({"batchItemFailures": []}));
    }
    let after = state(&client, &seeded.arn).await;
    assert_eq!(after, healed, "labels, tags and rotation untouched");
    assert_eq!(after.rotation_enabled, Some(true));
    assert_eq!(setup.sent.all().len(), 1, "no further re-check");
}

#[tokio::test]
async fn batch_with_one_malformed_message_reports_exactly_that_one() {
    let setup = setup("batch", GRACE_2S).await;
    let client = client();
    let first = failed_rotation(&client, &unique_name("batch-a")).await;
    let second = failed_rotation(&client, &unique_name("batch-b")).await;
    for seeded in [&first, &second] {
        let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
        let summary = setup.app.handle(&event, FUNCTION_ARN, Utc::now()).await;
        assert_eq!(only_report(&summary.unwrap()).outcome, Outcome::Deferred);
    }
    // Something that is no re-check lands on the queue too.
    let stray = setup
        .sqs
        .send_message()
        .queue_url(&setup.queue_url)
        .message_body(r#"{"hello": 1}"#)
        .send()
        .await
        .expect("SendMessage");
    let stray_id = stray.message_id().expect("MessageId").to_owned();

    let messages = receive(&setup.sqs, &setup.queue_url, 3, Duration::from_secs(8)).await;
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let event = sqs_event(
        messages
            .iter()
            .map(|m| sqs_record(&setup.queue_url, m))
            .collect(),
    );

    let summary = setup
        .app_with(GRACE_0)
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .expect("a partial batch answer, not an error");

    assert_eq!(
        summary.response(),
        json!({"batchItemFailures": [{"itemIdentifier": stray_id}]})
    );
    assert_eq!(summary.secrets.len(), 3, "{summary:#?}");
    let outcome_of = |arn: &str| {
        summary
            .secrets
            .iter()
            .find(|r| r.secret_arn == arn)
            .map(|r| r.outcome)
    };
    assert_eq!(
        outcome_of(&first.arn),
        Some(Outcome::Rescued),
        "{summary:#?}"
    );
    assert_eq!(
        outcome_of(&second.arn),
        Some(Outcome::Rescued),
        "{summary:#?}"
    );
    let malformed: Vec<&SecretReport> = summary
        .secrets
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .collect();
    assert_eq!(malformed.len(), 1, "{summary:#?}");
    assert!(
        malformed[0].reason.contains(&stray_id),
        "the reason names the message: {}",
        malformed[0].reason
    );
    for seeded in [&first, &second] {
        let after = state(&client, &seeded.arn).await;
        assert!(after.holders(PENDING).is_empty(), "{after:#?}");
    }
}

#[tokio::test]
async fn recheck_still_too_young_is_requeued() {
    let setup = setup("requeue", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("requeue")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();
    let first_deferred_at = now - TimeDelta::minutes(1);

    let body = recheck_body(&seeded, FailedStep::FinishSecret, first_deferred_at);
    let (event, _) = one_record_event(&setup.queue_url, &body);
    let summary = setup.app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert_eq!(report.failed_step, Some(FailedStep::FinishSecret));
    assert_eq!(summary.response(), json!({"batchItemFailures": []}));
    assert_eq!(state(&client, &seeded.arn).await, before, "unchanged");

    let sent = setup.sent.only();
    assert_eq!(sent.delay_seconds, Some(900), "{sent:#?}");
    assert_eq!(
        sent.message(),
        Recheck {
            secret_arn: seeded.arn.clone(),
            version_id: seeded.pending().to_owned(),
            failed_step: FailedStep::FinishSecret,
            first_deferred_at,
            min_age_seconds: None,
        },
        "re-queued with the first deferral's time"
    );
}

#[tokio::test]
async fn recheck_after_24_hours_needs_attention_and_is_not_requeued() {
    let setup = setup("day-old", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("day-old")).await;
    let before = state(&client, &seeded.arn).await;
    let now = Utc::now();

    let body = recheck_body(&seeded, FailedStep::SetSecret, now - TimeDelta::hours(25));
    let (event, _) = one_record_event(&setup.queue_url, &body);
    let summary = setup.app.handle(&event, FUNCTION_ARN, now).await.unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::NeedsAttention, "{report:#?}");
    assert!(report.reason.contains("24 h"), "{}", report.reason);
    assert!(report.actions.is_empty());
    // Not a failure of the message: SQS must not deliver it again.
    assert_eq!(summary.response(), json!({"batchItemFailures": []}));
    assert!(setup.sent.all().is_empty(), "never re-queued");
    assert_eq!(state(&client, &seeded.arn).await, before, "unchanged");
}

/// A re-check whose version is gone while another one is stuck: the step from the message does
/// not apply to the new version, so it is unknown (and the live-credential note is given).
#[tokio::test]
async fn recheck_of_a_replaced_version_rescues_with_the_step_unknown() {
    let setup = setup("replaced", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("replaced")).await;
    let mut older = seeded.clone();
    older.pending = Some("0e0e0e0e-0000-4000-8000-000000000000".into());

    let body = recheck_body(&older, FailedStep::CreateSecret, Utc::now());
    let (event, _) = one_record_event(&setup.queue_url, &body);
    let summary = setup
        .app_with(GRACE_0)
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert_eq!(report.stuck_version_id.as_deref(), Some(seeded.pending()));
    assert_eq!(report.failed_step, None, "unknown step: {report:#?}");
    assert!(report.live_credential_note.is_some(), "{report:#?}");
    assert!(report.reason.contains("unknown step"), "{}", report.reason);
}

/// `RESCUE_GRACE=0` is "an immediate rescue" (issue 3), and needs no re-check queue. Yet the
/// grace rule compares the handler's clock with the version's `CreatedDate` even at 0, so a
/// version dated after the handler's `now` (clock skew between the function and Secrets
/// Manager; on moto, whenever a second boundary falls between `now` and the describe call) is
/// deferred, and without a queue the secret ends `failed` and the event invocation fails.
#[tokio::test]
async fn grace_zero_rescues_a_version_dated_after_the_clock() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("skew")).await;

    // The function's clock 2 s behind Secrets Manager's (moto dates the version at the call).
    let behind = Utc::now() - TimeDelta::seconds(2);
    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let summary = moto_app(&[]) // RESCUE_GRACE=0 and no queue: a valid configuration
        .handle(&event, FUNCTION_ARN, behind)
        .await
        .expect("an immediate rescue");
    assert_eq!(only_report(&summary).outcome, Outcome::Rescued);
}

// ---------------------------------------------------------------------------------------------
// Operator calls
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn operator_call_without_force_defers_without_enqueueing() {
    let setup = setup("operator", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("operator")).await;
    let before = state(&client, &seeded.arn).await;

    let request = json!({"secrets": [seeded.arn]});
    let summary = setup
        .app
        .handle(&request, FUNCTION_ARN, Utc::now())
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Deferred, "{report:#?}");
    assert!(
        report.reason.contains("\"force\": true"),
        "{}",
        report.reason
    );
    assert_eq!(report.recheck_in_seconds, None);
    assert!(setup.sent.all().is_empty(), "operator calls never enqueue");
    assert_eq!(state(&client, &seeded.arn).await, before, "unchanged");
    // An operator's answer is the summary, not a batch response.
    assert_eq!(summary.response()["trigger"], "operator");
}

#[tokio::test]
async fn operator_force_rescues_at_once() {
    let setup = setup("force", GRACE_15M).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("force")).await;

    let request = json!({"secrets": [seeded.arn], "force": true});
    let summary = setup
        .app
        .handle(&request, FUNCTION_ARN, Utc::now())
        .await
        .unwrap();

    let report = only_report(&summary);
    assert_eq!(report.outcome, Outcome::Rescued, "{report:#?}");
    assert!(setup.sent.all().is_empty(), "operator calls never enqueue");
    let after = state(&client, &seeded.arn).await;
    assert!(after.holders(PENDING).is_empty(), "{after:#?}");
    assert_eq!(after.rotation_enabled, Some(false));
    let keep_label = report.keep_label.as_deref().expect("keep-label");
    assert_eq!(after.labels_of(seeded.pending()), vec![keep_label]);
}

// ---------------------------------------------------------------------------------------------
// A re-check that cannot be sent (SQS mocked, Secrets Manager on moto)
// ---------------------------------------------------------------------------------------------

const MOCK_QUEUE_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/rotation-rescue";

/// An SQS error as the awsJson 1.0 protocol (with query compatibility) sends it: HTTP 400, the
/// error shape in `__type`, and the query error code in `x-amzn-query-error`.
fn sqs_error(type_: &str, query_code: &str, message: &str) -> HttpResponse {
    let body = json!({ "__type": type_, "message": message }).to_string();
    let mut response = HttpResponse::new(StatusCode::try_from(400).unwrap(), SdkBody::from(body));
    response
        .headers_mut()
        .insert("x-amzn-query-error", format!("{query_code};Sender"));
    response
}

fn access_denied() -> HttpResponse {
    sqs_error(
        "com.amazon.coral.service#AccessDeniedException",
        "AccessDenied",
        "User: arn:aws:sts::123456789012:assumed-role/rescue/x is not authorized to perform: \
         sqs:sendmessage on resource: arn:aws:sqs:us-east-1:123456789012:rotation-rescue",
    )
}

fn queue_does_not_exist() -> HttpResponse {
    sqs_error(
        "com.amazonaws.sqs#QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "The specified queue does not exist.",
    )
}

/// An app on moto's Secrets Manager whose SQS client answers every `SendMessage` with `answer`.
fn app_with_failing_queue(
    overrides: &[(&str, &str)],
    answer: fn() -> HttpResponse,
) -> (App, aws_smithy_mocks::Rule) {
    let rule = mock!(aws_sdk_sqs::Client::send_message).then_http_response(answer);
    let sqs = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&rule], |config| config
        .retry_config(
            aws_sdk_sqs::config::retry::RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(1))
                .with_max_backoff(Duration::from_millis(5)),
        )
        .retry_partition(aws_sdk_sqs::config::retry::RetryPartition::new(format!(
            "recheck-mock-{}",
            MESSAGE_IDS.fetch_add(1, Ordering::Relaxed)
        ))));
    (moto_app_with_queue(overrides, sqs, MOCK_QUEUE_URL), rule)
}

#[tokio::test]
async fn failure_to_send_the_recheck_fails_the_secret_and_the_event_invocation() {
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("send-fails")).await;
    let before = state(&client, &seeded.arn).await;
    let (app, rule) = app_with_failing_queue(GRACE_15M, access_denied);

    let event = rotation_failed_event(&seeded.arn, "setSecret", failure_now());
    let err = app
        .handle(&event, FUNCTION_ARN, Utc::now())
        .await
        .expect_err("the event invocation fails, so that Lambda retries it");

    let HandlerError::SecretsFailed {
        failed,
        total,
        first,
    } = &err
    else {
        panic!("expected SecretsFailed, got {err:?}");
    };
    assert_eq!((*failed, *total), (1, 1));
    assert!(first.starts_with(&seeded.arn), "{first}");
    assert!(first.contains("AccessDenied"), "{first}");
    assert_eq!(rule.num_calls(), 1, "AccessDenied is not retried");
    assert_eq!(state(&client, &seeded.arn).await, before, "unchanged");
    let diagnostic: lambda_runtime::Diagnostic = err.into();
    assert_eq!(diagnostic.error_type, "SecretsFailed");
}

#[tokio::test]
async fn failure_to_requeue_lists_that_message_in_batch_item_failures() {
    let client = client();
    let young = failed_rotation(&client, &unique_name("requeue-fails")).await;
    // The other secret's rotation healed since: its re-check needs no message.
    let healed = failed_rotation(&client, &unique_name("requeue-healed")).await;
    move_label(&client, &healed.arn, PENDING, Some(healed.pending()), None).await;
    let (app, rule) = app_with_failing_queue(GRACE_15M, queue_does_not_exist);

    let now = Utc::now();
    let young_body = recheck_body(&young, FailedStep::SetSecret, now - TimeDelta::minutes(5));
    let healthy_body = recheck_body(&healed, FailedStep::SetSecret, now);
    let (young_event, young_id) = one_record_event(MOCK_QUEUE_URL, &young_body);
    let (healthy_event, _) = one_record_event(MOCK_QUEUE_URL, &healthy_body);
    let event = sqs_event(vec![
        young_event["Records"][0].clone(),
        healthy_event["Records"][0].clone(),
    ]);

    let summary = app
        .handle(&event, FUNCTION_ARN, now)
        .await
        .expect("a partial batch answer, not an error");

    assert_eq!(
        summary.response(),
        json!({"batchItemFailures": [{"itemIdentifier": young_id}]})
    );
    let report = &summary.secrets[0];
    assert_eq!(report.outcome, Outcome::Failed, "{report:#?}");
    assert!(
        report
            .reason
            .contains("AWS.SimpleQueueService.NonExistentQueue"),
        "{}",
        report.reason
    );
    assert_eq!(summary.secrets[1].outcome, Outcome::NothingToDo);
    assert_eq!(rule.num_calls(), 1, "one SendMessage, not retried");
}

// ---------------------------------------------------------------------------------------------
// Telling SQS from SNS
// ---------------------------------------------------------------------------------------------

const TOPIC_ARN: &str = "arn:aws:sns:us-east-1:123456789012:rotation-alarms";

#[tokio::test]
async fn sqs_and_sns_records_are_told_apart() {
    let setup = setup("sns", GRACE_0).await;
    let client = client();
    let seeded = failed_rotation(&client, &unique_name("sns")).await;
    let before = state(&client, &seeded.arn).await;

    let body = recheck_body(&seeded, FailedStep::SetSecret, Utc::now());
    let sns_record = json!({
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": format!("{TOPIC_ARN}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55"),
        "Sns": {
            "Type": "Notification",
            "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
            "TopicArn": TOPIC_ARN,
            "Subject": null,
            "Message": body,
            "Timestamp": "2026-01-01T00:00:00.000Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLE",
            "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService.pem",
            "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
            "MessageAttributes": {}
        }
    });
    let (sqs_only, _) = one_record_event(&setup.queue_url, &body);
    let sqs_record = sqs_only["Records"][0].clone();

    // SNS records carry alarms only: a re-check body there is refused, naming what is missing.
    let err = setup
        .app
        .handle(
            &sqs_event(vec![sns_record.clone()]),
            FUNCTION_ARN,
            Utc::now(),
        )
        .await
        .expect_err("an SNS record that holds no alarm is refused");
    let HandlerError::InvalidEvent(EventError::Malformed { problem, .. }) = &err else {
        panic!("expected a malformed SNS notification, got {err:?}");
    };
    assert!(problem.contains("AlarmName"), "{problem}");
    // A batch that mixes the two sources is neither.
    let err = setup
        .app
        .handle(
            &sqs_event(vec![sqs_record, sns_record]),
            FUNCTION_ARN,
            Utc::now(),
        )
        .await
        .expect_err("a mixed batch is refused");
    let HandlerError::InvalidEvent(EventError::Unrecognized { received }) = &err else {
        panic!("expected an unrecognized payload, got {err:?}");
    };
    assert!(received.contains("aws:sns"), "{received}");
    assert_eq!(state(&client, &seeded.arn).await, before, "untouched");
    assert!(setup.sent.all().is_empty());
}
