"""cloudfabric: the ``fabric`` cloud control plane.

Not to be installed beside the SSH tool also called Fabric: both import as ``fabric``.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def schema_files():
    return [
        ("share/cloudfabric/schema", [str(p) for p in (HERE / "schema").glob("*") if p.is_file()]),
        ("share/cloudfabric/schema/versions", [str(p) for p in (HERE / "schema/versions").glob("*.py")]),
    ]


setup(
    name="cloudfabric",
    version="0.1.0",
    description="An AMQP message-driven cloud fabric: a small, real IaaS control plane.",
    long_description=(HERE / "README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=find_packages(include=["fabric", "fabric.*"]),
    # The dashboard's templates and its CSS/JavaScript ship inside the package.
    package_data={"fabric.dashboard": ["templates/*.html", "static/*.js", "static/*.css"]},
    data_files=schema_files(),
    install_requires=[
        "kombu>=5.3",
        "amqp>=5.2",
        "SQLAlchemy>=2.0.30,<3",
        "alembic>=1.13",
        "eventlet>=0.36",
        # The objectstore's HTTP/1.1 parser (C), under its own server on eventlet's sockets.
        "httptools>=0.6",
        "pyroute2>=0.7.12",
        "marshmallow>=3.20",
        "psycopg[binary]>=3.1",
        "PyMySQL>=1.1",
        "falcon>=4.0",
        "cryptography>=42",
        # The objectstore verifies the CRC32C and CRC64NVME checksums boto3 sends; botocore
        # itself computes them with awscrt (its [crt] extra), a maintained C implementation.
        "awscrt>=0.23",
        # The dashboard renders its pages with Jinja2 (autoescaping every value from the API) and
        # talks to the API over HTTP with urllib3 (a thread-safe keep-alive pool, streamed uploads).
        "Jinja2>=3.1",
        "urllib3>=2.0",
        # Every worker exports Prometheus metrics with the official client library (metric
        # types, the text exposition format, its HTTP endpoint).
        "prometheus_client>=0.20",
    ],
    extras_require={
        # Needs libvirt's C headers (Debian: libvirt-dev pkg-config) to build.
        "libvirt": ["libvirt-python>=9.0"],
        # The LDAP identity backend ([ldap] url): a pure-Python LDAP v3 client.
        "ldap": ["ldap3>=2.9"],
        "test": [
            # pytest 9.2 reads a test's node id from a new field, and pytest-xdist (3.8) still
            # writes its loadgroup to the old one: every group is ignored, and tests sharing an
            # expensive fixture (a cloud of real guests, a browser) spread over every worker, each
            # building it. tests/conftest.py refuses a run whose groups did not take.
            "pytest>=8,<9.2", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "hypothesis>=6.100", "ruff>=0.5",
            "WebTest>=3.0", "openstacksdk>=4.0", "python-openstackclient>=7.0", "schemathesis>=4.0",
            # The objectstore's functional tests drive it with the AWS SDK and CLI.
            "boto3>=1.36", "awscli>=1.37",
            # The dashboard's browser tests drive Debian's chromium with it (never `playwright install`).
            "playwright>=1.45",
            # The LDAP identity backend's tests (against Debian's slapd).
            "ldap3>=2.9",
            # OpenStack's own identity API tests, run against fabric-api.
            "tempest>=40",
        ],
    },
    scripts=[str(p) for p in sorted((HERE / "bin").glob("fabric-*"))],
)
