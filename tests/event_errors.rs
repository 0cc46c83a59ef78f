//! Malformed events are refused with the field at fault named, never half-accepted.

use rotation_rescue::event::{self, Trigger};
use serde_json::{Value, json};

fn rotation_failed() -> Value {
    json!({
        "version": "0", "id": "d82e0a2d-f36e-11fd-37cb-cba423a71196",
        "detail-type": "AWS Service Event via CloudTrail", "source": "aws.secretsmanager",
        "account": "111122223333", "time": "2024-05-01T00:50:20Z", "region": "us-east-1",
        "resources": [],
        "detail": {
            "eventTime": "2024-05-01T00:50:20Z",
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationFailed",
            "errorMessage": "Error when executing lambda arn:x during setSecret step",
            "additionalEventData": {"SecretId":
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf"},
            "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9"
        }
    })
}

/// A SecretId of the wrong type: the error must name the field that was wrong.
#[test]
fn wrong_type_secret_id_error_names_the_field() {
    let mut event = rotation_failed();
    event["detail"]["additionalEventData"]["SecretId"] = json!(123);
    let err = event::parse(&event).unwrap_err().to_string();
    assert!(err.contains("SecretId"), "does not name the field: {err}");
}

/// `detail: null` on a Secrets Manager envelope: the error must say `detail`.
#[test]
fn null_detail_error_names_detail() {
    let mut event = rotation_failed();
    event["detail"] = Value::Null;
    let err = event::parse(&event).unwrap_err().to_string();
    assert!(err.contains("detail"), "does not name `detail`: {err}");
}

/// A Secrets Manager envelope whose detail has no eventName is not a service event; it is
/// answered as one (an empty event name, `nothing_to_do`) instead of being refused.
#[test]
fn detail_without_event_name_is_refused() {
    let mut event = rotation_failed();
    event["detail"] = json!({});
    match event::parse(&event) {
        Err(err) => assert!(err.to_string().contains("eventName"), "{err}"),
        Ok(Trigger::OtherServiceEvent { event_name, .. }) => {
            panic!("accepted as the service event {event_name:?}")
        }
        Ok(other) => panic!("accepted as {other:?}"),
    }
}
