"""Remove the botocore service models the bridge never loads (about 25 MB of the image's 29 MB of botocore).

    python slim_botocore.py SITE_PACKAGES "sqs dynamodb s3 sts"

botocore ships one data directory per AWS service (over 400). The bridge creates clients for SQS (queue,
simulator), DynamoDB (state) and S3 (newsml hot folders) only; STS stays for web-identity credentials (EKS
IRSA). Top-level data files (endpoints, partitions, retry and default configuration) are always kept. The
script then loads every kept model, so a wrong list fails the build, not the first run. Add a service to the
list (build arg BOTOCORE_SERVICES) before the code calls a new one.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def slim(site_packages: Path, keep: set[str]) -> int:
    data = site_packages / "botocore" / "data"
    if not data.is_dir():
        raise SystemExit(f"no botocore data directory under {site_packages}")
    missing = {name for name in keep if not (data / name).is_dir()}
    if missing:
        raise SystemExit(f"botocore has no model for: {', '.join(sorted(missing))}")
    removed = 0
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in keep:
            shutil.rmtree(entry)
            removed += 1
    return removed


def verify(keep: set[str]) -> None:
    import botocore.session

    session = botocore.session.get_session()
    for name in sorted(keep):
        session.get_service_model(name)
    available = set(session.get_available_services())
    if available != keep:
        raise SystemExit(f"botocore offers {sorted(available)}, expected {sorted(keep)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: slim_botocore.py SITE_PACKAGES 'service service ...'")
    services = set(sys.argv[2].split())
    count = slim(Path(sys.argv[1]), services)
    verify(services)
    print(f"botocore: kept {' '.join(sorted(services))}; removed {count} service models")
