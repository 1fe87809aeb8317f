"""Version 1 of a saga that changes under running instances (tests/test_upgrades.py).

a, then b waiting for approval, then c. A worker that loads only this module is the fleet before
the upgrade.
"""

from __future__ import annotations

from datetime import timedelta

from engine import Approval, Saga
from tests.support.sagas import Order, a, b, c, fast, undo_a, undo_b, undo_c

order_v1 = Saga(
    "upgraded_order",
    input=Order,
    version=1,
    steps=[
        fast(a, undo_a),
        fast(b, undo_b, approval=Approval(timedelta(hours=1), when=lambda o: o.amount > 100)),
        fast(c, undo_c),
    ],
)
