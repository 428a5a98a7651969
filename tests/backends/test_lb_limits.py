"""Load balancer limits checked against the clouds' documentation (sources in backends/<cloud>/lb.py)."""

from __future__ import annotations

import test_aws_lb as t

from polyvm.backends.aws import lb as aws_lb


def _nlb(count: int, target_ports: int):
    listeners = [{"port": 80 + i, "target_port": 8080 + i} for i in range(target_ports)]
    return t.fleet(listeners, count=count)


def test_a_cross_zone_nlb_takes_500_targets_whatever_the_zones():
    # ELB quotas, footnote 3: with cross-zone load balancing on (polyvm turns it on for NLBs) "the maximum
    # number of targets per load balancer is 500, regardless of the number of Availability Zones".
    subnets = ["subnet-a", "subnet-b", "subnet-c"]
    at_limit = aws_lb.problems(_nlb(100, 5), subnets)     # 500 targets
    over = aws_lb.problems(_nlb(100, 6), subnets)         # 600 targets, 200 per zone, far below 3,000
    assert not [p for p in at_limit if "targets" in p], at_limit
    assert any("at most 500 targets per Network Load Balancer with cross-zone" in p for p in over), over
    assert aws_lb.load_balancer_args(_nlb(100, 6), subnets)["enable_cross_zone_load_balancing"] is True
