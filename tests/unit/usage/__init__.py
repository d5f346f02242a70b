"""Unit tests of `llamakey.usage`, one module per package module and per usage family."""
