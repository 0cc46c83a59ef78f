//! Shared harness for the tests that run against a real moto server (`tests/emulator.rs`,
//! `tests/runtime_emulator.rs`).
//!
//! * One moto per test binary, started on first use on 127.0.0.1 and a free port. Tests of one
//!   binary run in parallel against it and are isolated by unique secret names
//!   ([`unique_name`]), never by resetting the server.
//! * No orphaned moto: moto runs under a small `sh` watchdog whose standard input is a pipe held
//!   by the test process. The write end is never closed while the process lives (the handle sits
//!   in a `static`); when the test process exits in any way (normal end, panic, `SIGKILL`) the
//!   kernel closes it, the watchdog's `cat` sees end of file and ends moto's process group. The
//!   same watchdog guards the processes that `runtime_emulator.rs` starts, which are in addition
//!   killed as a process group when their guard is dropped.
//! * Seeds are written in Rust with the SDK. Tests may call `PutSecretValue` and `RotateSecret`
//!   to build a state; the code under test never does.
//! * moto 5.2.5 answers `ListSecretVersionIds` with `CreatedDate` = the time of the call, not of
//!   the version's creation. So on moto the keep-label carries the time of the rescue's describe
//!   call, and a `RotationFailed` event is deferred if handled more than 2 s after its
//!   `eventTime`. Tests stamp failures with [`failure_now`], and check keep-labels by shape and
//!   time span ([`assert_keep_label`]) rather than by an exact expected name.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::retry::{RetryConfig, RetryPartition};
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::{ReplicaRegionType, Tag};
use chrono::{DateTime, Timelike, Utc};
use rotation_rescue::config::Config;
use rotation_rescue::handler::App;
use rotation_rescue::queue::RecheckQueue;
use rotation_rescue::secrets::SecretsApi;
use serde_json::{Value, json};

/// moto's default account: every ARN it makes is in it.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "us-east-1";
pub const REPLICA_REGION: &str = "us-west-2";
/// A rotation function that does not exist in moto: `RotateSecret` with it starts a rotation
/// (AWSPENDING on a new version, the ARN stored) and then answers `ResourceNotFoundException`.
pub const ROTATION_LAMBDA_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:db-rotator";
/// The invoked function ARN handed to `App::handle`, as Lambda's context gives it.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:rotation-rescue";
pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";
pub const PREVIOUS: &str = "AWSPREVIOUS";
/// Every tag key the function writes starts with this.
pub const TAG_PREFIX: &str = "rotation-rescue:";

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const START_ATTEMPTS: usize = 3;

/// Runs `"$@"` (program and arguments after the script) in the background and kills the whole
/// process group once the watchdog's standard input reaches end of file, that is once the test
/// process is gone: `TERM` first (the watcher itself ignores it), `KILL` two seconds later. The
/// script waits for the program, so it ends when the program does. Signalling the group (never a
/// pid) cannot hit a stranger: the group lives as long as the watcher that signals it.
///
/// A background list of a non-interactive shell gets `/dev/null` as standard input, so the pipe
/// is kept on fd 3 and handed to the `cat` explicitly; the program gets neither.
const WATCHDOG: &str = r#"exec 3<&0 0</dev/null
"$@" 3<&- &
pid=$!
{ trap '' TERM; cat <&3 >/dev/null 2>&1; kill -TERM 0; sleep 2; kill -KILL 0; } &
exec 3<&-
wait "$pid"
"#;

/// `program args...` under the watchdog, in a process group of its own (so the whole tree can be
/// killed with one signal), standard input a pipe from this process.
pub fn watched_command(program: impl Into<PathBuf>) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(program.into())
        .stdin(Stdio::piped())
        .process_group(0);
    command
}

/// Ends the process group that `child` leads (see [`watched_command`]): `TERM`, a moment for a
/// clean exit, then `KILL`, and only then reaps `child` (an unreaped leader keeps the group id
/// from being reused in between).
pub fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let signal = |name: &str| {
        let _ = Command::new("kill")
            .args([name, "--", &group])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    std::thread::sleep(Duration::from_millis(300));
    signal("-KILL");
    let _ = child.wait();
}

