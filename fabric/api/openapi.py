"""The OpenAPI 3 document of the API, served at ``/openapi.json``.

Request bodies are derived from the same marshmallow schemas the resources
validate with, and who may call each operation from the policy table the
middleware enforces (:mod:`fabric.api.policy`: ``x-fabric-policy``, a sentence in
the description, the 401/403/404 answers), so the document cannot drift from what
is enforced.
"""

from __future__ import annotations

import re

import falcon
from marshmallow import Schema, fields, validate

from fabric.api import (
    admin,
    common,
    ec2_credentials,
    floating_ips,
    identity,
    identity_admin,
    identity_app_creds,
    identity_catalog,
    identity_credentials,
    identity_domain_config,
    identity_endpoint_groups,
    identity_grants,
    identity_groups,
    identity_implied,
    identity_inherited,
    identity_policies,
    identity_projects,
    identity_regions,
    image,
    network,
    network_quotas,
    openapi_schemas,
    policy,
    ports,
    routers,
    security_groups,
    subnet_pools,
)
from fabric.api.block_storage import operations as block_storage_operations
from fabric.api.compute import (
    aggregates,
    flavor_extra_specs,
    flavors,
    hosts,
    keypairs,
    quotas,
    server_groups,
    server_metadata,
    servers,
    tags,
    volume_attachments,
)

_C = "/compute/v2.1"
_N = "/networking/v2.0"
_I = "/image/v2"


