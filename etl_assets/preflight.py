"""Checks run before anything starts, with one-line errors. Standard library only, so
`python3 -m etl_assets.preflight` works before the virtual environment exists."""

import re
import shutil
import subprocess
import sys

MINIMUM_JAVA = 17
JAVA_PACKAGE = "openjdk-17-jre-headless"


class PreflightError(RuntimeError):
    pass


def java_major_version() -> int | None:
    """Return the major version of the `java` on PATH, or None when there is none."""
    java = shutil.which("java")
    if java is None:
        return None
    result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report themselves as 1.x.
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> None:
    major = java_major_version()
    if major is None:
        raise PreflightError(
            f"Java {MINIMUM_JAVA}+ is required by PySpark 4 but no `java` is on PATH; "
            f"install it with `apt-get install {JAVA_PACKAGE}`"
        )
    if major < MINIMUM_JAVA:
        raise PreflightError(
            f"Java {MINIMUM_JAVA}+ is required by PySpark 4 but the `java` on PATH is Java {major}; "
            f"install `{JAVA_PACKAGE}` and put it first on PATH"
        )


def main() -> int:
    try:
        check_java()
    except PreflightError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
