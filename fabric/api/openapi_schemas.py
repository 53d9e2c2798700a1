"""JSON Schemas of the API's answers, for the OpenAPI document (:mod:`fabric.api.openapi`).

Each schema states what the handler promises to answer with (the keys it always sends and
their types), so the fuzz can hold every answer to its schema. Operations that answer no
body (204s, HEAD) have none.
"""

from __future__ import annotations

from typing import Any

_C, _I, _N = "/compute/v2.1", "/image/v2", "/networking/v2.0"


def obj(required: bool = True, /, **props: Any) -> dict:
    """An object with ``props`` (name -> schema or JSON type name), all required unless told."""
    schema: dict = {"type": "object",
                    "properties": {k: {"type": v} if isinstance(v, str) else v for k, v in props.items()}}
    if required and props:
        schema["required"] = sorted(props)
    return schema


def array(items: dict | str) -> dict:
    return {"type": "array", "items": {"type": items} if isinstance(items, str) else items}


def nullable(kind: str) -> dict:
    return {"type": kind, "nullable": True}


#: A string map (metadata, extra specs): any key, string values.
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LINK = obj(rel="string", href="string")
#: A version entry of a service's versions document.
VERSION = obj(id="string", status="string", links=array(LINK))
#: A quota's limit, in use and reserved (the ``detail`` form).
QUOTA_DETAIL = obj(limit="integer", in_use="integer", reserved="integer")
QUOTA_NAMES = ("instances", "cores", "ram", "key_pairs", "server_groups", "server_group_members",
               "metadata_items", "injected_files", "injected_file_content_bytes", "injected_file_path_bytes")
EC2_CREDENTIAL = obj(user_id="string", tenant_id="string", access="string", secret="string",
                     trust_id=nullable("string"), links=obj(self="string"))
SERVICE_TOGGLED = obj(False, host="string", binary="string", status={"type": "string", "enum": ["enabled", "disabled"]},
                      disabled_reason=nullable("string"))
SERVICE_TOGGLED["required"] = ["binary", "host", "status"]
HYPERVISOR_STATISTICS = obj(**{name: "integer" for name in (
    "count", "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used", "free_ram_mb",
    "free_disk_gb", "current_workload", "running_vms", "disk_available_least")})


def quota_set(detail: bool) -> dict:
    """A compute quota set: its project's id and each quota, a number or its detail."""
    schema = obj(False, id="string", **{name: QUOTA_DETAIL if detail else "integer" for name in QUOTA_NAMES})
    schema["required"] = ["id", "instances", "cores", "ram", "key_pairs"]
    return schema


#: (method, path) -> the JSON Schema of its success answer's body.
RESPONSES: dict[tuple[str, str], dict] = {
    ("get", "/openapi.json"): obj(openapi="string", info=obj(False, title="string", version="string"),
                                  paths="object"),
    ("get", "/image/versions"): obj(versions=array(VERSION)),
    ("get", _N): obj(resources=array(obj(name="string", collection="string", links=array(LINK)))),
    ("get", f"{_N}/extensions"): obj(extensions=array(obj(alias="string", name="string", description="string",
                                                          links="array", updated="string"))),
    ("get", f"{_I}/schemas/{{name}}"): obj(name={"type": "string", "enum": ["image", "images"]},
                                           properties="object", additionalProperties="object"),
    ("get", f"{_C}/flavors/{{flavor_id}}/os-extra_specs"): obj(extra_specs=STRING_MAP),
    ("post", f"{_C}/flavors/{{flavor_id}}/os-extra_specs"): obj(extra_specs=STRING_MAP),
    ("get", f"{_C}/os-hypervisors/statistics"): obj(hypervisor_statistics=HYPERVISOR_STATISTICS),
    ("get", f"{_C}/os-quota-sets/{{project_id}}/defaults"): obj(quota_set=quota_set(False)),
    ("get", f"{_C}/os-quota-sets/{{project_id}}/detail"): obj(quota_set=quota_set(True)),
    **{("put", f"{_C}/os-services/{toggle}"): obj(service=SERVICE_TOGGLED)
       for toggle in ("enable", "disable", "disable-log-reason")},
    ("post", "/v3/users/{user_id}/credentials/OS-EC2"): obj(credential=EC2_CREDENTIAL),
    ("get", "/v3/users/{user_id}/credentials/OS-EC2"): obj(credentials=array(EC2_CREDENTIAL), links="object"),
    ("get", "/v3/users/{user_id}/credentials/OS-EC2/{access}"): obj(credential=EC2_CREDENTIAL),
    ("patch", f"{_I}/images/{{image_id}}"): obj(False, id="string", name=nullable("string"), status="string",
                                                visibility="string", tags=array("string")),
}
RESPONSES[("patch", f"{_I}/images/{{image_id}}")]["required"] = ["id", "status", "visibility"]

#: Image v2's JSON patch (``application/openstack-images-v2.1-json-patch``): add, replace or
#: remove one top-level attribute or property per item.
IMAGE_PATCH = array(obj(False, op={"type": "string", "enum": ["add", "replace", "remove"]},
                        path={"type": "string", "pattern": "^/[^/]+$"}, value={}))
IMAGE_PATCH["items"]["required"] = ["op", "path"]