#: (method, path, summary, request schema (marshmallow, or JSON Schema) or None, success status);
#: who may call it is fabric.api.policy's, the answer's schema fabric.api.openapi_schemas's.
_OPERATIONS: list[tuple[str, str, str, Schema | dict | None, int]] = [
    ("get", "/", "Identity versions", None, 300),
    ("get", "/v3", "Identity v3 version", None, 200),
    ("post", "/v3/auth/tokens", "Issue a token", identity.AuthRequestSchema(), 201),
    ("get", "/v3/auth/tokens", "Validate a token (X-Subject-Token)", None, 200),
    ("head", "/v3/auth/tokens", "Check a token is valid (X-Subject-Token; 200, else 404)", None, 200),
    ("delete", "/v3/auth/tokens", "Revoke a token (X-Subject-Token)", None, 204),
    ("get", "/v3/users", "List users (admin)", None, 200),
    ("post", "/v3/users", "Create a user (admin)", identity._wrapped("user", identity.UserCreateSchema), 201),
    ("get", "/v3/users/{user_id}", "Show a user", None, 200),
    ("get", "/v3/projects", "List projects (admin)", None, 200),
    ("post", "/v3/projects", "Create a project (admin)",
     identity._wrapped("project", identity.ProjectCreateSchema), 201),
    ("get", "/v3/projects/{project_id}", "Show a project", None, 200),
    ("get", "/v3/roles", "List roles", None, 200),
    ("post", "/v3/roles", "Create a role (admin)", identity._wrapped("role", identity.RoleCreateSchema), 201),
    ("put", "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}", "Grant a role (admin)", None, 204),
    ("get", "/v3/roles/{role_id}", "Show a role", None, 200),
    ("patch", "/v3/roles/{role_id}", "Rename a role (admin; not admin, member or reader)",
     identity._wrapped("role", identity.RoleUpdateSchema), 200),
    ("delete", "/v3/roles/{role_id}", "Delete a role and its grants (admin)", None, 204),
    *identity_admin.OPENAPI_OPERATIONS, *identity_groups.OPENAPI_OPERATIONS, *identity_grants.OPENAPI_OPERATIONS,
    *identity_catalog.OPENAPI_OPERATIONS, *identity_regions.OPENAPI_OPERATIONS, *identity_implied.OPENAPI_OPERATIONS,
    *identity_inherited.OPENAPI_OPERATIONS, *identity_endpoint_groups.OPENAPI_OPERATIONS, *identity_projects.OPENAPI_OPERATIONS,
    *identity_policies.OPENAPI_OPERATIONS, *identity_credentials.OPENAPI_OPERATIONS, *identity_app_creds.OPENAPI_OPERATIONS,
    *identity_domain_config.OPENAPI_OPERATIONS,
    ("get", "/compute", "Compute versions", None, 200),
    ("get", "/compute/v2", "Compute v2.0 version (v2.1 without microversions under /compute/v2)", None, 200),
    ("get", _C, "Compute v2.1 version", None, 200),
    ("get", f"{_C}/flavors", "List flavors", None, 200),
    ("get", f"{_C}/flavors/detail", "List flavors with details", None, 200),
    ("post", f"{_C}/flavors", "Create a flavor (admin)", flavors.FLAVOR_CREATE, 200),
    ("get", f"{_C}/flavors/{{flavor_id}}", "Show a flavor", None, 200),
    ("put", f"{_C}/flavors/{{flavor_id}}", "Update a flavor's description (admin, 2.55)", flavors.FLAVOR_UPDATE, 200),
    ("delete", f"{_C}/flavors/{{flavor_id}}", "Delete a flavor (admin)", None, 202),
    ("get", f"{_C}/images", "List images (Compute's image proxy; microversions 2.1-2.35)", None, 200),
    ("get", f"{_C}/images/detail", "List images with details (image proxy; 2.1-2.35)", None, 200),
    ("get", f"{_C}/images/{{image_id}}", "Show an image (image proxy; 2.1-2.35)", None, 200),
    ("delete", f"{_C}/images/{{image_id}}", "Delete an image (image proxy; 2.1-2.35)", None, 204),
    ("get", f"{_C}/os-keypairs", "List keypairs", None, 200),
    ("post", f"{_C}/os-keypairs", "Import or generate a keypair", keypairs.KEYPAIR_CREATE, 200),
    ("get", f"{_C}/os-keypairs/{{name}}", "Show a keypair", None, 200),
    ("delete", f"{_C}/os-keypairs/{{name}}", "Delete a keypair", None, 202),
    ("get", f"{_C}/limits", "Absolute limits and usage", None, 200),
    ("get", f"{_C}/os-quota-sets/{{project_id}}", "Show quotas", None, 200),
    ("put", f"{_C}/os-quota-sets/{{project_id}}", "Update quotas (admin)", quotas.QUOTA_UPDATE, 200),
    ("get", f"{_C}/servers", "List servers", None, 200),
    ("get", f"{_C}/servers/detail", "List servers with details", None, 200),
    ("post", f"{_C}/servers", "Create servers", servers.SERVER_CREATE, 202),
    ("get", f"{_C}/servers/{{server_id}}", "Show a server", None, 200),
    ("put", f"{_C}/servers/{{server_id}}", "Update a server (name; description from microversion 2.19)",
     servers.SERVER_UPDATE, 200),
    ("delete", f"{_C}/servers/{{server_id}}", "Delete a server (refused while locked, but to admins)", None, 204),
    ("get", f"{_C}/servers/{{server_id}}/metadata", "Show a server's metadata", None, 200),
    ("post", f"{_C}/servers/{{server_id}}/metadata", "Merge items into a server's metadata",
     server_metadata.METADATA, 200),
    ("put", f"{_C}/servers/{{server_id}}/metadata", "Replace a server's metadata", server_metadata.METADATA, 200),
    ("get", f"{_C}/servers/{{server_id}}/metadata/{{key}}", "Show one metadata item", None, 200),
    ("put", f"{_C}/servers/{{server_id}}/metadata/{{key}}", "Set one metadata item", server_metadata.META, 200),
    ("delete", f"{_C}/servers/{{server_id}}/metadata/{{key}}", "Delete one metadata item", None, 204),
    # The action body is a one-key object per action, so the summary documents it.
    ("post", f"{_C}/servers/{{server_id}}/action", "Act on a server (reboot, os-stop, os-start, pause, "
     "unpause, suspend, resume, os-getConsoleOutput, lock, unlock, addSecurityGroup, removeSecurityGroup)",
     None, 202),
    ("get", f"{_C}/servers/{{server_id}}/tags", "A server's tags (microversion 2.26)", None, 200),
    ("put", f"{_C}/servers/{{server_id}}/tags", "Replace a server's tags (2.26; at most 50, each 1-60 characters "
     "without '/' or ',')", tags.TAGS_REPLACE, 200),
    ("delete", f"{_C}/servers/{{server_id}}/tags", "Remove every tag of a server (2.26)", None, 204),
    ("get", f"{_C}/servers/{{server_id}}/tags/{{tag}}", "Whether a server has a tag (2.26; 204, else 404)", None,
     204),
    ("put", f"{_C}/servers/{{server_id}}/tags/{{tag}}", "Add a tag to a server (2.26; 201 new, 204 had it)", None,
     201),
    ("delete", f"{_C}/servers/{{server_id}}/tags/{{tag}}", "Remove one tag of a server (2.26)", None, 204),
    ("get", f"{_C}/servers/{{server_id}}/diagnostics", "A server's counters from its host's driver (admin)", None,
     200),
    ("get", f"{_C}/servers/{{server_id}}/ips", "A server's addresses by network", None, 200),
    ("get", f"{_C}/servers/{{server_id}}/os-volume_attachments", "The volumes attached to a server", None, 200),
    ("post", f"{_C}/servers/{{server_id}}/os-volume_attachments", "Attach a volume to a server (device optional, "
     "/dev/vdb ... /dev/vdz)", volume_attachments.VOLUME_ATTACH, 200),
    ("get", f"{_C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}", "A server's attachment of a volume",
     None, 200),
    ("delete", f"{_C}/servers/{{server_id}}/os-volume_attachments/{{volume_id}}", "Detach a volume from a server "
     "(202; the volume is available once the guest lets go of it)", None, 202),
    ("get", f"{_C}/os-aggregates", "List host aggregates (admin)", None, 200),
    ("post", f"{_C}/os-aggregates", "Create a host aggregate, optionally an availability zone (admin)",
     aggregates.AGGREGATE_CREATE, 200),
    ("get", f"{_C}/os-aggregates/{{aggregate_id}}", "Show a host aggregate (admin)", None, 200),
    ("put", f"{_C}/os-aggregates/{{aggregate_id}}", "Rename an aggregate or change its zone (admin)",
     aggregates.AGGREGATE_UPDATE, 200),
    ("delete", f"{_C}/os-aggregates/{{aggregate_id}}", "Delete an aggregate without hosts (admin)", None, 200),
    # The action body is a one-key object per action, so the summary documents it.
    ("post", f"{_C}/os-aggregates/{{aggregate_id}}/action", "Act on an aggregate (admin): add_host {host}, "
     "remove_host {host}, set_metadata {metadata} (null values remove keys)", None, 200),
    ("get", f"{_C}/os-hosts", "List every service's host, topic and zone (admin; ?zone=)", None, 200),
    ("get", f"{_C}/os-hosts/{{host_name}}", "A compute host's capacity and use per project (admin)", None, 200),
    ("get", f"{_C}/os-hypervisors/{{hypervisor_id}}", "Show a hypervisor (admin)", None, 200),
    ("get", f"{_C}/os-hypervisors/{{hypervisor_id}}/uptime", "A hypervisor's uptime (admin; 501: fabric's drivers "
     "report none)", None, 501),
    ("get", f"{_C}/os-server-groups", "List server groups (admins: ?all_projects=true)", None, 200),
    ("post", f"{_C}/os-server-groups", "Create a server group (policy affinity or anti-affinity; soft-affinity "
     "and soft-anti-affinity from microversion 2.15)",
     server_groups.SERVER_GROUP_CREATE, 200),
    ("get", f"{_C}/os-server-groups/{{group_id}}", "Show a server group and its members", None, 200),
    ("delete", f"{_C}/os-server-groups/{{group_id}}", "Delete a server group (its servers stay)", None, 204),
    ("get", f"{_C}/os-availability-zone", "List the compute hosts' availability zones", None, 200),
    ("get", f"{_C}/os-availability-zone/detail", "List availability zones with their hosts and services (admin)",
     None, 200),
    ("get", f"{_C}/servers/{{server_id}}/os-instance-actions", "A server's actions, newest first", None, 200),
    ("get", f"{_C}/servers/{{server_id}}/os-instance-actions/{{request_id}}", "One action of a server, with its event",
     None, 200),
    ("get", f"{_C}/os-simple-tenant-usage", "Every project's usage in a period (admin; ?start&end&detailed)", None,
     200),
    ("get", f"{_C}/os-simple-tenant-usage/{{project_id}}", "A project's usage in a period (?start&end)", None, 200),
    ("get", f"{_C}/os-hypervisors", "List hypervisors (admin)", None, 200),
    ("get", f"{_C}/os-hypervisors/detail", "List hypervisors with details (admin)", None, 200),
    ("get", f"{_C}/os-services", "List services (admin)", None, 200),
    *(("put", f"{_C}/os-services/{toggle}", f"{summary} a host's service (admin; 404 for no such host and binary)",
       hosts.ServiceToggleSchema(), 200)
      for toggle, summary in (("enable", "Enable"), ("disable", "Disable"),
                              ("disable-log-reason", "Disable, with a disabled_reason,"))),
    ("put", f"{_C}/os-services/{{service_id}}", "Enable or disable a service by its UUID (admin; microversion 2.53)",
     hosts.ServiceUpdateSchema(), 200),
    ("get", f"{_C}/os-hypervisors/statistics", "The hypervisors' capacity and use added up (admin)", None, 200),
    ("get", f"{_C}/flavors/{{flavor_id}}/os-extra_specs", "A flavor's extra specs", None, 200),
    ("post", f"{_C}/flavors/{{flavor_id}}/os-extra_specs", "Merge items into a flavor's extra specs (admin)",
     flavor_extra_specs.EXTRA_SPECS, 200),
    ("get", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}", "Show one extra spec", None, 200),
    ("put", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}", "Set one extra spec (admin): {key: value}",
     {"type": "object", "minProperties": 1, "maxProperties": 1,
      "additionalProperties": {"anyOf": [{"type": "string", "maxLength": 255}, {"type": "number"}, {"type": "boolean"}]}},
     200),
    ("delete", f"{_C}/flavors/{{flavor_id}}/os-extra_specs/{{key}}", "Delete one extra spec (admin)", None, 202),
    ("get", f"{_C}/os-quota-sets/{{project_id}}/defaults", "The default quotas", None, 200),
    ("get", f"{_C}/os-quota-sets/{{project_id}}/detail", "Quotas with their use (limit, in_use, reserved)", None,
     200),
    ("delete", f"{_C}/os-quota-sets/{{project_id}}", "Put a project's quotas back to the defaults (admin)", None,
     202),
    ("get", "/image/versions", "Image versions", None, 200),
    ("patch", f"{_I}/images/{{image_id}}", "Change an image's attributes, tags or properties (a JSON patch)",
     openapi_schemas.IMAGE_PATCH, 200),
    ("get", f"{_I}/schemas/{{name}}", "An image schema (image or images; properties are free strings)", None, 200),
    ("get", _N, "Network v2.0 resources", None, 200),
    ("get", f"{_N}/extensions", "The network extensions fabric answers", None, 200),
    ("post", "/v3/users/{user_id}/credentials/OS-EC2", "Create an EC2 credential for a project the user has a "
     "role on", ec2_credentials.CredentialCreateSchema(), 201),
    ("get", "/v3/users/{user_id}/credentials/OS-EC2", "List a user's EC2 credentials", None, 200),
    ("get", "/v3/users/{user_id}/credentials/OS-EC2/{access}", "Show an EC2 credential", None, 200),
    ("delete", "/v3/users/{user_id}/credentials/OS-EC2/{access}", "Delete an EC2 credential", None, 204),
    ("get", "/openapi.json", "This document", None, 200),
    ("get", "/image", "Image versions", None, 200),
    ("get", f"{_I}/images", "List images (filters: name, id, status, visibility)", None, 200),
    ("post", f"{_I}/images", "Create an image record", image.ImageCreateSchema(), 201),
    ("get", f"{_I}/images/{{image_id}}", "Show an image", None, 200),
    ("delete", f"{_I}/images/{{image_id}}", "Delete an image", None, 204),
    ("put", f"{_I}/images/{{image_id}}/file", "Upload image data", None, 204),
    ("get", f"{_I}/images/{{image_id}}/file", "Download image data", None, 200),
    ("delete", f"{_I}/images", "Delete the image with the empty id (/v2/images/): there is none", None, 404),
    ("put", f"{_I}/images/{{image_id}}/tags/{{tag}}", "Tag an image", None, 204),
    ("delete", f"{_I}/images/{{image_id}}/tags/{{tag}}", "Remove an image's tag", None, 204),
    ("get", "/networking", "Network versions", None, 200),
    ("get", f"{_N}/networks", "List networks", None, 200),
    ("post", f"{_N}/networks", "Create a network (members: provider:network_type routed, on a segment of "
     "their own project)", network.NETWORK_CREATE, 201),
    ("get", f"{_N}/networks/{{network_id}}", "Show a network", None, 200),
    ("delete", f"{_N}/networks/{{network_id}}", "Delete a network", None, 204),
    ("get", f"{_N}/subnets", "List subnets", None, 200),
    ("post", f"{_N}/subnets", "Create a subnet", network.SUBNET_CREATE, 201),
    ("get", f"{_N}/subnets/{{subnet_id}}", "Show a subnet", None, 200),
    ("get", f"{_N}/security-groups", "List security groups (makes the project's default group)", None, 200),
    ("post", f"{_N}/security-groups", "Create a security group", security_groups.GROUP_CREATE, 201),
    ("get", f"{_N}/security-groups/{{group_id}}", "Show a security group", None, 200),
    ("put", f"{_N}/security-groups/{{group_id}}", "Rename a security group", security_groups.GROUP_UPDATE, 200),
    ("delete", f"{_N}/security-groups/{{group_id}}", "Delete a security group", None, 204),
    ("get", f"{_N}/security-group-rules", "List security group rules", None, 200),
    ("post", f"{_N}/security-group-rules", "Create a security group rule", security_groups.RULE_CREATE, 201),
    ("get", f"{_N}/security-group-rules/{{rule_id}}", "Show a security group rule", None, 200),
    ("delete", f"{_N}/security-group-rules/{{rule_id}}", "Delete a security group rule", None, 204),
    ("get", f"{_N}/floatingips", "List floating IPs", None, 200),
    ("post", f"{_N}/floatingips", "Create a floating IP from an external network (optionally associated)",
     floating_ips.FLOATING_IP_CREATE, 201),
    ("get", f"{_N}/floatingips/{{floating_id}}", "Show a floating IP", None, 200),
    ("put", f"{_N}/floatingips/{{floating_id}}", "Associate (port_id) or disassociate (port_id null) a floating IP",
     floating_ips.FLOATING_IP_UPDATE, 200),
    ("delete", f"{_N}/floatingips/{{floating_id}}", "Delete a floating IP (its address goes back to the pool)",
     None, 204),
    *network.OPERATIONS, *ports.OPERATIONS, *routers.OPERATIONS, *subnet_pools.OPERATIONS,
    *network_quotas.OPERATIONS,
    *block_storage_operations.OPERATIONS,
    ("get", "/fabric/v1/topology", "Datacenter layouts and hosts (admin)", None, 200),
    ("post", "/fabric/v1/topology/hosts", "Add a host to the topology (admin; announced to the network workers)",
     admin.HOST_CREATE, 201),
    ("delete", "/fabric/v1/topology/hosts/{name}", "Remove a host from the topology (admin)", None, 204),
    ("get", "/fabric/v1/tenants", "Tenants and their segments (admin)", None, 200),
    ("get", "/fabric/v1/services", "The services registry (admin)", None, 200),
    ("get", "/fabric/v1/queues", "The broker's queues: depth, consumers, dead letters (admin; RabbitMQ)",
     None, 200),
    ("post", "/fabric/v1/queues/{name}/requeue-dead", "Move a queue's dead letters back onto it (admin; "
     "?limit=N)", None, 200),
]


