"""The recipe's own tests: pure, no host needed (steps from inputs)."""

import pytest

from polyvm.errors import SpecError
from polyvm.host import Facts, Host
from polyvm_motd import Motd


def test_steps_copy_the_message_and_read_it_back():
    recipe = Motd()
    inputs = recipe.parse_inputs({"message": "Hello"})
    steps = recipe.steps(inputs, Host(address="198.51.100.7", user="root", name="web1"), Facts("debian", "12"))
    assert [s.name for s in steps] == ["motd", "check motd"]
    assert steps[0].content == "web1: Hello\n" and steps[0].remote_path == "/etc/motd"


def test_bad_inputs_are_one_clear_error():
    with pytest.raises(SpecError, match="motd.message"):
        Motd().parse_inputs({"message": "bell\x07"})
