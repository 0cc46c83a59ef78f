//! Which trigger is this? The entry point hands over the raw JSON; this module answers with a
//! [`Trigger`] or with an error that says what was received and what is accepted.
//!
//! Deciding on the raw JSON (rather than on one typed envelope) lets other shapes, such as alarm
//! notifications, slot in beside these without touching the existing ones.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::sqs::SqsEvent;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::alarm::{self, Alarm};
use crate::recheck::{Recheck, RecheckMessage};

/// The envelope of Secrets Manager service events on EventBridge (AWS-FACTS 2.1).
pub const CLOUDTRAIL_DETAIL_TYPE: &str = "AWS Service Event via CloudTrail";
pub const SECRETS_MANAGER_SOURCE: &str = "aws.secretsmanager";
pub const ROTATION_FAILED: &str = "RotationFailed";

/// What the function was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// Secrets Manager reported a failed rotation of one secret.
    RotationFailed(RotationFailed),
    /// Another Secrets Manager service event (`RotationStarted`, `RotationSucceeded`, ...): a
    /// widened rule delivers these, and they need nothing.
    OtherServiceEvent {
        event_name: String,
        secret_id: Option<String>,
    },
    /// An operator named secrets directly.
    Operator(OperatorRequest),
    /// Re-checks of deferred secrets, delivered by the re-check queue (SQS): one per record.
    Recheck(Vec<RecheckRecord>),
    /// CloudWatch alarms on rotation functions (one, or one per SNS record).
    Alarm(Vec<Alarm>),
}

const ALARM_EVENT: &str = "CloudWatch alarm state change event";
const ALARM_ACTION: &str = "CloudWatch alarm action payload";
const ALARM_SNS: &str = "SNS alarm notification";

/// One SQS record of the re-check queue. A body that is no re-check message is kept as its
/// problem, so that exactly that message is reported back as failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecheckRecord {
    pub message_id: String,
    pub message: Result<Recheck, String>,
}

impl Trigger {
    /// Event triggers are retried by Lambda when they fail; an operator call is answered directly.
    pub fn is_operator(&self) -> bool {
        matches!(self, Trigger::Operator(_))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationFailed {
    /// `detail.additionalEventData.SecretId`: an ARN in every known capture.
    pub secret_id: String,
    pub step: FailedStep,
    /// `detail.eventTime` (CloudTrail: whole seconds), else the envelope's `time`.
    pub failed_at: DateTime<Utc>,
    /// The CloudTrail event id, for correlating logs with the trail.
    pub event_id: Option<String>,
}

/// The rotation step that failed, as far as the event tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailedStep {
    #[serde(rename = "createSecret")]
    CreateSecret,
    #[serde(rename = "setSecret")]
    SetSecret,
    #[serde(rename = "testSecret")]
    TestSecret,
    #[serde(rename = "finishSecret")]
    FinishSecret,
    #[serde(rename = "unknown")]
    Unknown,
}

impl FailedStep {
    /// Whether the target system (the database, the API) may already use the pending value.
    /// Only a failure in `createSecret` says it probably does not: `setSecret` is where a
    /// rotation function changes the credential (AWS-FACTS 1).
    pub fn may_have_changed_target(self) -> bool {
        self != FailedStep::CreateSecret
    }

