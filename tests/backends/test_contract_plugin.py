"""A backend's own test suite runs the whole contract with one class (the pytest11 plugin is installed)."""

from __future__ import annotations

pytest_plugins = ["pytester"]

from polyvm.testing import BackendContract  # noqa: E402

N_CONTRACT_TESTS = len([n for n in dir(BackendContract) if n.startswith("test_")])


def test_one_class_runs_the_whole_contract(pytester):
    pytester.makepyfile(test_mybackend="""
        from polyvm.backends.aws import AwsBackend
        from polyvm.testing import BackendContract

        class TestMyBackend(BackendContract):
            backend = AwsBackend()
            fleet_settings = {"vpc_id": "vpc-1", "vpc_cidr": "10.0.0.0/16", "subnet_ids": ["subnet-1", "subnet-2"]}

        def test_fixtures_come_from_the_plugin(polyvm_plan, polyvm_public_key):
            p = polyvm_plan(AwsBackend(), {"name": "x", "size": "small", "ssh": {"public_key": polyvm_public_key},
                                           "image": {"family": "debian", "version": "12"}})
            assert p.outputs["x"]["ssh_user"] == "polyvm"
    """)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=N_CONTRACT_TESTS + 1)
    assert N_CONTRACT_TESTS >= 15


def test_plugin_entry_point_is_registered():
    from importlib.metadata import entry_points

    assert [e.value for e in entry_points(group="pytest11") if e.name == "polyvm_contract"] == ["polyvm.testing"]


def test_importing_the_plugin_imports_no_cloud_sdk():
    import subprocess
    import sys

    code = ("import sys, polyvm.testing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pulumi', 'pulumi_aws', 'pulumi_azure_native', 'pulumi_gcp', 'pulumi_digitalocean', "
            "'pulumi_vsphere', 'pulumi_tls', 'cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
