"""Regions with ECR, by partition, as botocore's endpoint data lists them.

A static copy so the inventory validates regions without loading boto3 (it never imports the
engine); `provisioning/tests/test_aws.py` fails when botocore's list and this one differ.
"""

# The portal writes `arn:aws:` ARNs and trusts across accounts of one partition: China and GovCloud
# are separate partitions (their own ARNs, credentials and Snyk brokers), so their regions are refused.
PARTITION = "aws"

ECR_REGIONS_BY_PARTITION: dict[str, frozenset[str]] = {
    "aws": frozenset(
        {
            "af-south-1",
            "ap-east-1",
            "ap-east-2",
            "ap-northeast-1",
            "ap-northeast-2",
            "ap-northeast-3",
            "ap-south-1",
            "ap-south-2",
            "ap-southeast-1",
            "ap-southeast-2",
            "ap-southeast-3",
            "ap-southeast-4",
            "ap-southeast-5",
            "ap-southeast-6",
            "ap-southeast-7",
            "ca-central-1",
            "ca-west-1",
            "eu-central-1",
            "eu-central-2",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "il-central-1",
            "me-central-1",
            "me-south-1",
            "mx-central-1",
            "sa-east-1",
            "us-east-1",
            "us-east-2",
            "us-west-1",
            "us-west-2",
        }
    ),
    "aws-cn": frozenset({"cn-north-1", "cn-northwest-1"}),
    "aws-us-gov": frozenset({"us-gov-east-1", "us-gov-west-1"}),
    "aws-iso": frozenset({"us-iso-east-1", "us-iso-west-1"}),
    "aws-iso-b": frozenset({"us-isob-east-1", "us-isob-west-1"}),
    "aws-iso-e": frozenset({"eu-isoe-west-1"}),
    "aws-iso-f": frozenset({"us-isof-east-1", "us-isof-south-1"}),
    "aws-eusc": frozenset({"eusc-de-east-1"}),
}

ECR_REGIONS: frozenset[str] = ECR_REGIONS_BY_PARTITION[PARTITION]


def partition_of_region(region: str) -> str:
    """The partition whose ECR has this region ("" if none does): for a precise refusal."""
    return next((p for p, regions in ECR_REGIONS_BY_PARTITION.items() if region in regions), "")
