"""Whether a node asks who owns a mailbox (auth/routing.py): a single node never pays that
query; a node of a cluster always asks; a node without a secret asks once the node table
has rows when its workers (re)start."""

import pytest

from mailforge.auth.api import Node
from mailforge.auth.routing import owners_to_ask

pytestmark = pytest.mark.usefixtures("cheap_scrypt")


def test_a_single_node_asks_only_once_a_node_is_listed(db, accounts_config):
    assert owners_to_ask(accounts_config, db.nodes) is None
    db.nodes.node_add(Node("b", "10.0.1.2", 143, 110, 25))
    # What the workers that a reload starts decide.
    assert owners_to_ask(accounts_config, db.nodes) is db.nodes


def test_a_cluster_node_always_asks(db, accounts_config):
    accounts_config.cluster.secret_file = "cluster.secret"
    assert owners_to_ask(accounts_config, db.nodes) is db.nodes
