"""k8s_quantity_bytes (plugins/filter/tapio_quantity.py): the sizes nats.conf gets from the
nats_cluster role's Kubernetes quantities. The rendered nats.conf itself is checked by the
real nats-server in tests/integration/test_nats_install.py."""
from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from ansible.errors import AnsibleFilterError

from conftest import REPO_ROOT


def load_filter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tapio_quantity_filter", REPO_ROOT / "plugins/filter/tapio_quantity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


quantity = load_filter()


@pytest.mark.parametrize(("value", "percent", "expected"), [
    ("10Gi", 90, 10 * 2**30 * 90 // 100),   # the role's default max_file_store: 9663676416
    ("512Mi", 100, 512 * 2**20),
    ("20G", 75, 15_000_000_000),
    ("7k", 100, 7000),
    ("7K", 100, 7000),
    ("3Ki", 100, 3072),
    ("1Ti", 100, 2**40),
    ("2T", 50, 10**12),
    ("123456789", 90, 111111110),           # no suffix: bytes, rounded down
    (123, 100, 123),                        # an int from YAML
    ("1Gi", "90", 966367641),               # percent as the string a template may give
])
def test_quantities_in_bytes(value: object, percent: object, expected: int) -> None:
    assert quantity.k8s_quantity_bytes(value, percent) == expected


@pytest.mark.parametrize("value", ["10GB", "1.5Gi", "10 Gi", "ki", "10ki", "", "-1Gi", "1Pi", "100m"])
def test_what_is_not_a_quantity_fails_naming_it(value: str) -> None:
    with pytest.raises(AnsibleFilterError, match=r"is not a quantity such as 10Gi"):
        quantity.k8s_quantity_bytes(value)


def test_a_percent_that_is_not_a_number_fails() -> None:
    with pytest.raises(AnsibleFilterError, match="percent 'most' is not a whole number"):
        quantity.k8s_quantity_bytes("1Gi", "most")


def test_the_filter_is_registered_under_its_name() -> None:
    assert quantity.FilterModule().filters() == {"k8s_quantity_bytes": quantity.k8s_quantity_bytes}