/// A child process tree that is killed as a group when dropped, also while a test panics.
pub struct GroupGuard {
    pub child: Child,
    pub name: &'static str,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Where test logs go: `target/test-logs/` (moto's request log, the emulator's output).
pub fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("create target/test-logs");
    dir
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Waits until something accepts connections on 127.0.0.1:`port`, or `child` ends, or the
/// deadline passes. True when the port is open.
pub fn wait_for_port(port: u16, child: &mut Child, timeout: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The last lines of a log file, for a failure message.
pub fn tail(path: &PathBuf, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The moto server of this test binary.
pub struct Moto {
    pub endpoint: String,
    pub port: u16,
    pub log: PathBuf,
    /// Never dropped (it lives in a `static`): its stdin pipe is what keeps moto alive, and the
    /// pipe closes when the test process exits, whatever the way.
    _child: std::sync::Mutex<Child>,
}

static MOTO: OnceLock<Moto> = OnceLock::new();

/// The path of `moto_server`: `MOTO_SERVER`, else the project venv's.
pub fn moto_server_path() -> PathBuf {
    match std::env::var_os("MOTO_SERVER") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"),
    }
}

/// Starts this binary's moto on first call; later calls return the same one.
pub fn moto() -> &'static Moto {
    MOTO.get_or_init(start_moto)
}

pub fn moto_endpoint() -> &'static str {
    &moto().endpoint
}

fn start_moto() -> Moto {
    let program = moto_server_path();
    assert!(
        program.is_file(),
        "moto server not found at {}: run `make venv` (or `make test`) to install the Python \
         tools into .venv, or set MOTO_SERVER to a moto_server binary (moto[server] 5.2.5)",
        program.display()
    );
    let binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".into());
    let log = log_dir().join(format!("moto-{binary}-{}.log", std::process::id()));

    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let out = File::create(&log).expect("create the moto log");
        let err = out.try_clone().expect("clone the moto log handle");
        let mut child = watched_command(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        if wait_for_port(port, &mut child, READY_TIMEOUT) {
            return Moto {
                endpoint: format!("http://127.0.0.1:{port}"),
                port,
                log,
                _child: std::sync::Mutex::new(child),
            };
        }
        // Most likely the port was taken between the probe and moto's bind: try another.
        kill_group(&mut child);
        last_error = tail(&log, 20);
    }
    panic!("moto did not start after {START_ATTEMPTS} attempts; its log:\n{last_error}");
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A secret name no other test of this binary uses: `<test>-<n>`.
pub fn unique_name(test: &str) -> String {
    format!("{test}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A client of this binary's moto in `us-east-1`.
pub fn client() -> Client {
    client_for(moto_endpoint(), REGION)
}

/// A client of `endpoint` in `region`: static dummy credentials, short timeouts, four attempts
/// with a short backoff (moto answers HTTP 500 now and then under concurrent writes, and the SDK
/// retries that as it would AWS's), and a retry partition of its own (clients of one binary
/// otherwise share one retry budget, and a test of a dead endpoint would drain it for the
/// others).
pub fn client_for(endpoint: &str, region: &str) -> Client {
    static PARTITION: AtomicUsize = AtomicUsize::new(0);
    let partition = format!(
        "rotation-rescue-test-{}",
        PARTITION.fetch_add(1, Ordering::Relaxed)
    );
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(50)),
        )
        .retry_partition(RetryPartition::new(partition))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build();
    Client::from_conf(config)
}

/// An endpoint where nothing listens: a port that was just free and is closed again.
pub fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// `Config::from_lookup` with `AWS_REGION=us-east-1`, `RESCUE_ACCOUNT_ID=123456789012`,
/// `RESCUE_GRACE=0` and `RESCUE_ALARM_MIN_AGE=0` (moto cannot backdate a version, so only tests
/// about the waits set them), and
/// the given overrides (which win, `AWS_REGION` included).
pub fn config(overrides: &[(&str, &str)]) -> Config {
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("AWS_REGION".to_owned(), REGION.to_owned()),
        ("RESCUE_ACCOUNT_ID".to_owned(), ACCOUNT.to_owned()),
        ("RESCUE_GRACE".to_owned(), "0".to_owned()),
        ("RESCUE_ALARM_MIN_AGE".to_owned(), "0".to_owned()),
    ]);
    for (key, value) in overrides {
        env.insert((*key).to_owned(), (*value).to_owned());
    }
    Config::from_lookup(|name| env.get(name).cloned()).expect("valid test configuration")
}

