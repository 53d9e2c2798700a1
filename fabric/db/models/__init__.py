"""Every table fabric has. Importing this package registers them all on ``Base``."""

from fabric.db.models.base import Base
from fabric.db.models.compute import Flavor, Image, Instance, InstanceAction, InstanceFault, Keypair, ServerGroup
from fabric.db.models.identity import Project, Quota, QuotaUsage, Role, RoleAssignment, Token, User
from fabric.db.models.network import AddressAllocation, AddressPool, FloatingIp, FreeAddress, Network, Port, Subnet
from fabric.db.models.objectstore import Bucket, Ec2Credential, MultipartUpload, StoredObject, UploadPart
from fabric.db.models.outbox import OutboxCast
from fabric.db.models.secgroups import PortSecurityGroup, SecurityGroup, SecurityGroupRule
from fabric.db.models.services import ComputeNode, ServerGroupHost, Service
from fabric.db.models.topology import Datacenter, Segment, Tenant, TopologyHost

__all__ = [
    "AddressAllocation", "AddressPool", "Base", "Bucket", "Ec2Credential", "MultipartUpload", "StoredObject",
    "UploadPart", "ComputeNode", "Datacenter", "Flavor", "FloatingIp", "FreeAddress", "Image",
    "Instance", "InstanceAction", "InstanceFault", "Keypair", "Network", "OutboxCast", "Port", "PortSecurityGroup", "Project", "Quota", "QuotaUsage",
    "Role", "RoleAssignment", "SecurityGroup", "SecurityGroupRule", "Segment", "ServerGroup", "ServerGroupHost", "Service", "Subnet", "Tenant", "Token",
    "TopologyHost", "User",
]
