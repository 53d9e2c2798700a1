"""Every table fabric has. Importing this package registers them all on ``Base``."""

from fabric.db.models.base import Base
from fabric.db.models.compute import (
    Aggregate,
    AggregateHost,
    Flavor,
    Image,
    Instance,
    InstanceAction,
    InstanceFault,
    InstanceTag,
    Keypair,
    Migration,
    ServerGroup,
)
from fabric.db.models.identity import (
    ApplicationCredential,
    CatalogEndpoint,
    CatalogService,
    Domain,
    EndpointGroup,
    Group,
    GroupMembership,
    ImpliedRole,
    PolicyBlob,
    Project,
    ProjectEndpointGroup,
    ProjectParent,
    ProjectTag,
    Quota,
    QuotaUsage,
    Region,
    Role,
    RoleAssignment,
    RoleGrant,
    Token,
    User,
)
from fabric.db.models.network import (
    AddressAllocation,
    AddressPool,
    FloatingIp,
    FreeAddress,
    Network,
    Port,
    Router,
    RouterInterface,
    Subnet,
    SubnetPool,
)
from fabric.db.models.objectstore import Bucket, Ec2Credential, MultipartUpload, StoredObject, UploadPart
from fabric.db.models.outbox import OutboxCast
from fabric.db.models.secgroups import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from fabric.db.models.services import ComputeNode, ServerGroupHost, Service
from fabric.db.models.topology import Datacenter, Segment, Tenant, TopologyHost
from fabric.db.models.volumes import Volume, VolumeAttachment, VolumeExport, VolumeSnapshot

__all__ = [
    "AddressAllocation", "AddressPool", "Aggregate", "AggregateHost", "ApplicationCredential",
    "Base", "Bucket", "CatalogEndpoint", "CatalogService", "ComputeNode", "Datacenter", "Domain", "EndpointGroup",
    "Ec2Credential", "Flavor", "FloatingIp", "FreeAddress", "Group", "GroupMembership", "ImpliedRole", "Image",
    "Instance", "InstanceAction", "InstanceFault", "InstanceTag", "Keypair", "Migration",
    "MultipartUpload", "Network", "OutboxCast", "Port", "PortSecurityGroup", "Project", "Quota",
    "PolicyBlob", "ProjectEndpointGroup", "ProjectParent", "ProjectTag", "QuotaUsage", "Region", "Role", "RoleAssignment", "RoleGrant", "Router", "RouterInterface",
    "SecurityGroup", "SecurityGroupRule", "Segment", "ServerGroup", "ServerGroupHost", "Service",
    "StoredObject", "Subnet", "SubnetPool", "Tenant", "Token", "TopologyHost", "UploadPart", "User",
    "Volume", "VolumeAttachment", "VolumeExport", "VolumeSnapshot",
]
