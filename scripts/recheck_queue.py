#!/usr/bin/env python3
"""The re-check queue on a local moto server: create it, show it, receive a message as an SQS
event, delete it. Used by the demo; never reads a secret value.

    python3 scripts/recheck_queue.py create NAME
        creates the queue and prints its URL (VisibilityTimeout 1800 s, as in template.yaml)
    python3 scripts/recheck_queue.py show URL
        prints how many messages are delayed, visible and in flight
    python3 scripts/recheck_queue.py receive URL EVENT_FILE [--wait SECONDS]
        tries to receive at once (nothing, if DelaySeconds is honoured), then long-polls, prints
        the message(s), and writes it to EVENT_FILE wrapped as Lambda delivers an SQS batch
    python3 scripts/recheck_queue.py delete URL EVENT_FILE
        deletes the event's messages, as Lambda does with a batch whose items did not fail

For local emulators only: refuses to run without AWS_ENDPOINT_URL pointing at a loopback address.
"""

import argparse
import json
import os
import sys
import time
from urllib.parse import urlparse

import boto3

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
COUNTS = {
    "ApproximateNumberOfMessagesDelayed": "delayed",
    "ApproximateNumberOfMessages": "visible",
    "ApproximateNumberOfMessagesNotVisible": "in flight",
}


def client():
    if urlparse(os.environ.get("AWS_ENDPOINT_URL", "")).hostname not in LOOPBACK_HOSTS:
        sys.exit("recheck_queue: AWS_ENDPOINT_URL must point at a local emulator (127.0.0.1)")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("sqs", region_name=region)


def create(sqs, args) -> None:
    url = sqs.create_queue(QueueName=args.name, Attributes={"VisibilityTimeout": "1800"})
    print(url["QueueUrl"])


def show(sqs, args) -> None:
    attrs = sqs.get_queue_attributes(QueueUrl=args.url, AttributeNames=list(COUNTS))
    counts = attrs["Attributes"]
    print("queue    " + ", ".join(f"{counts.get(k, '?')} {name}" for k, name in COUNTS.items()))


def receive(sqs, args) -> None:
    # A message sent with DelaySeconds must not be receivable before its delay is over.
    show(sqs, args)
    kwargs = {
        "QueueUrl": args.url,
        "MaxNumberOfMessages": 10,
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }
    started = time.monotonic()
    messages = sqs.receive_message(WaitTimeSeconds=0, **kwargs).get("Messages", [])
    if messages:
        print("receive now: got the message at once: this moto ignores DelaySeconds")
    else:
        print("receive now: nothing yet: moto honours DelaySeconds, the message is still delayed")
        got = sqs.receive_message(WaitTimeSeconds=args.wait, **kwargs)
        messages = got.get("Messages", [])
        if not messages:
            sys.exit(f"recheck_queue: no message within {args.wait} s")
        print(f"long poll (WaitTimeSeconds={args.wait}): {len(messages)} message(s) after "
              f"{time.monotonic() - started:.1f} s")

    queue_arn = sqs.get_queue_attributes(QueueUrl=args.url, AttributeNames=["QueueArn"])
    queue_arn = queue_arn["Attributes"]["QueueArn"]
    region = queue_arn.split(":")[3]
    records = []
    for message in messages:
        print(f"message  {message['MessageId']}")
        print(f"body     {message['Body']}")
        records.append({
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": region,
        })
    with open(args.event_file, "w") as f:
        json.dump({"Records": records}, f, indent=2)


def delete(sqs, args) -> None:
    with open(args.event_file) as f:
        records = json.load(f)["Records"]
    for record in records:
        sqs.delete_message(QueueUrl=args.url, ReceiptHandle=record["receiptHandle"])
        print(f"deleted  {record['messageId']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create").add_argument("name")
    commands.add_parser("show").add_argument("url")
    receive_args = commands.add_parser("receive")
    receive_args.add_argument("url")
    receive_args.add_argument("event_file")
    receive_args.add_argument("--wait", type=int, default=20, help="long poll, at most 20 s")
    delete_args = commands.add_parser("delete")
    delete_args.add_argument("url")
    delete_args.add_argument("event_file")
    args = parser.parse_args()
    {"create": create, "show": show, "receive": receive, "delete": delete}[args.command](
        client(), args
    )


if __name__ == "__main__":
    main()
