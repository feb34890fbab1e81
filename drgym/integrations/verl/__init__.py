"""drgym for verl: an agent loop (``drgym``), a reward function and verl's parquet.

- :mod:`drgym.integrations.verl.agent_loop`: ``DrgymAgentLoop``, registered as ``drgym`` (needs ``verl``).
- :mod:`drgym.integrations.verl_reward`: ``compute_score`` for verl's reward manager (needs only drgym).
- :mod:`drgym.integrations.verl.data`: writes a drgym dataset as verl's parquet (needs only pyarrow);
  ``drgym verl-data --dataset NAME --out DIR``.

Nothing here imports verl until ``agent_loop`` is imported.
"""

from __future__ import annotations

__all__: list[str] = []
