"""A command's work below its options: the layers wired together for one run.

- :mod:`fanout.jobs.fetch`: the ``fanout fetch`` job, inputs → engine →
  JSONL records, saved bodies and statistics, with or without a journal;
- :mod:`fanout.jobs.fetch_output`: where the fetch job's records go, plain
  JSONL or JSONL kept exact by a journal;
- :mod:`fanout.jobs.bench`: the ``fanout bench`` timing, sync versus async.

(``fanout aggregate``'s job is :mod:`fanout.aggregation.driver`.)
"""
