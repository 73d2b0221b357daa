"""A spooler task in the seed's style that always asks for a retry (acceptance tests).

The seed's ``spool_task`` returns ``SPOOL_OK`` before its ``SPOOL_RETRY``;
this one reaches it, to show that a retry is counted and ends ``failed``.
"""

from spoolhouse.contrib import uwsgi
from spoolhouse.contrib.uwsgi import spool


@spool(retries=2, backoff=0.2)
def always_retry(args):  # type: ignore[no-untyped-def]
    print("always_retry attempt for {}".format(args["tag"]))
    return uwsgi.SPOOL_RETRY
