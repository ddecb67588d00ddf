"""Keeps the address of Dask's HTTP server (its "dashboard") out of a local cluster's logs.

Distributed starts that server whatever `dashboard_address` says (None only leaves out the Bokeh pages) and logs
its address from the scheduler and every worker; prefect-dask announces it too. It listens on 127.0.0.1 of the
machine running the flow, so there is no dashboard a user can reach: the lines only invite a wrong click.
Installed in the flow's process by flows.parallel.local_cluster and, as a Dask preload (this file, by path:
it imports nothing from the project), in each worker process before the worker logs its start-up lines.
"""

import logging
import re

_DASHBOARD = re.compile(r"dashboard at:|Dask dashboard is available")
LOGGERS = ("distributed.scheduler", "distributed.worker")


class DropDashboardLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _DASHBOARD.search(record.getMessage())


def install() -> None:
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropDashboardLines) for f in logger.filters):
            logger.addFilter(DropDashboardLines())


install()   # a Dask preload runs at import, before the worker starts
