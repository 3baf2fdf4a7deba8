import pytest

from mailforge.config import RelayConfig
from mailforge.policy.relay import RelayPolicy


@pytest.mark.parametrize("mode, ip, authenticated, allowed", [
    ("none", "127.0.0.1", True, False),
    ("authenticated", "127.0.0.1", False, False),
    ("authenticated", "192.0.2.9", True, True),
    ("networks", "127.0.0.1", False, True),
    ("networks", "192.0.2.9", False, False),
    ("networks", "192.0.2.9", True, True),
    ("networks", "::1", False, True),
    ("open", "198.51.100.1", False, True),
])
def test_relay_modes(mode, ip, authenticated, allowed):
    policy = RelayPolicy.from_config(RelayConfig(mode=mode, networks=["127.0.0.0/8", "::1/128"]))
    assert policy.may_relay(ip, authenticated) is allowed
