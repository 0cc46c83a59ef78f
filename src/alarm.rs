//! CloudWatch alarms on a rotation function, in the three ways they reach a Lambda function
//! (AWS-FACTS 2.2): the EventBridge `CloudWatch Alarm State Change` event, the alarm action's
//! direct payload (`alarmData`), and an SNS notification whose `Message` is the alarm as a JSON
//! string. All three are read from raw JSON into one [`Alarm`]: the crate's typed alarm
//! configuration requires `metricStat` (metric math has none) and its SNS payload type fails on
//! `AlarmDescription: null`.

use serde_json::Value;

pub const ALARM_DETAIL_TYPE: &str = "CloudWatch Alarm State Change";
pub const CLOUDWATCH_SOURCE: &str = "aws.cloudwatch";
const LAMBDA_NAMESPACE: &str = "AWS/Lambda";
const FUNCTION_DIMENSION: &str = "FunctionName";

/// How the alarm arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    EventBridge,
    AlarmAction,
    Sns,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::EventBridge => "alarm_eventbridge",
            Delivery::AlarmAction => "alarm_action",
            Delivery::Sns => "alarm_sns",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    pub delivery: Delivery,
    pub name: String,
    pub arn: Option<String>,
    /// `ALARM`, `OK` or `INSUFFICIENT_DATA`.
    pub state: String,
    /// The state before this change, when the delivery tells it.
    pub previous_state: Option<String>,
    /// The `FunctionName` dimensions of its `AWS/Lambda` metrics, single or inside metric math.
    pub functions: Vec<String>,
    /// A composite alarm names no metric: it resolves through `RESCUE_ALARM_FUNCTIONS` only.
    pub composite: bool,
}

impl Alarm {
    /// Only a transition into `ALARM` acts: `OK` and `INSUFFICIENT_DATA` do not, and neither
    /// does an alarm that already was in `ALARM` (a changed reason, a `SetAlarmState`).
    pub fn is_transition_into_alarm(&self) -> bool {
        self.state == "ALARM" && self.previous_state.as_deref() != Some("ALARM")
    }

    /// The alarm's region and account, from its ARN (never from the SNS `Region` display name).
    pub fn region_and_account(&self) -> Option<(&str, &str)> {
        let arn = crate::decide::ArnParts::parse(self.arn.as_deref()?)?;
        Some((arn.region, arn.account))
    }
}

/// Reads the EventBridge alarm event. `Err` names the field at fault.
pub fn from_eventbridge(raw: &Value) -> Result<Alarm, String> {
    let detail = raw.get("detail").ok_or("detail is missing")?;
    let arn = raw
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(Value::as_str)
        .map(str::to_owned);
    alarm_data(detail, Delivery::EventBridge, arn, "detail")
}

/// Reads the alarm action's direct payload.
pub fn from_alarm_action(raw: &Value) -> Result<Alarm, String> {
    let data = raw.get("alarmData").ok_or("alarmData is missing")?;
    let arn = text(raw, "alarmArn").map(str::to_owned);
    alarm_data(data, Delivery::AlarmAction, arn, "alarmData")
}

/// Reads the alarm inside one SNS record's `Sns.Message`.
pub fn from_sns_record(record: &Value, index: usize) -> Result<Alarm, String> {
    let at = format!("Records[{index}].Sns.Message");
    let message = record
        .get("Sns")
        .and_then(|sns| text(sns, "Message"))
        .ok_or_else(|| format!("{at} is missing"))?;
    let message: Value =
        serde_json::from_str(message).map_err(|err| format!("{at} is not JSON: {err}"))?;
    let name = text(&message, "AlarmName")
        .ok_or_else(|| format!("{at}: AlarmName is missing (not a CloudWatch alarm)"))?;
    let state =
        text(&message, "NewStateValue").ok_or_else(|| format!("{at}: NewStateValue is missing"))?;

    // Dimensions are an array of {name, value} here, in `Trigger` or in `Trigger.Metrics[]`.
    let mut functions = Vec::new();
    if let Some(trigger) = message.get("Trigger") {
        push_function(&mut functions, trigger, "Namespace", "Dimensions");
        for metric in array(trigger, "Metrics") {
            if let Some(metric) = metric.get("MetricStat").and_then(|s| s.get("Metric")) {
                push_function(&mut functions, metric, "Namespace", "Dimensions");
            }
        }
    }
    Ok(Alarm {
        delivery: Delivery::Sns,
        name: name.to_owned(),
        arn: text(&message, "AlarmArn").map(str::to_owned),
        state: state.to_owned(),
        previous_state: text(&message, "OldStateValue").map(str::to_owned),
        functions,
        composite: message.get("AlarmRule").is_some_and(|r| !r.is_null()),
    })
}