#: Operations whose body is not plain JSON: (method, path) -> its media type.
_REQUEST_MEDIA_TYPES = {("patch", f"{_I}/images/{{image_id}}"): "application/openstack-images-v2.1-json-patch"}

#: Query parameters of the list operations: path -> [(name, JSON type)].
_QUERY = {
    "/compute/v2.1/servers": [("limit", "integer"), ("marker", "string"), ("name", "string"),
                              ("status", "string"), ("all_tenants", "string"), ("sort_key", "string"),
                              ("sort_dir", "string"), ("tags", "string"), ("tags-any", "string"),
                              ("not-tags", "string"), ("not-tags-any", "string")],
    "/compute/v2.1/flavors": [("minRam", "integer"), ("minDisk", "integer")],
    "/image/v2/images": [("name", "string"), ("id", "string"), ("status", "string"), ("visibility", "string"),
                         ("size", "integer"), ("size_min", "integer"), ("size_max", "integer"),
                         ("limit", "integer"), ("marker", "string")],
    "/networking/v2.0/networks": [("name", "string"), ("id", "string"), ("shared", "boolean")],
    "/networking/v2.0/ports": [("network_id", "string"), ("device_id", "string"), ("device_owner", "string"),
                               ("mac_address", "string"), ("status", "string"), ("fixed_ips", "string")],
    "/networking/v2.0/routers": [("name", "string"), ("id", "string")],
    "/networking/v2.0/subnetpools": [("name", "string"), ("id", "string")],
    "/networking/v2.0/floatingips": [("floating_ip_address", "string"), ("port_id", "string"),
                                     ("floating_network_id", "string"), ("status", "string")],
    "/compute/v2.1/os-server-groups": [("all_projects", "boolean"), ("limit", "integer"), ("offset", "integer")],
}
_QUERY["/compute/v2.1/servers/detail"] = _QUERY["/compute/v2.1/servers"]
_QUERY["/compute/v2.1/flavors/detail"] = _QUERY["/compute/v2.1/flavors"]

