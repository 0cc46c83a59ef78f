//! Every Secrets Manager call this function makes, and how their errors are read. Nothing here
//! reads or writes a secret value: no `GetSecretValue`, no `PutSecretValue`, no KMS.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::Tag;
use chrono::{DateTime, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use thiserror::Error;

use crate::decide::{SecretState, Version};

/// Explicit limits for every call, so a stalled endpoint cannot use up the invocation: an attempt
/// gets 5 s, a call with its retries 15 s. Throttling and 5xx answers are retried by the SDK's
/// standard policy (exponential backoff with jitter), up to 4 attempts.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
pub const MAX_ATTEMPTS: u32 = 4;

/// The most calls one rescue makes: describe and list versions (2); cancel, attach and remove,
/// each with a re-describe after a conflict (3 x 3); mark, unmark and tag (3); and a re-check's
/// SendMessage (1). The quota path's second attach replaces the first.
pub const MAX_CALLS_PER_RESCUE: u32 = 15;

/// The longest one rescue can take when every call runs to its timeout: no new secret is
/// started with less than this left of the invocation.
pub const RESCUE_BUDGET: Duration =
    Duration::from_secs(OPERATION_TIMEOUT.as_secs() * MAX_CALLS_PER_RESCUE as u64);

/// Loads the SDK configuration from the environment (region, credentials, and endpoint overrides
/// such as `AWS_ENDPOINT_URL`) with this function's timeouts and retry policy, for the Secrets
/// Manager and SQS clients alike.
pub async fn sdk_config_from_env() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .load()
        .await
}

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// How a call failed, as far as the decision to go on depends on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// `InvalidRequestException`: for example, marked for deletion, or no rotation ever set.
    InvalidRequest,
    /// `InvalidParameterException`: for example, a label not on that version, or a replica.
    InvalidParameter,
    /// `LimitExceededException`: for example, the 20-label quota.
    LimitExceeded,
    AccessDenied,
    /// Still throttled after the SDK's retries.
    Throttled,
    /// No answer, a timeout, or an error without a code.
    Transport,
    Other(String),
}

#[derive(Debug, Error)]
#[error("{operation} failed ({kind:?}): {message}")]
pub struct CallError {
    pub operation: &'static str,
    pub kind: ErrorKind,
    pub message: String,
}

impl CallError {
    fn from_sdk<E, R>(operation: &'static str, err: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_owned);
        let message = match (err.message(), &code) {
            (Some(message), _) => message.to_owned(),
            (None, _) => aws_sdk_secretsmanager::error::DisplayErrorContext(&err).to_string(),
        };
        let kind = match code.as_deref() {
            Some("ResourceNotFoundException") => ErrorKind::NotFound,
            Some("InvalidRequestException") => ErrorKind::InvalidRequest,
            Some("InvalidParameterException") => ErrorKind::InvalidParameter,
            Some("LimitExceededException") => ErrorKind::LimitExceeded,
            Some("AccessDeniedException") => ErrorKind::AccessDenied,
            // Not a modeled Secrets Manager error: matched by its code (TOOLS.md).
            Some("ThrottlingException" | "Throttling" | "TooManyRequestsException") => {
                ErrorKind::Throttled
            }
            Some(other) => ErrorKind::Other(other.to_owned()),
            None => ErrorKind::Transport,
        };
        CallError {
            operation,
            kind,
            message,
        }
    }
}

/// A secret as `ListSecrets` shows it: enough to tell which function rotates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedSecret {
    pub arn: String,
    pub rotation_lambda_arn: Option<String>,
}

/// The burst allowed on top of the steady rate: a tenth of it, at least one call. So at most
/// `rate + burst` mutating calls fall in any one-second window.
pub fn burst_for(rate: NonZeroU32) -> NonZeroU32 {
    NonZeroU32::new(rate.get() / 10).unwrap_or(NonZeroU32::MIN)
}

/// The Secrets Manager calls, on a client given from outside (so tests can hand in a mock).
#[derive(Debug, Clone)]
pub struct SecretsApi {
    client: Client,
    /// Paces the mutating calls, which share per-account quotas of 50 per second with the
    /// rotation functions themselves (AWS-FACTS 4). Read calls are not paced.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl SecretsApi {
    pub fn new(client: Client) -> Self {
        SecretsApi {
            client,
            limiter: None,
        }
    }

