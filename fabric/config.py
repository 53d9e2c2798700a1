"""fabric's settings: one typed object, read from an INI file and the environment.

Every option is a field of a section dataclass below, with its type, default
and help text; the sample configuration (``conf/fabric.conf.sample``) is
generated from these fields (``fabric-manage config sample``), so the two
cannot drift apart. Precedence: defaults < INI file < ``FABRIC_<SECTION>_<OPTION>``
environment variables. A bad value raises :class:`~fabric.exception.InvalidSetting`
naming the source, option, value and what is accepted; nothing is global:
a :class:`Settings` is built once by a launcher and passed to what needs it.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import socket
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from fabric.exception import InvalidSetting


def option(default: Any, help: str, *, minimum: float | None = None) -> Any:
    """Declare a settings field with its help text (and lower bound for numbers)."""
    return dataclasses.field(default=default, metadata={"help": help, "minimum": minimum})


def _default_data_dir() -> str:
    return str(Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "fabric")


@dataclasses.dataclass(frozen=True)
class DefaultSection:
    """[DEFAULT]: process-wide options."""

    host: str = option(socket.gethostname(), "Name this host is known by in the topology and queues.")
    data_dir: str = option(_default_data_dir(), "Directory for fabric's files (SQLite database, images, logs). Created if missing.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = option("INFO", "Logging level.")
    log_file: str = option("", "Log to this file instead of standard error.")


@dataclasses.dataclass(frozen=True)
class DatabaseSection:
    """[database]: the one SQL database every worker shares."""

    url: str = option("", "SQLAlchemy URL (postgresql://, mysql://, sqlite:///). Empty: SQLite file under data_dir.")
    pool_size: int = option(10, "Connections kept open per process.", minimum=1)
    connect_timeout: int = option(10, "Seconds to wait for a connection before failing.", minimum=1)
    max_retries: int = option(10, "Compare-and-swap retries on a conflicting update.", minimum=1)


@dataclasses.dataclass(frozen=True)
class RpcSection:
    """[rpc]: the message bus."""

    transport_url: str = option("memory://", "kombu URL: amqp://user:pass@host:5672/vhost or memory:// (in-process). A RabbitMQ cluster: every node's URL separated by ';' (amqp://u:p@h1:5672/v;amqp://u:p@h2:5672/v) or its hosts by ',' (amqp://u:p@h1:5672,h2:5672/v); a connection that breaks moves to the next node.")
    exchange: str = option("fabric", "Topic exchange all fabric traffic goes through.")
    call_timeout: float = option(60.0, "Default deadline of a call, in seconds.", minimum=0.001)
    executor_size: int = option(64, "Green threads handling messages concurrently per worker.", minimum=1)
    prefetch: int = option(64, "Unacknowledged messages a worker holds at once.", minimum=1)
    max_deliveries: int = option(5, "Deliveries of a failing message before it is dead-lettered.", minimum=1)
    quorum_queues: bool = option(False, "Declare durable queues as quorum queues (RabbitMQ clusters).")
    heartbeat: int = option(30, "AMQP heartbeat, seconds (0 disables).", minimum=0)
    envelope_version: int = option(3, "Message envelope version this worker writes: this release writes 2 (the previous release's) or 3. During a rolling upgrade, set 2 on the upgraded workers until every worker is upgraded, then remove it (README: rolling upgrades).", minimum=2)
    failover_strategy: Literal["round-robin", "shuffle"] = option("round-robin", "Order in which each connection tries the brokers of transport_url: round-robin (as listed) or shuffle (random, spreads connections over a cluster's nodes).")


@dataclasses.dataclass(frozen=True)
class SigningSection:
    """[signing]: every RPC message is signed per role (fabric.rpc.signing; keys from `fabric-manage keys`)."""

    enabled: bool = option(True, "Sign every RPC message and refuse (dead-letter) unsigned, forged, stale or wrong-role ones. Turn off only where every process on the broker is trusted.")
    key_dir: str = option("", "Directory of the role key files (<role>.key to sign, <role>.verify to check; mode 0600, owned by the worker's user). A host gets only the files of the roles it runs. Empty: data_dir/keys.")
    max_age: float = option(600.0, "Seconds a signed message stays valid (either side of the receiver's clock); older ones are dead-lettered as stale, so a backlog older than this needs requeuing.", minimum=1)


@dataclasses.dataclass(frozen=True)
class ServiceSection:
    """[service]: liveness and periodic work."""

    report_interval: float = option(10.0, "Seconds between heartbeats into the services table.", minimum=0.01)
    service_down_time: float = option(60.0, "Seconds without a heartbeat after which a service is down.", minimum=0.01)
    graceful_shutdown_timeout: float = option(30.0, "Seconds in-flight work may take after SIGTERM.", minimum=0)
    advertise_address: str = option("", "Address recorded for this host's workers in the services registry. Empty: what the host name resolves to.")


@dataclasses.dataclass(frozen=True)
class ApiSection:
    """[api]: the HTTP API."""

    listen: str = option("127.0.0.1", "Address the API listens on.")
    port: int = option(8774, "Port the API listens on.", minimum=0)
    public_url: str = option("", "Base URL advertised in the service catalog. Empty: http://listen:port.")
    token_ttl: int = option(3600, "Token lifetime, seconds.", minimum=1)
    region: str = option("RegionOne", "Region name in the service catalog.")
    max_image_size: int = option(20 * 1024**3, "Largest image upload accepted, bytes.", minimum=1)
    image_upload_lease: float = option(120.0, "Seconds an image upload through the API holds its image (saving) without renewing: the uploading process renews it while bytes arrive; once it lapses (the process died), the API's reaper puts the image back to queued and a new upload may take it over.", minimum=1.0)
    max_request_body: int = option(114688, "Largest JSON request body accepted, bytes (Nova's default); "
                                   "larger ones are answered 413.", minimum=1024)
    admin_password: str = option("", "Password of the admin created when the API starts on a database with no users. Empty: a random one, printed once.")
    workers: int = option(0, "Processes serving the API on the one port (SO_REUSEPORT: the kernel spreads connections over them): the worker's own and workers - 1 helpers it starts, each with its own eventlet hub and its own database (up to [database] pool_size) and broker connections. 0: one per CPU core (one on SQLite, or on the memory:// transport, which no other process reaches: more is refused there). Always one on port 0.", minimum=0)


@dataclasses.dataclass(frozen=True)
class SecurityComplianceSection:
    """[security_compliance]: password lock-out (Keystone's options of the same names)."""

    lockout_failure_attempts: int = option(0, "Wrong passwords in a row after which a user is locked out (401 even with the right password); 0 never locks.", minimum=0)
    lockout_duration: int = option(1800, "Seconds a locked-out user stays locked out after the last wrong password.", minimum=1)


@dataclasses.dataclass(frozen=True)
class LdapSection:
    """[ldap]: a read-only LDAP directory as the users and groups of one domain (Keystone's LDAP identity driver; role assignments stay in SQL)."""

    url: str = option("", "LDAP server URL (ldap://host:389 or ldaps://host:636). Empty: no LDAP; every domain's users and groups live in the database.")
    domain: str = option("ldap", "Name (and id) of the domain whose users and groups come from LDAP; created when first needed.")
    user: str = option("", "DN to bind as for searches. Empty: search anonymously.")
    password: str = option("", "Password of the search DN.")
    user_tree_dn: str = option("", "Where users are searched (ou=Users,dc=example,dc=org).")
    user_objectclass: str = option("inetOrgPerson", "Object class of user entries.")
    user_id_attribute: str = option("cn", "Attribute holding a user's unique id.")
    user_name_attribute: str = option("sn", "Attribute holding a user's login name.")
    group_tree_dn: str = option("", "Where groups are searched (ou=Groups,dc=example,dc=org).")
    group_objectclass: str = option("groupOfNames", "Object class of group entries.")
    group_id_attribute: str = option("cn", "Attribute holding a group's unique id.")
    group_name_attribute: str = option("ou", "Attribute holding a group's name.")
    group_member_attribute: str = option("member", "Attribute listing a group's members (their DNs).")
    timeout: float = option(10.0, "Seconds to wait for the LDAP server before answering 503.", minimum=0.1)


@dataclasses.dataclass(frozen=True)
class SchedulerSection:
    """[scheduler]: placement."""

    filters: str = option("RetryFilter,ComputeFilter,AggregateAvailabilityZoneFilter,RamFilter,CoreFilter,DiskFilter,ImagePropertiesFilter,ExtraSpecsFilter,AggregateInstanceExtraSpecsFilter,AffinityFilter,AntiAffinityFilter", "Filters, in order, by name.")
    weighers: str = option("RamWeigher,CoreWeigher,FailedBuildWeigher,ServerGroupSoftWeigher", "Weighers by name.")
    spread: bool = option(True, "Spread instances over hosts (False: stack them).")
    ram_allocation_ratio: float = option(1.5, "Virtual RAM per physical RAM.", minimum=0.0)
    cpu_allocation_ratio: float = option(16.0, "vCPUs per physical CPU.", minimum=0.0)
    disk_allocation_ratio: float = option(1.0, "Virtual disk per physical disk.", minimum=0.0)
    max_attempts: int = option(3, "Hosts tried for one build before it ends in error.", minimum=1)
    failed_build_window: float = option(600.0, "Seconds a failed build keeps weighing its host down.", minimum=0)
    failed_build_penalty: float = option(10.0, "Weight taken from a host per recent failed build (RAM and vCPU weights are each 0..1).", minimum=0)
    host_refresh_interval: float = option(0.5, "Seconds between reads of the compute nodes changed since the last read.", minimum=0)
    host_full_refresh_interval: float = option(60.0, "Seconds between full reads of every compute node and service.", minimum=0.01)
    allow_resize_to_same_host: bool = option(False, "Let a resize or cold migration stay on its host (as Nova's option of that name): for one-host clouds and tests.")
    max_concurrent_decisions: int = option(1, "Placement decisions one scheduler worker makes at once; more requests wait their turn. Decisions are CPU-bound: more at once mostly adds claims lost to each other. Run more workers to scale.", minimum=1)
    batch_size: int = option(4, "First placements one scheduler worker decides together at most (those that arrived while it decided the ones before): one read, one claim transaction and one commit for them all. Larger batches cost less per placement and each placement waits for its whole batch; 1 decides them one at a time. Measured (tools/bench/scheduler.py, 2 workers on 2 CPUs): 8 gave ~1,270 decisions/s at p99 33-35 ms, 4 ~1,000/s at 21-27 ms.", minimum=1)


@dataclasses.dataclass(frozen=True)
class ComputeSection:
    """[compute]: the virt driver on this host."""

    driver: Literal["fake", "libvirt"] = option("fake", "Virt driver.")
    virt_type: Literal["auto", "kvm", "qemu"] = option("auto", "auto: KVM only when hardware virtualisation is really present.")
    libvirt_uri: str = option("qemu:///system", "libvirt connection URI (qemu:///system, qemu:///embed?root=..., test:///...).")
    instances_path: str = option("", "Where guest disks and consoles live. Empty: data_dir/instances.")
    fake_vcpus: int = option(16, "Fake driver: vCPUs this host has.", minimum=1)
    fake_memory_mb: int = option(65536, "Fake driver: RAM this host has, MiB.", minimum=1)
    fake_disk_gb: int = option(1024, "Fake driver: disk this host has, GiB.", minimum=1)
    fake_spawn_seconds: float = option(0.0, "Fake driver: seconds a spawn takes (a boot's duration, for scale and crash tests).", minimum=0)
    availability_zone: str = option("nova", "Availability zone this host belongs to.")
    transient_timeout: float = option(600.0, "Seconds an instance may stay in a transient state before the reaper errors it.", minimum=1)
    power_sync_interval: float = option(60.0, "Seconds between power-state syncs.", minimum=0.01)
    guest_shutdown_timeout: float = option(10.0, "Seconds a guest gets to shut down by ACPI before it is powered off.", minimum=0)
    resource_report_interval: float = option(60.0, "Seconds between resource reports into compute_nodes.", minimum=0.01)
    reap_interval: float = option(60.0, "Seconds between sweeps for instances stuck in a transient state.", minimum=0.01)
    drift_report_interval: float = option(600.0, "Seconds between logged reports of this host's server drift (see fabric-manage reconcile).", minimum=0.01)


@dataclasses.dataclass(frozen=True)
class NetworkSection:
    """[network]: the data plane on this host."""

    driver: Literal["fake", "linux"] = option("fake", "Network driver: fake (no kernel changes) or linux (bridges, VXLAN, routes).")
    prefix: str = option("fab", "Name prefix of every kernel object fabric creates.")
    tunnel_address: str = option("", "This host's underlay address for VXLAN. Empty: not a VXLAN host.")
    trunk_interface: str = option("", "Interface carrying 802.1Q VLANs.")
    dnsmasq: str = option("dnsmasq", "dnsmasq binary.")
    namespace: str = option("", "Network namespace (a name under /run/netns) this host's data plane lives in. Empty: the worker's own.")
    vxlan_port: int = option(4789, "UDP port of VXLAN tunnels.", minimum=1)
    external_interfaces: str = option("", "This host's interfaces to external networks, as physical_network:interface pairs separated by ',' (like Neutron's physical_interface_mappings): the floating and router gateway addresses of an external network whose provider:physical_network is mapped go on that interface, so the outside reaches them on-link with no route to this host. Empty: the outside must route them to this host.")
    drift_report_interval: float = option(600.0, "Seconds between logged reports of this host's network drift (see fabric-manage reconcile).", minimum=0.01)
    security_resync_interval: float = option(300.0, "Seconds between full re-reads of what this host's security groups enforce: membership changes arrive as announcements of one port each, and a host that missed one (or a port deleted unannounced) converges by the next re-read.", minimum=0.01)


@dataclasses.dataclass(frozen=True)
class IpamSection:
    """[ipam]: address management."""

    max_retries: int = option(20, "Retries of an allocation that lost a race.", minimum=1)
    batch_size: int = option(64, "Most concurrent allocations (or releases) in one pool combined into one "
                             "transaction (group commit); 1 turns batching off.", minimum=1)


@dataclasses.dataclass(frozen=True)
class MetadataSection:
    """[metadata]: the metadata service guests reach at 169.254.169.254 (linux network driver)."""

    enabled: bool = option(True, "Serve guests their metadata (OpenStack and EC2 formats) at http://169.254.169.254 on every tenant network this host's network worker carries. Needs the database.")
    client_timeout: float = option(10.0, "Seconds a guest's connection may stay idle before the metadata server closes it.", minimum=0.1)


@dataclasses.dataclass(frozen=True)
class ObjectstoreSection:
    """[objectstore]: the S3-compatible object store (fabric-objectstore)."""

    listen: str = option("127.0.0.1", "Address the objectstore listens on.")
    port: int = option(3333, "Port the objectstore listens on.", minimum=0)
    public_url: str = option("", "Base URL advertised in the service catalog (type s3). Empty: http://listen:port.")
    region: str = option("us-east-1", "Region clients sign their requests for (SigV4 credential scope); other regions are refused.")
    storage_dir: str = option("", "Directory holding object bytes (one file per object or part). Empty: data_dir/objects.")
    max_object_size: int = option(5 * 1024**3, "Largest single PUT (and multipart part), bytes (S3: 5 GiB).", minimum=1)
    credential_cache_seconds: float = option(5.0, "Seconds a verified access key's secret, user and project are reused before the database is asked again (a deleted credential works this long).", minimum=0)
    virtual_host_suffix: str = option("", "DNS suffix for virtual-host style requests: Host bucket.<suffix> names a bucket. Empty: the host of public_url (or listen).")
    workers: int = option(0, "Processes serving S3 requests on the one port (SO_REUSEPORT: the kernel spreads connections over them), each with its own database connections (up to [database] pool_size each). 0: one per CPU core (one on SQLite). Always one on port 0.", minimum=0)


@dataclasses.dataclass(frozen=True)
class VolumeSection:
    """[volume]: the block-storage worker (fabric-volume) of this host."""

    storage_dir: str = option("", "Directory holding this host's volumes (one qcow2 file each, snapshots inside it). Empty: data_dir/volumes.")
    export_address: str = option("", "Address this host's NBD exports listen on and hand to compute hosts. Empty: [service] advertise_address, else 127.0.0.1.")
    export_port_min: int = option(10809, "Lowest TCP port of an NBD export (one qemu-nbd per exported volume).", minimum=1)
    export_port_max: int = option(11808, "Highest TCP port of an NBD export.", minimum=1)
    qemu_img: str = option("qemu-img", "qemu-img binary (Debian package qemu-utils).")
    qemu_nbd: str = option("qemu-nbd", "qemu-nbd binary (Debian package qemu-utils).")
    availability_zone: str = option("nova", "Availability zone of this host's volumes.")
    transient_timeout: float = option(600.0, "Seconds a volume or snapshot may stay creating, deleting, extending or attaching before the reaper ends it (error, or back to available for an attach).", minimum=1)
    reap_interval: float = option(60.0, "Seconds between sweeps for volumes stuck in a transient status.", minimum=0.01)


@dataclasses.dataclass(frozen=True)
class DashboardSection:
    """[dashboard]: the web dashboard (fabric-dashboard, and inside fabric-all), a client of the API."""

    listen: str = option("127.0.0.1", "Address the dashboard listens on.")
    port: int = option(8780, "Port the dashboard listens on.", minimum=0)
    api_url: str = option("", "Identity v3 endpoint of the API the dashboard talks to (http://host:8774/v3); the rest is found in its service catalog. Empty: the [api] section's public_url or listen:port.")
    secure_cookies: bool = option(False, "Mark the session cookie Secure (set when users reach the dashboard over HTTPS).")


@dataclasses.dataclass(frozen=True)
class MetricsSection:
    """[metrics]: each worker process's Prometheus endpoint (``/metrics``)."""

    listen: str = option("127.0.0.1", "Address the metrics endpoint listens on.")
    port: int = option(0, "Port of this process's metrics endpoint; 0 serves none. Workers on one host need a port each (the systemd units in conf/systemd set FABRIC_METRICS_PORT per worker).", minimum=0)


#: FABRIC_ environment variables that are no setting: the configuration file's path
#: (read by the launchers' --config-file default).
NOT_SETTINGS = frozenset({"FABRIC_CONFIG"})

SECTIONS: dict[str, type] = {
    "DEFAULT": DefaultSection,
    "database": DatabaseSection,
    "rpc": RpcSection,
    "signing": SigningSection,
    "service": ServiceSection,
    "api": ApiSection,
    "security_compliance": SecurityComplianceSection,
    "ldap": LdapSection,
    "scheduler": SchedulerSection,
    "compute": ComputeSection,
    "network": NetworkSection,
    "ipam": IpamSection,
    "metadata": MetadataSection,
    "objectstore": ObjectstoreSection,
    "dashboard": DashboardSection,
    "volume": VolumeSection,
    "metrics": MetricsSection,
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every setting, by section. Build with :func:`load`."""

    default: DefaultSection = dataclasses.field(default_factory=DefaultSection)
    database: DatabaseSection = dataclasses.field(default_factory=DatabaseSection)
    rpc: RpcSection = dataclasses.field(default_factory=RpcSection)
    signing: SigningSection = dataclasses.field(default_factory=SigningSection)
    service: ServiceSection = dataclasses.field(default_factory=ServiceSection)
    api: ApiSection = dataclasses.field(default_factory=ApiSection)
    security_compliance: SecurityComplianceSection = dataclasses.field(default_factory=SecurityComplianceSection)
    ldap: LdapSection = dataclasses.field(default_factory=LdapSection)
    scheduler: SchedulerSection = dataclasses.field(default_factory=SchedulerSection)
    compute: ComputeSection = dataclasses.field(default_factory=ComputeSection)
    network: NetworkSection = dataclasses.field(default_factory=NetworkSection)
    ipam: IpamSection = dataclasses.field(default_factory=IpamSection)
    metadata: MetadataSection = dataclasses.field(default_factory=MetadataSection)
    objectstore: ObjectstoreSection = dataclasses.field(default_factory=ObjectstoreSection)
    dashboard: DashboardSection = dataclasses.field(default_factory=DashboardSection)
    volume: VolumeSection = dataclasses.field(default_factory=VolumeSection)
    metrics: MetricsSection = dataclasses.field(default_factory=MetricsSection)

    @property
    def database_url(self) -> str:
        """The database URL, defaulting to a SQLite file under ``data_dir``."""
        return self.database.url or f"sqlite:///{Path(self.default.data_dir) / 'fabric.sqlite'}"

    @property
    def signing_key_dir(self) -> str:
        """Where the RPC signing keys live: ``[signing] key_dir``, else ``data_dir/keys``."""
        return self.signing.key_dir or str(Path(self.default.data_dir) / "keys")

    @property
    def objectstore_url(self) -> str:
        """The objectstore's base URL as clients reach it (``[objectstore] public_url``, else listen:port)."""
        return reachable_url(self.objectstore.listen, self.objectstore.port, self.objectstore.public_url)

    @property
    def objectstore_dir(self) -> str:
        """Where object bytes live: ``[objectstore] storage_dir``, else ``data_dir/objects``."""
        return self.objectstore.storage_dir or str(Path(self.default.data_dir) / "objects")

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some options changed: ``s.replace(rpc={"call_timeout": 5})``."""
        changed = {}
        for name, values in sections.items():
            changed[name] = dataclasses.replace(getattr(self, name), **values)
        return dataclasses.replace(self, **changed)


def _attr(section: str) -> str:
    return "default" if section == "DEFAULT" else section


def _convert(raw: str, field: dataclasses.Field, hint: Any, where: dict[str, str]) -> Any:
    """Turn one raw string into the field's type, or raise InvalidSetting."""
    def bad(reason: str) -> InvalidSetting:
        return InvalidSetting(value=raw, reason=reason, **where)

    value: Any
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise bad(f"expected one of {', '.join(choices)}")
        return raw
    if hint is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise bad("expected a boolean (true/false, yes/no, on/off, 1/0)")
    if hint is int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise bad("expected a whole number") from None
    elif hint is float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise bad("expected a number") from None
    else:
        return raw
    minimum = field.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise bad(f"must be at least {minimum:g}")
    return value


def reachable_url(listen: str, port: int, public_url: str = "") -> str:
    """The base URL clients reach a server listening on ``listen``:``port`` at: ``public_url``
    when set, else http://listen:port with a wildcard address reached over loopback."""
    if public_url:
        return public_url.rstrip("/")
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(listen, listen)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def load(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read settings from an INI file (optional) and the environment.

    Raises InvalidSetting for an unknown section or option, a value of the
    wrong type or out of range, or a file that cannot be read; the error names
    where the value came from.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, tuple[str, str]]] = {name: {} for name in SECTIONS}

    if path is not None:
        source = str(path)
        # [DEFAULT] is read as a section of its own: configparser would otherwise copy its
        # options into every section, and a section's own option of the same name (an
        # [objectstore] data_dir beside [DEFAULT] data_dir) could not be told apart.
        parser = configparser.ConfigParser(interpolation=None, default_section="\0no default section")
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise InvalidSetting(source=source, section="-", option="-", value=source,
                                 reason=f"cannot read the file: {exc.strerror}") from None
        except configparser.Error as exc:
            raise InvalidSetting(source=source, section="-", option="-", value=source,
                                 reason=f"not an INI file: {exc.message.splitlines()[0]}") from None
        known_defaults = {f.name for f in dataclasses.fields(DefaultSection)}
        for section in parser.sections():
            if section not in SECTIONS:
                raise InvalidSetting(source=source, section=section, option="-", value=section,
                                     reason=f"unknown section; known: {', '.join(SECTIONS)}")
            for key, raw in parser.items(section, raw=True):
                if section == "DEFAULT" and key not in known_defaults:
                    raise InvalidSetting(source=source, section="DEFAULT", option=key, value=raw,
                                         reason="unknown option")
                values[section][key] = (raw, source)

    for key, raw in environ.items():
        if not key.startswith("FABRIC_") or key in NOT_SETTINGS:
            continue
        rest = key[len("FABRIC_"):].lower()
        for section in SECTIONS:
            lead = section.lower() + "_"
            if rest.startswith(lead):
                values[section][rest[len(lead):]] = (raw, f"environment {key}")
                break
        else:
            raise InvalidSetting(source=f"environment {key}", section="-", option=rest, value=raw,
                                 reason=f"unknown section; expected FABRIC_<SECTION>_<OPTION> with a section among {', '.join(SECTIONS)}")

    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, (raw, source) in values[section].items():
            if key not in fields:
                raise InvalidSetting(source=source, section=section, option=key, value=raw,
                                     reason=f"unknown option; known: {', '.join(fields)}")
            where = {"source": source, "section": section, "option": key}
            kwargs[key] = _convert(raw, fields[key], hints[key], where)
        built[_attr(section)] = cls(**kwargs)
    return Settings(**built)


def sample() -> str:
    """The sample configuration: every option, commented out at its default."""
    lines = [
        "# fabric sample configuration: every option with its default.",
        "# Generated by `fabric-manage config sample`; do not edit by hand.",
        "# Any option can also be set as FABRIC_<SECTION>_<OPTION> in the environment.",
    ]
    for section, cls in SECTIONS.items():
        lines += ["", f"[{section}]", f"# {cls.__doc__.split(':', 1)[1].strip()}"]
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            lines.append("")
            lines.append(f"# {field.metadata['help']}")
            hint = hints[field.name]
            if typing.get_origin(hint) is Literal:
                lines.append(f"# One of: {', '.join(typing.get_args(hint))}.")
            default = field.default
            if field.name in ("host", "data_dir"):
                default = {"host": "<this machine's hostname>", "data_dir": "~/.local/share/fabric"}[field.name]
            if isinstance(default, bool):
                default = str(default).lower()
            lines.append(f"#{field.name} = {default}")
    return "\n".join(lines) + "\n"