#: Where a create's answer carries the new row's id: collection path -> JSON pointer into the
#: answer. Each create links (OpenAPI links) to every operation on the row it made, so a
#: stateful client (the fuzz's stateful phase) can act on what it created.
_CREATED_IDS = {
    f"{_C}/servers": "/server/id", f"{_C}/flavors": "/flavor/id", f"{_C}/os-keypairs": "/keypair/name",
    f"{_C}/os-aggregates": "/aggregate/id", f"{_C}/os-server-groups": "/server_group/id",
    f"{_I}/images": "/id",
    f"{_N}/networks": "/network/id", f"{_N}/subnets": "/subnet/id", f"{_N}/ports": "/port/id",
    f"{_N}/routers": "/router/id", f"{_N}/security-groups": "/security_group/id",
    f"{_N}/security-group-rules": "/security_group_rule/id", f"{_N}/floatingips": "/floatingip/id",
    f"{_N}/subnetpools": "/subnetpool/id",
    "/v3/users": "/user/id", "/v3/projects": "/project/id", "/v3/roles": "/role/id", "/v3/groups": "/group/id",
    "/v3/domains": "/domain/id", "/v3/regions": "/region/id", "/v3/services": "/service/id",
    "/v3/endpoints": "/endpoint/id", "/v3/credentials": "/credential/id", "/v3/policies": "/policy/id",
    "/v3/OS-EP-FILTER/endpoint_groups": "/endpoint_group/id",
    "/v3/users/{user_id}/application_credentials": "/application_credential/id",
    "/v3/users/{user_id}/credentials/OS-EC2": "/credential/access",
    "/fabric/v1/topology/hosts": "/host/name",
}