    /// Reads the step from `detail.errorMessage`. Two forms are known (AWS-FACTS 2.1); any other
    /// text is [`FailedStep::Unknown`].
    pub fn from_error_message(message: &str) -> FailedStep {
        // "Error when executing lambda <lambda-arn> during <step> step"
        if let Some(rest) = message.strip_prefix("Error when executing lambda ") {
            let step = rest
                .rsplit_once(" during ")
                .and_then(|(_, tail)| tail.trim_end().strip_suffix(" step"));
            return match step {
                Some("createSecret") => FailedStep::CreateSecret,
                Some("setSecret") => FailedStep::SetSecret,
                Some("testSecret") => FailedStep::TestSecret,
                Some("finishSecret") => FailedStep::FinishSecret,
                _ => FailedStep::Unknown,
            };
        }
        // "Pending secret version <id> for Secret <arn> was not created by Lambda <arn>. ..."
        // names no step: AWSPENDING was staged by someone other than the rotation function, who
        // may already have set that credential on the target. So: unknown, the careful answer.
        FailedStep::Unknown
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FailedStep::CreateSecret => "createSecret",
            FailedStep::SetSecret => "setSecret",
            FailedStep::TestSecret => "testSecret",
            FailedStep::FinishSecret => "finishSecret",
            FailedStep::Unknown => "unknown",
        }
    }
}

/// An operator's direct call: `{"secrets": ["<arn or name>", ...], "dry_run": true}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRequest {
    pub secrets: Vec<String>,
    /// Can turn dry run on for this call; `false` never overrides a dry-run deployment.
    #[serde(default)]
    pub dry_run: bool,
    /// Rescue a stuck version even when it is younger than `RESCUE_GRACE`.
    #[serde(default)]
    pub force: bool,
}

/// What the payload was, for an error message. Never the payload itself: it is not logged.
const ACCEPTED: &str = "an EventBridge Secrets Manager service event (detail-type \"AWS Service \
                        Event via CloudTrail\", source \"aws.secretsmanager\"), a CloudWatch \
                        alarm (EventBridge \"CloudWatch Alarm State Change\", an alarm action's \
                        alarmData, or an SNS notification), an SQS batch of re-check messages, \
                        or an operator request {\"secrets\": [\"<arn or name>\", ...], \
                        \"dry_run\": true, \"force\": true}";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum EventError {
    #[error("unrecognized payload: received {received}; accepted: {ACCEPTED}")]
    Unrecognized { received: String },
    #[error("malformed {shape}: {problem}")]
    Malformed {
        shape: &'static str,
        problem: String,
    },
}

/// Tells which trigger `raw` is.
pub fn parse(raw: &Value) -> Result<Trigger, EventError> {
    let Some(object) = raw.as_object() else {
        return Err(EventError::Unrecognized {
            received: describe_json(raw),
        });
    };

    if object.contains_key("detail-type") {
        return parse_eventbridge(raw, object);
    }
    if object.contains_key("secrets") {
        return parse_operator(raw);
    }
    if object.contains_key("alarmData") {
        let alarm = alarm::from_alarm_action(raw).map_err(|p| malformed(ALARM_ACTION, p))?;
        return Ok(Trigger::Alarm(vec![alarm]));
    }
    if let Some(records) = object.get("Records").and_then(Value::as_array) {
        return parse_records(raw, records);
    }
    Err(EventError::Unrecognized {
        received: describe_json(raw),
    })
}

fn parse_eventbridge(raw: &Value, object: &Map<String, Value>) -> Result<Trigger, EventError> {
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
    if text("detail-type") == alarm::ALARM_DETAIL_TYPE && text("source") == alarm::CLOUDWATCH_SOURCE
    {
        let alarm = alarm::from_eventbridge(raw).map_err(|p| malformed(ALARM_EVENT, p))?;
        return Ok(Trigger::Alarm(vec![alarm]));
    }
    if text("detail-type") != CLOUDTRAIL_DETAIL_TYPE || text("source") != SECRETS_MANAGER_SOURCE {
        return Err(EventError::Unrecognized {
            received: format!(
                "an EventBridge event with detail-type {:?} from source {:?}",
                text("detail-type"),
                text("source")
            ),
        });
    }

    const SERVICE_EVENT: &str = "Secrets Manager service event";
    let event: EventBridgeEvent<CloudTrailDetail> = from_value(raw, SERVICE_EVENT)?;
    let detail = event.detail;
    let event_name = detail
        .event_name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| malformed(SERVICE_EVENT, "detail.eventName is missing".into()))?;
    let secret_id = detail
        .additional_event_data
        .and_then(|data| data.secret_id)
        .filter(|id| !id.trim().is_empty());
    if event_name != ROTATION_FAILED {
        return Ok(Trigger::OtherServiceEvent {
            event_name,
            secret_id,
        });
    }

    const SHAPE: &str = "RotationFailed event";
    let secret_id = secret_id.ok_or_else(|| {
        malformed(
            SHAPE,
            "detail.additionalEventData.SecretId is missing".into(),
        )
    })?;
    let failed_at = match detail.event_time {
        Some(text) => DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|err| malformed(SHAPE, format!("detail.eventTime {text:?}: {err}")))?,
        None => event
            .time
            .ok_or_else(|| malformed(SHAPE, "neither detail.eventTime nor time is set".into()))?,
    };
    let step = detail
        .error_message
        .as_deref()
        .map_or(FailedStep::Unknown, FailedStep::from_error_message);

    Ok(Trigger::RotationFailed(RotationFailed {
        secret_id,
        step,
        failed_at,
        event_id: detail.event_id,
    }))
}

