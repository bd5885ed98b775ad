"""What governance announces to the apps built on it, so that they depend on it and not the reverse.

`candidate_benchmark_requested` is sent, inside the transaction, when a model
adoption proposal opens and `GOVERNANCE_BENCHMARK_CANDIDATES` is on, with
`manifest_id` and `actor`; the inference app answers it by ensuring a
benchmark of the candidate (queued after commit).

`runtime_parameters_changed` is sent after the commit of an executed
parameter change; the signing app answers it by signing the approved set
anew, since nodes read their limits from the signed set.
"""

from django.dispatch import Signal

candidate_benchmark_requested = Signal()
runtime_parameters_changed = Signal()
