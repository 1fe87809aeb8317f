"""Order fulfillment: reserve stock, authorize the payment, ship (the pivot), then capture the
payment and send the invoice, both retried until they succeed.

Test inputs: an item with ``sku`` "out-of-stock", ``card_token`` "tok_declined" or
"tok_flaky", ``address`` "nowhere" (the carrier refuses: the pivot fails).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from activities import inventory, notifications, payments, shipping
from activities.models import (
    CaptureRequest,
    ChargeRequest,
    Message,
    OrderItem,
    ShipmentRequest,
    StockRequest,
)
from engine import Results, Saga, Step


class OrderRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "customer_email": "ada@example.com",
                    "items": [{"sku": "teapot-01", "quantity": 1, "unit_price": 25}],
                    "card_token": "tok_visa",
                    "address": "12 St James's Square, London",
                }
            ]
        }
    )

    customer_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=200)
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    card_token: str = Field(min_length=1, max_length=100)
    address: str = Field(min_length=1, max_length=500)

    @property
    def total(self) -> int:
        return sum(item.quantity * item.unit_price for item in self.items)


def _capture(order: OrderRequest, done: Results) -> CaptureRequest:
    return CaptureRequest(authorization_key=done["authorize_payment"].key, amount=order.total)


def _invoice(order: OrderRequest) -> Message:
    lines = ", ".join(f"{i.quantity} x {i.sku}" for i in order.items)
    return Message(to=order.customer_email, subject="Your invoice",
                   body=f"{lines}; total {order.total}.")  # fmt: skip


order_fulfillment = Saga(
    "order_fulfillment",
    input=OrderRequest,
    description="Reserve stock, authorize, ship (pivot), capture, invoice.",
    steps=[
        Step(inventory.reserve, compensate=inventory.release,
             input=lambda o: StockRequest(items=o.items)),
        Step(payments.authorize, compensate=payments.void,
             input=lambda o: ChargeRequest(card_token=o.card_token, amount=o.total)),
        Step(shipping.ship, pivot=True,
             input=lambda o: ShipmentRequest(address=o.address, items=o.items)),
        Step(payments.capture, retriable=True, input=_capture),
        Step(notifications.send_invoice, retriable=True, input=_invoice),
    ],
)  # fmt: skip
