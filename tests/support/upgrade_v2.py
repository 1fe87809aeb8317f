"""Version 2, rolled out while version-1 sagas run: steps reordered (b before a), one removed
(c) and one added (d). Version 1 stays registered until its sagas have finished.
"""

from __future__ import annotations

from datetime import timedelta

from engine import Approval, Saga
from tests.support.sagas import Order, a, b, d, fast, undo_a, undo_b, undo_d
from tests.support.upgrade_v1 import order_v1

order_v2 = Saga(
    "upgraded_order",
    input=Order,
    version=2,
    steps=[
        fast(b, undo_b),
        fast(a, undo_a, approval=Approval(timedelta(hours=1), when=lambda o: o.amount > 100)),
        fast(d, undo_d),
    ],
)

__all__ = ["order_v1", "order_v2"]