pub fn app(client: Client, config: Config) -> App {
    App::new(SecretsApi::new(client), config)
}

/// The app on this binary's moto with the default test configuration plus `overrides`.
pub fn moto_app(overrides: &[(&str, &str)]) -> App {
    app(client(), config(overrides))
}

/// An SQS client configuration for this binary's moto (moto serves SQS on the same endpoint),
/// with the same dummy credentials, short timeouts and own retry partition as [`client_for`].
/// Tests add interceptors to it before building.
pub fn sqs_config() -> aws_sdk_sqs::config::Builder {
    static PARTITION: AtomicUsize = AtomicUsize::new(0);
    let partition = format!(
        "rotation-rescue-sqs-test-{}",
        PARTITION.fetch_add(1, Ordering::Relaxed)
    );
    aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .endpoint_url(moto_endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "tests",
        ))
        .retry_config(
            aws_sdk_sqs::config::retry::RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(50)),
        )
        .retry_partition(aws_sdk_sqs::config::retry::RetryPartition::new(partition))
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
}

/// An SQS client of this binary's moto.
pub fn sqs_client() -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(sqs_config().build())
}

/// Creates a queue named after `test` (unique in this binary) on moto; returns its URL.
pub async fn create_queue(sqs: &aws_sdk_sqs::Client, test: &str) -> String {
    let created = sqs
        .create_queue()
        .queue_name(unique_name(test))
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateQueue: {e:?}"));
    created.queue_url().expect("QueueUrl").to_owned()
}

/// The app on this binary's moto, its re-checks sent through `sqs` to `queue_url`: the test
/// configuration plus `overrides`, with `RESCUE_RECHECK_QUEUE_URL` set to `queue_url` (as the
/// Lambda binary wires it).
pub fn moto_app_with_queue(
    overrides: &[(&str, &str)],
    sqs: aws_sdk_sqs::Client,
    queue_url: &str,
) -> App {
    let mut settings = vec![("RESCUE_RECHECK_QUEUE_URL", queue_url)];
    settings.extend_from_slice(overrides);
    app(client(), config(&settings)).with_queue(RecheckQueue::new(sqs, queue_url))
}

/// Receives up to `count` messages from `queue_url`, long-polling until they are all in or
/// `within` has passed (moto honours `DelaySeconds`: a delayed message stays invisible until its
/// delay is over). Every attribute is asked for, as Lambda's event source mapping does.
pub async fn receive(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    count: usize,
    within: Duration,
) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = Instant::now() + within;
    let mut messages = Vec::new();
    while messages.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = i32::try_from(left.as_secs().clamp(1, 20)).unwrap_or(20);
        let received = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(i32::try_from(count - messages.len()).unwrap_or(10).min(10))
            .wait_time_seconds(wait)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("ReceiveMessage: {e:?}"));
        messages.extend(received.messages().iter().cloned());
    }
    messages
}

/// The queue's ARN from its URL (`http://host/<account>/<name>`), as the event source mapping
/// names it in each record.
pub fn queue_arn(queue_url: &str) -> String {
    let name = queue_url.rsplit('/').next().unwrap_or(queue_url);
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

/// One record of an SQS event as Lambda's event source mapping delivers it, from a message
/// received from `queue_url`.
pub fn sqs_record(queue_url: &str, message: &aws_sdk_sqs::types::Message) -> Value {
    let attributes: serde_json::Map<String, Value> = message
        .attributes()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.as_str().to_owned(), Value::from(value.as_str())))
        .collect();
    json!({
        "messageId": message.message_id().expect("MessageId"),
        "receiptHandle": message.receipt_handle().expect("ReceiptHandle"),
        "body": message.body().expect("Body"),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": message.md5_of_body().expect("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue_url),
        "awsRegion": REGION
    })
}

/// A record with a given message id and body, shaped like [`sqs_record`] (for bodies and ids
/// that did not come through the queue).
pub fn sqs_record_with(queue_url: &str, message_id: &str, body: &str) -> Value {
    let sent = Utc::now().timestamp_millis().to_string();
    json!({
        "messageId": message_id,
        "receiptHandle": format!("receipt-{message_id}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": sent,
            "SenderId": "AROAEXAMPLE:rotation-rescue",
            "ApproximateFirstReceiveTimestamp": sent
        },
        "messageAttributes": {},
        "md5OfBody": "0123456789abcdef0123456789abcdef",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue_url),
        "awsRegion": REGION
    })
}

