"""The lab's cluster: start, inspect and break a catalog plus N autopilot-run Redis nodes.

All state lives in one directory (``state.json`` plus a folder per node with its log, data
and hook log), so every `autopilot lab` invocation is a short-lived process that reads the
state, acts on real PIDs and namespaces, and exits. Processes outlive the CLI on purpose.

`Lab` is assembled from its rooms: the state file (`lab.state`), process control
(`lab.processes`), faults (`lab.faults`) and observation (`lab.observation`); what is
specific to Redis lives in `lab.redis`.
"""

from __future__ import annotations

from autopilot.lab.faults import LabFaults
from autopilot.lab.observation import LabObservation, converged, format_table
from autopilot.lab.processes import start_ticks
from autopilot.lab.redis import EXAMPLES, FENCE
from autopilot.lab.state import PROFILES, LabError, Node, State, default_dir

__all__ = ["EXAMPLES", "FENCE", "PROFILES", "Lab", "LabError", "Node", "State", "converged",
           "default_dir", "format_table", "start_ticks"]


class Lab(LabFaults, LabObservation):
    """One lab directory: its state, its processes, the faults to inject and what to see."""
