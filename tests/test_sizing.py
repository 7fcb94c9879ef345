from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.sizing import PodSize, format_cpu, format_memory, namespace_quota, parse_quantity


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("250m", 0.25), ("2", 2.0), ("1.5", 1.5), ("128Mi", 128 * 2**20), ("1Gi", 2**30), ("1k", 1000.0)],
)
def test_parse_quantity(quantity, value):
    assert parse_quantity(quantity) == value


@pytest.mark.parametrize("bad", ["", "abc", "1Xi", "-1", "1.2.3"])
def test_parse_quantity_refuses_garbage(bad):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(bad)


@given(st.integers(min_value=1, max_value=10**6))
def test_format_cpu_never_rounds_down(millicores):
    assert parse_quantity(format_cpu(millicores / 1000)) >= millicores / 1000 - 1e-9


@given(st.integers(min_value=1, max_value=2**40))
def test_format_memory_never_rounds_down(num_bytes):
    assert parse_quantity(format_memory(num_bytes)) >= num_bytes


def test_namespace_quota_covers_every_pod_at_max_scale_plus_headroom():
    pods = [
        PodSize("100m", "128Mi", "500m", "256Mi", max_pods=4),
        PodSize("1", "1Gi", "2", "1Gi", max_pods=3),
    ]
    quota = namespace_quota(pods, headroom_percent=25)
    assert quota == {
        "requests.cpu": "4250m",  # (0.1*4 + 1*3) * 1.25
        "requests.memory": "4480Mi",  # (128*4 + 1024*3) * 1.25
        "limits.cpu": "10000m",
        "limits.memory": "5120Mi",
        "pods": "9",  # ceil(7 * 1.25)
    }


@given(
    st.lists(st.tuples(st.integers(1, 4000), st.integers(1, 8192), st.integers(1, 20)), min_size=1, max_size=8),
    st.integers(0, 100),
)
def test_namespace_quota_is_never_below_the_sum_at_max_scale(specs, headroom):
    pods = [PodSize(f"{c}m", f"{m}Mi", f"{c}m", f"{m}Mi", n) for c, m, n in specs]
    quota = namespace_quota(pods, headroom)
    assert parse_quantity(quota["requests.cpu"]) >= sum(c / 1000 * n for c, _, n in specs) - 1e-9
    assert parse_quantity(quota["limits.memory"]) >= sum(m * 2**20 * n for _, m, n in specs)
    assert int(quota["pods"]) >= sum(n for *_, n in specs)
