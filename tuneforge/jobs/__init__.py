"""Job kinds: every kind of long work on the queue (fine-tune, relabel; later eval, merge, bake-off) is one
module here, holding its typed spec, how a request for it is accepted (validated and queued) and how a
worker runs it. `registry` finds a kind by name; `context` is what a running job gets.

This package's `__init__` imports nothing, so that the store can look kinds up without an import cycle.
"""