/// `alarmName`, `state.value` and `configuration` as the EventBridge event and the alarm action
/// both carry them (dimensions as an object there).
fn alarm_data(
    data: &Value,
    delivery: Delivery,
    arn: Option<String>,
    at: &str,
) -> Result<Alarm, String> {
    let name = text(data, "alarmName").ok_or_else(|| format!("{at}.alarmName is missing"))?;
    let state = data
        .get("state")
        .and_then(|s| text(s, "value"))
        .ok_or_else(|| format!("{at}.state.value is missing"))?;
    let configuration = data.get("configuration").unwrap_or(&Value::Null);
    let mut functions = Vec::new();
    for metric in array(configuration, "metrics") {
        // Metric-math expressions have no metricStat; the metrics they use do.
        if let Some(metric) = metric.get("metricStat").and_then(|s| s.get("metric")) {
            push_function(&mut functions, metric, "namespace", "dimensions");
        }
    }
    Ok(Alarm {
        delivery,
        name: name.to_owned(),
        arn,
        state: state.to_owned(),
        previous_state: data
            .get("previousState")
            .and_then(|s| text(s, "value"))
            .map(str::to_owned),
        functions,
        composite: configuration.get("alarmRule").is_some_and(|r| !r.is_null()),
    })
}

/// Adds the `FunctionName` dimension of an `AWS/Lambda` metric, whether the dimensions are an
/// object (`{"FunctionName": "x"}`) or an array (`[{"name": "FunctionName", "value": "x"}]`).
fn push_function(functions: &mut Vec<String>, metric: &Value, namespace: &str, dims: &str) {
    if text(metric, namespace) != Some(LAMBDA_NAMESPACE) {
        return;
    }
    let name = match metric.get(dims) {
        Some(Value::Object(map)) => map.get(FUNCTION_DIMENSION).and_then(Value::as_str),
        Some(Value::Array(list)) => list
            .iter()
            .find(|d| text(d, "name") == Some(FUNCTION_DIMENSION))
            .and_then(|d| text(d, "value")),
        _ => None,
    };
    if let Some(name) = name.filter(|n| !n.is_empty())
        && !functions.iter().any(|f| f == name)
    {
        functions.push(name.to_owned());
    }
}

fn text<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A rotation function as a secret names it (`RotationLambdaARN`): name, and region and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub region: Option<String>,
    pub account: Option<String>,
}

impl FunctionRef {
    /// A plain name, or a function ARN with any `:alias` or `:version` qualifier dropped.
    pub fn parse(text: &str) -> Option<FunctionRef> {
        if !text.starts_with("arn:") {
            return (!text.is_empty() && !text.contains(':')).then(|| FunctionRef {
                name: text.to_owned(),
                region: None,
                account: None,
            });
        }
        let arn = crate::decide::ArnParts::parse(text)?;
        let name = arn.resource.strip_prefix("function:")?;
        let name = name.split(':').next().filter(|n| !n.is_empty())?;
        (arn.service == "lambda").then(|| FunctionRef {
            name: name.to_owned(),
            region: Some(arn.region.to_owned()),
            account: Some(arn.account.to_owned()),
        })
    }

    /// Whether a secret's rotation ARN names this function: equal names (`db-rotator` never
    /// matches `db-rotator-v2`), and equal region and account wherever both sides know them.
    pub fn matches(&self, rotation_lambda_arn: &str) -> bool {
        let Some(other) = FunctionRef::parse(rotation_lambda_arn) else {
            return false;
        };
        let agree = |a: &Option<String>, b: &Option<String>| match (a, b) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.name == other.name
            && agree(&self.region, &other.region)
            && agree(&self.account, &other.account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_refs_drop_qualifiers_and_keep_region_and_account() {
        let aliased = "arn:aws:lambda:us-east-1:123456789012:function:db-rotator:live";
        assert_eq!(
            FunctionRef::parse(aliased),
            Some(FunctionRef {
                name: "db-rotator".into(),
                region: Some("us-east-1".into()),
                account: Some("123456789012".into()),
            })
        );
        assert_eq!(FunctionRef::parse("db-rotator").unwrap().region, None);
        assert_eq!(FunctionRef::parse("arn:aws:sns:us-east-1:1:topic"), None);
        assert_eq!(FunctionRef::parse(""), None);
    }

    #[test]
    fn matching_compares_whole_names_and_known_places() {
        let by_name = FunctionRef::parse("db-rotator").unwrap();
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:db-rotator";
        assert!(by_name.matches(arn));
        assert!(by_name.matches(&format!("{arn}:7")));
        assert!(!by_name.matches(&format!("{arn}-v2")));
        let elsewhere = FunctionRef {
            region: Some("eu-west-1".into()),
            ..by_name.clone()
        };
        assert!(!elsewhere.matches(arn));
        let other_account = FunctionRef {
            account: Some("999999999999".into()),
            ..by_name
        };
        assert!(!other_account.matches(arn));
    }
}
