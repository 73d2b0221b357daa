# ruff: noqa  (the blog's code, kept as it was written)
# The seed's tasks.py ("Background jobs with Flask", 2018), gathered from the
# blog's three task snippets, with only the uWSGI imports changed:
#
#   import uwsgi                                 ->  from spoolhouse.contrib import uwsgi
#   from uwsgidecorators import spool, thread    ->  from spoolhouse.contrib.uwsgi import spool, thread
#
# The blog's formatting lost the decorator lines (the text says the task uses
# uWSGI's `thread` and `spool` decorators); they are put back and marked below.
# Nothing else is changed, including the unreachable second `return`.
import time
from spoolhouse.contrib import uwsgi
from spoolhouse.contrib.uwsgi import spool, thread


def threaded_task(duration):
    for i in range(duration):
        print("Working... {}/{}".format(i + 1, duration))


@thread  # restored: lost in the blog's formatting
def uwsgi_task(duration):
    for i in range(duration):
        print("Working in uwsgi thread... {}/{}".format(i + 1, duration))


@spool  # restored: lost in the blog's formatting
def spool_task(args):
        duration = int(args['duration'])
        for i in range(duration):
            print("Working in uwsgi spool... {}/{}".format(i + 1, duration))
        return uwsgi.SPOOL_OK
        return uwsgi.SPOOL_RETRY


# Not in the blog's text: its app.py imports `uwsgi_tasks_task` ("uwsgi-tasks
# library wraps all the uwsgi spooler workings"), whose code is only on
# GitHub. Defined here with uwsgi_tasks' decorator so that the import works;
# under uWSGI it read `from uwsgi_tasks import task`.
from spoolhouse.contrib.uwsgi import task  # noqa: E402


@task(retry_count=3, retry_timeout=5)
def uwsgi_tasks_task(duration):
    for i in range(duration):
        print("Working in uwsgi_tasks... {}/{}".format(i + 1, duration))
