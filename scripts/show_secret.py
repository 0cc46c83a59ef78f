#!/usr/bin/env python3
"""Print a secret's rotation state, version labels and tags. Never reads the secret value.

    python3 scripts/show_secret.py SECRET_ID [SECRET_ID ...]

Uses DescribeSecret and ListSecretVersionIds (with deprecated versions, so a version that lost
its last label still shows, as "(no labels)"). Honours AWS_ENDPOINT_URL and AWS_REGION.
"""

import os
import sys

import boto3


def versions(client, secret_id: str) -> list:
    found, token = [], None
    while True:
        kwargs = {"SecretId": secret_id, "IncludeDeprecated": True}
        if token:
            kwargs["NextToken"] = token
        page = client.list_secret_version_ids(**kwargs)
        found.extend(page.get("Versions", []))
        # moto answers NextToken "" on the last page: treat empty as the end.
        token = page.get("NextToken")
        if not token:
            return found


def fmt_time(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def show(client, secret_id: str) -> None:
    desc = client.describe_secret(SecretId=secret_id)
    print(f"secret   {desc['Name']}")
    print(f"arn      {desc['ARN']}")

    enabled = desc.get("RotationEnabled")
    print(f"rotation enabled={'unset' if enabled is None else str(enabled).lower()}"
          f"  lambda={desc.get('RotationLambdaARN', '-')}"
          f"  next={fmt_time(desc.get('NextRotationDate'))}")
    if "DeletedDate" in desc:
        print(f"deleted  scheduled for deletion on {fmt_time(desc['DeletedDate'])}")
    if "PrimaryRegion" in desc:
        print(f"replica  primary region {desc['PrimaryRegion']}")
    if "OwningService" in desc:
        print(f"managed  by {desc['OwningService']}")

    print("versions")
    listed = sorted(versions(client, secret_id), key=lambda v: v.get("CreatedDate") or 0)
    for v in listed:
        labels = ", ".join(v.get("VersionStages") or []) or "(no labels)"
        print(f"  {v['VersionId']}  created {fmt_time(v.get('CreatedDate'))}  {labels}")

    tags = sorted(desc.get("Tags", []), key=lambda t: t["Key"])
    print("tags" + ("" if tags else "     (none)"))
    for tag in tags:
        print(f"  {tag['Key']} = {tag['Value']}")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(f"usage: {sys.argv[0]} SECRET_ID [SECRET_ID ...]")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client = boto3.client("secretsmanager", region_name=region)
    for i, secret_id in enumerate(sys.argv[1:]):
        if i:
            print()
        show(client, secret_id)


if __name__ == "__main__":
    main()