    /// Paces mutating calls to `per_second`, with a burst of [`burst_for`] that rate.
    pub fn with_rate_limit(mut self, per_second: NonZeroU32) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst_for(per_second));
        self.limiter = Some(Arc::new(RateLimiter::direct(quota)));
        self
    }

    async fn pace(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
    }

    /// Every secret with its rotation function (`ListSecrets`, 100 a page). The listing lags by
    /// minutes: it only says which secrets to describe, never what to do.
    pub async fn list_secrets(&self) -> Result<Vec<ListedSecret>, CallError> {
        let mut pages = self
            .client
            .list_secrets()
            .max_results(100)
            .into_paginator()
            .send();
        let mut secrets = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| CallError::from_sdk("ListSecrets", err))?;
            for entry in page.secret_list() {
                let Some(arn) = entry.arn() else {
                    continue;
                };
                secrets.push(ListedSecret {
                    arn: arn.to_owned(),
                    rotation_lambda_arn: entry
                        .rotation_lambda_arn()
                        .filter(|a| !a.is_empty())
                        .map(str::to_owned),
                });
            }
        }
        Ok(secrets)
    }

    /// `DescribeSecret` plus `ListSecretVersionIds` (with deprecated versions, for creation dates
    /// and versions that lost their labels). `None` when the secret does not exist.
    pub async fn describe(&self, secret_id: &str) -> Result<Option<SecretState>, CallError> {
        let described = match self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
        {
            Ok(described) => described,
            Err(err) => {
                let err = CallError::from_sdk("DescribeSecret", err);
                return match err.kind {
                    ErrorKind::NotFound => Ok(None),
                    _ => Err(err),
                };
            }
        };
        let arn = described.arn().unwrap_or(secret_id).to_owned();

        // Labels come from DescribeSecret's VersionIdsToStages (AWS-FACTS 3); the listing adds
        // creation dates and the versions that have no label.
        let mut versions: BTreeMap<String, Version> = described
            .version_ids_to_stages()
            .into_iter()
            .flatten()
            .map(|(id, stages)| {
                let stages: BTreeSet<String> = stages.iter().cloned().collect();
                (
                    id.clone(),
                    Version {
                        stages,
                        created: None,
                    },
                )
            })
            .collect();
        let mut pages = self
            .client
            .list_secret_version_ids()
            .secret_id(&arn)
            .include_deprecated(true)
            .max_results(100)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    let err = CallError::from_sdk("ListSecretVersionIds", err);
                    // Deleted (not scheduled: gone) between the two calls.
                    return match err.kind {
                        ErrorKind::NotFound => Ok(None),
                        _ => Err(err),
                    };
                }
            };
            for entry in page.versions() {
                let Some(id) = entry.version_id() else {
                    continue;
                };
                versions.entry(id.to_owned()).or_default().created =
                    entry.created_date().and_then(to_chrono);
            }
        }

        Ok(Some(SecretState {
            name: described.name().unwrap_or_default().to_owned(),
            rotation_enabled: described.rotation_enabled(),
            rotation_lambda_arn: described
                .rotation_lambda_arn()
                .filter(|arn| !arn.is_empty())
                .map(str::to_owned),
            deleted: described.deleted_date().is_some(),
            primary_region: described.primary_region().map(str::to_owned),
            owning_service: described
                .owning_service()
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            tags: described
                .tags()
                .iter()
                .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
                .collect(),
            versions,
            arn,
        }))
    }

    /// `CancelRotateSecret`. Its `VersionId` answer is not used: emulators return another version
    /// than AWS does (AWS-FACTS 9); the stuck version comes from `VersionIdsToStages`.
    pub async fn cancel_rotation(&self, arn: &str) -> Result<(), CallError> {
        self.pace().await;
        let sent = self
            .client
            .cancel_rotate_secret()
            .secret_id(arn)
            .send()
            .await;
        done("CancelRotateSecret", sent)
    }

    /// Attaches `label` to `version_id`. Only for a label that sits on no other version: moving
    /// a label off another version would have to name it (`RemoveFromVersionId`).
    pub async fn attach_label(
        &self,
        arn: &str,
        label: &str,
        version_id: &str,
    ) -> Result<(), CallError> {
        self.update_stage(arn, label, None, Some(version_id)).await
    }

    /// Removes `label` from `version_id`, moving it nowhere.
    pub async fn remove_label(
        &self,
        arn: &str,
        label: &str,
        version_id: &str,
    ) -> Result<(), CallError> {
        self.update_stage(arn, label, Some(version_id), None).await
    }

    async fn update_stage(
        &self,
        arn: &str,
        label: &str,
        remove_from: Option<&str>,
        move_to: Option<&str>,
    ) -> Result<(), CallError> {
        self.pace().await;
        let sent = self
            .client
            .update_secret_version_stage()
            .secret_id(arn)
            .version_stage(label)
            .set_remove_from_version_id(remove_from.map(str::to_owned))
            .set_move_to_version_id(move_to.map(str::to_owned))
            .send()
            .await;
        done("UpdateSecretVersionStage", sent)
    }

    pub async fn tag(&self, arn: &str, tags: &BTreeMap<String, String>) -> Result<(), CallError> {
        self.pace().await;
        let tags = tags
            .iter()
            .map(|(key, value)| Tag::builder().key(key).value(value).build());
        let sent = self
            .client
            .tag_resource()
            .secret_id(arn)
            .set_tags(Some(tags.collect()))
            .send()
            .await;
        done("TagResource", sent)
    }

    pub async fn untag(&self, arn: &str, key: &str) -> Result<(), CallError> {
        self.pace().await;
        let sent = self
            .client
            .untag_resource()
            .secret_id(arn)
            .tag_keys(key)
            .send()
            .await;
        done("UntagResource", sent)
    }
}

/// A mutating call's answer, when only success matters.
fn done<T, E, R>(operation: &'static str, sent: Result<T, SdkError<E, R>>) -> Result<(), CallError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    sent.map(|_| ())
        .map_err(|err| CallError::from_sdk(operation, err))
}

fn to_chrono(time: &aws_smithy_types::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}
