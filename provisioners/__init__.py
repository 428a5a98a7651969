"""SSH provisioning layer: connections, steps, fan-out to many hosts, Pulumi resources on top.

    from polyvm.provisioners import Connection, CopyFile, RunCommand, Script, fanout, run_steps

See docs/provisioners.md. The Pulumi resources live in :mod:`polyvm.provisioners.pulumi` (imported on demand,
so the plain API does not load Pulumi).
"""

from .fanout import FanoutResult, HostResult, fanout
from .ssh import (
    Connection,
    ConnectionStats,
    HostKeyPolicy,
    KnownHosts,
    RunResult,
    Upload,
    backoff_delays,
    fingerprint,
    mask,
)
from .steps import CopyDir, CopyFile, RunCommand, Script, Step, StepResult, run_steps

__all__ = [
    "Connection", "ConnectionStats", "HostKeyPolicy", "KnownHosts", "RunResult", "Upload", "backoff_delays",
    "fingerprint", "mask", "Step", "StepResult", "CopyFile", "CopyDir", "RunCommand", "Script", "run_steps",
    "fanout", "FanoutResult", "HostResult",
]
