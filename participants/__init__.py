"""Demo participant services: flights, hotels, cars, payments, inventory, shipping, notices.

Each one owns its database and deduplicates by the ``Idempotency-Key`` header; some inputs
behave in documented ways (DESIGN.md, "Demo participants and their test inputs").
"""
