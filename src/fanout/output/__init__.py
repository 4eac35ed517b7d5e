"""Outputs: what a run writes, and how, off the event loop.

- :mod:`fanout.output.records`: the JSONL record of each input line (the schema);
- :mod:`fanout.output.writer`: one writer thread per output, with a bounded backlog;
- :mod:`fanout.output.line_output`: whole lines to a file, standard output or a pipe;
- :mod:`fanout.output.jsonl_writer`: records as JSON lines, for library callers;
- :mod:`fanout.output.files`: response bodies under ``--out-dir``: safe names,
  atomic writes;
- :mod:`fanout.output.body_saver`: saving those bodies on a thread of their own;
- :mod:`fanout.output.credentials`: keys that tell credentials apart without
  holding them (for file names and the journal);
- :mod:`fanout.output.stats`: counters and a latency histogram, the run's summary.
"""