_SIMPLE = {fields.String: "string", fields.Integer: "integer", fields.Float: "number", fields.Boolean: "boolean",
           fields.Dict: "object", fields.IP: "string", fields.UUID: "string"}


def field_schema(field: fields.Field) -> dict:
    """JSON Schema of one marshmallow field, with its validators' bounds."""
    if isinstance(field, fields.Nested):
        nested = field.schema
        out = schema_of(nested)
    elif isinstance(field, fields.List):
        out = {"type": "array", "items": field_schema(field.inner)}
    else:
        out = next(({"type": t} for cls, t in _SIMPLE.items() if isinstance(field, cls)), {})
    if isinstance(field, fields.IP):
        out["format"] = "ipvanyaddress"
    if isinstance(field, fields.UUID):
        out["format"] = "uuid"
    for validator in field.validators:
        if isinstance(validator, (validate.Length, validate.Range)):
            if isinstance(validator, validate.Range):
                bounds = ("minimum", "maximum")
            else:
                key = "Items" if out.get("type") == "array" else "Length"
                bounds = (f"min{key}", f"max{key}")
            for name, bound in zip(bounds, (validator.min, validator.max), strict=True):
                if bound is not None:
                    out[name] = bound
        elif isinstance(validator, validate.OneOf):
            out["enum"] = list(validator.choices)
        elif isinstance(validator, validate.Regexp):
            out["pattern"] = validator.regex.pattern
    if field.allow_none and out:
        out["nullable"] = True
    return out


