"""SSH provisioning layer: connections, steps, fan-out to many hosts, Pulumi resources on top.

    from polyvm.provisioners import Connection, CopyFile, RunCommand, Script, fanout, run_steps

Modules: :mod:`.connection` (Connection, ConnectionArgs, retries, bastions, keepalives), :mod:`.trust` (host
keys, known_hosts, client keys), :mod:`.exec` (commands on a channel), :mod:`.transfer` (file copies).
See docs/provisioners.md. The Pulumi resources live in :mod:`polyvm.provisioners.pulumi` (imported on demand,
so the plain API does not load Pulumi).
"""

from .connection import Connection, ConnectionArgs, ConnectionStats, backoff_delays
from .exec import RunResult, encode_env, mask, tail
from .fanout import FanoutResult, HostResult, fanout
from .steps import CopyDir, CopyFile, RunCommand, Script, Step, StepResult, run_steps
from .transfer import Upload
from .trust import HostKeyPolicy, KnownHosts, fingerprint

__all__ = [
    "Connection", "ConnectionArgs", "ConnectionStats", "HostKeyPolicy", "KnownHosts", "RunResult", "Upload",
    "backoff_delays", "fingerprint", "mask", "tail", "encode_env", "Step", "StepResult", "CopyFile", "CopyDir",
    "RunCommand", "Script", "run_steps", "fanout", "FanoutResult", "HostResult",
]