/// `Records` come from SQS or SNS, told apart by each record's event source: `eventSource`
/// `aws:sqs` in SQS records, `EventSource` `aws:sns` in SNS ones (AWS-FACTS 2.2).
fn parse_records(raw: &Value, records: &[Value]) -> Result<Trigger, EventError> {
    let source = |record: &Value| {
        let field = |key: &str| record.get(key).and_then(Value::as_str).map(str::to_owned);
        field("eventSource").or_else(|| field("EventSource"))
    };
    let sources: Vec<Option<String>> = records.iter().map(source).collect();
    if !records.is_empty() && sources.iter().all(|s| s.as_deref() == Some("aws:sns")) {
        let alarms = records
            .iter()
            .enumerate()
            .map(|(i, record)| alarm::from_sns_record(record, i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| malformed(ALARM_SNS, problem))?;
        return Ok(Trigger::Alarm(alarms));
    }
    if records.is_empty() || sources.iter().any(|s| s.as_deref() != Some("aws:sqs")) {
        let mut seen: Vec<String> = sources
            .into_iter()
            .map(|s| s.unwrap_or_else(|| "none".into()))
            .collect();
        seen.dedup();
        return Err(EventError::Unrecognized {
            received: format!(
                "{} record(s) with event source [{}]",
                records.len(),
                seen.join(", ")
            ),
        });
    }

    const SHAPE: &str = "SQS batch";
    let batch: SqsEvent = from_value(raw, SHAPE)?;
    let records = batch.records.into_iter().enumerate().map(|(i, record)| {
        let message_id = record
            .message_id
            .ok_or_else(|| malformed(SHAPE, format!("Records[{i}].messageId is missing")))?;
        let message = record
            .body
            .ok_or_else(|| "the body is missing".to_owned())
            .and_then(|body| {
                serde_json::from_str::<RecheckMessage>(&body)
                    .map(|message| message.recheck)
                    .map_err(|err| format!("the body is not a re-check message: {err}"))
            });
        Ok(RecheckRecord {
            message_id,
            message,
        })
    });
    Ok(Trigger::Recheck(
        records.collect::<Result<_, EventError>>()?,
    ))
}

fn parse_operator(raw: &Value) -> Result<Trigger, EventError> {
    const SHAPE: &str = "operator request";
    let request: OperatorRequest = from_value(raw, SHAPE)?;
    if request.secrets.is_empty() {
        return Err(malformed(
            SHAPE,
            "secrets is empty: name at least one".into(),
        ));
    }
    if let Some(position) = request.secrets.iter().position(|s| s.trim().is_empty()) {
        return Err(malformed(SHAPE, format!("secrets[{position}] is empty")));
    }
    Ok(Trigger::Operator(request))
}

/// Deserializes `raw`, naming the field at fault (`detail.additionalEventData.SecretId: invalid
/// type ...`) when it does not fit.
fn from_value<T: serde::de::DeserializeOwned>(
    raw: &Value,
    shape: &'static str,
) -> Result<T, EventError> {
    serde_path_to_error::deserialize(raw.clone()).map_err(|err| {
        let path = err.path().to_string();
        let problem = match path.as_str() {
            "" | "." => err.inner().to_string(),
            path => format!("{path}: {}", err.inner()),
        };
        malformed(shape, problem)
    })
}

fn malformed(shape: &'static str, problem: String) -> EventError {
    EventError::Malformed { shape, problem }
}

/// A short description of a JSON value's shape: its type, or an object's keys.
fn describe_json(value: &Value) -> String {
    match value {
        Value::Object(map) if map.is_empty() => "an empty JSON object".to_owned(),
        Value::Object(map) => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).take(8).collect();
            if map.len() > keys.len() {
                keys.push("...");
            }
            format!("a JSON object with keys [{}]", keys.join(", "))
        }
        Value::Array(_) => "a JSON array".to_owned(),
        Value::String(_) => "a JSON string".to_owned(),
        Value::Number(_) => "a JSON number".to_owned(),
        Value::Bool(_) => "a JSON boolean".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

/// The CloudTrail `detail` of a Secrets Manager service event. Our own type: the crate's
/// `AWSAPICall` requires `userIdentity.type`, which these events lack, and has no
/// `errorMessage` (AWS-FACTS 2.1).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct CloudTrailDetail {
    #[serde(default)]
    event_name: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(rename = "eventID", default)]
    event_id: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    additional_event_data: Option<AdditionalEventData>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