def schema_of(schema: Schema) -> dict:
    props, required = {}, []
    for name, field in schema.fields.items():
        key = field.data_key or name
        props[key] = field_schema(field)
        if field.required:
            required.append(key)
    out: dict = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def _query_schema(kind: str) -> dict:
    """A query parameter's schema; whole numbers carry the bounds ``common.int_param`` enforces."""
    if kind == "integer":
        return {"type": kind, "minimum": 0, "maximum": common.INT_MAX}
    return {"type": kind}


def _add_policy(op: dict, found: policy.Policy) -> None:
    """``op`` with its policy: ``x-fabric-policy``, a sentence, and the refusals it may answer."""
    op["x-fabric-policy"] = {"rule": found.rule.value, "roles": sorted(found.rule.roles),
                             "target": found.target.key, "action": found.action}
    op["description"] = f"{found.action[:1].upper()}{found.action[1:]}: {found.describe()}"
    if found.rule is policy.Rule.PUBLIC:
        op["security"] = []
        return
    op["security"] = [{"token": []}]
    op["responses"]["401"] = {"description": "no valid token"}
    if found.rule is not policy.Rule.ANY or found.target.other_status == 403:
        op["responses"]["403"] = {"description": f"refused: {found.describe()}"}
    if found.target.other_status == 404:
        op["responses"]["404"] = {"description": "not found, or another project's"}


