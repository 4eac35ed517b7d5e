"""Inputs: what turns URL lists, JSONL request files and stdin into Requests.

- :mod:`fanout.inputs.sources`: the lazy readers, one line at a time, and the
  problems a bad line is recorded with;
- :mod:`fanout.inputs.blocking_input`: inputs whose reads can block (a pipe, a
  terminal, a FIFO), read off the event loop.
"""
