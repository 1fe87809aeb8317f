"""Runnable examples from the README: copy one into your own module and change it."""