def operation_id(method: str, path: str) -> str:
    """An operation's ``operationId``: its method and path in the characters links allow."""
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{method}{path}").strip("_")


def _path_parameters(path: str) -> list[str]:
    return [part.strip("{}") for part in path.split("/") if part.startswith("{")]


def _add_links(paths: dict) -> None:
    """Link each create in :data:`_CREATED_IDS` to the operations on the row it made: the new
    id from the create's answer, the collection's own path parameters from its request."""
    for collection, pointer in _CREATED_IDS.items():
        create = paths.get(collection, {}).get("post")
        if create is None:
            continue
        links = {}
        for path, operations in paths.items():
            if not path.startswith(collection + "/{"):
                continue
            created = path[len(collection) + 1:].split("/")[0].strip("{}")
            parameters = {name: f"$request.path.{name}" for name in _path_parameters(collection)}
            parameters[created] = f"$response.body#{pointer}"
            if set(parameters) != set(_path_parameters(path)):
                continue  # a row beneath the new one, reached by its own create's links
            for op in operations.values():
                links[op["operationId"]] = {"operationId": op["operationId"], "parameters": parameters}
        success = next(code for code in create["responses"] if code.startswith("2"))
        create["responses"][success]["links"] = links


def document(base: str = "") -> dict:
    paths: dict = {}
    for method, path, summary, schema, status in _OPERATIONS:
        op: dict = {"summary": summary, "operationId": operation_id(method, path),
                    "responses": {str(status): {"description": "success"}}}
        _add_policy(op, policy.TABLE[(method.upper(), path)])
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                  for name in _path_parameters(path)]
        if method == "get":
            params += [{"name": name, "in": "query", "required": False, "schema": _query_schema(kind)}
                       for name, kind in _QUERY.get(path, [])]
        if params:
            op["parameters"] = params
        if schema is not None:
            body = schema if isinstance(schema, dict) else schema_of(schema)
            media = _REQUEST_MEDIA_TYPES.get((method, path), "application/json")
            op["requestBody"] = {"required": True, "content": {media: {"schema": body}}}
        answer = openapi_schemas.RESPONSES.get((method, path))
        if answer is not None:
            op["responses"][str(status)]["content"] = {"application/json": {"schema": answer}}
        paths.setdefault(path, {})[method] = op
    _add_links(paths)
    return {
        "openapi": "3.0.3",
        "info": {"title": "fabric API", "version": "1.0",
                 "description": "Identity v3, Compute v2.1, Image v2 and Network v2.0 subsets plus fabric's admin "
                                "endpoints."},
        "servers": [{"url": base or "/"}],
        "components": {"securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}}},
        "paths": paths,
    }


class OpenApi:
    def on_get(self, req, resp):
        common.respond(resp, document(common.deps(req).base_url(req)))


def register(app: falcon.App) -> None:
    app.add_route("/openapi.json", OpenApi())
