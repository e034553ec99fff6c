"""Developer tools for scepline, installed by ``uv sync`` (the dev dependency
group) and never shipped to operators: ``intune_sim``, a fake Entra ID, Graph
and Intune (``scepline intune-sim``), and ``scep_client``, the SCEP client the
tests and benchmarks enrol with."""
