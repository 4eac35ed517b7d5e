"""The ``fanout`` command line: click commands over the library.

- :mod:`fanout.cli.main`: the command group, the small commands and :func:`main`;
- :mod:`fanout.cli.options`: the options ``fetch`` and ``aggregate`` share, and
  the one function that turns them into a :class:`~fanout.FetcherConfig`;
- :mod:`fanout.cli.aggregate`: the ``aggregate`` command (loaded when used);
- :mod:`fanout.cli.commands`: what each command does once its options are parsed;
- :mod:`fanout.cli.progress`, :mod:`fanout.cli.logs`,
  :mod:`fanout.cli.exit_status`: the live bar, redacting logs, exit statuses;
- :mod:`fanout.cli.units`: durations and sizes as the options take them ("50ms", "10MB").
"""

from fanout.cli.main import cli, main

__all__ = ["cli", "main"]
