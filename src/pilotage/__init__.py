"""pilotage: a multi-user pilot workload management system.

This module must stay import-free: the agent's zipapp ships it to bare worker nodes.
"""

__version__ = "0.1.0"