/// An SQS event (`{"Records": [...]}`) of `records`.
pub fn sqs_event(records: Vec<Value>) -> Value {
    json!({ "Records": records })
}

/// What a seed made.
#[derive(Debug, Clone)]
pub struct Seeded {
    pub name: String,
    pub arn: String,
    /// The version with `AWSCURRENT`.
    pub current: String,
    /// The version with `AWSPENDING` (the stuck one), if the seed made one.
    pub pending: Option<String>,
}

impl Seeded {
    pub fn pending(&self) -> &str {
        self.pending
            .as_deref()
            .expect("the seed made a pending version")
    }
}

/// `CreateSecret` with a value and `tags`; returns the secret with its first version.
pub async fn create_secret(client: &Client, name: &str, tags: &[(&str, &str)]) -> Seeded {
    create_secret_with(client, name, tags, &[]).await
}

/// Like [`create_secret`], also replicated to `replica_regions`.
pub async fn create_secret_with(
    client: &Client,
    name: &str,
    tags: &[(&str, &str)],
    replica_regions: &[&str],
) -> Seeded {
    let mut request = client
        .create_secret()
        .name(name)
        .secret_string(r#"{"username":"app","password":"first"}"#);
    for (key, value) in tags {
        request = request.tags(Tag::builder().key(*key).value(*value).build());
    }
    for region in replica_regions {
        request = request.add_replica_regions(ReplicaRegionType::builder().region(*region).build());
    }
    let created = request.send().await.expect("CreateSecret");
    Seeded {
        name: name.to_owned(),
        arn: created.arn().expect("ARN").to_owned(),
        current: created.version_id().expect("VersionId").to_owned(),
        pending: None,
    }
}

/// Starts a rotation that fails: `RotateSecret` with a rotation function that does not exist and
/// a 30-day schedule. moto answers `ResourceNotFoundException` but has already put `AWSPENDING`
/// on a new version, stored the ARN and set `RotationEnabled` (only when a schedule is given).
/// Returns the pending version.
pub async fn start_failed_rotation(client: &Client, secret_id: &str) -> String {
    let rules = aws_sdk_secretsmanager::types::RotationRulesType::builder()
        .automatically_after_days(30)
        .build();
    let err = client
        .rotate_secret()
        .secret_id(secret_id)
        .rotation_lambda_arn(ROTATION_LAMBDA_ARN)
        .rotation_rules(rules)
        .send()
        .await
        .expect_err("RotateSecret with a missing rotation function fails");
    assert_eq!(
        err.code(),
        Some("ResourceNotFoundException"),
        "unexpected RotateSecret error: {err:?}"
    );
    let state = state(client, secret_id).await;
    assert_eq!(state.rotation_enabled, Some(true), "seed: rotation enabled");
    assert_eq!(
        state.rotation_lambda_arn.as_deref(),
        Some(ROTATION_LAMBDA_ARN)
    );
    let pending = state.holders(PENDING);
    assert_eq!(pending.len(), 1, "seed: one AWSPENDING version: {state:#?}");
    pending[0].to_owned()
}

/// A secret whose rotation failed: created with a value, then [`start_failed_rotation`].
pub async fn failed_rotation(client: &Client, name: &str) -> Seeded {
    failed_rotation_tagged(client, name, &[]).await
}

pub async fn failed_rotation_tagged(client: &Client, name: &str, tags: &[(&str, &str)]) -> Seeded {
    let mut seeded = create_secret(client, name, tags).await;
    seeded.pending = Some(start_failed_rotation(client, &seeded.arn).await);
    seeded
}

/// A secret with `AWSPENDING` staged by hand (`PutSecretValue` with `VersionStages`), without any
/// rotation configured.
pub async fn pending_without_rotation(client: &Client, name: &str) -> Seeded {
    let mut seeded = create_secret(client, name, &[]).await;
    let put = client
        .put_secret_value()
        .secret_id(&seeded.arn)
        .secret_string(r#"{"username":"app","password":"staged"}"#)
        .version_stages(PENDING)
        .send()
        .await
        .expect("PutSecretValue AWSPENDING");
    seeded.pending = Some(put.version_id().expect("VersionId").to_owned());
    seeded
}

/// `UpdateSecretVersionStage` from a test: moves `label` to `to` (from `from` when given), or
/// removes it from `from` when `to` is `None`.
pub async fn move_label(
    client: &Client,
    secret_id: &str,
    label: &str,
    from: Option<&str>,
    to: Option<&str>,
) {
    client
        .update_secret_version_stage()
        .secret_id(secret_id)
        .version_stage(label)
        .set_remove_from_version_id(from.map(str::to_owned))
        .set_move_to_version_id(to.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("seed: UpdateSecretVersionStage {label}: {e:?}"));
}

/// A secret as the emulator shows it after a test.
///
/// Version creation dates are left out on purpose: moto 5.2.5's `ListSecretVersionIds` answers
/// `CreatedDate` with the time of the call, not of the version's creation (AWS answers the
/// creation time). So against moto the keep-label's time is the time of the rescue's own
/// describe call, and a stuck version always looks "just created"; see [`keep_label_time`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub arn: String,
    pub name: String,
    pub rotation_enabled: Option<bool>,
    pub rotation_lambda_arn: Option<String>,
    pub deleted: bool,
    /// Every version (deprecated ones included) and its labels. A set: on AWS a version holds a
    /// label at most once (moto may list a label twice after two attaches to one version).
    pub labels: BTreeMap<String, BTreeSet<String>>,
    pub tags: BTreeMap<String, String>,
}

impl State {
    /// The versions carrying `label`.
    pub fn holders(&self, label: &str) -> Vec<&str> {
        self.labels
            .iter()
            .filter(|(_, labels)| labels.contains(label))
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// The labels of `version_id`, sorted.
    pub fn labels_of(&self, version_id: &str) -> Vec<&str> {
        self.labels
            .get(version_id)
            .map(|labels| labels.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Every (version, label) whose label starts with `prefix`.
    pub fn labels_starting_with(&self, prefix: &str) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .flat_map(|(id, labels)| labels.iter().map(move |l| (id.as_str(), l.as_str())))
            .filter(|(_, label)| label.starts_with(prefix))
            .collect()
    }

    /// The tags this function writes (`rotation-rescue:*`).
    pub fn rescue_tags(&self) -> BTreeMap<&str, &str> {
        self.tags
            .iter()
            .filter(|(key, _)| key.starts_with(TAG_PREFIX))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
}

/// The time in a keep-label `<prefix>_<%Y%m%dT%H%M%SZ>` (the stuck version's `CreatedDate` as
/// the function saw it); panics when the label has another shape.
pub fn keep_label_time(label: &str, prefix: &str) -> DateTime<Utc> {
    let time = label
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .unwrap_or_else(|| panic!("keep-label {label:?} does not start with {prefix}_"));
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ")
        .unwrap_or_else(|e| panic!("keep-label {label:?}: no %Y%m%dT%H%M%SZ time: {e}"))
        .and_utc()
}

/// Asserts that `label` is `<prefix>_<time>` with a time between `from` and `to` (whole
/// seconds): the version's creation on AWS, the rescue's describe call on moto, both within the
/// test's own time span.
pub fn assert_keep_label(label: &str, prefix: &str, from: DateTime<Utc>, to: DateTime<Utc>) {
    let time = keep_label_time(label, prefix);
    let from = from - chrono::TimeDelta::seconds(1);
    assert!(
        from <= time && time <= to,
        "keep-label {label:?}: time outside {from} ..= {to}"
    );
}

/// Sleeps until just after the start of the next second, so that calls made right after fall
/// in one second of the clock (moto's `CreatedDate`, and so the keep-label, is that second).
pub async fn start_of_next_second() {
    let now = Utc::now();
    let into_second = u64::from(now.timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(1000 - into_second + 20)).await;
}

/// Reads a secret back: `DescribeSecret` for rotation, deletion and tags, `ListSecretVersionIds`
/// (`IncludeDeprecated`) for every version's labels, unlabelled versions included.
pub async fn state(client: &Client, secret_id: &str) -> State {
    let described = client
        .describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .unwrap_or_else(|e| panic!("DescribeSecret {secret_id}: {e:?}"));
    let mut labels = BTreeMap::new();
    let mut pages = client
        .list_secret_version_ids()
        .secret_id(secret_id)
        .include_deprecated(true)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("ListSecretVersionIds {secret_id}: {e:?}"));
        for version in page.versions() {
            let id = version.version_id().expect("VersionId").to_owned();
            let stages: BTreeSet<String> = version.version_stages().iter().cloned().collect();
            labels.insert(id, stages);
        }
    }
    State {
        arn: described.arn().expect("ARN").to_owned(),
        name: described.name().expect("Name").to_owned(),
        rotation_enabled: described.rotation_enabled(),
        rotation_lambda_arn: described
            .rotation_lambda_arn()
            .filter(|arn| !arn.is_empty())
            .map(str::to_owned),
        deleted: described.deleted_date().is_some(),
        labels,
        tags: described
            .tags()
            .iter()
            .filter_map(|tag| Some((tag.key()?.to_owned(), tag.value()?.to_owned())))
            .collect(),
    }
}

/// How far ahead of the clock [`failure_now`] stamps a failure.
pub const FAILURE_TIME_LEAD: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// The `eventTime` for a failure of a version seeded before now: the clock plus
/// [`FAILURE_TIME_LEAD`]. On AWS the stuck version was created before this either way; on moto a
/// version looks created at the time of each describe call (see `State`), so a failure stamped
/// exactly now would be "older than the version" whenever the handle reaches moto more than two
/// seconds later (a loaded machine) and be deferred. The deferral rule's boundary is covered by
/// the decision's unit tests; these tests cover deferral with a failure an hour before.
pub fn failure_now() -> DateTime<Utc> {
    Utc::now() + FAILURE_TIME_LEAD
}

/// A `RotationFailed` event as EventBridge delivers it (AWS-FACTS 2.1), from account
/// 123456789012 in us-east-1, for `secret_id`, failed in `step` (`createSecret`, `setSecret`,
/// ...) at `event_time`.
///
/// The time is written in whole seconds like CloudTrail's, rounded up so that a version made
/// before `event_time` stays before the event's time.
pub fn rotation_failed_event(secret_id: &str, step: &str, event_time: DateTime<Utc>) -> Value {
    rotation_failed_event_in(REGION, secret_id, step, event_time)
}

/// Like [`rotation_failed_event`], delivered in `region`.
pub fn rotation_failed_event_in(
    region: &str,
    secret_id: &str,
    step: &str,
    event_time: DateTime<Utc>,
) -> Value {
    let whole = event_time.with_nanosecond(0).expect("whole second");
    let time = if whole < event_time {
        whole + chrono::TimeDelta::seconds(1)
    } else {
        whole
    };
    let time = time.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let lambda = ROTATION_LAMBDA_ARN.replace(REGION, region);
    json!({
        "version": "0",
        "id": format!("test-{}", COUNTER.fetch_add(1, Ordering::Relaxed)),
        "detail-type": "AWS Service Event via CloudTrail",
        "source": "aws.secretsmanager",
        "account": ACCOUNT,
        "time": time,
        "region": region,
        "resources": [],
        "detail": {
            "eventVersion": "1.08",
            "userIdentity": {"accountId": ACCOUNT, "invokedBy": "secretsmanager.amazonaws.com"},
            "eventTime": time,
            "eventSource": "secretsmanager.amazonaws.com",
            "eventName": "RotationFailed",
            "awsRegion": region,
            "sourceIPAddress": "secretsmanager.amazonaws.com",
            "userAgent": "secretsmanager.amazonaws.com",
            "errorMessage": format!("Error when executing lambda {lambda} during {step} step"),
            "requestParameters": null,
            "responseElements": null,
            "additionalEventData": {"SecretId": secret_id},
            "requestID": format!("Rotation-{secret_id}-3f1c9a7e-1111-2222-3333-444455556666"),
            "eventID": "e3b69cfe-b70e-4c94-baa9-9decc3c150b9",
            "readOnly": false,
            "eventType": "AwsServiceEvent",
            "managementEvent": true,
            "recipientAccountId": ACCOUNT,
            "eventCategory": "Management"
        }
    })
}

/// An operator's request naming `secrets`.
pub fn operator_request(secrets: &[&str], dry_run: bool) -> Value {
    json!({"secrets": secrets, "dry_run": dry_run})
}
