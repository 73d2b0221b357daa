# ruff: noqa  (the blog's code, kept as it was written)
# The seed's app.py ("Background jobs with Flask", 2018): the blog's last
# version of the app (its imports, `prepare_spooler_args`, and the
# `/uwsgi_spool` route with `at`), plus its `/` and `/uwsgi_thread` routes.
# It needs no change for Spoolhouse: it only imports tasks.py, whose imports
# changed. Four lines the blog's formatting broke or lost are repaired and
# marked "fixed" or "restored"; nothing else differs.
#
# Run it (from this directory):
#   waitress-serve --listen 127.0.0.1:5000 app:app       # any WSGI server
#   SPOOLHOUSE_IMPORT=tasks spoolhouse --app spoolhouse.contrib.uwsgi:spooler worker
#                                                         # instead of `uwsgi --ini uwsgi.ini`
# with SPOOLHOUSE_URL=sqlite:////path/to/spool.db in both environments, or
# run both from this directory (the default store is ./spoolhouse.db).
import os
import time
from flask import Flask, jsonify
from threading import Thread
from tasks import threaded_task, uwsgi_task, spool_task, uwsgi_tasks_task

app = Flask(__name__)
app.secret_key = os.urandom(42)


def prepare_spooler_args(**kwargs):
    args = {}
    for name, value in kwargs.items():
        args[name.encode('utf-8')] = str(value).encode('utf-8')
    return args


@app.route("/", defaults={'duration': 5})
def index(duration):
    thread = Thread(target=threaded_task, args=(duration,))
    thread.daemon = True
    thread.start()  # restored: lost in the blog's formatting
    return jsonify({'thread_name': str(thread.name),  # fixed: the blog shows `str(,`
                    'started': True})


@app.route("/uwsgi_thread", defaults={'duration': 5})
def uwsgi_thread(duration):
    uwsgi_task(duration)  # restored: lost in the blog's formatting
    return jsonify({'started': True})


@app.route("/uwsgi_spool", defaults={'duration': 5})
def uwsgi_spool(duration):
    at = int(time.time()) + 3 # delay by 3s
    args = prepare_spooler_args(duration=duration, at=at)
    spool_task.spool(args)  # restored: "calls spool_task in the route", lost in the formatting
    return jsonify({'started': True})
