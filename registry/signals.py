"""What the registry announces to the apps built on it, so that they depend on it and not the reverse.

`approved_set_published` is sent once the transaction that published a new
approved set has committed, with `approved_set_id`; the signing app answers
it by queueing the set's signing.
"""

from django.dispatch import Signal

approved_set_published = Signal()
