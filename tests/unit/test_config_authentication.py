"""[authentication] authserv_id: the name our Authentication-Results headers go by (RFC 8601
2.5), the [server] hostname unless the nodes of a cluster share one."""

from __future__ import annotations

import pytest

from mailforge import config as configuration
from mailforge.errors import ConfigError


def test_the_authserv_id_is_the_hostname_unless_set():
    assert configuration.from_dict({"server": {"hostname": "mx1.example.test"}}
                                   ).authserv_id == "mx1.example.test"
    shared = configuration.from_dict({"server": {"hostname": "mx1.example.test"},
                                      "authentication": {"authserv_id": "example.test"}})
    assert shared.authserv_id == "example.test"


@pytest.mark.parametrize("value", ["two words", "semi;colon", "ex(ample)", "a..b"])
def test_an_authserv_id_that_is_no_name_is_refused(value):
    with pytest.raises(ConfigError, match="not a host or domain name") as caught:
        configuration.from_dict({"authentication": {"authserv_id": value}})
    assert "[authentication] authserv_id" in str(caught.value)
