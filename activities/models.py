"""Typed inputs and outputs of the participant activities."""

from __future__ import annotations

from pydantic import BaseModel, Field


class FlightRequest(BaseModel):
    flight_number: str = Field(min_length=1, max_length=20, examples=["BA117"])
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-12-24"])
    passenger: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])


class HotelRequest(BaseModel):
    hotel_id: str = Field(min_length=1, max_length=50, examples=["grand-plaza"])
    check_in: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$", examples=["2026-12-24"])
    nights: int = Field(ge=1, le=60, examples=[3])


class CarRequest(BaseModel):
    car_class: str = Field(min_length=1, max_length=30, examples=["compact"])
    days: int = Field(ge=1, le=60, examples=[3])


class PaymentDetails(BaseModel):
    card_token: str = Field(min_length=1, max_length=100, examples=["tok_visa"])


class Reservation(BaseModel):
    """What a participant answered: its record's key, status and price."""

    key: str
    status: str
    price: int = 0


class ChargeRequest(BaseModel):
    card_token: str
    amount: int = Field(ge=0)


class OrderItem(BaseModel):
    sku: str = Field(min_length=1, max_length=50, examples=["teapot-01"])
    quantity: int = Field(ge=1, le=1000, examples=[1])
    unit_price: int = Field(ge=0, le=1_000_000, examples=[25])


class StockRequest(BaseModel):
    items: list[OrderItem]


class ShipmentRequest(BaseModel):
    address: str
    items: list[OrderItem]


class CaptureRequest(BaseModel):
    authorization_key: str
    amount: int


class Message(BaseModel):
    to: str
    subject: str
    body: str