struct AdditionalEventData {
    #[serde(rename = "SecretId", default)]
    secret_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rotation_failed(error_message: &str) -> Value {
        json!({
            "version": "0", "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196",
            "detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
            "account": "111122223333", "time": "2024-05-01T00:50:21Z", "region": "us-east-1",
            "resources": [],
            "detail": {
                "eventVersion": "1.08",
                "userIdentity": {"accountId": "111122223333",
                                 "invokedBy": "secretsmanager.amazonaws.com"},
                "eventTime": "2024-05-01T00:50:20Z",
                "eventSource": "secretsmanager.amazonaws.com",
                "eventName": "RotationFailed",
                "errorMessage": error_message,
                "requestParameters": null, "responseElements": null,
                "additionalEventData": {"SecretId":
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf"},
                "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9"
            }
        })
    }

    #[test]
    fn reads_secret_step_and_time_from_rotation_failed() {
        let message = "Error when executing lambda arn:aws:lambda:us-east-1:111122223333:\
                       function:db-rotator during setSecret step";
        let Trigger::RotationFailed(failed) = parse(&rotation_failed(message)).unwrap() else {
            panic!("not a RotationFailed trigger");
        };
        assert_eq!(
            failed.secret_id,
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf"
        );
        assert_eq!(failed.step, FailedStep::SetSecret);
        assert_eq!(failed.failed_at.to_rfc3339(), "2024-05-01T00:50:20+00:00");
        assert_eq!(
            failed.event_id.as_deref(),
            Some("e3b69cfe-b70e-4c94-baa9-9decc3c150b9")
        );
    }

    #[test]
    fn reads_each_step_of_the_first_message_form() {
        for (step, expected) in [
            ("createSecret", FailedStep::CreateSecret),
            ("setSecret", FailedStep::SetSecret),
            ("testSecret", FailedStep::TestSecret),
            ("finishSecret", FailedStep::FinishSecret),
            ("fooSecret", FailedStep::Unknown),
        ] {
            let message = format!("Error when executing lambda arn:x during {step} step");
            assert_eq!(FailedStep::from_error_message(&message), expected, "{step}");
        }
    }

    #[test]
    fn second_message_form_names_no_step() {
        let message = "Pending secret version 3f1c9a7e for Secret arn:aws:secretsmanager:\
                       us-east-1:111122223333:secret:prod/db-AbCdEf was not created by Lambda \
                       arn:aws:lambda:us-east-1:111122223333:function:db-rotator. Remove the \
                       AWSPENDING staging label and restart rotation";
        assert_eq!(FailedStep::from_error_message(message), FailedStep::Unknown);
    }

    #[test]
    fn other_text_or_no_message_means_step_unknown() {
        assert_eq!(
            FailedStep::from_error_message("Internal failure"),
            FailedStep::Unknown
        );
        let mut event = rotation_failed("");
        event["detail"]
            .as_object_mut()
            .unwrap()
            .remove("errorMessage");
        let Trigger::RotationFailed(failed) = parse(&event).unwrap() else {
            panic!("not a RotationFailed trigger");
        };
        assert_eq!(failed.step, FailedStep::Unknown);
    }

    #[test]
    fn envelope_time_is_used_when_event_time_is_missing() {
        let mut event = rotation_failed("x");
        event["detail"].as_object_mut().unwrap().remove("eventTime");
        let Trigger::RotationFailed(failed) = parse(&event).unwrap() else {
            panic!("not a RotationFailed trigger");
        };
        assert_eq!(failed.failed_at.to_rfc3339(), "2024-05-01T00:50:21+00:00");
    }

    #[test]
    fn sibling_service_events_need_nothing() {
        for name in [
            "RotationStarted",
            "RotationSucceeded",
            "RotationAbandoned",
            "TestRotationFailed",
        ] {
            let mut event = rotation_failed("x");
            event["detail"]["eventName"] = json!(name);
            let Trigger::OtherServiceEvent {
                event_name,
                secret_id,
            } = parse(&event).unwrap()
            else {
                panic!("{name} is not another service event");
            };
            assert_eq!(event_name, name);
            assert!(secret_id.unwrap().ends_with("secret:prod/db-AbCdEf"));
        }
    }

    #[test]
    fn rotation_failed_without_secret_id_is_malformed() {
        let mut event = rotation_failed("x");
        event["detail"]["additionalEventData"] = json!({});
        let err = parse(&event).unwrap_err();
        assert!(err.to_string().contains("SecretId"), "{err}");
    }

    #[test]
    fn bad_event_time_is_malformed_and_named() {
        let mut event = rotation_failed("x");
        event["detail"]["eventTime"] = json!("yesterday");
        let err = parse(&event).unwrap_err();
        assert!(err.to_string().contains("detail.eventTime"), "{err}");
    }

    #[test]
    fn operator_request_names_secrets_and_dry_run() {
        let request = json!({"secrets": ["prod/db", "arn:aws:secretsmanager:x"], "dry_run": true});
        assert_eq!(
            parse(&request).unwrap(),
            Trigger::Operator(OperatorRequest {
                secrets: vec!["prod/db".into(), "arn:aws:secretsmanager:x".into()],
                dry_run: true,
                force: false,
            })
        );
    }

    #[test]
    fn operator_request_errors_name_the_problem() {
        let cases = [
            (json!({"secrets": []}), "secrets is empty"),
            (json!({"secrets": ["a", " "]}), "secrets[1] is empty"),
            (json!({"secrets": "prod/db"}), "invalid type"),
            (
                json!({"secrets": ["a"], "dryrun": true}),
                "unknown field `dryrun`",
            ),
        ];
        for (payload, expected) in cases {
            let err = parse(&payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[test]
    fn unrecognized_payloads_say_what_was_received_and_what_is_accepted() {
        let cases = [
            (json!({"foo": 1, "bar": 2}), "keys [foo, bar]"),
            (json!([1, 2]), "a JSON array"),
            (json!("hello"), "a JSON string"),
            (json!(null), "null"),
            (
                json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}),
                "detail-type \"Scheduled Event\" from source \"aws.events\"",
            ),
        ];
        for (payload, expected) in cases {
            let err = parse(&payload).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
            assert!(err.contains("accepted:"), "{err}");
        }
    }
}
