#!/usr/bin/env python3
"""Create a secret whose rotation has failed, on a local moto server, and print its ARN.

    AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_REGION=us-east-1 \
        python3 scripts/seed_failed_rotation.py demo/db-password

The rotation is started with a rotation Lambda that does not exist. moto answers
ResourceNotFoundException, but the rotation has begun: rotation is enabled, the Lambda ARN is
stored and AWSPENDING sits on a new version beside AWSCURRENT, which is what a rotation that
failed in its createSecret step leaves behind. Only the ARN goes to stdout; notes go to stderr.

For local emulators only: refuses to run without AWS_ENDPOINT_URL pointing at a loopback address.
"""

import argparse
import os
import sys
from urllib.parse import urlparse

import boto3
from botocore.exceptions import ClientError

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def local_endpoint() -> str:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if urlparse(endpoint).hostname not in LOOPBACK_HOSTS:
        sys.exit("seed: AWS_ENDPOINT_URL must point at a local emulator (127.0.0.1)")
    return endpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="secret name, e.g. demo/db-password")
    parser.add_argument("--value", default="demo-password-v1", help="AWSCURRENT value")
    parser.add_argument(
        "--rotator",
        default="demo-db-rotator",
        help="name of the (non-existent) rotation Lambda",
    )
    args = parser.parse_args()

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    client = boto3.client("secretsmanager", endpoint_url=local_endpoint(), region_name=region)

    try:
        created = client.create_secret(Name=args.name, SecretString=args.value)
    except ClientError as err:
        sys.exit(f"seed: cannot create {args.name}: {err}")
    arn = created["ARN"]
    account = arn.split(":")[4]
    rotator_arn = f"arn:aws:lambda:{region}:{account}:function:{args.rotator}"

    # RotationRules matter: without them moto leaves RotationEnabled false.
    try:
        client.rotate_secret(
            SecretId=arn,
            RotationLambdaARN=rotator_arn,
            RotationRules={"AutomaticallyAfterDays": 30},
        )
    except ClientError as err:
        if err.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        print(f"seed: rotation failed as intended ({err.response['Error']['Code']})", file=sys.stderr)
    else:
        sys.exit("seed: rotate_secret succeeded; expected it to fail")

    stages = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    stuck = [v for v, s in stages.items() if "AWSPENDING" in s and "AWSCURRENT" not in s]
    if not stuck:
        sys.exit(f"seed: no stuck AWSPENDING version after the failed rotation: {stages}")
    print(f"seed: {args.name}: AWSPENDING stuck on version {stuck[0]}", file=sys.stderr)

    print(arn)


if __name__ == "__main__":
    main()
