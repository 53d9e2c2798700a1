"""Settings: defaults, INI file, environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import config
from fabric.exception import InvalidSetting

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fabric.conf"
    path.write_text(text)
    return path


def test_defaults_are_embedded():
    settings = config.load(None, environ={})
    assert settings.rpc.transport_url == "memory://"
    assert settings.service.report_interval == 10.0
    assert settings.service.service_down_time == 60.0
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("fabric.sqlite")


def test_file_then_environment_precedence(tmp_path):
    path = write(tmp_path, "[DEFAULT]\nhost = h1\n[rpc]\ncall_timeout = 5\nquorum_queues = yes\n")
    settings = config.load(path, environ={"FABRIC_RPC_CALL_TIMEOUT": "7.5", "FABRIC_DEFAULT_HOST": "h2"})
    assert settings.rpc.call_timeout == 7.5
    assert settings.rpc.quorum_queues is True
    assert settings.default.host == "h2"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[rpc]\ncall_timeout = soon\n", "[rpc] call_timeout = 'soon': expected a number"),
        ("[rpc]\nexecutor_size = 0\n", "executor_size = '0': must be at least 1"),
        ("[rpc]\nquorum_queues = maybe\n", "expected a boolean"),
        ("[compute]\ndriver = xen\n", "expected one of fake, libvirt"),
        ("[rpc]\ncall_timout = 5\n", "call_timout = '5': unknown option; known: transport_url"),
        ("[rcp]\nx = 1\n", "[rcp] - = 'rcp': unknown section"),
        ("[DEFAULT]\ncolour = blue\n", "colour = 'blue': unknown option"),
        ("no section header\n", "not an INI file"),
    ],
)
def test_bad_file_values_name_file_option_value_and_what_is_accepted(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(InvalidSetting) as caught:
        config.load(path, environ={})
    assert fragment in caught.value.message
    assert str(path) in caught.value.message


def test_bad_environment_value_names_the_variable():
    with pytest.raises(InvalidSetting) as caught:
        config.load(None, environ={"FABRIC_SERVICE_REPORT_INTERVAL": "often"})
    assert "environment FABRIC_SERVICE_REPORT_INTERVAL" in caught.value.message
    assert "'often'" in caught.value.message


def test_unknown_environment_section_is_refused():
    with pytest.raises(InvalidSetting, match="FABRIC_NOPE_X"):
        config.load(None, environ={"FABRIC_NOPE_X": "1"})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidSetting, match="cannot read the file"):
        config.load(tmp_path / "absent.conf", environ={})


def test_replace_changes_one_option_and_keeps_the_rest():
    settings = config.load(None, environ={})
    changed = settings.replace(rpc={"call_timeout": 2.0})
    assert changed.rpc.call_timeout == 2.0
    assert changed.rpc.exchange == settings.rpc.exchange
    assert settings.rpc.call_timeout == 60.0


def test_sample_documents_every_option_and_is_current():
    sample = config.sample()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in sample
        for field in cls.__dataclass_fields__:
            assert f"#{field} = " in sample, f"{section}.{field} missing from the sample"
    committed = (REPO / "conf" / "fabric.conf.sample").read_text()
    assert committed == sample, "conf/fabric.conf.sample is stale: run `fabric-manage config sample > conf/fabric.conf.sample`"


def test_sample_loads_as_a_valid_configuration():
    settings = config.load(REPO / "conf" / "fabric.conf.sample", environ={})
    assert settings.rpc.transport_url == "memory://"


def test_deployment_sample_switches_to_the_real_services():
    settings = config.load(REPO / "conf" / "fabric.conf.deploy", environ={})
    assert settings.rpc.transport_url.startswith("amqp://")
    assert settings.database_url.startswith("postgresql://")
    assert settings.compute.driver == "libvirt"
    assert settings.network.driver == "linux"


def test_a_section_option_named_like_a_default_option_is_its_own(tmp_path):
    # configparser copies [DEFAULT] into every section; a section's own option of the same
    # name must still be read as that section's (here: refused, [api] has no host option).
    path = tmp_path / "fabric.conf"
    path.write_text("[DEFAULT]\nhost = h1\n[api]\nhost = h2\n")
    with pytest.raises(InvalidSetting) as caught:
        config.load(path, {})
    assert (caught.value.fields["section"], caught.value.fields["option"]) == ("api", "host")
    path.write_text("[DEFAULT]\nhost = h1\n[api]\nport = 9999\n")
    loaded = config.load(path, {})
    assert (loaded.default.host, loaded.api.port) == ("h1", 9999)
