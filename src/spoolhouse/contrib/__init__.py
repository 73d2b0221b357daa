"""Compatibility layers for code written for other job systems.

:mod:`spoolhouse.contrib.uwsgi`
    uWSGI's spooler (``uwsgidecorators`` and ``uwsgi.SPOOL_*``) and the
    ``uwsgi_tasks`` ``@task`` decorator, on a Spoolhouse store and workers.
"""
